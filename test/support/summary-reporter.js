// Mocha reporter: the spec output, then the plain summary line every suite of
// this project ends with (`N passed, N failed`), which test/run.js reads.
'use strict';
const Mocha = require('mocha');

class SummaryReporter extends Mocha.reporters.Spec {
  constructor(runner, options) {
    super(runner, options);
    runner.once(Mocha.Runner.constants.EVENT_RUN_END, () => {
      const s = runner.stats ?? { passes: 0, failures: 0, pending: 0 };
      if (s.pending) console.log(`${s.pending} pending`);
      console.log(`${s.passes} passed, ${s.failures} failed`);
    });
  }
}
module.exports = SummaryReporter;
