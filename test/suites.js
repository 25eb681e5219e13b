// Every test suite `npm test` runs, in order. Each command must end its
// output with a plain `N passed, N failed` line and exit non-zero on failure.
// `npm test -- --suite name[,name]` runs a subset.
'use strict';
const mocha = (glob, extra = []) => [
  'node',
  'node_modules/mocha/bin/mocha.js',
  '--reporter',
  'test/support/summary-reporter.js',
  ...extra,
  glob,
];

module.exports = [
  { name: 'unit', what: 'TypeScript unit tests (no VS Code)', cmd: mocha('out/test/unit/**/*.test.js') },
  {
    name: 'macos',
    what: 'the package carries the macOS addon build; compile-check kext/macos, kext/core and the macOS addon against NKE_MACOS_SDK (skipped when unset)',
    cmd: ['node', 'scripts/check-macos.js'],
  },
  {
    name: 'native',
    what: 'kext/core C unit tests (plain and ASan+UBSan) and fuzz smoke',
    cmd: ['node', 'test/native/run.js'],
  },
  {
    name: 'emu',
    what: 'Linux emulator (nke-emud + libnkeshim.so) against curl, python3 and node',
    cmd: ['sh', '-c', 'make -s -C native/emu && exec "$0" "$@"', ...mocha('test/emu/*.test.js')],
  },
  {
    name: 'helper',
    what: 'addon, helper process, protocol, model, rules, CLI (no emulator needed)',
    cmd: mocha('out/test/helper/**/*.test.js', [
      // every *emu.test.js needs the emulator: suite helper-emu runs them
      '--ignore',
      'out/test/helper/*emu.test.js',
      '--timeout',
      '60000',
    ]),
  },
  {
    name: 'helper-emu',
    what: 'helper + addon against the real emulator and real programs',
    // No --exit: the suite must leave nothing running (it once left two
    // recording servers listening, which kept mocha alive).
    cmd: mocha('out/test/helper/*emu.test.js', ['--timeout', '60000']),
  },
  // Both below install the private code-server on first use (~1 min, cached in .cache/).
  {
    name: 'inhost',
    what: 'extension tests inside the real VS Code extension host (code-server)',
    cmd: ['node', 'test/integration/launch-codeserver.js'],
  },
  {
    name: 'ui',
    what: 'UI end-to-end: code-server driven by headless Chromium (playwright-core)',
    cmd: ['node', 'test/ui/run.js'],
  },
];
