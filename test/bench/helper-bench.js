#!/usr/bin/env node
// Helper throughput and memory: notification records (in the ABI layout, as
// the addon hands them over in batches) through decode + live model + rule
// decisions, and the helper's RSS after 1 000 000 events with the default
// history (the model alone: the baseline of what the helper side sustains).
// Then the real path: nke-emud + a shimmed traffic generator (many small
// writes on 8 loopback connections, capture "report": every chunk one
// notification) consumed by the addon + engine, the same generator with no
// client (emulator alone), and the auto-pass verdict latency (a rewrite rule
// whose `find` never occurs: every chunk held, decided by the helper) next
// to the emulator's own hold-and-pass figure from the C test client.
//
//   node test/bench/helper-bench.js [--events N]
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
esbuild.buildSync({
  stdin: {
    contents: "export * from './extension/src/helper/engine'; export * from './test/helper/emu-support';",
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
const { FilterEngine, startEmulator, runUnder, waitFor } = require(out);
fs.rmSync(out, { force: true });

function rec(type, size, slot, flags = 0) {
  const b = Buffer.alloc(size);
  b.writeUInt16LE(type, 0);
  b.writeUInt16LE(size, 2);
  b.writeUInt32LE(flags, 4);
  b.writeUInt32LE(slot, 8);
  b.writeUInt32LE(1, 12);
  return b;
}

// One batch: 64 sockets attach, each sends 8 data chunks (half held, half
// reported), then detach: 64 * 10 = 640 records, ~56 KiB like the addon's
// 64 KiB batches.
let chunk = 1n;
function batch() {
  const parts = [];
  for (let s = 1; s <= 64; s++) {
    const a = rec(1, 72, s);
    a.writeInt32LE(1000 + s, 24);
    a[32] = 2;
    a[34] = 6;
    a.write('bench', 40);
    parts.push(a);
    for (let i = 0; i < 8; i++) {
      const d = rec(8, 96, s, i & 1);
      d.writeBigUInt64LE(chunk++, 24);
      d.writeUInt32LE(1400, 40);
      d[44] = 2;
      d.writeUInt16LE(1, 46);
      d.writeUInt16LE(s % 64, 80);
      parts.push(d);
    }
    parts.push(rec(2, 40, s));
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
  `history ${engine.model.historySize} events kept (limit ${engine.model.historyLimit}), ${engine.model.counters.historyDropped} dropped`,
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

async function realPath() {
  const SECS = Number(process.env.NKE_BENCH_SECS || 5);
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
    // Time spent in the engine per batch (decode + model + release response,
    // on the JS thread): the helper side's own capacity on real records.
    let busyNs = 0n;
    let respondNs = 0n;
    let batchCount = 0;
    const orig = eng.onRecords.bind(eng);
    eng.onRecords = (b) => {
      const t = process.hrtime.bigint();
      batchCount++;
      orig(b);
      busyNs += process.hrtime.bigint() - t;
    };
    eng.connect();
    // The respond call alone (NKE_SEL_RESPOND to the emulator, synchronous).
    const client = eng.client;
    const timedRespond = (m) => {
      const t = process.hrtime.bigint();
      client.respond(m);
      respondNs += process.hrtime.bigint() - t;
    };
    eng.client = new Proxy(client, {
      get: (t, k) => (k === 'respond' ? timedRespond : typeof t[k] === 'function' ? t[k].bind(t) : t[k]),
    });
    const c0 = eng.model.counters.dataChunks;
    const t1 = process.hrtime.bigint();
    const gen = await underEmu(emu, GEN, SECS);
    await new Promise((r) => setTimeout(r, 300)); // the last batches
    const sec = Number(process.hrtime.bigint() - t1) / 1e9 - 0.3;
    const chunks = eng.model.counters.dataChunks - c0;
    const st = eng.status().state ?? {};
    figures.reportRate = chunks / sec;
    figures.reportWrites = gen.writes / SECS;
    figures.lost = st.notificationsLost ?? 0;
    figures.poolFull = st.chunksPassedPoolFull ?? 0;
    figures.rssReal = process.memoryUsage().rss / (1024 * 1024);
    figures.chunks = chunks;
    figures.helperCapacity = chunks / (Number(busyNs) / 1e9);
    figures.busyShare = Number(busyNs) / 1e9 / sec;
    figures.respondShare = Number(respondNs) / Number(busyNs);
    figures.perBatch = chunks / Math.max(batchCount, 1);
    figures.avgChunk = (eng.model.counters.bytesIn + eng.model.counters.bytesOut) / Math.max(chunks, 1);

    // Auto-pass: every chunk held in the filter and decided by the helper.
    eng.setRules({ default: 'pass', rewrite: [{ find: 'never-in-this-stream', replace: 'x' }] });
    figures.autoLat = await underEmu(emu, PING, 2000);
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

realPath().then(
  (f) => {
    console.log(
      `emulator alone (no client): ${Math.round(f.aloneWrites)} 64-byte writes/s; with addon+helper: ${Math.round(f.reportWrites)} writes/s`,
    );
    console.log(
      `real path, addon + helper, capture report: ${Math.round(f.reportRate)} notifications/s sustained (${f.chunks} chunks, avg ${f.avgChunk.toFixed(0)} B; queue lost ${f.lost}, pool-full passed ${f.poolFull})`,
    );
    console.log(`  ratio to the model alone: ${(f.reportRate / modelRate).toFixed(3)}`);
    console.log(
      `  engine busy ${(f.busyShare * 100).toFixed(1)}% of that time: ${Math.round(f.helperCapacity)} notifications/s per busy second on these real records (${f.perBatch.toFixed(1)} data records a batch; ${(f.respondShare * 100).toFixed(0)}% of busy time inside respond())`,
    );
    console.log(`RSS after the real run: ${f.rssReal.toFixed(1)} MB`);
    console.log(
      `64-byte round trip (us): helper auto-pass (both directions held) p50 ${f.autoLat.p50.toFixed(0)} p99 ${f.autoLat.p99.toFixed(0)}; C test-client hold-and-pass p50 ${f.cLat.p50.toFixed(0)} p99 ${f.cLat.p99.toFixed(0)}`,
    );
    // Pass criteria of issue #4: the helper side sustains >= 100k/s and stays
    // under 200 MB after 1 000 000 events. The real-path rate is reported; it
    // is bounded by what the emulator produces (see the "alone" line).
    const ok = modelRate >= 100_000 && rss <= 200;
    console.log(ok ? '1 passed, 0 failed' : '0 passed, 1 failed');
    process.exit(ok ? 0 : 1);
  },
  (e) => {
    console.error(`real-path benchmark failed: ${e.stack ?? e}`);
    console.log('0 passed, 1 failed');
    process.exit(1);
  },
);
