// The project cites only documents it contains: every "docs/<name>.md" a
// tracked file names exists, every "docs/architecture.md, <Section>" names a
// heading of it, and no file cites the design notes the project was started
// from (DESIGN.md), which a clone does not have.
import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

function repoRoot(): string {
  for (let dir = __dirname; ; dir = path.dirname(dir)) {
    if (fs.existsSync(path.join(dir, 'docs', 'architecture.md'))) return dir;
    if (path.dirname(dir) === dir) throw new Error(`docs/architecture.md not found above ${__dirname}`);
  }
}

describe('documents the code cites', () => {
  const root = repoRoot();
  const files = execFileSync('git', ['ls-files', '-z'], { cwd: root, encoding: 'utf8' })
    .split('\0')
    .filter((f) => f && /\.(ts|js|c|h|cpp|md|sh|json)$|Makefile$/.test(f) && f !== 'package-lock.json')
    .filter((f) => f !== 'test/unit/docCitations.test.ts' && fs.existsSync(path.join(root, f)));
  const text = new Map(files.map((f) => [f, fs.readFileSync(path.join(root, f), 'utf8')]));
  const headings = (doc: string): string[] =>
    fs
      .readFileSync(path.join(root, doc), 'utf8')
      .split('\n')
      .filter((l) => /^#{1,4} /.test(l))
      .map((l) => l.replace(/^#+ /, '').trim());

  it('no file cites DESIGN.md or another design document outside the project', () => {
    const hits = [...text]
      .filter(([, t]) => /DESIGN\.md|design card|\.\.\/shared\/[A-Z]/.test(t))
      .map(([f]) => f);
    assert.deepEqual(hits, []);
  });

  it('every docs/*.md a file names exists', () => {
    const missing: string[] = [];
    for (const [f, t] of text) {
      for (const m of t.matchAll(/docs\/([\w-]+\.md)/g)) {
        if (!fs.existsSync(path.join(root, 'docs', m[1]))) missing.push(`${f}: docs/${m[1]}`);
      }
    }
    assert.deepEqual(missing, []);
  });

  it('every "docs/architecture.md, <Section>" names a heading of it', () => {
    const known = headings('docs/architecture.md');
    const cited: string[] = [];
    const missing: string[] = [];
    for (const [f, t] of text) {
      for (const m of t
        .replace(/\s*\n\s*(\/\/|\*|#)?\s*/g, ' ')
        .matchAll(/docs\/architecture\.md, ([A-Z][\w -]*?)[):.;]/g)) {
        cited.push(m[1]);
        if (!known.includes(m[1].trim())) missing.push(`${f}: "${m[1]}"`);
      }
    }
    assert.deepEqual(missing, [], `headings: ${known.join(' | ')}`);
    assert.ok(cited.length >= 3, `citations found: ${cited.join(', ')}`);
  });
});
