#!/usr/bin/env node
// Helper throughput and memory: notification records (in the ABI layout, as
// the addon hands them over in batches) through decode + live model + rule
// decisions, and the helper's RSS after 1 000 000 events with the default
// history. The addon leg (emulator -> queue -> reader thread -> JS) needs a
// running nke-emud and is reported separately by the emulator's benchmark.
//
//   node test/bench/helper-bench.js [--events N]
'use strict';
const esbuild = require('esbuild');
const os = require('node:os');
const path = require('node:path');
const fs = require('node:fs');

const root = path.resolve(__dirname, '../..');
const argv = process.argv.slice(2);
const events = argv.includes('--events') ? Number(argv[argv.indexOf('--events') + 1]) : 1_000_000;

// Bundle the engine for this run (TypeScript sources, no addon needed: the
// records are fed where the addon's reader would deliver them).
const out = path.join(os.tmpdir(), `nke-helper-bench-${process.pid}.js`);
esbuild.buildSync({
  entryPoints: [path.join(root, 'extension/src/helper/engine.ts')],
  bundle: true,
  platform: 'node',
  format: 'cjs',
  outfile: out,
  external: ['*.node'],
  logLevel: 'error',
});
const { FilterEngine } = require(out);
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
console.log(`helper model: ${n} notifications in ${ms.toFixed(0)} ms = ${Math.round((n / ms) * 1000)} /s`);
console.log(
  `history ${engine.model.historySize} events kept (limit ${engine.model.historyLimit}), ${engine.model.counters.historyDropped} dropped`,
);
console.log(`RSS after ${n} events: ${rss.toFixed(1)} MB`);
const ok = (n / ms) * 1000 >= 100_000 && rss <= 200;
console.log(ok ? '1 passed, 0 failed' : '0 passed, 1 failed');
process.exit(ok ? 0 : 1);
