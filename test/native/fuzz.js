#!/usr/bin/env node
// `npm run fuzz [-- --seconds N]`: every kext/core libFuzzer target for N
// seconds (default 60), exec counts per target, `N passed, N failed` last.
'use strict';
const fuzz = require('./fuzz-lib');

const argv = process.argv.slice(2);
let seconds = 60;
const i = argv.indexOf('--seconds');
if (i >= 0) {
  seconds = Number(argv[i + 1]);
  if (!Number.isInteger(seconds) || seconds < 1) {
    console.error(`--seconds wants a whole number of seconds >= 1, got ${argv[i + 1]}`);
    process.exit(2);
  }
}
const results = fuzz.runAll(seconds);
const passed = results.filter((r) => r.ok).length;
console.log(`${passed} passed, ${results.length - passed} failed`);
process.exit(passed === results.length ? 0 : 1);
