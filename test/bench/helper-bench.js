#!/usr/bin/env node
// Helper throughput and memory (issue #4):
// 1. the model alone: notification records (built with abi.encodeNotification,
//    in batches as the addon hands them over) through decode + live model +
//    rule decisions, and the helper's RSS after 1 000 000 events with the
//    default history;
// 2. addon + helper, nke-emud fed by the link generator (test/bench/linkgen.c:
//    speaks nke-emud's shim link as libnkeshim's relays do, on several links
//    and threads; nke-emud, kext/core, the shared queue and buffers, the addon
//    and the engine are the real thing): the notifications the ENGINE put
//    into its model per second, with the filter's queue-overflow and
//    pool-full counters over the run (as fast as the windows allow, then
//    paced at the target rate). THE >= 100 000/s TARGET APPLIES TO THIS ONE;
// 3. a real program under the shim (8 loopback connections of 64-byte
//    writes): bounded by the emulator's relay (which on a Mac is the kernel);
// 4. the auto-pass verdict latency (a rewrite rule whose `find` never occurs:
//    every chunk held, decided by the helper) with its per-hop split, next to
//    the emulator's own hold-and-pass figure from the C test client.
//
//   node test/bench/helper-bench.js [--events N]
//   NKE_BENCH_SECS (default 5): seconds per throughput run;
//   NKE_BENCH_LINKS / NKE_BENCH_THREADS (default 8 / 2): the generator's links and threads.
'use strict';
const esbuild = require('esbuild');
const path = require('node:path');
const fs = require('node:fs');

const root = path.resolve(__dirname, '../..');
const argv = process.argv.slice(2);
const events = argv.includes('--events') ? Number(argv[argv.indexOf('--events') + 1]) : 1_000_000;

// Bundle the engine for this run (TypeScript sources, no addon needed: the
// records are fed where the addon's reader would deliver them).
// Three levels below the root, where emu-support expects to sit (out/test/helper).
const out = path.join(root, 'out/test/bench', `helper-bench-${process.pid}.js`);
// The ABI tables the sources import are generated from the C headers.
const gen = require('node:child_process').spawnSync(
  process.execPath,
  [path.join(root, 'scripts/gen-abi.mjs')],
  {
    stdio: 'inherit',
  },
);
if (gen.status !== 0) process.exit(1);
esbuild.buildSync({
  stdin: {
    contents:
      "export * from './extension/src/helper/engine'; export * from './test/helper/emu-support';" +
      " export { decodeNotification, NKE_DATA_F_HELD, NKE_AF_INET, Direction } from './extension/src/shared/abi';" +
      " export { encodeNotification } from './test/shared/abiTestCodecs';",
    resolveDir: root,
    loader: 'ts',
  },
  bundle: true,
  platform: 'node',
  format: 'cjs',
  outfile: out,
  external: ['*.node'],
  logLevel: 'error',
});
process.env.NKE_ADDON ??= path.join(root, 'native/addon/build/Release/nke_addon.node');
const {
  FilterEngine,
  startEmulator,
  runUnder,
  waitFor,
  encodeNotification,
  decodeNotification,
  NKE_DATA_F_HELD,
  NKE_AF_INET,
  Direction,
} = require(out);
fs.rmSync(out, { force: true });

