#!/usr/bin/env node
// Capture history cost (issue #19), all in one run so the ratios compare
// like with like:
// 1. 1 GiB over loopback TCP in 64 KiB writes (node sender under the shim,
//    node sink outside it) with a helper attached in capture mode "report"
//    (`nke watch`: the real helper, its own process), with the capture
//    history off (--capture-mib 0) and on (the default 64 MiB ring, so 1 GiB
//    laps it 16 times: oldest out), interleaved with raw runs; throughput as
//    median MiB/s, and the helper's RSS sampled every 100 ms (start, peak,
//    end) for each run;
// 2. a helper with a ring as large as the transfer: the transfer once (its
//    first fill: reported, not a target), then `nke export --pcapng` of the
//    whole 1 GiB history: the helper's RSS while it streams the file out, the
//    time and the size.
// Targets: history on >= 0.9 x history off; the helper's peak RSS with the
// history on within 32 MiB of its peak with it off; while exporting 1 GiB,
// within 64 MiB of its RSS before the export.
//
//   NKE_BENCH_BYTES (default 1 GiB), NKE_BENCH_RUNS (default 3)
'use strict';
const { spawn, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');

const root = path.resolve(__dirname, '../..');
const build = path.join(root, 'native/emu/build');
const nke = path.join(root, 'dist/nke.js');
const BYTES = Number(process.env.NKE_BENCH_BYTES || 1024 * 1024 * 1024);
const RUNS = Math.max(1, Number(process.env.NKE_BENCH_RUNS || 3));
const MIB = BYTES / 2 ** 20;
/** nke.captureHistoryMiB's default (and nke watch's). */
const DEFAULT_MIB = 64;
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nke-capture-bench-'));
fs.chmodSync(dir, 0o700);
const env = { ...process.env, NKE_EMU_DIR: path.join(dir, 'emu'), NKE_CLI_DIR: path.join(dir, 'cli') };
fs.mkdirSync(env.NKE_EMU_DIR, { mode: 0o700 });

// The sender (under the shim): BYTES in 64 KiB writes; done when the sink says it has them all.
const SENDER = `
const net = require('net');
const s = net.connect(+process.argv[1], '127.0.0.1', () => {
  const chunk = Buffer.alloc(64 * 1024, 0x61); let sent = 0; const t0 = process.hrtime.bigint();
  const pump = () => { while (sent < +process.argv[2]) { sent += chunk.length; if (!s.write(chunk)) return s.once('drain', pump); } s.end(); };
  let done = false; const fin = () => { if (done) return; done = true; console.log(JSON.stringify({ ns: Number(process.hrtime.bigint() - t0) })); s.destroy(); };
  s.on('close', fin); s.on('data', fin); pump();
});`;

function rssMiB(pid) {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) / 1024 : NaN;
  } catch {
    return NaN;
  }
}

/** Samples a process's RSS every 100 ms until stop() (returns start, peak, end). */
function sampler(pid) {
  const samples = [rssMiB(pid)];
  const t = setInterval(() => samples.push(rssMiB(pid)), 100);
  return () => {
    clearInterval(t);
    samples.push(rssMiB(pid));
    const ok = samples.filter((x) => !Number.isNaN(x));
    return { start: ok[0], peak: Math.max(...ok), end: ok[ok.length - 1] };
  };
}

function waitFor(cond, ms, what) {
  const t0 = Date.now();
  return new Promise((resolve, reject) => {
    const tick = () => {
      if (cond()) return resolve();
      if (Date.now() - t0 > ms) return reject(new Error(`timed out waiting for ${what}`));
      setTimeout(tick, 50);
    };
    tick();
  });
}

function runNode(args, extraEnv) {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, args, {
      env: { ...env, ...extraEnv },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    p.stdout.on('data', (d) => (out += d));
    p.on('exit', (code) => (code === 0 ? resolve(out) : reject(new Error(`${args[0]} exited ${code}`))));
  });
}

const shim = { LD_PRELOAD: path.join(build, 'libnkeshim.so') };

async function transfer(port, underShim) {
  const out = await runNode(['-e', SENDER, String(port), String(BYTES)], underShim ? shim : {});
  return MIB / (JSON.parse(out).ns / 1e9);
}

