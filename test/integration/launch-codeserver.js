#!/usr/bin/env node
// Runs the in-host suite (out/test/integration/index.js and its *.test.js)
// inside code-server's real extension host, with this repository loaded as
// the extension under development. Prints each test, then `N passed, N failed`;
// exits non-zero on any failure, timeout or launch error.
//   node test/integration/launch-codeserver.js           (after npm run build)
//   NKE_INHOST_GREP=pattern  runs a subset; NKE_INHOST_TIMEOUT_MS (default 480000: a hang detector, not a speed target; the suite takes ~75 s on a quiet machine)
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const cs = require('../../scripts/lib/codeServer');

const runner = path.join(cs.root, 'out', 'test', 'integration', 'index.js');
const timeoutMs = Number(process.env.NKE_INHOST_TIMEOUT_MS || 480000);

function fail(message) {
  console.error(`[inhost] ${message}`);
  console.log('0 passed, 1 failed');
  process.exitCode = 1;
}

async function main() {
  if (!fs.existsSync(runner)) return fail(`${runner} not found: run npm run build first`);
  if (!fs.existsSync(path.join(cs.root, 'dist', 'extension.js')))
    return fail('dist/extension.js not found: run npm run build first');
  const t0 = Date.now();
  const resultFile = path.join(cs.tempDir('nke-inhost-result-'), 'result.json');
  let session;
  process.once('SIGINT', () => (session ? session.close() : Promise.resolve()).then(() => process.exit(130)));
  try {
    // The workbench calls window.codeAutomationExit(code) once the test
    // runner's run() settles (0 resolved, 1 rejected).
    let exitCode;
    let onExit;
    const exited = new Promise((resolve) => (onExit = resolve));
    session = await cs.openDevWorkbench({
      prefix: 'nke-inhost-',
      testsPath: runner,
      env: { NKE_INHOST_RESULT: resultFile, NKE_INHOST_GREP: process.env.NKE_INHOST_GREP ?? '' },
      beforeGoto: async (page) => {
        await page.exposeFunction('codeAutomationExit', (code) => {
          exitCode = code;
          onExit();
        });
        // The extension host's console is forwarded to the page; keep only
        // our own lines (mocha's report), not the workbench's chatter.
        if (process.env.NKE_INHOST_VERBOSE) page.on('console', (m) => console.log(`[host] ${m.text()}`));
      },
    });
    let timer;
    const timedOut = new Promise((resolve) => (timer = setTimeout(() => resolve('timeout'), timeoutMs)));
    const how = await Promise.race([exited, timedOut]);
    clearTimeout(timer);

    if (!fs.existsSync(resultFile)) {
      return fail(
        how === 'timeout'
          ? `no result after ${timeoutMs} ms (the extension host did not run the suite; NKE_INHOST_VERBOSE=1 shows its console)`
          : `the test runner exited with ${exitCode} without writing results (it failed to load; NKE_INHOST_VERBOSE=1 shows why)`,
      );
    }
    const result = JSON.parse(fs.readFileSync(resultFile, 'utf8'));
    for (const o of result.outcomes) {
      if (o.state === 'passed') console.log(`  ✓ ${o.title} (${o.ms} ms)`);
      else console.log(`  ✗ ${o.title}\n${o.error.replace(/^/gm, '      ')}`);
    }
    console.log(
      `[inhost] ${result.files} file(s) in the extension host of code-server in ${((Date.now() - t0) / 1000).toFixed(1)} s`,
    );
    console.log(`${result.passed} passed, ${result.failed} failed`);
    process.exitCode = result.failed === 0 && exitCode === 0 ? 0 : 1;
  } catch (e) {
    fail(e.stack ?? String(e));
  } finally {
    if (session) {
      if (process.exitCode && process.env.CI) {
        session.keepTmp();
        console.error(`[inhost] code-server log kept at ${session.serverLog}`);
      }
      await session.close();
    }
    fs.rmSync(path.dirname(resultFile), { recursive: true, force: true });
  }
}

main();
