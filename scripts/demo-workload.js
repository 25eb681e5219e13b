#!/usr/bin/env node
// A small, steady workload for the emulated filter, so every NKE view has
// data when `npm start` opens the workbench:
//   - a local HTTP server, itself run under the shim (its accepted sockets
//     and the data it reads and writes go through the filter);
//   - a client loop, under the shim, that GETs and POSTs to it every couple
//     of seconds (curl when installed, else node's fetch);
//   - execs, including one of a program whose path is longer than one kernel
//     event message (224 bytes on x86_64), so exec paths arrive in chunks.
//
//   node scripts/demo-workload.js --runner native/emu/build/nke-emu [--interval-ms 2000] [--port N]
//   node scripts/demo-workload.js serve --port N     (the server, used internally)
//
// Runs until SIGINT/SIGTERM, then stops its children.
'use strict';
const { spawn, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const http = require('node:http');
const os = require('node:os');
const path = require('node:path');

function arg(name, fallback) {
  const i = process.argv.indexOf(name);
  return i > 0 ? process.argv[i + 1] : fallback;
}

function serve(port) {
  let hits = 0;
  const server = http.createServer((req, res) => {
    let body = '';
    req.on('data', (c) => (body += c));
    req.on('end', () => {
      hits++;
      const reply = JSON.stringify({
        hits,
        method: req.method,
        url: req.url,
        echoed: body.length,
        at: new Date().toISOString(),
      });
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(reply) });
      res.end(reply);
    });
  });
  server.listen(port, '127.0.0.1', () =>
    console.log(`[demo] HTTP server on 127.0.0.1:${port} (pid ${process.pid})`),
  );
  const stop = () => server.close(() => process.exit(0));
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

/** A program at a path longer than one kernel event can carry. */
function makeLongPathTool() {
  const base = path.join(os.tmpdir(), `nke-demo-${process.getuid?.() ?? 'user'}`);
  let dir = base;
  for (let i = 0; dir.length < 320; i++)
    dir = path.join(dir, `exec-path-segment-${String(i).padStart(2, '0')}`);
  fs.mkdirSync(dir, { recursive: true });
  const tool = path.join(dir, 'nke-demo-long-path-tool');
  fs.writeFileSync(
    tool,
    "#!/bin/sh\n# Exists to be exec'd from a long path (chunked exec events).\nexit 0\n",
    { mode: 0o755 },
  );
  return tool;
}

function hasCommand(cmd) {
  return spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;
}

async function freePort() {
  const net = require('node:net');
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

async function drive(runner, intervalMs) {
  if (!fs.existsSync(runner)) {
    console.error(`[demo] ${runner} not found: build the emulator (npm run build) first`);
    process.exit(1);
  }
  const children = new Set();
  const under = (argv, opts = {}) => {
    const child = spawn(runner, ['run', '--', ...argv], { stdio: ['ignore', 'ignore', 'inherit'], ...opts });
    children.add(child);
    child.on('exit', () => children.delete(child));
    return child;
  };
  let stopping = false;
  const stop = () => {
    stopping = true;
    for (const c of children) c.kill('SIGTERM');
    setTimeout(() => process.exit(0), 500).unref();
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);

  // start.js picks the port so its settings can name the demo (report-only rules).
  const port = Number(arg('--port', '0')) || (await freePort());
  const server = under([process.execPath, __filename, 'serve', '--port', String(port)], {
    stdio: ['ignore', 'inherit', 'inherit'],
  });
  server.on('exit', (code, sig) => {
    if (!stopping) {
      console.error(`[demo] HTTP server exited (${code ?? sig}); stopping the workload`);
      stop();
    }
  });
  const url = `http://127.0.0.1:${port}`;
  const tool = makeLongPathTool();
  const curl = hasCommand('curl');
  console.log(
    `[demo] client loop every ${intervalMs} ms against ${url} (${curl ? 'curl' : 'node fetch'}); long-path exec: ${tool.length} bytes`,
  );

  const fetchScript = `fetch(process.argv[1], { method: 'POST', body: 'hello from the NKE demo client ' + Date.now() }).then(r => r.text()).then(() => 0, e => { console.error(e.message); process.exitCode = 1; })`;
  for (let round = 0; !stopping; round++) {
    if (curl) under(['curl', '-s', '-o', '/dev/null', '--data', `round=${round}`, `${url}/demo/${round}`]);
    else under([process.execPath, '-e', fetchScript, `${url}/demo/${round}`]);
    // sh execs the long-path tool, then `true`: a parent with exec'd children.
    if (round % 3 === 0) under(['sh', '-c', `'${tool}'; true`]);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

if (process.argv[2] === 'serve') serve(Number(arg('--port', '0')));
else
  drive(
    path.resolve(arg('--runner', path.join(__dirname, '..', 'native', 'emu', 'build', 'nke-emu'))),
    Number(arg('--interval-ms', '2000')),
  );
