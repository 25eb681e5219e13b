// Shared by run.js (fuzz smoke in `npm test`) and fuzz.js (`npm run fuzz`):
// builds the libFuzzer targets, seeds their corpora and runs each for a time.
//
// Corpora: every run reads the committed corpus test/native/fuzz/corpus/<t>
// (small inputs earlier runs found, so a run starts where they left off)
// and writes what it finds to out/native/fuzz/corpus/<t>, never to the
// committed tree; `npm run fuzz -- --update-corpus` merges those finds into
// the committed corpus (minimized: only inputs that add coverage).
'use strict';
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const root = path.resolve(__dirname, '..', '..');
const outDir = path.join(root, 'out', 'native');
const fuzzOut = path.join(outDir, 'fuzz');
const committedCorpus = path.join(__dirname, 'fuzz', 'corpus');
// args: the response target's inputs are sequences of whole core calls, each
// followed by a full invariant check; 64 bytes hold a dozen of them (enough
// for data, deadline, reuse and a mixed response) and keep a run near 85 000
// executions a second on one core.
const targets = [
  {
    name: 'response',
    bin: 'fuzz_response',
    what: 'response validation + apply, put_data, expiry on held chunks',
    args: ['-max_len=64'],
  },
  { name: 'dq', bin: 'fuzz_dq', what: 'queue dequeue/enqueue against a forged queue', args: [] },
  {
    name: 'kev',
    bin: 'fuzz_kev',
    what: 'kev reassembler on arbitrary message sequences',
    args: ['-max_len=4096'],
  },
];
// ASan's defaults keep 256 MB of freed memory in quarantine and a 30-frame
// stack per allocation: per input that is fresh pages faulted in and an
// unwind per malloc. A small quarantine still catches a use right after free.
const sanitizerEnv = {
  ASAN_OPTIONS: ['quarantine_size_mb=16', 'malloc_context_size=8', process.env.ASAN_OPTIONS]
    .filter(Boolean)
    .join(':'),
};

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
  const committed = path.join(committedCorpus, t.name);
  const args = [
    `-max_total_time=${seconds}`,
    '-print_final_stats=1',
    '-timeout=10',
    '-rss_limit_mb=2048',
    `-artifact_prefix=${artifacts}`,
    ...t.args,
    // new finds go to the first directory only
    path.join(corpus, t.name),
    ...(fs.existsSync(committed) ? [committed] : []),
  ];
  const r = spawnSync(path.join(fuzzOut, t.bin), args, {
    encoding: 'utf8',
    maxBuffer: 64 << 20,
    env: { ...process.env, ...sanitizerEnv },
  });
  const text = `${r.stdout}${r.stderr}`;
  const execs = /stat::number_of_executed_units:\s*(\d+)/.exec(text);
  const crashed =
    /ERROR: (libFuzzer|AddressSanitizer|UndefinedBehaviorSanitizer)|runtime error:|deadly signal/.test(text);
  const ok = r.status === 0 && !crashed && execs !== null;
  const n = execs ? Number(execs[1]) : 0;
  console.log(
    `fuzz ${t.name.padEnd(9)} ${ok ? 'ok  ' : 'FAIL'} ${String(n).padStart(10)} execs in ${seconds}s  (${t.what})`,
  );
  if (!ok) {
    const lines = text
      .split('\n')
      .filter((l) => /ERROR|runtime error|SUMMARY|Test unit written|#\d+ 0x/.test(l));
    console.log(
      lines
        .slice(0, 30)
        .map((l) => `    ${l}`)
        .join('\n'),
    );
  }
  return { name: t.name, ok, execs: n };
}

/**
 * Merges out/'s finds of every target into the committed corpus, keeping
 * only inputs that add coverage (libFuzzer -merge=1). Returns false when a
 * merge failed.
 */
function updateCommittedCorpus() {
  let ok = true;
  for (const t of targets) {
    const committed = path.join(committedCorpus, t.name);
    const found = path.join(fuzzOut, 'corpus', t.name);
    fs.mkdirSync(committed, { recursive: true });
    const before = fs.readdirSync(committed).length;
    const r = spawnSync(path.join(fuzzOut, t.bin), ['-merge=1', ...t.args, committed, found], {
      encoding: 'utf8',
      maxBuffer: 64 << 20,
      env: { ...process.env, ...sanitizerEnv },
    });
    const after = fs.readdirSync(committed).length;
    console.log(
      `corpus ${t.name.padEnd(9)} ${r.status === 0 ? 'merged' : 'FAILED'}: ${before} -> ${after} files`,
    );
    if (r.status !== 0) {
      ok = false;
      process.stdout.write(`${r.stdout}${r.stderr}`.split('\n').slice(-15).join('\n'));
    }
  }
  return ok;
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

module.exports = { outDir, fuzzOut, targets, runAll, updateCommittedCorpus };