// One batch: 64 sockets attach, each sends 8 data chunks (half held, half
// reported), then detach: 64 * 10 = 640 records, ~56 KiB like the addon's
// 64 KiB batches. Layouts from shared/abi.ts (generated from the C headers).
let chunk = 1n;
const hdr = (slot, flags = 0) => ({ type: 0, size: 0, flags, sock: { slot, gen: 1 }, time_ns: 0n });
const noAddr = { family: 0, port: 0, scope_id: 0, addr: new Uint8Array(16) };
function batch() {
  const parts = [];
  for (let s = 1; s <= 64; s++) {
    parts.push(
      encodeNotification({
        kind: 'attach',
        hdr: hdr(s),
        pid: 1000 + s,
        uid: 0,
        family: NKE_AF_INET,
        type: 1,
        protocol: 6,
        comm: 'bench',
      }),
    );
    for (let i = 0; i < 8; i++) {
      parts.push(
        encodeNotification({
          kind: 'data',
          hdr: hdr(s, i & 1),
          chunk_id: chunk++,
          stream_offset: 0n,
          size: 1400,
          direction: Direction.Out,
          nbuffers: 1,
          deadline_ms: 0,
          // the first config the engine sends is tag 1; no rule of it held these
          capture_tag: 1,
          rule: 0xffff,
          addr: noAddr,
          buffers: [s % 64, 0, 0, 0, 0, 0, 0, 0],
        }),
      );
    }
    parts.push(encodeNotification({ kind: 'detach', hdr: hdr(s), bytes_in: 0n, bytes_out: 0n }));
  }
  return Buffer.concat(parts);
}

const engine = new FilterEngine({});
engine.setRules({ default: 'report', intercept: [{ action: 'hold', remotePort: 9 }] });
const perBatch = 640;
const batches = Math.ceil(events / perBatch);
const pre = [];
for (let i = 0; i < 16; i++) pre.push(batch());
global.gc?.();
const t0 = process.hrtime.bigint();
for (let i = 0; i < batches; i++) {
  engine.onRecords(pre[i % pre.length]);
  if (i % 50 === 0) engine.flushUpdates(); // ~30/s in real time; here proportionally
}
const ms = Number(process.hrtime.bigint() - t0) / 1e6;
const n = batches * perBatch;
const rss = process.memoryUsage().rss / (1024 * 1024);
const modelRate = Math.round((n / ms) * 1000);
console.log(`helper model alone: ${n} notifications in ${ms.toFixed(0)} ms = ${modelRate} /s`);
console.log(
  `event ring ${engine.model.eventRingSize} events kept (limit ${engine.model.eventRingLimit}), ${engine.model.eventsDropped} dropped`,
);
console.log(`RSS after ${n} events: ${rss.toFixed(1)} MB`);
engine.dispose();

// The traffic generator, run under the shim: 8 connections to its own sink,
// each writing 64-byte messages as fast as the socket takes them for SECS
// seconds; prints the writes done. Both ends are filtered (out + in chunks).
const GEN = `
const net = require('net'); const secs = +process.argv[1]; const msg = Buffer.alloc(64, 0x61);
let writes = 0, bytesIn = 0; const end = Date.now() + secs * 1000;
const srv = net.createServer((s) => s.on('data', (d) => (bytesIn += d.length)));
srv.listen(0, '127.0.0.1', () => {
  let open = 8;
  for (let i = 0; i < 8; i++) {
    const c = net.connect(srv.address().port, '127.0.0.1', () => {
      c.setNoDelay(true);
      const pump = () => { while (Date.now() < end) { writes++; if (!c.write(msg)) return c.once('drain', pump); if (writes % 256 === 0) return setImmediate(pump); } c.end(); };
      pump();
    });
    c.on('close', () => { if (--open === 0) { srv.close(); console.log(JSON.stringify({ writes, bytesIn })); } });
  }
});`;
const PING = `
const net = require('net'); const n = +process.argv[1]; const msg = Buffer.alloc(64, 0x62);
const srv = net.createServer((s) => s.on('data', (d) => s.write(d)));
srv.listen(0, '127.0.0.1', () => {
  const c = net.connect(srv.address().port, '127.0.0.1', () => { c.setNoDelay(true); one(); });
  const lat = []; let t, got = 0;
  c.on('data', (d) => { got += d.length; if (got < 64) return; got = 0; lat.push(Number(process.hrtime.bigint() - t) / 1000); one(); });
  function one() { if (lat.length === n) { lat.sort((a, b) => a - b); console.log(JSON.stringify({ p50: lat[lat.length >> 1], p99: lat[Math.floor(lat.length * 0.99)] })); c.end(); srv.close(); return; } t = process.hrtime.bigint(); c.write(msg); }
});`;