/** `nke watch` with the capture history at `mib` MiB, connected and serving its control socket. */
async function startHelper(mib) {
  const p = spawn(process.execPath, [nke, 'watch', '--capture-mib', String(mib)], {
    env,
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let err = '';
  p.stderr.on('data', (d) => (err += d));
  const sock = path.join(env.NKE_CLI_DIR, 'control.sock');
  await waitFor(() => fs.existsSync(sock) || p.exitCode !== null, 30000, 'nke watch to listen');
  if (p.exitCode !== null) throw new Error(`nke watch exited: ${err}`);
  return {
    pid: p.pid,
    stop: async () => {
      const gone = new Promise((r) => p.once('exit', r));
      p.kill('SIGTERM');
      await gone;
    },
  };
}

function status() {
  const r = spawnSync(process.execPath, [nke, 'status', '--json'], { env, encoding: 'utf8' });
  try {
    return JSON.parse(r.stdout).state ?? {};
  } catch {
    return {};
  }
}

const median = (xs) => {
  const v = [...xs].sort((a, b) => a - b);
  return v.length % 2 ? v[v.length >> 1] : (v[v.length / 2 - 1] + v[v.length / 2]) / 2;
};

async function main() {
  const sink = net.createServer((s) => {
    let n = 0;
    s.on('data', (d) => {
      n += d.length;
      if (n >= BYTES) s.end('k');
    });
    s.on('error', () => {});
  });
  await new Promise((r) => sink.listen(0, '127.0.0.1', r));
  const port = sink.address().port;
  const emud = spawn(path.join(build, 'nke-emud'), [], { env, stdio: ['ignore', 'ignore', 'inherit'] });
  await waitFor(() => fs.existsSync(path.join(env.NKE_EMU_DIR, 'ctl.sock')), 10000, 'nke-emud');
  const R = { raw: [], off: [], on: [], rssOff: [], rssOn: [], poolFullOff: 0, poolFullOn: 0 };
  let exportFig;
  let bigFill;
  try {
    for (let i = 0; i < RUNS; i++) {
      process.stderr.write(`[capture-bench] round ${i + 1}/${RUNS}\n`);
      R.raw.push(await transfer(port, false));
      for (const mode of ['off', 'on']) {
        const helper = await startHelper(mode === 'on' ? DEFAULT_MIB : 0);
        const st0 = status();
        const stop = sampler(helper.pid);
        R[mode].push(await transfer(port, true));
        R[mode === 'on' ? 'rssOn' : 'rssOff'].push(stop());
        const st = status();
        R[mode === 'on' ? 'poolFullOn' : 'poolFullOff'] +=
          (st.chunksPassedPoolFull ?? 0) - (st0.chunksPassedPoolFull ?? 0);
        await helper.stop();
      }
    }
    // A ring as large as the transfer: its first fill (every page new), then
    // the export of all of it.
    process.stderr.write(`[capture-bench] ${MIB} MiB ring, then its export\n`);
    const helper = await startHelper(Math.ceil(MIB));
    const stopFill = sampler(helper.pid);
    bigFill = { rate: await transfer(port, true), rss: stopFill() };
    const file = path.join(dir, 'export.pcapng');
    const before = rssMiB(helper.pid);
    const stopX = sampler(helper.pid);
    const t0 = Date.now();
    // Asynchronously: the RSS samples are taken in this process meanwhile.
    const x = spawn(process.execPath, [nke, 'export', '--pcapng', file], {
      env,
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let line = '';
    x.stderr.on('data', (d) => (line += d));
    const code = await new Promise((r) => x.on('exit', r));
    const ms = Date.now() - t0;
    const rss = stopX();
    if (code !== 0) throw new Error(`nke export failed: ${line}`);
    exportFig = { before, rss, ms, size: fs.statSync(file).size, line: line.trim() };
    fs.rmSync(file, { force: true });
    await helper.stop();
  } finally {
    emud.kill('SIGTERM');
    sink.close();
  }
  fs.rmSync(dir, { recursive: true, force: true });

  const f = (x) => x.toFixed(0);
  const rssLine = (label, xs) =>
    `  helper RSS, history ${label}: ${xs.map((x) => `${f(x.start)} -> peak ${f(x.peak)} -> ${f(x.end)}`).join('; ')} MiB`;
  const raw = median(R.raw);
  const off = median(R.off);
  const on = median(R.on);
  console.log(
    `capture history: ${MIB} MiB loopback TCP in 64 KiB writes, node sender under the shim, ${os.cpus().length} CPUs, ${RUNS} interleaved runs; capture mode report, helper = nke watch`,
  );
  console.log(`  raw                 median ${f(raw)} MiB/s  runs [${R.raw.map(f).join(' ')}]`);
  console.log(
    `  history off         median ${f(off)} MiB/s  runs [${R.off.map(f).join(' ')}]  ${(off / raw).toFixed(2)} x raw; passed pool-full ${R.poolFullOff}`,
  );
  console.log(
    `  history on (${DEFAULT_MIB} MiB) median ${f(on)} MiB/s  runs [${R.on.map(f).join(' ')}]  ${(on / raw).toFixed(2)} x raw, ${(on / off).toFixed(2)} x history off; passed pool-full ${R.poolFullOn} (gaps in the history)`,
  );
  console.log(
    `  first fill of a ${Math.ceil(MIB)} MiB ring: ${f(bigFill.rate)} MiB/s (${(bigFill.rate / off).toFixed(2)} x history off: every page of the file is new); helper RSS ${f(bigFill.rss.start)} -> peak ${f(bigFill.rss.peak)} MiB`,
  );
  console.log(rssLine('off', R.rssOff));
  console.log(rssLine('on', R.rssOn));
  console.log(
    `export of the ${MIB} MiB history: ${exportFig.line.replace(/^nke: /, '')}; ${(exportFig.ms / 1000).toFixed(1)} s, ` +
      `${(exportFig.size / 2 ** 20).toFixed(0)} MiB file; helper RSS ${f(exportFig.before)} before, peak ${f(exportFig.rss.peak)} while exporting`,
  );
  const peakOff = Math.max(...R.rssOff.map((x) => x.peak));
  const peakOn = Math.max(...R.rssOn.map((x) => x.peak));
  const checks = [
    ['report mode with the history on >= 0.9 x history off', on >= 0.9 * off],
    [
      `helper peak RSS with the history on within 32 MiB of off (${f(peakOn)} vs ${f(peakOff)})`,
      peakOn <= peakOff + 32,
    ],
    [
      `helper RSS while exporting ${MIB} MiB within 64 MiB of before (${f(exportFig.rss.peak)} vs ${f(exportFig.before)})`,
      exportFig.rss.peak <= exportFig.before + 64,
    ],
  ];
  for (const [name, ok] of checks) console.log(`${ok ? 'ok' : 'NOT MET'}: ${name}`);
  const passed = checks.filter((c) => c[1]).length;
  console.log(`${passed} passed, ${checks.length - passed} failed`);
  process.exit(passed === checks.length ? 0 : 1);
}

main().catch((e) => {
  console.error(`capture benchmark failed: ${e.stack ?? e}`);
  fs.rmSync(dir, { recursive: true, force: true });
  console.log('0 passed, 1 failed');
  process.exit(1);
});
