// Shared by the raw-vs-shim tests (semantics.test.js, servers.test.js): a
// private nke-emud per test, the test user client, and running one program
// raw and under libnkeshim.so so the two results can be compared.
'use strict';
const assert = require('node:assert/strict');
const { spawn, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');

const root = path.resolve(__dirname, '../..');
const build = path.join(root, 'native/emu/build');
const EMUD = path.join(build, 'nke-emud');
const CLIENT = path.join(build, 'test-client');
const SHIM = path.join(build, 'libnkeshim.so');

const children = new Set();
// Every child leads its own process group: a server that forks workers (nginx,
// sshd) is stopped with all of them, so no orphan keeps a pipe or port open.
const groups = new Set();

function killGroup(pgid, sig) {
  try {
    process.kill(-pgid, sig);
    return true;
  } catch {
    return false;
  }
}

/** Spawns a child; collects stdout lines; `waitLine(re)` resolves on the first matching line. */
function start(cmd, args, opts = {}) {
  const p = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], detached: true, ...opts });
  children.add(p);
  if (p.pid) groups.add(p.pid);
  p.lines = [];
  p.stderrText = '';
  let buf = '';
  const waiters = [];
  p.stdout.on('data', (d) => {
    buf += d;
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      p.lines.push(line);
      for (const w of [...waiters])
        if (w.re.test(line)) {
          waiters.splice(waiters.indexOf(w), 1);
          w.resolve(line);
        }
    }
  });
  p.stderr.on('data', (d) => (p.stderrText += d));
  p.exited = new Promise((res) =>
    p.on('exit', (code, sig) => {
      children.delete(p);
      res({ code, sig });
    }),
  );
  p.waitLine = (re, ms = 15000) =>
    new Promise((resolve, reject) => {
      const hit = p.lines.find((l) => re.test(l));
      if (hit) return resolve(hit);
      // unref: a pending timeout never keeps mocha from exiting
      const t = setTimeout(
        () => reject(new Error(`${cmd}: no line matching ${re} in ${ms} ms; stderr: ${p.stderrText}`)),
        ms,
      ).unref();
      waiters.push({
        re,
        resolve: (l) => {
          clearTimeout(t);
          resolve(l);
        },
      });
    });
  return p;
}

function kill(p, sig = 'SIGKILL') {
  if (p && p.exitCode === null && p.signalCode === null) {
    if (!(p.pid && killGroup(p.pid, sig))) p.kill(sig);
  }
  return p ? p.exited : Promise.resolve();
}

async function killAll() {
  for (const c of [...children]) await kill(c);
  // Leaders that exited may have left members (workers) behind.
  for (const g of groups) killGroup(g, 'SIGKILL');
  groups.clear();
}

/** A private runtime directory with its nke-emud; `client(args)` adds the test user client. */
async function emulator() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nke-emu-sem-'));
  const rt = path.join(dir, 'rt');
  const emud = start(EMUD, [], { env: { ...process.env, NKE_EMU_DIR: rt } });
  await emud.waitLine(/^nke-emud ready/);
  return {
    dir,
    rt,
    emud,
    env: (extra = {}) => ({ ...process.env, LD_PRELOAD: SHIM, NKE_EMU_DIR: rt, ...extra }),
    async client(args = ['--out', 'pass', '--in', 'pass']) {
      const c = start(CLIENT, ['--dir', rt, ...args]);
      await c.waitLine(/^ready/);
      return c;
    },
    async close() {
      await kill(emud);
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * In a describe block: a fresh emulator for each test (beforeEach), every
 * program killed and the emulator closed after it (afterEach). The handle
 * returned carries the current test's emulator (rt, env(), client(), ...).
 */
function useEmulator() {
  const handle = {};
  beforeEach(async function () {
    Object.assign(handle, await emulator());
  });
  afterEach(async function () {
    await killAll();
    await handle.close();
  });
  return handle;
}

/** Runs a program to completion; resolves { code, stdout, stderr }. */
function run(cmd, args, env, ms = 30000) {
  return new Promise((resolve, reject) => {
    const p = spawn(cmd, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    children.add(p);
    let out = '';
    let err = '';
    p.stdout.on('data', (d) => (out += d));
    p.stderr.on('data', (d) => (err += d));
    const t = setTimeout(() => {
      p.kill('SIGKILL');
      reject(new Error(`${cmd} ${args.slice(0, 2).join(' ')} timed out; stdout: ${out} stderr: ${err}`));
    }, ms);
    p.on('exit', (code) => {
      clearTimeout(t);
      children.delete(p);
      resolve({ code, stdout: out, stderr: err });
    });
  });
}

/** Runs a command to completion synchronously; its exit status. */
run.sync = (cmd, args) => spawnSync(cmd, args, { stdio: 'ignore' }).status;

/** A free TCP port on 127.0.0.1 (bound and released by this process). */
function freePort() {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

function have(cmd) {
  return spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0;
}

/** Waits until `cond()` holds, polling every 20 ms. */
async function until(cond, ms, what) {
  const t0 = Date.now();
  while (!(await cond())) {
    if (Date.now() - t0 > ms) assert.fail(`${what}: not within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

module.exports = {
  start,
  kill,
  killAll,
  emulator,
  useEmulator,
  run,
  freePort,
  have,
  until,
  SHIM,
  build,
  root,
};
