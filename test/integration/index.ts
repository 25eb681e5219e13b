// The in-host test runner: VS Code loads this module (extensionTestsPath) in
// its extension host and calls run(). It runs every out/test/integration/
// **/*.test.js with mocha, prints a spec-like report and the summary line, and
// writes them to $NKE_INHOST_RESULT (JSON) for the launcher, because the
// extension host's stdout is not the launcher's.
import * as fs from 'node:fs';
import * as path from 'node:path';
import Mocha from 'mocha';

interface TestOutcome {
  title: string;
  state: 'passed' | 'failed';
  ms?: number;
  error?: string;
}

function findTests(dir: string, found: string[] = []): string[] {
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) findTests(p, found);
    else if (e.name.endsWith('.test.js')) found.push(p);
  }
  return found.sort();
}

export function run(): Promise<void> {
  const mocha = new Mocha({ ui: 'bdd', timeout: 20000, color: false, reporter: 'spec' });
  const files = findTests(__dirname);
  for (const f of files) mocha.addFile(f);
  const grep = process.env.NKE_INHOST_GREP;
  if (grep) mocha.grep(grep);
  const outcomes: TestOutcome[] = [];
  return new Promise((resolve, reject) => {
    const runner = mocha.run((failures) => {
      const passed = outcomes.filter((o) => o.state === 'passed').length;
      const summary = `${passed} passed, ${failures} failed`;
      console.log(summary);
      const resultFile = process.env.NKE_INHOST_RESULT;
      if (resultFile) {
        fs.writeFileSync(
          resultFile,
          JSON.stringify({ files: files.length, passed, failed: failures, outcomes }, null, 2),
        );
      }
      if (failures) reject(new Error(`${failures} in-host test(s) failed`));
      else resolve();
    });
    runner.on('pass', (t) => outcomes.push({ title: t.fullTitle(), state: 'passed', ms: t.duration }));
    runner.on('fail', (t, err: Error) =>
      outcomes.push({ title: t.fullTitle(), state: 'failed', error: err.stack ?? String(err) }),
    );
  });
}
