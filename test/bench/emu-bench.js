#!/usr/bin/env node
// Emulator cost on loopback TCP: bulk throughput raw / under the shim with no
// user client / under the shim with a pass-all client (every chunk held and
// answered), and the hold-and-pass round trip (p50/p99) of 64-byte ping-pongs.
// For comparison, the same transfer through two user-space TCP relays:
// socat, and mitmdump (mitmproxy) in reverse mode with raw TCP passthrough
// (--tcp-hosts '.*'); each is skipped, with a note, when not installed
// (bash scripts/setup-system.sh bench installs both).
// UDP: datagrams/s of 64-byte sendto calls from a python3 sender, raw and
// under the shim (no client; all held + pass). The shim queues at most 32
// datagrams per socket, so the send loop's rate is the verdicts' rate to
// within 32 datagrams (NKE_BENCH_DGRAMS per run, default 20000).
// NKE_BENCH_BYTES sets the bulk size (default 1 GiB), NKE_BENCH_RUNS the
// number of interleaved runs per configuration (default 3; median and best
// are printed, the ratio uses medians). The machine's CPU count
// is printed: the shim's relay thread is a third busy thread next to the
// sender and the sink, so on 2 CPUs it competes with them.
'use strict';
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');

const build = path.resolve(__dirname, '../../native/emu/build');
const BYTES = Number(process.env.NKE_BENCH_BYTES || 1024 * 1024 * 1024);
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nke-emu-bench-'));
const rt = path.join(dir, 'rt');

function waitReady(p, re) {
  return new Promise((res, rej) => {
    let b = '';
    p.stdout.on('data', (d) => {
      b += d;
      if (re.test(b)) res();
    });
    p.on('exit', () => rej(new Error(`${p.spawnfile} exited early`)));
  });
}

// The program measured: sends BYTES to a sink (or runs ping-pongs) and prints a JSON result.
const SENDER = `
const net = require('net');
const [mode, port, n] = process.argv.slice(1);
const s = net.connect(+port, '127.0.0.1', () => {
  if (mode === 'bulk') {
    const chunk = Buffer.alloc(64 * 1024, 0x61); let sent = 0; const t0 = process.hrtime.bigint();
    const pump = () => { while (sent < +n) { sent += chunk.length; if (!s.write(chunk)) return s.once('drain', pump); } s.end(); };
    // Done when the sink says it has every byte (its 'k'), or at close:
    // relays need not pass a half-close on (mitmdump does not).
    let done = false; const fin = () => { if (done) return; done = true; console.log(JSON.stringify({ ns: Number(process.hrtime.bigint() - t0) })); s.destroy(); };
    s.on('close', fin); s.on('data', fin); pump();
  } else {
    const lat = []; let t; const msg = Buffer.alloc(64, 0x62);
    const one = () => { if (lat.length === +n) { s.end(); lat.sort((a, b) => a - b); console.log(JSON.stringify({ p50: lat[lat.length >> 1], p99: lat[Math.floor(lat.length * 0.99)] })); return; } t = process.hrtime.bigint(); s.write(msg); };
    let got = 0; s.on('data', (d) => { got += d.length; if (got >= 64) { got -= 64; lat.push(Number(process.hrtime.bigint() - t) / 1e3); one(); } }); one();
  }
});`;

function which(cmd) {
  return (process.env.PATH || '').split(':').some((d) => {
    try {
      fs.accessSync(path.join(d, cmd), fs.constants.X_OK);
      return true;
    } catch {
      return false;
    }
  });
}

