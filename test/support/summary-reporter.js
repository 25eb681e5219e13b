// Mocha reporter: the spec output, then the plain summary line every suite of
// this project ends with (`N passed, N failed`), which test/run.js reads.
'use strict';
const Mocha = require('mocha');

class SummaryReporter extends Mocha.reporters.Spec {
  constructor(runner, options) {
    super(runner, options);
    const failed = [];
    runner.on(Mocha.Runner.constants.EVENT_TEST_FAIL, (test) => failed.push(test.fullTitle()));
    runner.once(Mocha.Runner.constants.EVENT_RUN_END, () => {
      const s = runner.stats ?? { passes: 0, failures: 0, pending: 0 };
      // one line a failure, which test/run.js repeats in its summary
      for (const title of failed) console.log(`✗ ${title}`);
      if (s.pending) console.log(`${s.pending} pending`);
      console.log(`${s.passes} passed, ${s.failures} failed`);
    });
  }
}
module.exports = SummaryReporter;
