#!/usr/bin/env node
// Real servers under the shim (issue #16's targets): redis-server with
// redis-benchmark (SET/GET, -c 50, with and without -P 16), nginx with wrk
// (-c 50; a tiny file and a 1 MiB file) and ab (a new connection per
// request). The server runs raw, under the shim with no user client, and
// under the shim with the helper attached in report mode (`nke watch`);
// the load generator is never shimmed. NKE_BENCH_RUNS interleaved runs
// (default 3), median; ratio = median / raw median. Also prints the
// descriptors and threads a relayed connection costs the server.
// Each server has its own port, config and directory; nothing system-wide.
'use strict';
const { spawn, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');

const root = path.resolve(__dirname, '../..');
const build = path.join(root, 'native/emu/build');
const SHIM = path.join(build, 'libnkeshim.so');
const RUNS = Number(process.env.NKE_BENCH_RUNS || 3);
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nke-servers-bench-'));
fs.chmodSync(dir, 0o755); // nginx's workers (nobody, when run as root) read the files; rt/ is 0700
const rt = path.join(dir, 'rt');
const kids = new Set();

const have = (cmd) => spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function freePort() {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

// outFile: stdout goes there, not into this process (nke watch writes a
// line a chunk: tens of MB a run, which this process would otherwise read
// and keep, on the CPUs the measured server needs).
function startProc(cmd, args, env, outFile) {
  const out = outFile ? fs.openSync(outFile, 'w') : 'pipe';
  const p = spawn(cmd, args, { env, stdio: ['ignore', out, 'pipe'] });
  if (outFile) fs.closeSync(out);
  kids.add(p);
  p.out = '';
  p.stdout?.on('data', (d) => (p.out += d));
  p.stderr.on('data', (d) => (p.out += d));
  p.on('exit', () => kids.delete(p));
  return p;
}

async function waitFor(cond, ms, what) {
  const t0 = Date.now();
  while (!(await cond())) {
    if (Date.now() - t0 > ms) throw new Error(`${what}: not within ${ms} ms`);
    await sleep(20);
  }
}

function runOut(cmd, args) {
  const r = spawnSync(cmd, args, {
    encoding: 'utf8',
    env: { ...process.env, LD_PRELOAD: '' },
    timeout: 120000,
  });
  return (r.stdout || '') + (r.stderr || '');
}

async function stopProc(p) {
  if (!p || p.exitCode !== null || p.signalCode !== null) return;
  const gone = new Promise((r) => p.on('exit', r));
  p.kill('SIGTERM');
  await Promise.race([gone, sleep(3000)]);
  if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
}

// ---- the three ways a server runs ----------------------------------------

const MODES = ['raw', 'shim, no client', 'shim, helper (report)'];
let emud;
let helper;
function envFor(mode) {
  return mode === 'raw'
    ? { ...process.env, LD_PRELOAD: '' }
    : { ...process.env, LD_PRELOAD: SHIM, NKE_EMU_DIR: rt };
}
async function setMode(mode) {
  await stopProc(helper);
  helper = null;
  if (mode === 'shim, helper (report)') {
    helper = startProc(
      'node',
      [path.join(root, 'dist/nke.js'), 'watch'],
      // its own control directory: the default is one per user, and any
      // other nke watch/run of this user (another engineer's tests) makes
      // this one exit "busy"
      { ...process.env, NKE_EMU_DIR: rt, NKE_CLI_DIR: path.join(dir, 'cli') },
      path.join(dir, 'watch.out'),
    );
    // shim.state's client word (offset 8) says when it is attached
    await waitFor(
      () => fs.readFileSync(path.join(rt, 'shim.state')).readUInt32LE(8) === 1,
      20000,
      'nke watch attached',
    ).catch((e) => {
      throw new Error(`${e.message}; nke watch said: ${helper.out || '(nothing)'}`);
    });
  } else if (fs.existsSync(path.join(rt, 'shim.state'))) {
    await waitFor(
      () => fs.readFileSync(path.join(rt, 'shim.state')).readUInt32LE(8) === 0,
      5000,
      'helper gone',
    );
  }
}

// ---- servers -----------------------------------------------------------

async function redisServer(env) {
  const port = await freePort();
  const p = startProc(
    'redis-server',
    ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir],
    env,
  );
  await waitFor(() => /Ready to accept connections/.test(p.out), 15000, 'redis-server ready');
  return { p, port };
}

async function nginxServer(env) {
  const port = await freePort();
  const pre = path.join(dir, `nginx-${port}`);
  fs.mkdirSync(path.join(pre, 'www'), { recursive: true });
  fs.writeFileSync(path.join(pre, 'www/tiny.txt'), 'hello\n');
  fs.writeFileSync(path.join(pre, 'www/big.bin'), Buffer.alloc(1 << 20, 0x61));
  const t = (n) => path.join(pre, n);
  fs.writeFileSync(
    t('nginx.conf'),
    `worker_processes 2;\ndaemon off;\nmaster_process on;\npid ${t('nginx.pid')};\nerror_log ${t('error.log')} warn;\n` +
      `events { worker_connections 1024; }\nhttp {\n access_log off;\n client_body_temp_path ${t('tmp')};\n` +
      ` proxy_temp_path ${t('tmp')};\n fastcgi_temp_path ${t('tmp')};\n uwsgi_temp_path ${t('tmp')};\n scgi_temp_path ${t('tmp')};\n` +
      ` server { listen 127.0.0.1:${port}; root ${t('www')}; }\n}\n`,
  );
  fs.mkdirSync(t('tmp'), { recursive: true });
  const p = startProc('nginx', ['-p', pre, '-c', t('nginx.conf'), '-e', t('error.log')], env);
  await waitFor(
    () =>
      new Promise((res) => {
        const s = net.connect(port, '127.0.0.1', () => {
          s.destroy();
          res(true);
        });
        s.on('error', () => res(false));
      }),
    15000,
    'nginx listening',
  );
  const status = await new Promise((res) =>
    require('node:http')
      .get(`http://127.0.0.1:${port}/tiny.txt`, (r) => {
        r.resume();
        res(r.statusCode);
      })
      .on('error', () => res(0)),
  );
  if (status !== 200) throw new Error(`nginx answers ${status} for /tiny.txt: see ${t('error.log')}`);
  return { p, port };
}

// ---- workloads -----------------------------------------------------------

const workloads = [];
if (have('redis-server') && have('redis-benchmark')) {
  for (const pipeline of [1, 16])
    workloads.push({
      name: `redis-benchmark SET/GET -c 50${pipeline > 1 ? ' -P 16' : ''} (req/s)`,
      target: { none: 0.6, report: 0.5 },
      server: redisServer,
      async run(port) {
        const out = runOut('redis-benchmark', [
          '-p',
          String(port),
          '-c',
          '50',
          '-n',
          pipeline > 1 ? '400000' : '100000',
          '-P',
          String(pipeline),
          '-t',
          'set,get',
          '-q',
        ]);
        const v = [...out.matchAll(/(SET|GET): ([\d.]+) requests per second/g)].map((m) => Number(m[2]));
        if (v.length !== 2) throw new Error(`redis-benchmark: ${out}`);
        return (v[0] + v[1]) / 2;
      },
    });
}
if (have('nginx') && have('wrk')) {
  for (const file of ['tiny.txt', 'big.bin'])
    workloads.push({
      name: `nginx + wrk -c 50, ${file === 'tiny.txt' ? 'tiny file (req/s)' : '1 MiB file (MiB/s)'}`,
      target: file === 'tiny.txt' ? { none: 0.6, report: 0.5 } : null,
      server: nginxServer,
      async run(port) {
        const out = runOut('wrk', ['-t', '2', '-c', '50', '-d', '3s', `http://127.0.0.1:${port}/${file}`]);
        if (/Socket errors/.test(out)) throw new Error(`wrk socket errors: ${out}`);
        if (file === 'tiny.txt') return Number(out.match(/Requests\/sec:\s+([\d.]+)/)[1]);
        const m = out.match(/Transfer\/sec:\s+([\d.]+)(\w+)/);
        return Number(m[1]) * ({ GB: 1024, MB: 1, KB: 1 / 1024 }[m[2]] ?? 1); // wrk prints e.g. 7.91GB
      },
    });
}
if (have('nginx') && have('ab')) {
  workloads.push({
    name: 'nginx + ab, a new connection per request (req/s)',
    target: { none: 0.4, report: 0.5 },
    server: nginxServer,
    async run(port) {
      const out = runOut('ab', ['-q', '-n', '3000', '-c', '10', `http://127.0.0.1:${port}/tiny.txt`]);
      const m = out.match(/Requests per second:\s+([\d.]+)/);
      if (!m || !/Failed requests:\s+0/.test(out)) throw new Error(`ab: ${out}`);
      return Number(m[1]);
    },
  });
}

// Descriptors and threads of a redis-server holding 50 idle connections,
// minus the same with none, per connection.
async function costPerConnection(mode) {
  await setMode(mode);
  const { p, port } = await redisServer(envFor(mode));
  const count = () => ({
    fds: fs.readdirSync(`/proc/${p.pid}/fd`).length,
    threads: fs.readdirSync(`/proc/${p.pid}/task`).length,
  });
  await sleep(200);
  const c0 = count();
  const socks = [];
  for (let i = 0; i < 50; i++)
    socks.push(
      await new Promise((res) => {
        const s = net.connect(port, '127.0.0.1', () => res(s));
      }),
    );
  await new Promise((res) => {
    socks[49].write('PING\r\n');
    socks[49].once('data', res);
  });
  await sleep(300);
  const c1 = count();
  for (const s of socks) s.destroy();
  await stopProc(p);
  return { fds: (c1.fds - c0.fds) / 50, threads: (c1.threads - c0.threads) / 50, base: c0 };
}

function median(a) {
  const s = [...a].sort((x, y) => x - y);
  return s[s.length >> 1];
}

async function main() {
  console.log(
    `servers under the shim: ${os.cpus().length} CPUs, ${RUNS} interleaved runs per mode, median; load average ${os
      .loadavg()
      .map((l) => l.toFixed(1))
      .join(' ')}`,
  );
  if (!workloads.length) {
    console.log('no server to measure: bash scripts/setup-system.sh installs redis, nginx, wrk and ab');
    return 0;
  }
  if (!fs.existsSync(path.join(root, 'dist/nke.js'))) {
    console.log('dist/nke.js missing: run npm run build first');
    return 1;
  }
  emud = startProc(path.join(build, 'nke-emud'), [], { ...process.env, NKE_EMU_DIR: rt });
  await waitFor(() => /nke-emud ready/.test(emud.out), 10000, 'nke-emud ready');
  let pass = 0;
  let fail = 0;
  for (const w of workloads) {
    const R = Object.fromEntries(MODES.map((m) => [m, []]));
    let reported = 0;
    let gaps = 0;
    for (let i = 0; i < RUNS; i++)
      for (const mode of MODES) {
        await setMode(mode);
        const s = await w.server(envFor(mode));
        try {
          R[mode].push(await w.run(s.port));
        } finally {
          await stopProc(s.p);
        }
        if (mode === 'shim, helper (report)') {
          // nke watch wrote a line per chunk reported and per gap (bytes the
          // filter passed unreported: pool or queue full): the cost of speed
          // in fidelity, shown beside it.
          // its last lines: the helper batches ~30 times a second, and on a
          // loaded machine it may be seconds behind; wait until the file
          // stops growing (at most 10 s)
          const out = path.join(dir, 'watch.out');
          for (let last = -1, t0 = Date.now(); Date.now() - t0 < 10000;) {
            await sleep(500);
            const size = fs.statSync(out).size;
            if (size === last) break;
            last = size;
          }
          const text = fs.readFileSync(out, 'latin1');
          reported += (text.match(/^data /gm) || []).length;
          gaps += (text.match(/^gap /gm) || []).length;
          await setMode('raw'); // a new helper (and a fresh watch.out) for the next run
        }
      }
    const raw = median(R.raw);
    console.log(`\n${w.name}`);
    for (const mode of MODES) {
      const m = median(R[mode]);
      const ratio = m / raw;
      const t =
        w.target && mode !== 'raw' ? (mode === 'shim, no client' ? w.target.none : w.target.report) : null;
      const ok = t === null || ratio >= t;
      if (t !== null) ok ? pass++ : fail++;
      console.log(
        `  ${mode.padEnd(24)} ${m.toFixed(0).padStart(9)}  (${ratio.toFixed(2)}x raw)${t !== null ? `  target >= ${t}: ${ok ? 'met' : 'NOT met'}` : ''}`,
      );
    }
    console.log(
      `  report mode, all runs: ${reported} chunks reported, ${gaps} passed unreported (gap records, ${((100 * gaps) / Math.max(1, reported + gaps)).toFixed(1)} %)`,
    );
  }
  console.log('\ndescriptors and threads per relayed connection (redis-server, 50 idle connections):');
  for (const mode of MODES) {
    const c = await costPerConnection(mode);
    console.log(
      `  ${mode.padEnd(24)} ${c.fds.toFixed(2)} fds, ${c.threads.toFixed(2)} threads per connection (server at rest: ${c.base.fds} fds, ${c.base.threads} threads)`,
    );
  }
  await setMode('raw');
  console.log(
    `\nload average at the end: ${os
      .loadavg()
      .map((l) => l.toFixed(1))
      .join(' ')}`,
  );
  console.log(`\n${pass} passed, ${fail} failed`);
  return fail ? 1 : 0;
}

main()
  .then(async (code) => {
    for (const k of [...kids]) await stopProc(k);
    fs.rmSync(dir, { recursive: true, force: true });
    process.exit(code);
  })
  .catch(async (e) => {
    console.error(`servers-bench: ${e.stack || e}`);
    for (const k of [...kids]) await stopProc(k);
    fs.rmSync(dir, { recursive: true, force: true });
    process.exit(1);
  });
