// Runs inside `unshare -m` (as root) for test/emu/endpoints.test.js: mounts a
// private tmpfs on /tmp, then lets uid 65534 (nobody) take the emulator's
// fallback directory /tmp/nke-emu-<our uid> first and listen on its three
// sockets, and runs the victim's side against it with neither NKE_EMU_DIR
// nor XDG_RUNTIME_DIR set: a program under the shim talking to a real TCP
// server, and `nke status`. Prints one JSON line of what happened.
//
// Two impostors, one after the other:
//   owner: the directory is nobody's (and open to all, as a hijacker would
//          leave it): refused by the directory check, before any connect;
//   peer:  the directory is ours and private, but nobody listens in it (it
//          bound the sockets while still root, then dropped to 65534 and
//          listened): refused by the listener's SO_PEERCRED, after connect,
//          before a byte.
//
//   node private-tmp-scenario.js REPO_ROOT
'use strict';
const { spawn, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const path = require('node:path');

const root = process.argv[2];
const SHIM = path.join(root, 'native/emu/build/libnkeshim.so');
const CLI = path.join(root, 'dist/nke.js');
const uid = process.getuid();
const fallback = `/tmp/nke-emu-${uid}`;

// The impostor: listens on ctl.sock, kev.sock and shim.sock of argv[1],
// counts connections and bytes, and prints them on SIGTERM. Mode "owner":
// as 65534 from the start, the directory and sockets its own, open to all.
// Mode "peer": the directory exists (ours); binds as root, then listens as
// 65534 (SO_PEERCRED reports the credentials of listen()).
const IMPOSTOR = `
import os, select, signal, socket, sys
d, mode = sys.argv[1], sys.argv[2]
if mode == 'owner':
    os.setgid(65534); os.setuid(65534)
    os.mkdir(d); os.chmod(d, 0o777)
ls = []
for name in ('ctl.sock', 'kev.sock', 'shim.sock'):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.bind(os.path.join(d, name))
    os.chmod(os.path.join(d, name), 0o777)
    ls.append(s)
if mode == 'peer':
    os.setgid(65534); os.setuid(65534)
for s in ls: s.listen(16)
conns, nbytes = [], [0, 0]
def done(*_):
    print('impostor connections %d bytes %d' % (nbytes[0], nbytes[1]), flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, done)
print('ready', flush=True)
while True:
    r, _, _ = select.select(ls + conns, [], [])
    for s in r:
        if s in ls:
            c, _ = s.accept(); conns.append(c); nbytes[0] += 1
        else:
            b = s.recv(65536)
            if not b: conns.remove(s); s.close()
            else: nbytes[1] += len(b)
`;

// The victim's program: two connections (the shim must say why only once).
const VICTIM = `
import socket, sys
for i in range(2):
    s = socket.create_connection(('127.0.0.1', int(sys.argv[1])))
    s.sendall(b'user=alice password=secret %d' % i)
    s.shutdown(socket.SHUT_WR)
    sys.stdout.write(s.recv(100).decode())
`;

/** The victim's environment: no runtime directory named, so the fallback applies. */
function victimEnv(extra = {}) {
  const env = { ...process.env, ...extra };
  delete env.NKE_EMU_DIR;
  delete env.XDG_RUNTIME_DIR;
  delete env.NKE_CLI_DIR;
  return env;
}

function startImpostor(mode) {
  const p = spawn('/usr/bin/python3', ['-c', IMPOSTOR, fallback, mode], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  p.stdout.on('data', (d) => (out += d));
  p.stderr.on('data', (d) => (err += d));
  const exited = new Promise((r) => p.on('exit', () => r()));
  const ready = new Promise((resolve, reject) => {
    const t = setInterval(() => {
      if (out.includes('ready')) {
        clearInterval(t);
        resolve();
      }
    }, 20);
    p.on('exit', () => {
      clearInterval(t);
      reject(new Error(`impostor (${mode}) exited: ${err}`));
    });
  });
  return {
    ready,
    stop: async () => {
      p.kill('SIGTERM');
      await exited;
      const m = /impostor connections (\d+) bytes (\d+)/.exec(out);
      return m ? { connections: Number(m[1]), bytes: Number(m[2]) } : { error: `no report: ${out} ${err}` };
    },
  };
}

/** A real server the victim talks to: what it received, answered "ok". */
function recordingServer() {
  return new Promise((resolve) => {
    const got = [];
    const srv = net.createServer((s) => {
      const parts = [];
      s.on('data', (d) => parts.push(d));
      s.on('end', () => {
        got.push(Buffer.concat(parts).toString());
        s.end('ok;');
      });
    });
    srv.listen(0, '127.0.0.1', () => resolve({ srv, port: srv.address().port, got }));
  });
}

function runVictim(port) {
  return new Promise((resolve) => {
    const p = spawn('/usr/bin/python3', ['-c', VICTIM, String(port)], {
      env: victimEnv({ LD_PRELOAD: SHIM }),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    p.stdout.on('data', (d) => (out += d));
    p.stderr.on('data', (d) => (err += d));
    const t = setTimeout(() => p.kill('SIGKILL'), 20000);
    p.on('exit', (code) => {
      clearTimeout(t);
      resolve({ code, stdout: out, stderr: err });
    });
  });
}

async function scenario(mode) {
  fs.rmSync(fallback, { recursive: true, force: true });
  if (mode === 'peer') fs.mkdirSync(fallback, { mode: 0o700 });
  const imp = startImpostor(mode);
  await imp.ready;
  const server = await recordingServer();
  const victim = await runVictim(server.port);
  await new Promise((r) => server.srv.close(r));
  // Asynchronous: `nke status` in a child while the impostor (this process's child) keeps listening.
  const status = await new Promise((resolve) => {
    const p = spawn(process.execPath, [CLI, 'status'], {
      env: victimEnv(),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    p.stdout.on('data', (d) => (out += d));
    p.stderr.on('data', (d) => (err += d));
    p.on('exit', (code) => resolve({ code, stdout: out, stderr: err }));
  });
  const seen = await imp.stop();
  fs.rmSync(fallback, { recursive: true, force: true });
  return { victim, received: server.got, status, impostor: seen };
}

function mountOrThrow(args) {
  const r = spawnSync('mount', args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`mount ${args.join(' ')}: ${r.stderr}`);
}

(async () => {
  // A checkout under /tmp (a clone made there) would vanish under the new
  // tmpfs with the shim in it: keep it at its path through a bind mount.
  const underTmp = path.resolve(root).startsWith('/tmp/');
  const keep = underTmp ? fs.mkdtempSync('/run/nke-scenario-') : undefined;
  if (keep) mountOrThrow(['--bind', root, keep]);
  mountOrThrow(['-t', 'tmpfs', '-o', 'mode=1777', 'tmpfs', '/tmp']);
  if (keep) {
    fs.mkdirSync(root, { recursive: true });
    mountOrThrow(['--move', keep, root]);
    fs.rmdirSync(keep);
  }
  const result = { fallback };
  for (const mode of ['owner', 'peer']) result[mode] = await scenario(mode);
  process.stdout.write(`${JSON.stringify(result)}\n`);
})().catch((e) => {
  process.stdout.write(`${JSON.stringify({ error: String(e.stack ?? e) })}\n`);
  process.exit(1);
});