async function underEmu(emu, code, arg) {
  const r = await runUnder(emu, [process.execPath, '-e', code, String(arg)]).done;
  if (r.code !== 0) throw new Error(`generator exited ${r.code}: ${r.stderr}`);
  return JSON.parse(r.stdout.trim().split('\n').pop());
}

const pct = (a, q) => {
  if (a.length === 0) return NaN;
  const b = [...a].sort((x, y) => x - y);
  return b[Math.min(b.length - 1, Math.floor(b.length * q))];
};

// The link generator (bench-only make target of native/emu).
function buildLinkgen() {
  const { spawnSync } = require('node:child_process');
  const r = spawnSync('make', ['-s', '-C', path.join(root, 'native/emu'), 'build/linkgen'], {
    encoding: 'utf8',
  });
  if (r.status !== 0) throw new Error(`building linkgen failed: ${r.stderr || r.stdout}`);
  return path.join(root, 'native/emu/build/linkgen');
}

// Wraps the engine's batch entry: busy time on the JS thread and batches.
function instrument(eng) {
  const m = { busyNs: 0n, batches: 0 };
  const orig = eng.onRecords.bind(eng);
  eng.onRecords = (b, wakeNs) => {
    const t = process.hrtime.bigint();
    m.batches++;
    orig(b, wakeNs);
    m.busyNs += process.hrtime.bigint() - t;
  };
  return m;
}

// One run of the link generator against the connected engine: the count is
// the data notifications the engine put into its model (not the sends).
async function linkgenRun(bin, emu, eng, meter, secs, rate) {
  const { spawn } = require('node:child_process');
  const st0 = eng.status().state ?? {};
  const c0 = eng.model.counters.dataChunks;
  const b0 = meter.busyNs;
  const n0 = meter.batches;
  const args = ['--dir', emu.dir, '--secs', String(secs), '--size', '64'];
  args.push('--links', process.env.NKE_BENCH_LINKS || '8', '--threads', process.env.NKE_BENCH_THREADS || '2');
  if (rate) args.push('--rate', String(rate));
  const t0 = process.hrtime.bigint();
  const g = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let o = '';
  let e = '';
  g.stdout.on('data', (d) => (o += d));
  g.stderr.on('data', (d) => (e += d));
  const code = await new Promise((r) => g.on('exit', r));
  if (code !== 0) throw new Error(`linkgen exited ${code}: ${e}`);
  const gen = JSON.parse(o.trim());
  await new Promise((r) => setTimeout(r, 200)); // the last batches reach the engine
  const st = eng.status().state ?? {};
  const n = eng.model.counters.dataChunks - c0;
  return {
    rate: n / gen.secs,
    n,
    sent: gen.sent,
    verdicts: gen.verdicts,
    lost: (st.notificationsLost ?? 0) - (st0.notificationsLost ?? 0),
    poolFull: (st.chunksPassedPoolFull ?? 0) - (st0.chunksPassedPoolFull ?? 0),
    busyShare: Number(meter.busyNs - b0) / 1e9 / gen.secs,
    perBatch: n / Math.max(meter.batches - n0, 1),
  };
}

