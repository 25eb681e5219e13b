#!/usr/bin/env node
// `npm run fuzz [-- --seconds N] [--update-corpus]`: every kext/core
// libFuzzer target for N seconds (default 60), exec counts per target,
// `N passed, N failed` last. --update-corpus then merges what the runs found
// into the committed corpus (test/native/fuzz/corpus/), to be committed.
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
let failed = results.length - passed;
if (argv.includes('--update-corpus') && !fuzz.updateCommittedCorpus()) failed += 1;
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