/** Resolves once something accepts on 127.0.0.1:port (relays print no reliable ready line). */
async function waitPort(port, p, ms = 30000) {
  const t0 = Date.now();
  for (;;) {
    if (p.exitCode !== null) throw new Error(`${p.spawnfile} exited (${p.exitCode})`);
    const ok = await new Promise((r) => {
      const s = net.connect(port, '127.0.0.1', () => {
        s.destroy();
        r(true);
      });
      s.on('error', () => r(false));
    });
    if (ok) return;
    if (Date.now() - t0 > ms) throw new Error(`${p.spawnfile}: port ${port} not open after ${ms} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function freePort() {
  const s = net.createServer();
  await new Promise((r) => s.listen(0, '127.0.0.1', r));
  const { port } = s.address();
  await new Promise((r) => s.close(r));
  return port;
}

/** Runs the bulk transfer through a relay program listening on a free port and forwarding to `target`. */
async function viaRelay(name, argsFor, target) {
  if (!which(name)) return { skipped: `${name} not installed` };
  const port = await freePort();
  const p = spawn(name, argsFor(port, target), { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  p.stderr.on('data', (d) => (err += d));
  try {
    await waitPort(port, p);
    // the probe connection of waitPort may still be closing inside the relay; harmless
    process.stderr.write(`[bench] ${name}...\n`);
    const timeout = new Promise((_, rej) =>
      setTimeout(() => rej(new Error('transfer timed out after 120 s')), 120000).unref(),
    );
    return await Promise.race([runSender({}, 'bulk', port, BYTES), timeout]);
  } catch (e) {
    return { skipped: `${name}: ${e.message} ${err.slice(0, 200)}` };
  } finally {
    p.kill('SIGKILL');
  }
}

/** The C sender (test/bench/bulk.c): same transfer without node in the measured program or the sink. */
function runC(bin, env, port, n) {
  return new Promise((res, rej) => {
    const p = spawn(bin, ['send', String(port), String(n)], {
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    p.stdout.on('data', (d) => (out += d));
    p.on('exit', (code) => (code === 0 ? res(JSON.parse(out)) : rej(new Error(`bulk send exit ${code}`))));
  });
}

// The UDP sender: n sendto calls of 64 bytes, prints {"ns": ...}.
const UDP_SENDER = `
import json, socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
dst, m, n = ('127.0.0.1', int(sys.argv[1])), b'u' * 64, int(sys.argv[2])
t0 = time.perf_counter_ns()
for i in range(n):
    s.sendto(m, dst)
print(json.dumps({'ns': time.perf_counter_ns() - t0}))
`;
const DGRAMS = Number(process.env.NKE_BENCH_DGRAMS || 20000);
function runUdp(env, port) {
  return new Promise((res, rej) => {
    const p = spawn('python3', ['-c', UDP_SENDER, String(port), String(DGRAMS)], {
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    p.stdout.on('data', (d) => (out += d));
    p.on('exit', (code) =>
      code === 0 ? res(DGRAMS / (JSON.parse(out).ns / 1e9)) : rej(new Error(`udp sender exit ${code}`)),
    );
  });
}

function runSender(env, mode, port, n) {
  return new Promise((res, rej) => {
    const p = spawn('node', ['-e', SENDER, mode, String(port), String(n)], {
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    p.stdout.on('data', (d) => (out += d));
    p.on('exit', (code) => (code === 0 ? res(JSON.parse(out)) : rej(new Error(`sender exit ${code}`))));
  });
}

const RUNS = Math.max(1, Number(process.env.NKE_BENCH_RUNS || 3));
const median = (xs) => {
  const v = [...xs].sort((a, b) => a - b);
  return v.length % 2 ? v[v.length >> 1] : (v[v.length / 2 - 1] + v[v.length / 2]) / 2;
};
const pct = (xs, p) => {
  const v = [...xs].sort((a, b) => a - b);
  return v[Math.min(v.length - 1, Math.floor(v.length * p))];
};

async function main() {
  const sink = net.createServer((s) => {
    let n = 0;
    s.on('data', (d) => {
      n += d.length;
      if (n >= BYTES) s.end('k');
    });
    s.on('end', () => s.end());
    s.on('error', () => {});
  });
  const echo = net.createServer((s) => s.pipe(s));
  await new Promise((r) => sink.listen(0, '127.0.0.1', r));
  await new Promise((r) => echo.listen(0, '127.0.0.1', r));
  // UDP sink: reads and discards (what it misses the kernel drops; the
  // sender's rate is what is measured).
  const usink = require('node:dgram').createSocket('udp4');
  usink.on('message', () => {});
  await new Promise((r) => usink.bind(0, '127.0.0.1', r));
  const emud = spawn(path.join(build, 'nke-emud'), [], {
    env: { ...process.env, NKE_EMU_DIR: rt },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  await waitReady(emud, /ready/);
  const shim = { LD_PRELOAD: path.join(build, 'libnkeshim.so'), NKE_EMU_DIR: rt };
  const mb = BYTES / (1 << 20);
  const rate = (r) => mb / (r.ns / 1e9);
  const sinkPort = sink.address().port;
  // The C pair: compiled here (cc is a build dependency of the emulator).
  const bulk = path.join(dir, 'bulk');
  const cc = require('node:child_process').spawnSync(
    'cc',
    ['-O2', '-o', bulk, path.join(__dirname, 'bulk.c')],
    { stdio: 'inherit' },
  );
  let csink = null;
  let cPort = 0;
  if (cc.status === 0) {
    csink = spawn(bulk, ['sink'], { stdio: ['ignore', 'pipe', 'inherit'] });
    cPort = await new Promise((res) => {
      let b = '';
      csink.stdout.on('data', (d) => {
        b += d;
        const m = /ready (\d+)/.exec(b);
        if (m) res(Number(m[1]));
      });
    });
  }
  const startClient = async () => {
    const c = spawn(path.join(build, 'test-client'), ['--dir', rt, '--out', 'pass', '--in', 'pass'], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    c.stdout.resume();
    await waitReady(c, /ready/);
    return c;
  };
  const stopClient = async (c) => {
    const gone = new Promise((r) => c.on('exit', r));
    c.kill('SIGKILL');
    await gone;
  };
  // Rounds interleave the configurations, so a burst of load elsewhere on
  // the machine spreads over all of them instead of sinking one.
  const R = {
    raw: [],
    socat: [],
    mitm: [],
    none: [],
    all: [],
    craw: [],
    cnone: [],
    call: [],
    uraw: [],
    unone: [],
    uall: [],
  };
  const skipped = {};
  for (let i = 0; i < RUNS; i++) {
    process.stderr.write(`[bench] round ${i + 1}/${RUNS}\n`);
    R.raw.push(rate(await runSender({}, 'bulk', sinkPort, BYTES)));
    R.uraw.push(await runUdp({}, usink.address().port));
    R.unone.push(await runUdp(shim, usink.address().port));
    if (csink) {
      R.craw.push(rate(await runC(bulk, {}, cPort, BYTES)));
      R.cnone.push(rate(await runC(bulk, shim, cPort, BYTES)));
    }
    for (const [key, name, args] of [
      [
        'socat',
        'socat',
        (port, t) => [`TCP-LISTEN:${port},bind=127.0.0.1,reuseaddr,fork`, `TCP:127.0.0.1:${t}`],
      ],
      [
        'mitm',
        'mitmdump',
        (port, t) => [
          '-q',
          '--listen-host',
          '127.0.0.1',
          '--listen-port',
          String(port),
          '--mode',
          `reverse:http://127.0.0.1:${t}`,
          '--tcp-hosts',
          '.*',
          '--set',
          'connection_strategy=lazy',
        ],
      ],
    ]) {
      if (skipped[key]) continue;
      const r = await viaRelay(name, args, sinkPort);
      if (r.skipped) skipped[key] = r.skipped;
      else R[key].push(rate(r));
    }
    R.none.push(rate(await runSender(shim, 'bulk', sinkPort, BYTES)));
    const client = await startClient();
    R.all.push(rate(await runSender(shim, 'bulk', sinkPort, BYTES)));
    if (csink) R.call.push(rate(await runC(bulk, shim, cPort, BYTES)));
    R.uall.push(await runUdp(shim, usink.address().port));
    await stopClient(client);
  }
  // Latency: 64-byte ping-pongs to an echo server, raw and under the shim
  // with every chunk held and passed both ways. The shim records each
  // chunk's round trip (DATA sent to nke-emud -> verdict back) when
  // NKE_SHIM_STATS names a file: that is the per-chunk figure.
  const rawLat = await runSender({}, 'pingpong', echo.address().port, 2000);
  const client = await startClient();
  const stats = path.join(dir, 'shim-stats');
  const holdLat = await runSender({ ...shim, NKE_SHIM_STATS: stats }, 'pingpong', echo.address().port, 2000);
  await stopClient(client);
  const chunkUs = fs.existsSync(stats) ? fs.readFileSync(stats, 'utf8').trim().split('\n').map(Number) : [];
  emud.kill('SIGKILL');
  if (csink) csink.kill('SIGKILL');
  sink.close();
  echo.close();
  usink.close();
  fs.rmSync(dir, { recursive: true, force: true });
  const line = (label, key, rawKey = 'raw') => {
    if (skipped[key]) return console.log(`  ${label.padEnd(26)} skipped: ${skipped[key]}`);
    const v = R[key];
    console.log(
      `  ${label.padEnd(26)} median ${median(v).toFixed(0).padStart(5)} MiB/s  best ${Math.max(...v)
        .toFixed(0)
        .padStart(5)}  runs [${v.map((x) => x.toFixed(0)).join(' ')}]` +
        (key === rawKey ? '' : `  ratio ${(median(v) / median(R[rawKey])).toFixed(2)}`),
    );
  };
  console.log(
    `bulk ${mb} MiB loopback TCP, 64 KiB writes, ${os.cpus().length} CPUs, ${RUNS} interleaved runs each; ratio = median / raw median.`,
  );
  console.log('node sender and node sink (the program under the shim is node):');
  line('raw', 'raw');
  line('socat relay', 'socat');
  line('mitmdump relay (raw tcp)', 'mitm');
  line('shim, capture nothing', 'none');
  line('shim, all held + pass', 'all');
  if (csink) {
    console.log('same transfer, C sender and C sink (test/bench/bulk.c):');
    line('raw', 'craw', 'craw');
    line('shim, capture nothing', 'cnone', 'craw');
    line('shim, all held + pass', 'call', 'craw');
  } else {
    console.log('C sender and sink: skipped (cc failed)');
  }
  const uline = (label, key) =>
    console.log(
      `  ${label.padEnd(26)} median ${median(R[key]).toFixed(0).padStart(7)} datagrams/s  runs [${R[key]
        .map((x) => x.toFixed(0))
        .join(' ')}]` + (key === 'uraw' ? '' : `  ratio ${(median(R[key]) / median(R.uraw)).toFixed(2)}`),
    );
  console.log(`UDP: ${DGRAMS} sendto calls of 64 bytes, python3 sender:`);
  uline('raw', 'uraw');
  uline('shim, capture nothing', 'unone');
  uline('shim, all held + pass', 'uall');
  console.log(
    `64-byte ping-pong round trip (us): raw p50 ${rawLat.p50.toFixed(0)} p99 ${rawLat.p99.toFixed(0)}; all held + pass (two holds per round trip) p50 ${holdLat.p50.toFixed(0)} p99 ${holdLat.p99.toFixed(0)}`,
  );
  console.log(
    chunkUs.length
      ? `per-chunk hold-and-pass round trip (shim -> nke-emud -> client -> nke-emud -> shim, ${chunkUs.length} chunks, us): p50 ${pct(chunkUs, 0.5)} p99 ${pct(chunkUs, 0.99)}`
      : 'per-chunk hold-and-pass round trip: no samples (NKE_SHIM_STATS not written)',
  );
}
main().catch((e) => {
  console.error(e);
  process.exit(1);
});