async function realPath() {
  const SECS = Number(process.env.NKE_BENCH_SECS || 5);
  const linkgen = buildLinkgen();
  const emu = await startEmulator();
  process.env.NKE_EMU_DIR = emu.dir;
  const figures = {};
  try {
    // Emulator alone (no user client): what the shim relays.
    const alone = await underEmu(emu, GEN, SECS);
    figures.aloneWrites = alone.writes / SECS;

    // Addon + helper consuming every chunk as a report notification.
    const eng = new FilterEngine({});
    eng.setRules({ default: 'report' });
    const meter = instrument(eng);
    eng.connect();

    // Addon + helper fed by the link generator: unpaced, then paced at the target.
    figures.gen = await linkgenRun(linkgen, emu, eng, meter, SECS, 0);
    figures.genPaced = await linkgenRun(linkgen, emu, eng, meter, SECS, TARGET);

    // A real program under the shim.
    const st0 = eng.status().state ?? {};
    const c0 = eng.model.counters.dataChunks;
    const b0 = meter.busyNs;
    const t1 = process.hrtime.bigint();
    const gen = await underEmu(emu, GEN, SECS);
    await new Promise((r) => setTimeout(r, 300)); // the last batches
    const sec = Number(process.hrtime.bigint() - t1) / 1e9 - 0.3;
    const chunks = eng.model.counters.dataChunks - c0;
    const st = eng.status().state ?? {};
    figures.reportRate = chunks / sec;
    figures.reportWrites = gen.writes / SECS;
    figures.lost = (st.notificationsLost ?? 0) - (st0.notificationsLost ?? 0);
    figures.poolFull = (st.chunksPassedPoolFull ?? 0) - (st0.chunksPassedPoolFull ?? 0);
    figures.rssReal = process.memoryUsage().rss / (1024 * 1024);
    figures.chunks = chunks;
    figures.busyShare = Number(meter.busyNs - b0) / 1e9 / sec;
    figures.helperCapacity = chunks / (Number(meter.busyNs - b0) / 1e9);

    // Auto-pass: every chunk held in the filter and decided by the helper.
    // Per hop, for each batch holding chunks: nke-emud took the data
    // (record's time_ns) -> the addon's reader woke -> the JS callback began
    // -> respond() returned (nke-emud has then applied the verdict and sent
    // it to the shim: respond is a synchronous call into its loop).
    eng.setRules({ default: 'pass', rewrite: [{ find: 'never-in-this-stream', replace: 'x' }] });
    const hops = { toWake: [], toJs: [], toRespond: [], respond: [] };
    const inner = eng.onRecords;
    const client = eng.client;
    let respondAt = 0n;
    let respondNs = 0n;
    const timedRespond = (m) => {
      const t = process.hrtime.bigint();
      respondAt = t;
      client.respond(m);
      respondNs = process.hrtime.bigint() - t;
    };
    // The addon's methods are read-only: the engine gets a proxy of its client.
    eng.client = new Proxy(client, {
      get: (t, k) => (k === 'respond' ? timedRespond : typeof t[k] === 'function' ? t[k].bind(t) : t[k]),
    });
    eng.onRecords = (b, wakeNs) => {
      const js = process.hrtime.bigint();
      respondAt = 0n;
      inner(b, wakeNs);
      // After the engine's work, so this decoding is not counted in its hops.
      let held = 0n;
      for (let off = 0; off + 24 <= b.length;) {
        const r = decodeNotification(b, off);
        if (!r.ok) break;
        if (r.value.kind === 'data' && r.value.hdr.flags & NKE_DATA_F_HELD && !held)
          held = r.value.hdr.time_ns;
        off += r.value.hdr.size;
      }
      if (!held || !wakeNs || !respondAt) return;
      const wake = BigInt(Math.round(wakeNs));
      hops.toWake.push(Number(wake - held) / 1000);
      hops.toJs.push(Number(js - wake) / 1000);
      hops.toRespond.push(Number(respondAt - js) / 1000);
      hops.respond.push(Number(respondNs) / 1000);
    };
    figures.autoLat = await underEmu(emu, PING, 2000);
    figures.hops = Object.fromEntries(
      Object.entries(hops).map(([k, a]) => [k, { p50: pct(a, 0.5), p99: pct(a, 0.99), n: a.length }]),
    );
    eng.dispose();

    // The emulator's own hold-and-pass (C test client, both directions).
    const { spawn } = require('node:child_process');
    const tc = spawn(
      path.join(root, 'native/emu/build/test-client'),
      ['--dir', emu.dir, '--out', 'pass', '--in', 'pass'],
      {
        stdio: ['ignore', 'pipe', 'inherit'],
      },
    );
    let tcOut = '';
    tc.stdout.on('data', (d) => (tcOut += d));
    await waitFor(() => tcOut.includes('ready'), 10000, 'test-client ready');
    figures.cLat = await underEmu(emu, PING, 2000);
    tc.kill('SIGTERM');
    await new Promise((r) => tc.once('exit', r));
  } finally {
    await emu.stop();
  }
  return figures;
}

