#!/usr/bin/env node
// Runs the same in-host suite as launch-codeserver.js, in desktop VS Code
// (Electron) downloaded by @vscode/test-electron into .cache/vscode-test.
// For machines that can reach update.code.visualstudio.com; `npm test` uses
// the code-server launcher, which works offline.
//   node test/integration/launch-electron.js        (after npm run build)
// Linux without a display: run under xvfb-run.
'use strict';
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const root = path.resolve(__dirname, '..', '..');
const runner = path.join(root, 'out', 'test', 'integration', 'index.js');

function fail(message) {
  console.error(`[inhost-electron] ${message}`);
  console.log('0 passed, 1 failed');
  process.exit(1);
}

async function main() {
  if (!fs.existsSync(runner)) fail(`${runner} not found: run npm run build first`);
  const { downloadAndUnzipVSCode, runTests } = require('@vscode/test-electron');
  const version = process.env.NKE_VSCODE_VERSION || 'stable';
  let vscodeExecutablePath;
  try {
    // Idle timeout: an offline machine fails in seconds, not minutes.
    vscodeExecutablePath = await downloadAndUnzipVSCode({
      version,
      cachePath: path.join(root, '.cache', 'vscode-test'),
      timeout: 15000,
    });
  } catch (e) {
    fail(
      `could not download VS Code ${version} (${e.message.split('\n')[0]}).\n` +
        'This launcher needs access to update.code.visualstudio.com. Offline, run the same suite in code-server:\n' +
        '  node test/integration/launch-codeserver.js   (npm test -- --suite inhost)',
    );
  }
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'nke-inhost-electron-'));
  const workspace = path.join(tmp, 'workspace');
  fs.mkdirSync(workspace);
  const resultFile = path.join(tmp, 'result.json');
  let code = 1;
  try {
    await runTests({
      vscodeExecutablePath,
      extensionDevelopmentPath: root,
      extensionTestsPath: runner,
      extensionTestsEnv: {
        NKE_INHOST_RESULT: resultFile,
        NKE_INHOST_GREP: process.env.NKE_INHOST_GREP ?? '',
      },
      launchArgs: [
        workspace,
        '--disable-extensions',
        '--disable-workspace-trust',
        '--user-data-dir',
        path.join(tmp, 'user-data'),
      ],
    });
    code = 0;
  } catch (e) {
    console.error(`[inhost-electron] ${e.message ?? e}`);
  }
  if (!fs.existsSync(resultFile)) fail('VS Code exited without running the suite (see its output above)');
  const result = JSON.parse(fs.readFileSync(resultFile, 'utf8'));
  for (const o of result.outcomes) {
    if (o.state === 'passed') console.log(`  ✓ ${o.title} (${o.ms} ms)`);
    else console.log(`  ✗ ${o.title}\n${o.error.replace(/^/gm, '      ')}`);
  }
  fs.rmSync(tmp, { recursive: true, force: true });
  console.log(`${result.passed} passed, ${result.failed} failed`);
  process.exit(code === 0 && result.failed === 0 ? 0 : 1);
}

main();
