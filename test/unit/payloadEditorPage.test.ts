// The payload editor page's parts that run without a browser: the first
// screen the page carries (its JSON cannot close the data block, whatever the
// traced process is called), the codicon subset (the glyphs the editor names,
// at @vscode/codicons' code points), the text pane's minimal rewrite, and the
// editor state that enables the controls.
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { type FirstScreen, firstScreenJson } from '../../extension/src/shared/payloadEditorProtocol';
import { EditorState } from '../../webview/src/editorState';
import { changedRange } from '../../webview/src/textPane';

/** The repository (this file runs from out/test/unit, bundled, or from test/unit). */
function repoRoot(): string {
  for (let dir = __dirname; ; dir = path.dirname(dir)) {
    if (fs.existsSync(path.join(dir, 'webview/src/codicons.css'))) return dir;
    if (path.dirname(dir) === dir) throw new Error(`webview/src/codicons.css not found above ${__dirname}`);
  }
}
const root = repoRoot();
const b = (s: string) => new TextEncoder().encode(s);

describe('payload editor page: the first screen it carries', () => {
  it('a hostile process name cannot end the data block or open markup, and parses back the same', () => {
    const first: FirstScreen = {
      header: {
        id: '7',
        process: '</script><script>alert(1)</script><img src=x onerror=alert(2)>&amp;\u2028',
        pid: 1,
        direction: 'out',
        socketId: '1:1',
      },
      state: { kind: 'gone', message: 'x' },
      length: 3,
      head: Buffer.from('<b>').toString('base64'),
    };
    const json = firstScreenJson(first);
    assert.doesNotMatch(json, /[<>&\u2028\u2029]/);
    assert.deepEqual(JSON.parse(json), first);
  });
});

describe('payload editor page: codicons', () => {
  const subset = fs.readFileSync(path.join(root, 'webview/src/codicons.css'), 'utf8');
  const full = fs.readFileSync(path.join(root, 'node_modules/@vscode/codicons/dist/codicon.css'), 'utf8');
  const glyphs = (css: string) =>
    new Map(
      [...css.matchAll(/\.codicon-([a-z0-9-]+):before\s*\{\s*content:\s*["']\\([0-9a-f]+)["']/g)].map((m) => [
        m[1],
        m[2],
      ]),
    );

  it('carries every icon the editor names, at the code point @vscode/codicons gives it, and no other', () => {
    const main = fs.readFileSync(path.join(root, 'webview/src/main.ts'), 'utf8');
    const used = new Set([...main.matchAll(/button\(\s*'([a-z0-9-]+)'/g)].map((m) => m[1]));
    assert.ok(used.size >= 8, `icons found in main.ts: ${[...used]}`);
    const ours = glyphs(subset);
    const theirs = glyphs(full);
    assert.deepEqual([...ours.keys()].sort(), [...used].sort());
    for (const [name, point] of ours) assert.equal(point, theirs.get(name), name);
  });
});

describe('payload editor page: the text pane rewrites only what changed', () => {
  it('finds the changed middle of two texts', () => {
    assert.deepEqual(changedRange('GET /a HTTP', 'PUT /a HTTP'), { start: 0, deleteCount: 2, insert: 'PU' });
    assert.deepEqual(changedRange('abc', 'abc'), { start: 3, deleteCount: 0, insert: '' });
    assert.deepEqual(changedRange('aaa', 'aaaa'), { start: 3, deleteCount: 0, insert: 'a' });
    assert.deepEqual(changedRange('ab\\x00cd', 'abcd'), { start: 2, deleteCount: 4, insert: '' });
  });
});

describe('payload editor page: the state behind the controls', () => {
  it('edited only when the working bytes differ from the original; only the first screen: not edited', () => {
    const posted: unknown[] = [];
    const s = new EditorState((splice) => posted.push(splice));
    s.load(b('abc'), b('abc'));
    assert.equal(s.edited, false);
    s.typeByte(0x41);
    assert.equal(s.edited, true);
    s.moveTo(0, false);
    s.typeByte(0x61);
    assert.equal(s.edited, false, 'typed back to the original');
    s.load(b('ab'), b(''), 4096);
    assert.equal(s.complete, false);
    assert.equal(s.edited, false);
  });

  it('read-only: no edit and no insert/overwrite toggle', () => {
    const s = new EditorState(() => assert.fail('a read-only editor posted an edit'));
    s.load(b('abc'), b('abc'));
    s.readOnly = true;
    s.toggleInsertMode();
    assert.equal(s.insertMode, false);
    s.typeByte(0x41);
    s.deleteKey(false);
    assert.deepEqual([...s.bytes], [...b('abc')]);
  });
});
