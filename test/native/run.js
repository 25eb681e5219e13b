#!/usr/bin/env node
// Suite `native`: builds and runs the kext/core unit tests (test_core.c,
// test_order.c, test_replay.c, and test_rule_cases.c on test/shared/rule-cases.json) twice each (plain -O2 with the default cc, and clang with
// ASan+UBSan), then a short fuzz smoke of
// every libFuzzer target (10 s each under CI=true, 5 s otherwise). Ends with
// one `N passed, N failed` line summed over all of it.
'use strict';
const { spawnSync } = require('node:child_process');
const path = require('node:path');
const fuzz = require('./fuzz-lib');

const here = __dirname;
let passed = 0;
let failed = 0;

function summaryOf(text) {
  const m = [...text.matchAll(/^(\d+) passed, (\d+) failed\s*$/gm)].pop();
  return m ? { passed: Number(m[1]), failed: Number(m[2]) } : null;
}

const build = spawnSync('make', ['-C', here, '-s', 'all'], { encoding: 'utf8' });
process.stdout.write(build.stdout);
process.stderr.write(build.stderr);
if (build.status !== 0) {
  console.log('native unit tests: build failed');
  failed += 1;
} else {
  for (const bin of [
    'test_core',
    'test_core_san',
    'test_order',
    'test_order_san',
    'test_rule_cases',
    'test_rule_cases_san',
    'test_replay',
    'test_replay_san',
  ]) {
    console.log(`--- ${bin}`);
    const r = spawnSync(path.join(fuzz.outDir, bin), [path.join(here, '..', 'shared', 'rule-cases.json')], {
      encoding: 'utf8',
    });
    process.stdout.write(r.stdout);
    process.stderr.write(r.stderr);
    const s = summaryOf(r.stdout);
    if (!s) {
      console.log(`${bin}: no summary line (exit ${r.status ?? r.signal})`);
      failed += 1;
      continue;
    }
    passed += s.passed;
    failed += s.failed;
    if (r.status !== 0 && s.failed === 0) failed += 1;
  }
}

const seconds = process.env.CI === 'true' ? 10 : 5;
const results = fuzz.runAll(seconds);
for (const r of results) {
  if (r.ok) passed += 1;
  else failed += 1;
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
