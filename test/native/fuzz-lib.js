// Shared by run.js (fuzz smoke in `npm test`) and fuzz.js (`npm run fuzz`):
// builds the libFuzzer targets, seeds their corpora and runs each for a time.
'use strict';
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const root = path.resolve(__dirname, '..', '..');
const outDir = path.join(root, 'out', 'native');
const fuzzOut = path.join(outDir, 'fuzz');
const targets = [
  { name: 'response', bin: 'fuzz_response', what: 'response validation + apply, put_data, expiry on held chunks' },
  { name: 'dq', bin: 'fuzz_dq', what: 'queue dequeue/enqueue against a forged queue' },
  { name: 'kev', bin: 'fuzz_kev', what: 'kev reassembler on arbitrary message sequences' },
];

function build() {
  const r = spawnSync('make', ['-C', path.join(__dirname, 'fuzz'), '-s', 'all'], { encoding: 'utf8' });
  process.stdout.write(r.stdout);
  process.stderr.write(r.stderr);
  return r.status === 0;
}

// Corpora live under out/ (not committed); seeds are regenerated every run so
// a changed format never leaves stale seeds behind.
function seed() {
  const corpus = path.join(fuzzOut, 'corpus');
  for (const t of targets) fs.mkdirSync(path.join(corpus, t.name), { recursive: true });
  const r = spawnSync(path.join(fuzzOut, 'gen_seeds'), [corpus], { encoding: 'utf8' });
  process.stderr.write(r.stderr);
  return r.status === 0 ? corpus : null;
}

function runOne(t, seconds, corpus) {
  const artifacts = path.join(fuzzOut, 'artifacts', t.name) + path.sep;
  fs.mkdirSync(artifacts, { recursive: true });
  const args = [
    `-max_total_time=${seconds}`,
    '-print_final_stats=1',
    '-timeout=10',
    '-rss_limit_mb=2048',
    `-artifact_prefix=${artifacts}`,
    path.join(corpus, t.name),
  ];
  const r = spawnSync(path.join(fuzzOut, t.bin), args, { encoding: 'utf8', maxBuffer: 64 << 20 });
  const text = `${r.stdout}${r.stderr}`;
  const execs = /stat::number_of_executed_units:\s*(\d+)/.exec(text);
  const crashed = /ERROR: (libFuzzer|AddressSanitizer|UndefinedBehaviorSanitizer)|runtime error:|deadly signal/.test(text);
  const ok = r.status === 0 && !crashed && execs !== null;
  const n = execs ? Number(execs[1]) : 0;
  console.log(`fuzz ${t.name.padEnd(9)} ${ok ? 'ok  ' : 'FAIL'} ${String(n).padStart(10)} execs in ${seconds}s  (${t.what})`);
  if (!ok) {
    const lines = text.split('\n').filter((l) => /ERROR|runtime error|SUMMARY|Test unit written|#\d+ 0x/.test(l));
    console.log(lines.slice(0, 30).map((l) => `    ${l}`).join('\n'));
  }
  return { name: t.name, ok, execs: n };
}

function runAll(seconds) {
  if (!build()) {
    console.log('fuzz: build failed');
    return targets.map((t) => ({ name: t.name, ok: false, execs: 0 }));
  }
  const corpus = seed();
  if (!corpus) {
    console.log('fuzz: seed generation failed');
    return targets.map((t) => ({ name: t.name, ok: false, execs: 0 }));
  }
  return targets.map((t) => runOne(t, seconds, corpus));
}

module.exports = { outDir, fuzzOut, targets, runAll };