const TARGET = 100_000;
const r0 = (x) => Math.round(x);
function genLine(label, g) {
  return (
    `${label}: ${r0(g.rate)} notif/s processed by the engine (${g.n} in its model; generator sent ${g.sent}, ` +
    `got ${g.verdicts} verdicts; queue overflow (lost) ${g.lost}, passed pool-full ${g.poolFull}; ` +
    `engine busy ${(g.busyShare * 100).toFixed(0)}%, ${g.perBatch.toFixed(1)} data records a batch)`
  );
}

realPath().then(
  (f) => {
    const g = f.gen;
    const p = f.genPaced;
    const lossless = (x) => x.lost === 0 && x.poolFull === 0;
    console.log(`helper model alone: ${modelRate} notif/s`);
    console.log(genLine('addon + helper, nke-emud fed by the link generator', g));
    console.log(genLine(`  same, generator paced at ${TARGET}/s`, p));
    console.log(
      `real program under the shim: ${r0(f.reportRate)} notif/s (${f.chunks} chunks; ${r0(f.reportWrites)} 64-byte writes/s; ` +
        `emulator alone, no client: ${r0(f.aloneWrites)} writes/s; queue lost ${f.lost}, pool-full passed ${f.poolFull}; ` +
        `engine busy ${(f.busyShare * 100).toFixed(1)}%, ${r0(f.helperCapacity)} notif per busy second)`,
    );
    console.log(
      `the >= ${TARGET}/s target applies to the link-generator figure (addon + helper); the real-program figure is ` +
        `bounded by the emulator's relay (on a Mac, the kernel)`,
    );
    console.log(`RSS after the real runs: ${f.rssReal.toFixed(1)} MB`);
    console.log(
      `64-byte round trip (us): helper auto-pass (both directions held) p50 ${r0(f.autoLat.p50)} p99 ${r0(f.autoLat.p99)}; ` +
        `C test-client hold-and-pass p50 ${r0(f.cLat.p50)} p99 ${r0(f.cLat.p99)}`,
    );
    const h = f.hops;
    const hop = (x) => `p50 ${r0(x.p50)} p99 ${r0(x.p99)}`;
    console.log(
      `  helper hops per held batch (us, ${h.toWake.n} batches): nke-emud took the data -> reader woke ${hop(h.toWake)}; ` +
        `-> JS callback ${hop(h.toJs)}; -> respond() called ${hop(h.toRespond)}; respond() itself ${hop(h.respond)}`,
    );
    // Targets of issue #4: the helper side sustains >= 100k/s and stays under
    // 200 MB after 1 000 000 events; addon + helper on the link generator at
    // >= 100k/s. Chunks passed pool-full on the way are not a target (the
    // filter passes them by design when the client's releases lag); they are
    // reported, and whether a run had none.
    const checks = [
      ['model alone >= 100k/s', modelRate >= TARGET],
      ['RSS <= 200 MB after 1M events', rss <= 200],
      [`addon + helper on the link generator >= ${TARGET}/s`, g.rate >= TARGET],
    ];
    console.log(
      `note: nothing lost on the way (queue overflow and pool-full 0, unpaced or paced at ${TARGET}/s): ` +
        `${lossless(g) || lossless(p) ? 'yes' : 'no'} (not a target)`,
    );
    for (const [name, ok] of checks) console.log(`${ok ? 'ok' : 'NOT MET'}: ${name}`);
    const passed = checks.filter((c) => c[1]).length;
    console.log(`${passed} passed, ${checks.length - passed} failed`);
    process.exit(passed === checks.length ? 0 : 1);
  },
  (e) => {
    console.error(`real-path benchmark failed: ${e.stack ?? e}`);
    console.log('0 passed, 1 failed');
    process.exit(1);
  },
);
