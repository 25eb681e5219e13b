// The Linux emulator against real programs: nke-emud + libnkeshim.so + the
// test user client (test/emu/client.c), with curl, python3 and node under
// the shim and unshimmed servers in this process checking the bytes.
'use strict';
const assert = require('node:assert/strict');
const { spawn, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const http = require('node:http');
const dgram = require('node:dgram');
const os = require('node:os');
const path = require('node:path');

const H = require('./shim-harness');

const EMUD = path.join(H.build, 'nke-emud');
const CLIENT = path.join(H.build, 'test-client');
const { SHIM, build, start, kill } = H;
const MMSG = path.join(build, 'mmsg-test');

// Programs runShimmed spawns itself (H.killAll stops those of H.start): killed after each test.
const children = new Set();

/** Resolves once `p` has printed `n` lines matching `re` (exactly n after a grace period is the caller's check). */
async function waitCount(p, re, n, ms = 5000) {
  const t0 = Date.now();
  let c = 0;
  while ((c = p.lines.filter((l) => re.test(l)).length) < n && Date.now() - t0 < ms)
    await new Promise((r) => setTimeout(r, 10));
  assert.equal(c, n, `${re}: ${c} lines, expected ${n}`);
}

let dir;
let rt;
function shimEnv(extra = {}) {
  return { ...process.env, LD_PRELOAD: SHIM, NKE_EMU_DIR: rt, ...extra };
}

/** Runs a program under the shim to completion; resolves { code, stdout, stderr } (stdout a Buffer). */
// Servers the tests open, with their connections: afterEach closes them, so
// a failed test cannot leave a listener that keeps mocha from exiting.
const servers = new Set();
function createServer(mod, handler) {
  const srv = mod.createServer(handler);
  const conns = new Set();
  srv.on('connection', (c) => {
    conns.add(c);
    c.on('close', () => conns.delete(c));
  });
  servers.add({ srv, conns });
  return srv;
}
function closeServers() {
  for (const { srv, conns } of servers) {
    for (const c of conns) c.destroy();
    if (srv.listening) srv.close();
  }
  servers.clear();
}

function runShimmed(cmd, args, ms = 20000, env = {}) {
  return new Promise((resolve, reject) => {
    const p = spawn(cmd, args, { env: shimEnv(env), stdio: ['ignore', 'pipe', 'pipe'] });
    children.add(p);
    const out = [];
    let err = '';
    p.stdout.on('data', (d) => out.push(d));
    p.stderr.on('data', (d) => (err += d));
    const t = setTimeout(() => {
      p.kill('SIGKILL');
      reject(new Error(`${cmd} timed out; stderr: ${err}`));
    }, ms);
    p.on('exit', (code) => {
      clearTimeout(t);
      children.delete(p);
      resolve({ code, stdout: Buffer.concat(out), stderr: err });
    });
  });
}

/** Writes bytes to a fresh file in the test dir (argv is too small for them). */
let nfile = 0;
function dataFile(b) {
  const f = path.join(dir, `payload-${nfile++}`);
  fs.writeFileSync(f, b);
  return f;
}

let emud;
async function startDaemon(args = [], env = {}) {
  emud = start(EMUD, args, { env: { ...process.env, NKE_EMU_DIR: rt, ...env } });
  await emud.waitLine(/^nke-emud ready/);
  return emud;
}
async function startClient(args) {
  const c = start(CLIENT, ['--dir', rt, ...args]);
  await c.waitLine(/^ready/);
  return c;
}

// The same per-byte transforms as test/emu/client.c.
const T = {
  pass: (b) => b,
  upper: (b) =>
    Buffer.from(
      b.toString('latin1').replace(/[a-z]/g, (c) => c.toUpperCase()),
      'latin1',
    ),
  double: (b) => Buffer.from([...b].flatMap((x) => [x, x])),
  shrink: (b) => Buffer.from([...b].filter((x) => x !== 0x78)),
  nul: (b) =>
    Buffer.concat(
      [...b].map((x) => (x === 0x21 ? Buffer.from([0, 0x42, 0x49, 0x4e, 0xff]) : Buffer.from([x]))),
    ),
};

/** An unshimmed TCP server: records each connection's bytes; answers `reply` after the client's FIN. */
function tcpServer(host, reply) {
  return new Promise((resolve) => {
    const got = [];
    const srv = createServer(net, (s) => {
      const parts = [];
      s.on('data', (d) => parts.push(d));
      s.on('end', () => {
        got.push(Buffer.concat(parts));
        s.end(reply);
      });
      s.on('error', () => {});
    });
    srv.listen(0, host, () => resolve({ srv, port: srv.address().port, got }));
  });
}

const PY_TCP = `
import socket, sys
fam = socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET
s = socket.socket(fam, socket.SOCK_STREAM)
s.connect((sys.argv[1], int(sys.argv[2])))
s.sendall(open(sys.argv[3], 'rb').read())
s.shutdown(socket.SHUT_WR)
out = b''
while True:
    d = s.recv(65536)
    if not d: break
    out += d
sys.stdout.write(out.hex())
`;

const PY_UDP = `
import socket, sys
fam = socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET
s = socket.socket(fam, socket.SOCK_DGRAM)
s.settimeout(5)
res = []
for m in sys.argv[3:]:
    s.sendto(bytes.fromhex(m), (sys.argv[1], int(sys.argv[2])))
    d, a = s.recvfrom(65536)
    res.append(d.hex())
print(' '.join(res))
`;

describe('Linux emulator (nke-emud + libnkeshim.so)', function () {
  this.timeout(60000);

  before(function () {
    for (const f of [EMUD, CLIENT, SHIM]) assert.ok(fs.existsSync(f), `${f} missing: run make -C native/emu`);
  });
  beforeEach(async function () {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nke-emu-test-'));
    rt = path.join(dir, 'rt');
    await startDaemon();
  });
  afterEach(async function () {
    for (const c of [...children]) c.kill('SIGKILL');
    await H.killAll();
    closeServers();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('creates its runtime directory 0700', function () {
    assert.equal(fs.statSync(rt).mode & 0o777, 0o700);
  });

  it('curl fetches from a local HTTP server; response edited in place (upper)', async function () {
    await startClient(['--out', 'pass', '--in', 'upper']);
    let reqLine = '';
    const srv = createServer(http, (req, res) => {
      reqLine = `${req.method} ${req.url}`;
      res.setHeader('content-type', 'text/plain');
      res.end('hello curl, hello world\n');
    });
    await new Promise((r) => srv.listen(0, '127.0.0.1', r));
    const r = await runShimmed('curl', ['-sS', `http://127.0.0.1:${srv.address().port}/some/path`]);
    srv.close();
    assert.equal(r.code, 0, r.stderr);
    assert.equal(reqLine, 'GET /some/path');
    assert.equal(r.stdout.toString(), 'HELLO CURL, HELLO WORLD\n');
  });

  for (const [host, outPol, inPol] of [
    ['127.0.0.1', 'double', 'nul'],
    ['::1', 'shrink', 'upper'],
    ['127.0.0.1', 'drop', 'pass'],
  ]) {
    it(`python3 TCP over ${host}: out ${outPol}, in ${inPol}, byte-exact`, async function () {
      await startClient(['--out', outPol, '--in', inPol]);
      const payload = Buffer.from('hello x world! '.repeat(5000) + 'end\0\x01\xff!', 'latin1');
      const reply = Buffer.from('reply: xx!yy! done', 'latin1');
      const s = await tcpServer(host, reply);
      const r = await runShimmed('python3', ['-c', PY_TCP, host, String(s.port), dataFile(payload)]);
      s.srv.close();
      assert.equal(r.code, 0, r.stderr);
      const expectOut = outPol === 'drop' ? Buffer.alloc(0) : T[outPol](payload);
      assert.equal(s.got.length, 1);
      assert.ok(
        s.got[0].equals(expectOut),
        `server got ${s.got[0].length} bytes, expected ${expectOut.length}`,
      );
      assert.equal(
        Buffer.from(r.stdout.toString(), 'hex').toString('latin1'),
        T[inPol](reply).toString('latin1'),
      );
    });
  }

  for (const host of ['127.0.0.1', '::1']) {
    it(`python3 UDP over ${host}: datagram boundaries kept, edited both ways`, async function () {
      await startClient(['--out', 'upper', '--in', 'shrink']);
      const sock = dgram.createSocket(host.includes(':') ? 'udp6' : 'udp4');
      const got = [];
      sock.on('message', (m, ri) => {
        got.push(m);
        sock.send(Buffer.from(`x${m.length}x-reply`), ri.port, ri.address);
      });
      await new Promise((r) => sock.bind(0, host, r));
      const msgs = ['abc!', 'second datagram', 'x'.repeat(1000) + 'tail'].map((m) =>
        Buffer.from(m).toString('hex'),
      );
      const r = await runShimmed('python3', ['-c', PY_UDP, host, String(sock.address().port), ...msgs]);
      sock.close();
      assert.equal(r.code, 0, r.stderr);
      assert.deepEqual(
        got.map((b) => b.toString()),
        ['ABC!', 'SECOND DATAGRAM', 'X'.repeat(1000) + 'TAIL'],
      );
      assert.deepEqual(
        r.stdout
          .toString()
          .trim()
          .split(' ')
          .map((h) => Buffer.from(h, 'hex').toString()),
        ['4-reply', '15-reply', '1004-reply'],
      );
    });
  }

  it('node http client and server in one shimmed process, random verdicts, byte-exact', async function () {
    await startClient(['--out', 'random', '--in', 'random', '--seed', '7']);
    const script = `
      const http = require('http'), crypto = require('crypto');
      const body = crypto.randomBytes(300000);
      const srv = http.createServer((req, res) => { const p = []; req.on('data', d => p.push(d)); req.on('end', () => res.end(Buffer.concat(p).reverse())); });
      srv.listen(0, '127.0.0.1', () => {
        const req = http.request({ port: srv.address().port, method: 'POST', host: '127.0.0.1' }, res => {
          const p = []; res.on('data', d => p.push(d));
          res.on('end', () => { const b = Buffer.concat(p); console.log(b.equals(Buffer.from(body).reverse()) ? 'match' : 'mismatch ' + b.length); srv.close(); });
        });
        req.end(body);
      });`;
    const r = await runShimmed('node', ['-e', script]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.toString().trim(), 'match');
  });

  it('200 concurrent node connections with random verdicts: no deadlock, byte-exact', async function () {
    const client = await startClient(['--out', 'random', '--in', 'random', '--seed', '3']);
    const srv = createServer(net, (s) => s.pipe(s));
    await new Promise((r) => srv.listen(0, '127.0.0.1', r));
    const script = `
      const net = require('net'), crypto = require('crypto');
      let ok = 0, bad = 0, done = 0;
      for (let i = 0; i < 200; i++) {
        const data = crypto.randomBytes(20000 + i * 37);
        const s = net.connect(${srv.address().port}, '127.0.0.1', () => { s.end(data); });
        const p = []; s.on('data', d => p.push(d));
        s.on('close', () => { Buffer.concat(p).equals(data) ? ok++ : bad++; if (++done === 200) console.log(ok + ' ' + bad); });
        s.on('error', e => console.error(e.message));
      }`;
    const r = await runShimmed('node', ['-e', script], 45000);
    srv.close();
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.toString().trim(), '200 0');
    // Chunks beyond the 64-buffer pool pass unheld (counted), so not all 400+ are held.
    assert.ok(
      client.lines.filter((l) => /^data .* 1$/.test(l)).length >= 64,
      'the data went through the client',
    );
  });

  it('dup, os.dup, socket.dup and fcntl F_DUPFD copies of a relayed TCP socket are the relayed socket', async function () {
    await startClient(['--out', 'upper', '--in', 'pass']);
    const PY = `
import socket, sys, os, fcntl, ctypes
c = socket.create_connection(('127.0.0.1', int(sys.argv[1])))
copies = [os.dup(c.fileno()),                           # fcntl64(F_DUPFD_CLOEXEC)
          fcntl.fcntl(c.fileno(), fcntl.F_DUPFD, 0),    # fcntl64(F_DUPFD)
          fcntl.fcntl(c.fileno(), fcntl.F_DUPFD_CLOEXEC, 0),
          ctypes.CDLL(None).dup(c.fileno())]            # dup()
sd = c.dup()                                            # socket.dup
res = []
for d in copies:
    s = socket.socket(fileno=d)   # family/type come from getsockopt on the copy
    res.append('%d:%d' % (s.family, s.getpeername()[1]))
    s.detach()
res.append('%d:%d' % (sd.family, sd.getpeername()[1]))
sd.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # reaches the real TCP socket
for i, d in enumerate(copies):
    os.write(d, b'copy%d,' % i)
sd.sendall(b'sockdup,')
c.close()                         # the copies keep the connection
for d in copies: os.close(d)
sd.sendall(b'last')
sd.close()
print(' '.join(res))
`;
    const s = await tcpServer('127.0.0.1', Buffer.from(''));
    const r = await runShimmed('python3', ['-c', PY, String(s.port)]);
    s.srv.close();
    assert.equal(r.code, 0, r.stderr);
    // Untracked copies would be the program's socketpair end: AF_UNIX (1), no port.
    assert.equal(r.stdout.toString().trim(), Array(5).fill(`2:${s.port}`).join(' '));
    assert.equal(s.got[0].toString(), 'COPY0,COPY1,COPY2,COPY3,SOCKDUP,LAST');
  });

  it('a program that writes, closes and exits at once: its held bytes still reach the server (exit drain)', async function () {
    // The client never answers: the chunk goes out at its 400 ms deadline,
    // long after the program called exit(). In the kernel the bytes would be
    // the socket's; here the shim's destructor keeps the relay alive for them.
    await startClient(['--out', 'hold', '--in', 'pass', '--timeout-ms', '400']);
    const s = await tcpServer('127.0.0.1', Buffer.from(''));
    const PY = `
import socket, sys
c = socket.create_connection(('127.0.0.1', int(sys.argv[1])))
c.sendall(b'written-before-exit')
c.close()
`;
    const t0 = Date.now();
    const r = await runShimmed('python3', ['-c', PY, String(s.port)]);
    const ms = Date.now() - t0;
    assert.equal(r.code, 0, r.stderr);
    for (let i = 0; i < 100 && !s.got.length; i++) await new Promise((res) => setTimeout(res, 20));
    assert.equal(Buffer.concat(s.got).toString(), 'written-before-exit');
    assert.ok(ms >= 300, `the program's exit waited for the held chunk (${ms} ms)`);
  });

  it('a program that writes and calls exit() with the socket still open: its held bytes still reach the server; a forked child exits at once', async function () {
    // The chunk is held until the client's 1 s deadline. exit() (libc's,
    // via ctypes: no Python finalization that would close the socket) runs
    // the shim's destructor, which must wait for the relay of the open
    // socket. The child (fork after the write) shares the socket but not
    // the relay threads: its exit() must not wait for them.
    await startClient(['--out', 'hold', '--in', 'pass', '--timeout-ms', '1000']);
    const s = await tcpServer('127.0.0.1', Buffer.from(''));
    const payload = Buffer.from([...Array(2000).keys()].map((i) => (i * 13 + 5) & 0xff));
    const PY = `
import ctypes, os, socket, sys, time
libc = ctypes.CDLL(None)
c = socket.create_connection(('127.0.0.1', int(sys.argv[1])))
c.sendall(open(sys.argv[2], 'rb').read())
t0 = time.monotonic()
pid = os.fork()
if pid == 0:
    libc.exit(0)
os.waitpid(pid, 0)
print(int((time.monotonic() - t0) * 1000), flush=True)
libc.exit(0)
`;
    const t0 = Date.now();
    const r = await runShimmed('python3', ['-W', 'ignore', '-c', PY, String(s.port), dataFile(payload)]);
    const ms = Date.now() - t0;
    assert.equal(r.code, 0, r.stderr);
    for (let i = 0; i < 100 && !s.got.length; i++) await new Promise((res) => setTimeout(res, 20));
    const got = Buffer.concat(s.got);
    assert.ok(got.equals(payload), `byte-exact at the server: got ${got.length} of ${payload.length} bytes`);
    assert.ok(ms >= 800, `the program's exit waited for the held chunk (${ms} ms)`);
    const childMs = Number(r.stdout.toString().trim());
    assert.ok(childMs < 700, `the forked child's exit did not wait for the parent's relay (${childMs} ms)`);
  });

  it('a program that writes and then execs while its first chunk is held: every byte reaches the server (exec drain)', async function () {
    // The first chunk is held 1 s. os.execv replaces the image (the relay
    // thread with it); the socket is CLOEXEC (Python's default), so the
    // kernel would send the bytes and then the FIN. The shim's exec drain
    // must wait for the relay first.
    await startClient(['--out', 'pass', '--in', 'pass', '--hold-first-ms', '1000']);
    const s = await tcpServer('127.0.0.1', Buffer.from(''));
    const payload = Buffer.from([...Array(2000).keys()].map((i) => (i * 7 + 3) & 0xff));
    const PY = `
import os, socket, sys
c = socket.create_connection(('127.0.0.1', int(sys.argv[1])))
c.sendall(open(sys.argv[2], 'rb').read())
os.execv('/bin/true', ['true'])
`;
    const t0 = Date.now();
    const r = await runShimmed('python3', ['-c', PY, String(s.port), dataFile(payload)]);
    const ms = Date.now() - t0;
    assert.equal(r.code, 0, r.stderr);
    for (let i = 0; i < 100 && !s.got.length; i++) await new Promise((res) => setTimeout(res, 20));
    const got = Buffer.concat(s.got);
    assert.ok(got.equals(payload), `byte-exact at the server: got ${got.length} of ${payload.length} bytes`);
    assert.ok(ms >= 800, `the exec waited for the held chunk (${ms} ms)`);
  });

  it('an exec that fails leaves the socket usable: bytes before and after reach the server in order', async function () {
    // The drain before a failed exec must not end the outgoing direction.
    await startClient(['--out', 'pass', '--in', 'pass', '--hold-first-ms', '500']);
    const s = await tcpServer('127.0.0.1', Buffer.from(''));
    const PY = `
import os, socket, sys
c = socket.create_connection(('127.0.0.1', int(sys.argv[1])))
c.sendall(b'before-exec,')
try:
    os.execv('/nonexistent/nke-no-such-program', ['x'])
except OSError as e:
    c.sendall(b'after-failed-exec(%d)' % e.errno)
c.close()
`;
    const r = await runShimmed('python3', ['-c', PY, String(s.port)]);
    assert.equal(r.code, 0, r.stderr);
    for (let i = 0; i < 100 && !s.got.length; i++) await new Promise((res) => setTimeout(res, 20));
    assert.equal(Buffer.concat(s.got).toString(), 'before-exec,after-failed-exec(2)');
  });

  it('sendmmsg/recvmmsg get a verdict per datagram; a dup() of the UDP socket is filtered too', async function () {
    const client = await startClient(['--out', 'upper', '--in', 'double']);
    const srv = dgram.createSocket('udp4');
    const seen = [];
    srv.on('message', (m, rinfo) => {
      seen.push(m.toString());
      srv.send(Buffer.from(`r:${m.toString().toLowerCase()}`), rinfo.port, rinfo.address);
    });
    await new Promise((r) => srv.bind(0, '127.0.0.1', r));
    const r = await runShimmed(MMSG, ['127.0.0.1', String(srv.address().port)]);
    srv.close();
    assert.equal(r.code, 0, r.stderr);
    // Datagram boundaries kept both ways; lengths are the program's own.
    assert.deepEqual(seen, ['ONE', 'TWO', 'THREE', 'FOUR']);
    const lines = r.stdout.toString().trim().split('\n');
    assert.equal(lines[0], 'sent 3 3 3 5');
    assert.deepEqual(
      lines.slice(1).sort(),
      ['got 10 rr::oonnee', 'got 10 rr::ttwwoo', 'got 12 rr::ffoouurr', 'got 14 rr::tthhrreeee'].sort(),
    );
    // The program may exit before this process has read the client's last lines.
    await waitCount(client, /^data out \d+ 1$/, 4);
    await waitCount(client, /^data in \d+ 1$/, 4);
  });

  it('a connected UDP socket used with write/read and writev/readv gets a verdict per datagram', async function () {
    await startClient(['--out', 'upper', '--in', 'double']);
    const srv = dgram.createSocket('udp4');
    const seen = [];
    srv.on('message', (m, rinfo) => {
      seen.push(m.toString());
      srv.send(Buffer.from(`r:${m.toString().toLowerCase()}`), rinfo.port, rinfo.address);
    });
    await new Promise((r) => srv.bind(0, '127.0.0.1', r));
    const PY = `
import os, socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.connect(('127.0.0.1', int(sys.argv[1])))
s.settimeout(None)
os.write(s.fileno(), b'plain')
a = os.read(s.fileno(), 100)
os.writev(s.fileno(), [b'vec', b'tor'])
b1, b2 = bytearray(4), bytearray(100)
n = os.readv(s.fileno(), [b1, b2])
print(a.decode(), (bytes(b1) + bytes(b2))[:n].decode())
`;
    const r = await runShimmed('python3', ['-c', PY, String(srv.address().port)]);
    srv.close();
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(seen, ['PLAIN', 'VECTOR']);
    assert.equal(r.stdout.toString().trim(), 'rr::ppllaaiinn rr::vveeccttoorr');
  });

  for (const host of ['127.0.0.1', '::1']) {
    it(`python3 server on ${host}: setsockopt, bind and listen reported as OPTION, BOUND, LISTEN`, async function () {
      const client = await startClient(['--out', 'pass', '--in', 'pass']);
      const PY = `
import socket, sys
fam = socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET
s = socket.socket(fam, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 0))
s.listen(5)
port = s.getsockname()[1]
s.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
c = socket.create_connection((sys.argv[1], port))
a, _ = s.accept()
c.sendall(b'ping'); print(port, a.recv(10).decode())
`;
      const r = await runShimmed('python3', ['-c', PY, host]);
      assert.equal(r.code, 0, r.stderr);
      const [port, word] = r.stdout.toString().trim().split(' ');
      assert.equal(word, 'ping');
      const bound = await client.waitLine(new RegExp(`^bound \\S+ ${host.replace(/\./g, '\\.')} ${port}$`));
      const sock = bound.split(' ')[1];
      const listen = await client.waitLine(/^listen /);
      assert.equal(listen, `listen ${sock} ${host} ${port}`);
      // SOL_SOCKET=1, SO_REUSEADDR=2 set; SO_RCVBUF=8 got; all on the listening socket.
      await client.waitLine(new RegExp(`^option ${sock} 1 8 0$`));
      const opts = client.lines.filter((l) => l.startsWith(`option ${sock} `));
      assert.deepEqual(opts, [`option ${sock} 1 2 1`, `option ${sock} 1 8 0`]);
      const order = client.lines.filter((l) => l.includes(` ${sock} `)).map((l) => l.split(' ')[0]);
      assert.deepEqual(order, ['option', 'bound', 'listen', 'option']);
    });
  }

  it('bind before connect, then setsockopt/getsockopt on the connected and the accepted socket: one attach, BOUND, CONNECT, OPTIONs ahead of the data', async function () {
    const client = await startClient(['--out', 'pass', '--in', 'pass']);
    // A free local port for the client's bind, chosen here.
    const probe = createServer(net, () => {});
    await new Promise((res) => probe.listen(0, '127.0.0.1', res));
    const lport = probe.address().port;
    await new Promise((res) => probe.close(res));
    const payload = Buffer.from([...Array(3000).keys()].map((i) => (i * 7) & 0xff));
    const PY = `
import os, socket, sys
srv = socket.socket()
srv.bind(('127.0.0.1', 0)); srv.listen(1)
c = socket.socket()
c.bind(('127.0.0.1', int(sys.argv[1])))
c.connect(srv.getsockname())
a, _ = srv.accept()
a.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
assert c.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
c.sendall(open(sys.argv[2], 'rb').read()); c.shutdown(socket.SHUT_WR)
got = b''
while True:
    d = a.recv(65536)
    if not d: break
    got += d
print(os.getpid(), srv.getsockname()[1], got.hex(), flush=True)
`;
    const r = await runShimmed('python3', ['-c', PY, String(lport), dataFile(payload)]);
    assert.equal(r.code, 0, r.stderr);
    const [pid, sport, hex] = r.stdout.toString().trim().split(' ');
    assert.equal(hex, payload.toString('hex'), 'byte-exact at the server');
    const bound = await client.waitLine(new RegExp(`^bound \\S+ 127\\.0\\.0\\.1 ${lport}$`));
    const cs = bound.split(' ')[1];
    await client.waitLine(new RegExp(`^option ${cs} 1 4 0$`));
    const out = await client.waitLine(new RegExp(`^sock-connect-out ${lport} ${sport} `));
    assert.equal(out.split(' ')[3], cs, 'the connect is reported on the socket bound before it');
    const conIn = await client.waitLine(new RegExp(`^sock-connect-in ${sport} ${lport} `));
    const as = conIn.split(' ')[3];
    await client.waitLine(new RegExp(`^option ${as} 1 9 1$`)); // SOL_SOCKET, SO_KEEPALIVE, set
    const mine = (s) => client.lines.filter((l) => l.endsWith(` ${s}`) || l.includes(` ${s} `));
    // one attach for the client socket: its connect continues the identity taken at bind
    assert.deepEqual(
      client.lines.filter((l) => l.startsWith('sock-attach ') && l.endsWith(` ${cs}`)),
      [`sock-attach ${pid} ${cs}`],
    );
    assert.deepEqual(
      mine(cs).map((l) => l.split(' ')[0]),
      ['sock-attach', 'bound', 'sock-connect-out', 'option', 'option'],
    );
    assert.deepEqual(
      mine(cs).filter((l) => l.startsWith('option')),
      [`option ${cs} 6 1 1`, `option ${cs} 1 4 0`],
    );
    // The options precede the data written after them (relay order, as the kext).
    const iOpt = client.lines.indexOf(`option ${cs} 1 4 0`);
    const iData = client.lines.findIndex((l) => l.startsWith('data out '));
    assert.ok(iData > iOpt, client.lines.join('\n'));
  });

  it('bind/listen/setsockopt open no link while no user client is open (one once a client is)', async function () {
    const PY = `
import socket, os
s = socket.socket()
n0 = len(os.listdir('/proc/self/fd'))
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('127.0.0.1', 0)); s.listen(1)
print(n0, len(os.listdir('/proc/self/fd')))
`;
    const count = async () => {
      const r = await runShimmed('python3', ['-c', PY]);
      assert.equal(r.code, 0, r.stderr);
      const [n0, n1] = r.stdout.toString().trim().split(' ').map(Number);
      return n1 - n0;
    };
    assert.equal(await count(), 0, 'no client: no descriptor opened');
    await startClient(['--out', 'pass', '--in', 'pass']);
    // shim.state is re-read at most every 100 ms by a process; a new process reads it at once.
    assert.equal(await count(), 1, 'client open: one link for the listening socket');
  });

  // Several chunks of one socket and direction with nke-emud at once (the
  // shim link's window): the program writes pieces 150 ms apart so the relay
  // reads each as its own chunk, and the server answers the same way.
  const PY_PIECES = `
import socket, sys, time
s = socket.create_connection((sys.argv[1], int(sys.argv[2])))
for p in sys.argv[3].split(','):
    s.sendall(p.encode())
    time.sleep(0.15)
s.shutdown(socket.SHUT_WR)
out = b''
while True:
    d = s.recv(65536)
    if not d: break
    out += d
sys.stdout.write(out.decode('latin1') + '\\n')
`;
  /** A server that records what it got and answers `pieces` 150 ms apart, then closes. */
  function piecesServer(pieces) {
    return new Promise((resolve) => {
      const got = [];
      const srv = createServer(net, (s) => {
        const parts = [];
        s.on('data', (d) => parts.push(d));
        s.on('error', () => {});
        let i = 0;
        const next = () => {
          if (i < pieces.length) {
            s.write(pieces[i++]);
            setTimeout(next, 150);
          } else s.end();
        };
        next();
        s.on('end', () => got.push(Buffer.concat(parts).toString('latin1')));
      });
      srv.listen(0, '127.0.0.1', () => resolve({ srv, port: srv.address().port, got }));
    });
  }

  it('three chunks held at once on one socket, released last first: they arrive in order, both ways', async function () {
    const client = await startClient(['--out', 'reverse:3', '--in', 'reverse:3']);
    const s = await piecesServer(['in-one.', 'in-two.', 'in-three.']);
    const r = await runShimmed('python3', [
      '-c',
      PY_PIECES,
      '127.0.0.1',
      String(s.port),
      'out-one.,out-two.,out-three.',
    ]);
    s.srv.close();
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(s.got, ['out-one.out-two.out-three.']);
    assert.equal(r.stdout.toString(), 'in-one.in-two.in-three.\n');
    // Proof that three were held together on each direction and answered in reverse.
    assert.equal(client.lines.filter((l) => l === 'reverse 3').length, 2, client.lines.join('\n'));
  });

  it('chunk 2 edited (longer) while chunk 1 is still held: both delivered exactly, in order, both ways', async function () {
    const client = await startClient(['--out', 'edit2', '--in', 'edit2']);
    const s = await piecesServer(['first|', 'second|', 'third']);
    const r = await runShimmed('python3', ['-c', PY_PIECES, '127.0.0.1', String(s.port), 'aaa|,bbb|,ccc']);
    s.srv.close();
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(s.got, ['aaa|bbbbbb||ccc']);
    assert.equal(r.stdout.toString(), 'first|sseeccoonndd||third\n');
    assert.equal(client.lines.filter((l) => l === 'edit2 while-held').length, 2, client.lines.join('\n'));
  });

  it('a held chunk blocks only its own socket: another socket of the same process completes meanwhile', async function () {
    // edit2 holds each socket's first chunk until its second arrives.
    const client = await startClient(['--out', 'edit2', '--in', 'pass']);
    const got = new Map();
    const srv = createServer(net, (c) => {
      const p = [];
      c.on('data', (d) => p.push(d));
      c.on('end', () => {
        const b = Buffer.concat(p).toString();
        got.set(b[0], b);
        c.end('done');
      });
    });
    await new Promise((r) => srv.listen(0, '127.0.0.1', r));
    const script = `
      const net = require('net');
      const a = net.connect(${srv.address().port}, '127.0.0.1', () => a.write('A1'));
      a.on('data', (d) => console.log('A ' + d));
      process.stdin.on('data', () => a.end('A2'));
      setTimeout(() => {
        const b = net.connect(${srv.address().port}, '127.0.0.1', () => { b.write('B1'); setTimeout(() => b.end('B2'), 150); });
        b.on('data', (d) => console.log('B ' + d));
      }, 150);`;
    const prog = start('node', ['-e', script], { env: shimEnv(), stdio: ['pipe', 'pipe', 'pipe'] });
    await prog.waitLine(/^B done$/);
    assert.equal(got.get('B'), 'B1BB22', 'B: chunk 2 doubled, behind chunk 1');
    assert.ok(!got.has('A'), 'A is still held');
    prog.stdin.write('go\n');
    await prog.waitLine(/^A done$/);
    srv.close();
    assert.equal(got.get('A'), 'A1AA22');
    assert.equal(client.lines.filter((l) => l === 'edit2 while-held').length, 2);
  });

  it('nke-emud killed with several chunks of one socket held: the shim sends them all as they were, in order', async function () {
    const client = await startClient(['--out', 'reverse:4', '--in', 'pass']);
    const s = await piecesServer(['reply']);
    const prog = start('python3', ['-c', PY_PIECES, '127.0.0.1', String(s.port), 'p1-,p2-,p3-'], {
      env: shimEnv(),
    });
    // three held, the client waits for a fourth that never comes
    for (;;) {
      if (client.lines.filter((l) => /^data out \d+ 1$/.test(l)).length >= 3) break;
      await new Promise((r) => setTimeout(r, 20));
    }
    assert.equal(s.got.length, 0);
    await kill(emud, 'SIGKILL');
    const r = await prog.exited;
    s.srv.close();
    assert.equal(r.code, 0, prog.stderrText);
    assert.deepEqual(s.got, ['p1-p2-p3-']);
    assert.equal(prog.lines.join('\n'), 'reply');
  });

  it('user client killed with 500 chunks held: all released within the deadline, originals byte-exact', async function () {
    // --copy-release: the client copies each held chunk out and releases its
    // buffers at once, the verdict pending, so the 64-buffer pool does not cap
    // how many chunks are held (the core's chunk table does).
    const client = await startClient([
      '--out',
      'hold',
      '--in',
      'pass',
      '--timeout-ms',
      '20000',
      '--copy-release',
    ]);
    const got = new Map();
    const srv = createServer(net, (s) => {
      const p = [];
      s.on('data', (d) => p.push(d));
      s.on('end', () => {
        const b = Buffer.concat(p).toString();
        got.set(b.split(':')[0], b);
        s.end();
      });
    });
    await new Promise((r) => srv.listen(0, '127.0.0.1', r));
    // Batches of 20 connections, the next one once the client has taken the
    // last: a burst faster than the client releases buffers would find the
    // 64-buffer pool full and pass (fail open), whatever the machine's load.
    const script = `
      const net = require('net'); let done = 0, next = 0;
      function batch() {
        for (let k = 0; k < 20 && next < 500; k++) {
          const i = next++;
          const s = net.connect(${srv.address().port}, '127.0.0.1', () => s.end(i + ':payload-' + 'z'.repeat(i)));
          s.on('close', () => { if (++done === 500) { console.log('all closed'); process.exit(0); } });
          s.on('error', e => console.error(e.message));
        }
      }
      process.stdin.on('data', (d) => d.toString().split('\\n').filter(Boolean).forEach(batch));
      batch();`;
    const prog = start('node', ['-e', script], { env: shimEnv(), stdio: ['pipe', 'pipe', 'pipe'] });
    for (let n = 20; n < 500; n += 20) {
      await client.waitLine(new RegExp(`^held-total ${n}$`), 20000);
      prog.stdin.write('go\n');
    }
    await client.waitLine(/^held-total 500$/, 20000);
    assert.equal(got.size, 0, 'no held chunk has arrived before the client dies');
    // The client's copies are the originals, one per connection.
    const copies = client.lines
      .filter((l) => l.startsWith('copy '))
      .map((l) => Buffer.from(l.split(' ')[2], 'hex').toString());
    assert.equal(copies.length, 500);
    assert.deepEqual(
      copies.sort(),
      [...Array(500).keys()].map((i) => `${i}:payload-${'z'.repeat(i)}`).sort(),
    );
    const t0 = Date.now();
    await kill(client, 'SIGKILL');
    await prog.waitLine(/^all closed$/, 5000);
    const ms = Date.now() - t0;
    srv.close();
    assert.equal(got.size, 500);
    for (let i = 0; i < 500; i++) assert.equal(got.get(String(i)), `${i}:payload-${'z'.repeat(i)}`);
    assert.ok(ms < 5000, `released in ${ms} ms`);
    const r = await prog.exited;
    assert.equal(r.code, 0, prog.stderrText);
  });

  it('held data is released at the deadline when the client never answers', async function () {
    await startClient(['--out', 'hold', '--in', 'pass', '--timeout-ms', '300']);
    const s = await tcpServer('127.0.0.1', Buffer.from('ok'));
    const t0 = Date.now();
    const r = await runShimmed('python3', [
      '-c',
      PY_TCP,
      '127.0.0.1',
      String(s.port),
      dataFile(Buffer.from('late bytes')),
    ]);
    s.srv.close();
    assert.equal(r.code, 0, r.stderr);
    assert.equal(s.got[0].toString(), 'late bytes');
    assert.ok(Date.now() - t0 >= 250, 'held until the deadline');
  });

  it('nke-emud killed and restarted: a shimmed program keeps running, bytes intact', async function () {
    await startClient(['--out', 'pass', '--in', 'pass']);
    const srv = createServer(net, (s) => s.pipe(s));
    await new Promise((r) => srv.listen(0, '127.0.0.1', r));
    const script = `
      const net = require('net'); let n = 0;
      function round() {
        const s = net.connect(${srv.address().port}, '127.0.0.1', () => s.end('round ' + n));
        const p = []; s.on('data', d => p.push(d));
        s.on('close', () => { console.log(Buffer.concat(p).toString()); if (++n < 30) setTimeout(round, 50); });
      }
      round();`;
    const prog = start('node', ['-e', script], { env: shimEnv() });
    await prog.waitLine(/^round 5$/);
    await kill(emud, 'SIGKILL');
    await prog.waitLine(/^round 12$/);
    await startDaemon();
    await startClient(['--out', 'upper', '--in', 'pass']);
    await prog.waitLine(/^ROUND 2\d$/);
    const r = await prog.exited;
    srv.close();
    assert.equal(r.code, 0);
    assert.equal(prog.lines.length, 30);
  });

  it('exec of a binary whose absolute path is over 1000 bytes is reassembled exactly from kev.sock', async function () {
    const kev = await startClient(['--kev']);
    assert.match(kev.lines[0], /limit 224$/);
    let p = dir;
    while (p.length < 950) p = path.join(p, 'd'.repeat(40));
    p = path.join(p, 'e'.repeat(1000 - p.length - 1));
    fs.mkdirSync(p, { recursive: true });
    const bin = path.join(p, 'true-binary');
    fs.copyFileSync('/bin/true', bin);
    fs.chmodSync(bin, 0o755);
    assert.ok(bin.length > 1000 && bin.length < 1023);
    const r = await runShimmed('python3', [
      '-c',
      'import os,sys; os.execve(sys.argv[1], [sys.argv[1]], dict(os.environ))',
      bin,
    ]);
    assert.equal(r.code, 0, r.stderr);
    // Other execs (the interpreter's own) may come first; ours ends with the path.
    const line = await kev.waitLine(
      new RegExp(`^exec .* ${bin.length} ${bin.replace(/[.*+?^\${}()|[\]\\]/g, '\\$&')}$`),
    );
    const [, pid, ppid, uid, complete, len] = line.split(' ');
    assert.equal(complete, '1');
    assert.equal(Number(len), bin.length);
    assert.equal(line.slice(line.indexOf(' ', line.indexOf(len + ' ')) + 1), bin);
    assert.equal(Number(uid), process.getuid());
    assert.ok(Number(pid) > 0 && Number(ppid) === process.pid);
    assert.ok(!kev.lines.some((l) => l.startsWith('oversize')));
  });

  it('as root, an exec by a program not under the shim is seen through the process-events connector', async function () {
    if (process.getuid() !== 0) this.skip(); // connector needs CAP_NET_ADMIN; else shim reports only
    // stderr and the stdout ready line travel on separate pipes: wait for the log.
    for (let i = 0; i < 50 && !/exec events from/.test(emud.stderrText); i++)
      await new Promise((r) => setTimeout(r, 20));
    if (/exec events from the shim's execve only/.test(emud.stderrText)) this.skip(); // e.g. not the initial network namespace
    assert.match(emud.stderrText, /exec events from the process-events connector/);
    const kev = await startClient(['--kev']);
    // Lives 0.3 s: the connector only gives the pid, /proc/PID/exe must still exist.
    const bin = path.join(dir, 'unshimmed-sleep');
    fs.copyFileSync('/bin/sleep', bin);
    fs.chmodSync(bin, 0o755);
    // node's spawn: fork + execvp in the child, no LD_PRELOAD anywhere.
    const r = spawnSync(bin, ['0.3'], { env: { PATH: '/usr/bin:/bin' } });
    assert.equal(r.status, 0);
    const line = await kev.waitLine(
      new RegExp(`^exec .* ${bin.length} ${bin.replace(/[.*+?^\${}()|[\]\\]/g, '\\$&')}$`),
    );
    const [, pid, ppid, uid, complete] = line.split(' ');
    assert.equal(complete, '1');
    assert.equal(Number(ppid), process.pid);
    assert.equal(Number(uid), 0);
    assert.ok(Number(pid) > 0);
  });

  it('as root, a shimmed exec seen by both the connector and the shim is one event (pid, ppid, uid, path)', async function () {
    if (process.getuid() !== 0) this.skip(); // connector needs CAP_NET_ADMIN; else the shim alone reports
    await kill(emud, 'SIGKILL');
    await startDaemon([], { NKE_EMUD_DEBUG: '1' }); // logs each pairing, so both sources are shown to have seen it
    for (let i = 0; i < 50 && !/exec events from/.test(emud.stderrText); i++)
      await new Promise((r) => setTimeout(r, 20));
    if (/exec events from the shim's execve only/.test(emud.stderrText)) this.skip();
    const kev = await startClient(['--kev']);
    // Lives 0.3 s so /proc/PID/exe is there for the connector's report.
    const bin = path.join(dir, 'exec-target');
    fs.copyFileSync('/bin/sleep', bin);
    fs.chmodSync(bin, 0o755);
    const PY =
      'import os, sys; print(os.getpid(), flush=True); os.execve(sys.argv[1], [sys.argv[1], "0.3"], dict(os.environ))';
    const r = await runShimmed('python3', ['-c', PY, bin]);
    assert.equal(r.code, 0, r.stderr);
    const pid = Number(r.stdout.toString().trim());
    const esc = bin.replace(/[.*+?^\${}()|[\]\\]/g, '\\$&');
    await kev.waitLine(new RegExp(`^exec .* ${esc}$`));
    for (let i = 0; i < 50 && !new RegExp(`exec of pid ${pid} reported by both`).test(emud.stderrText); i++)
      await new Promise((res) => setTimeout(res, 20));
    assert.match(emud.stderrText, new RegExp(`exec of pid ${pid} reported by both`));
    await new Promise((res) => setTimeout(res, 300)); // a second event would be here by now
    const ours = kev.lines.filter((l) => l.endsWith(` ${bin}`));
    assert.deepEqual(ours, [`exec ${pid} ${process.pid} 0 1 ${bin.length} ${bin}`]);
  });

  it('execv, execvp (node spawn), subprocess, posix_spawn and posix_spawnp are reported by the shim with pid, ppid, path', async function () {
    await kill(emud, 'SIGKILL');
    await startDaemon([], { NKE_EMU_NO_PROC_CONNECTOR: '1' }); // the shim alone: every event below is its own
    const kev = await startClient(['--kev']);
    const bins = {};
    for (const name of ['t-node-execvp', 't-py-subprocess', 't-py-spawn', 't-py-spawnp', 't-py-execv']) {
      bins[name] = path.join(dir, name);
      fs.copyFileSync('/bin/true', bins[name]);
      fs.chmodSync(bins[name], 0o755);
    }
    const env = { PATH: `${dir}:${process.env.PATH}` };
    // node: libuv's uv_spawn forks and calls execvp with a bare name (PATH search).
    const JS =
      "const r = require('child_process').spawnSync('t-node-execvp'); console.log(process.pid, r.pid, r.status)";
    const rn = await runShimmed('node', ['-e', JS], 20000, env);
    assert.equal(rn.code, 0, rn.stderr);
    const [nodePid, nodeChild, st] = rn.stdout.toString().trim().split(' ').map(Number);
    assert.equal(st, 0);
    const PY = `
import os, subprocess, sys
d = sys.argv[1]
p = subprocess.Popen([os.path.join(d, 't-py-subprocess')]); p.wait()
a = os.posix_spawn(os.path.join(d, 't-py-spawn'), ['x'], dict(os.environ)); os.waitpid(a, 0)
b = os.posix_spawnp('t-py-spawnp', ['x'], dict(os.environ)); os.waitpid(b, 0)
print(os.getpid(), p.pid, a, b, flush=True)
os.execv(os.path.join(d, 't-py-execv'), ['x'])
`;
    const rp = await runShimmed('python3', ['-c', PY, dir], 20000, env);
    assert.equal(rp.code, 0, rp.stderr);
    const [pyPid, subPid, spawnPid, spawnpPid] = rp.stdout.toString().trim().split(' ').map(Number);
    const want = [
      [nodeChild, nodePid, 't-node-execvp'],
      [subPid, pyPid, 't-py-subprocess'],
      [spawnPid, pyPid, 't-py-spawn'],
      [spawnpPid, pyPid, 't-py-spawnp'],
      [pyPid, process.pid, 't-py-execv'],
    ];
    for (const [pid, ppid, name] of want) {
      const b = bins[name];
      await kev.waitLine(new RegExp(`${b.replace(/[.*+?^\${}()|[\]\\]/g, '\\$&')}$`), 5000);
      const lines = kev.lines.filter((l) => l.endsWith(` ${b}`));
      assert.deepEqual(lines, [`exec ${pid} ${ppid} ${process.getuid()} 1 ${b.length} ${b}`], name);
    }
  });

  it('fexecve (python os.execve on a fd) and execveat (dirfd + name, AT_EMPTY_PATH): one exec event each with the absolute path, pid, ppid', async function () {
    const bins = {};
    for (const name of ['t-fexecve', 't-execveat-rel', 't-execveat-empty']) {
      bins[name] = path.join(dir, name);
      fs.copyFileSync('/bin/sleep', bins[name]); // lives 0.2 s: /proc/PID/exe is there for the connector
      fs.chmodSync(bins[name], 0o755);
    }
    const PY = `
import ctypes, os, sys
d, how = sys.argv[1], sys.argv[2]
print(os.getpid(), flush=True)
args = ['x', '0.2']
if how == 'fexecve':
    os.execve(os.open(os.path.join(d, 't-fexecve'), os.O_RDONLY), args, dict(os.environ))
libc = ctypes.CDLL(None, use_errno=True)
argv = (ctypes.c_char_p * 3)(b'x', b'0.2', None)
envp = (ctypes.c_char_p * 1)(None)
if how == 'rel':
    libc.execveat(os.open(d, os.O_RDONLY | os.O_DIRECTORY), b't-execveat-rel', argv, envp, 0)
else:
    libc.execveat(os.open(os.path.join(d, 't-execveat-empty'), os.O_PATH), b'', argv, envp, 0x1000)  # AT_EMPTY_PATH
sys.exit('execveat failed: %d' % ctypes.get_errno())
`;
    // First the shim alone (every event is its report: flags 1), then the
    // default daemon: as root the connector sees these execs too, and each
    // must still be one event (the shim's and the connector's paired).
    for (const shimOnly of [true, false]) {
      await kill(emud, 'SIGKILL');
      await startDaemon([], shimOnly ? { NKE_EMU_NO_PROC_CONNECTOR: '1' } : {});
      const kev = await startClient(['--kev']);
      for (const [how, name] of [
        ['fexecve', 't-fexecve'],
        ['rel', 't-execveat-rel'],
        ['empty', 't-execveat-empty'],
      ]) {
        const r = await runShimmed('python3', ['-c', PY, dir, how]);
        assert.equal(r.code, 0, r.stderr);
        const pid = Number(r.stdout.toString().trim());
        const b = bins[name];
        await kev.waitLine(new RegExp(`${b.replace(/[.*+?^\${}()|[\]\\]/g, '\\$&')}$`), 5000);
        await new Promise((res) => setTimeout(res, 300)); // a second event would be here by now
        const lines = kev.lines.filter((l) => l.endsWith(` ${b}`));
        assert.equal(lines.length, 1, `${name}: ${lines.join(' | ')}`);
        const flags = shimOnly ? '1' : '[01]';
        assert.match(
          lines[0],
          new RegExp(`^exec ${pid} ${process.pid} ${process.getuid()} ${flags} ${b.length} `),
          name,
        );
      }
      await kill(kev, 'SIGKILL');
    }
  });

  it('refuses a user client of another uid (SO_PEERCRED), tells it so with its uid, and logs it', async function () {
    if (process.getuid() !== 0) this.skip();
    // Open the path up on purpose so only the peer-credential check stands in the way.
    fs.chmodSync(dir, 0o711);
    fs.chmodSync(rt, 0o711);
    fs.chmodSync(path.join(rt, 'ctl.sock'), 0o777);
    // An OPEN request; the answer is the protocol's refusal (nke_emu_proto.h):
    // status NKE_ERR_NOT_PERMITTED (20) and nke_emu_refusal {peer uid, filter uid}.
    const py = `
import os, socket, struct, sys
os.setgid(65534); os.setuid(65534)
s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
s.connect(sys.argv[1])
s.send(struct.pack('<4I', 0x51454b4e, 0, 7, 16) + struct.pack('<IIiI', 2, 0, os.getpid(), 0))
r = s.recv(100)
magic, status, seq, n = struct.unpack('<4I', r[:16])
peer, filt = struct.unpack('<2I', r[16:24])
print(status, seq, n, peer, filt)`;
    const r = spawnSync('python3', ['-c', py, path.join(rt, 'ctl.sock')], { encoding: 'utf8' });
    assert.equal(r.stdout.trim(), `20 7 8 65534 ${process.getuid()}`, r.stderr);
    await new Promise((res) => setTimeout(res, 100));
    assert.match(emud.stderrText, /refused peer pid \d+ uid 65534/);
    // And the real client still gets in: the refused one never held the session.
    fs.chmodSync(rt, 0o700);
    await startClient(['--out', 'pass', '--in', 'pass']);
  });

  it('a connection opened with no user client (no-round-trip path) is filtered once a client opens', async function () {
    // The relay moves bytes by itself while shim.state says nothing can be
    // deferred; a client opening later must still see this socket's data,
    // as with the kext, whose filter stays attached to existing sockets.
    const PY = `
import socket, sys, os, time
s = socket.create_connection(('127.0.0.1', int(sys.argv[1])))
def rt(m):
    s.sendall(m)
    got = b''
    while len(got) < len(m):
        got += s.recv(65536)
    return got
a = rt(b'first-before-client')
open(sys.argv[2], 'w').close()
while not os.path.exists(sys.argv[3]): time.sleep(0.02)
b = rt(b'second-after-client')
print(a.decode() + ' ' + b.decode())
`;
    const seen = [];
    const srv = createServer(net, (c) =>
      c.on('data', (d) => {
        seen.push(d.toString());
        c.write(d);
      }),
    );
    await new Promise((r) => srv.listen(0, '127.0.0.1', r));
    assert.equal(fs.readFileSync(path.join(rt, 'shim.state')).readUInt32LE(4), 0, 'no client: may_defer 0');
    const phase1 = path.join(dir, 'phase1');
    const phase2 = path.join(dir, 'phase2');
    const run = runShimmed('python3', ['-c', PY, String(srv.address().port), phase1, phase2]);
    for (let i = 0; i < 500 && !fs.existsSync(phase1); i++) await new Promise((r) => setTimeout(r, 20));
    assert.ok(fs.existsSync(phase1), 'first round trip (no client) completed');
    await startClient(['--out', 'upper', '--in', 'pass']);
    assert.equal(
      fs.readFileSync(path.join(rt, 'shim.state')).readUInt32LE(4),
      1,
      'client with mode ALL: may_defer 1',
    );
    fs.writeFileSync(phase2, '');
    const r = await run;
    srv.close();
    assert.equal(r.code, 0, r.stderr);
    assert.equal(seen.join(''), 'first-before-clientSECOND-AFTER-CLIENT');
    assert.equal(r.stdout.toString().trim(), 'first-before-client SECOND-AFTER-CLIENT');
  });

  it('a second user client gets NKE_ERR_BUSY', async function () {
    await startClient(['--out', 'pass', '--in', 'pass']);
    const r = spawnSync(CLIENT, ['--dir', rt], { encoding: 'utf8', timeout: 5000 });
    assert.equal(r.stdout.trim(), 'open-failed 21');
  });

  it('without nke-emud the shimmed program runs unchanged (fail open)', async function () {
    await kill(emud, 'SIGKILL');
    const s = await tcpServer('127.0.0.1', Buffer.from('fine'));
    const r = await runShimmed('python3', [
      '-c',
      PY_TCP,
      '127.0.0.1',
      String(s.port),
      dataFile(Buffer.from('plain')),
    ]);
    s.srv.close();
    assert.equal(r.code, 0, r.stderr);
    assert.equal(s.got[0].toString(), 'plain');
    assert.equal(Buffer.from(r.stdout.toString(), 'hex').toString(), 'fine');
  });

  describe('UDP sends are queued: a held datagram blocks no thread', function () {
    // argv: host port mode hex...; sends each datagram with sendto, prints
    // "sent <ms>" (time the sendto calls took). mode "exit": exits at once
    // (sys.exit: destructors run); "wait": then sends each stdin line's
    // hex datagrams, printing "more" after each line, until EOF.
    const PY_UDP_SEND = `
import socket, sys, time
fam = socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET
s = socket.socket(fam, socket.SOCK_DGRAM)
dst = (sys.argv[1], int(sys.argv[2]))
t0 = time.monotonic()
for m in sys.argv[4:]:
    s.sendto(bytes.fromhex(m), dst)
print('sent %d' % round((time.monotonic() - t0) * 1000), flush=True)
if sys.argv[3] == 'exit':
    sys.exit(0)
for line in sys.stdin:
    for m in line.split():
        s.sendto(bytes.fromhex(m), dst)
    print('more', flush=True)
`;
    /** An unshimmed UDP receiver recording every datagram in arrival order. */
    async function udpSink(host) {
      const sock = dgram.createSocket(host.includes(':') ? 'udp6' : 'udp4');
      const got = [];
      sock.on('message', (m) => got.push(m));
      await new Promise((r) => sock.bind(0, host, r));
      servers.add({ srv: { listening: true, close: () => sock.close() }, conns: new Set() });
      return { sock, port: sock.address().port, got };
    }
    async function until(cond, ms, what) {
      const t0 = Date.now();
      while (!cond()) {
        if (Date.now() - t0 > ms)
          assert.fail(`${typeof what === 'function' ? what() : what}: not within ${ms} ms`);
        await new Promise((r) => setTimeout(r, 10));
      }
    }
    const hex = (b) => Buffer.from(b).toString('hex');
    // test-client's bytag policy: by the first byte, D drop, L double, S shrink, N nul, else pass.
    const byTag = (b) => {
      const tag = String.fromCharCode(b[0]);
      if (tag === 'D') return null;
      return { L: T.double, S: T.shrink, N: T.nul }[tag]?.(b) ?? b;
    };

    for (const host of ['127.0.0.1', '::1']) {
      it(`python3 over ${host}: sendto returns at once while datagram 1 is held 1.5 s; all arrive in order, edited and dropped per datagram`, async function () {
        const client = await startClient(['--out', 'bytag', '--in', 'pass', '--hold-first-ms', '1500']);
        const sink = await udpSink(host);
        const msgs = [
          'first!x',
          'Lhello',
          'Sxxaxbxx',
          'N!nul!',
          'Ddropped',
          'plain',
          `S${'x'.repeat(1000)}end`,
          'Sxxx',
          `L${'y'.repeat(3000)}`,
          'Dgone too',
          'last',
        ].map((m) => Buffer.from(m, 'latin1'));
        const expected = msgs.map(byTag).filter((b) => b !== null);
        const t0 = Date.now();
        const prog = start(
          'python3',
          ['-c', PY_UDP_SEND, host, String(sink.port), 'wait', ...msgs.map(hex)],
          {
            env: shimEnv(),
            stdio: ['pipe', 'pipe', 'pipe'],
          },
        );
        const sendMs = Number((await prog.waitLine(/^sent \d+$/)).split(' ')[1]);
        assert.ok(
          sendMs < 1000,
          `${msgs.length} sendto calls took ${sendMs} ms with the first datagram held 1500 ms`,
        );
        await client.waitLine(/^held-first$/);
        assert.equal(sink.got.length, 0, 'nothing overtakes the held first datagram');
        await until(
          () => sink.got.length >= expected.length,
          10000,
          () => `all datagrams (got ${sink.got.length}; client: ${client.lines.join(', ')})`,
        );
        assert.ok(Date.now() - t0 >= 1450, 'the first was held');
        await new Promise((r) => setTimeout(r, 100)); // nothing more comes
        assert.deepEqual(sink.got.map(hex), expected.map(hex));
        prog.stdin.end();
        assert.equal((await prog.exited).code, 0, prog.stderrText);
      });
    }

    it('20000 datagrams of 64 bytes with a pass-at-once client: all arrive in order, byte-exact, several awaiting verdicts at once', async function () {
      const client = await startClient(['--out', 'pass', '--in', 'pass']);
      // The receiver acks every 100th datagram and the sender waits for each
      // ack: at most 100 datagrams (~100 KiB of skbs) sit in the receiver's
      // buffer, below the default 208 KiB, so loopback never drops one and a
      // lost datagram shows as a missing ack (the sender times out).
      const N = 20000;
      const B = 100;
      const sink = dgram.createSocket('udp4');
      let count = 0;
      let bad = '';
      sink.on('message', (m, ri) => {
        const want = Buffer.from(`${String(count).padStart(6, '0')}:${'p'.repeat(57)}`);
        if (!bad && !m.equals(want)) bad = `datagram ${count}: got ${m.toString()}`;
        if (++count % B === 0) sink.send(String(count), ri.port, ri.address);
      });
      await new Promise((r) => sink.bind(0, '127.0.0.1', r));
      servers.add({ srv: { listening: true, close: () => sink.close() }, conns: new Set() });
      const py = `
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(10)
dst = ('127.0.0.1', int(sys.argv[1]))
N, B = ${N}, ${B}
t0 = time.monotonic()
for base in range(0, N, B):
    for i in range(base, base + B):
        s.sendto(b'%06d:' % i + b'p' * 57, dst)
    d, a = s.recvfrom(64)
    assert int(d) == base + B, d
print('done %d' % round((time.monotonic() - t0) * 1000))
`;
      const r = await runShimmed('python3', ['-c', py, String(sink.address().port)], 60000);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(bad, '');
      assert.equal(count, N);
      const batches = client.lines.filter((l) => /^batch \d+$/.test(l)).map((l) => Number(l.split(' ')[1]));
      assert.ok(
        batches.length > 0 && Math.max(...batches) >= 2,
        'the client saw several datagrams of the socket awaiting verdicts at once (pipelined)',
      );
      this.test.title += ` [${r.stdout.toString().trim()} ms, max ${Math.max(...batches)} at once]`;
    });

    it('a full window (32 datagrams awaiting verdicts): EAGAIN on a non-blocking socket, a blocking send waits for room', async function () {
      await startClient(['--out', 'pass', '--in', 'pass', '--hold-first-ms', '1500']);
      const sink = await udpSink('127.0.0.1');
      const py = `
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
dst = ('127.0.0.1', int(sys.argv[1]))
s.setblocking(False)
ok = 0
try:
    for i in range(100):
        s.sendto(b'd%d' % ok, dst)
        ok += 1
except BlockingIOError:
    pass
s.setblocking(True)
t0 = time.monotonic()
s.sendto(b'd%d' % ok, dst)
waited = round((time.monotonic() - t0) * 1000)
for i in range(ok + 1, 40):
    s.sendto(b'd%d' % i, dst)
print(ok, waited)
`;
      const r = await runShimmed('python3', ['-c', py, String(sink.port)]);
      assert.equal(r.code, 0, r.stderr);
      const [ok, waited] = r.stdout.toString().trim().split(' ').map(Number);
      assert.equal(ok, 32, 'non-blocking sends accepted before EAGAIN');
      assert.ok(waited >= 500, `the blocking send waited ${waited} ms for the held datagram's verdict`);
      await until(
        () => sink.got.length >= 40,
        5000,
        () => `40 datagrams (got ${sink.got.length})`,
      );
      assert.deepEqual(
        sink.got.map((b) => b.toString()),
        [...Array(40).keys()].map((i) => `d${i}`),
      );
    });

    it('nke-emud killed with datagrams held: they are all sent as they were, in order; the program keeps sending', async function () {
      const client = await startClient(['--out', 'hold', '--in', 'pass', '--timeout-ms', '20000']);
      const sink = await udpSink('127.0.0.1');
      const msgs = ['one', 'two!', 'three x', 'four', 'five'].map((m) => Buffer.from(m));
      const prog = start(
        'python3',
        ['-c', PY_UDP_SEND, '127.0.0.1', String(sink.port), 'wait', ...msgs.map(hex)],
        {
          env: shimEnv(),
          stdio: ['pipe', 'pipe', 'pipe'],
        },
      );
      const sendMs = Number((await prog.waitLine(/^sent \d+$/)).split(' ')[1]);
      assert.ok(sendMs < 2000, `sendto calls took ${sendMs} ms with every datagram held 20 s`);
      await waitCount(client, /^data out \d+ 1$/, msgs.length);
      assert.equal(sink.got.length, 0);
      await kill(emud, 'SIGKILL');
      await until(() => sink.got.length >= msgs.length, 5000, 'held datagrams after nke-emud died');
      prog.stdin.write(`${hex('six')} ${hex('seven')}\n`);
      await prog.waitLine(/^more$/);
      await until(() => sink.got.length >= 7, 5000, 'datagrams sent after');
      assert.deepEqual(
        sink.got.map((b) => b.toString()),
        ['one', 'two!', 'three x', 'four', 'five', 'six', 'seven'],
      );
      prog.stdin.end();
      assert.equal((await prog.exited).code, 0, prog.stderrText);
    });

    it('an error of the real send of a queued datagram (ECONNREFUSED) is returned by the next send on the socket', async function () {
      await startClient(['--out', 'pass', '--in', 'pass']);
      // A port nobody listens on: the first datagram draws an ICMP port
      // unreachable; the kernel reports it on the connected socket's next
      // send, which the worker makes, so the program sees it one send later.
      const closed = dgram.createSocket('udp4');
      await new Promise((r) => closed.bind(0, '127.0.0.1', r));
      const port = closed.address().port;
      await new Promise((r) => closed.close(r));
      const py = `
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.connect(('127.0.0.1', int(sys.argv[1])))
out = []
for i in range(5):
    try:
        s.send(b'ping %d' % i)
        out.append('ok')
    except ConnectionRefusedError:
        out.append('refused')
    time.sleep(0.2)
print(' '.join(out))
`;
      const r = await runShimmed('python3', ['-c', py, String(port)]);
      assert.equal(r.code, 0, r.stderr);
      const out = r.stdout.toString().trim().split(' ');
      assert.equal(out[0], 'ok');
      assert.ok(out.includes('refused'), `sends: ${out.join(' ')}`);
    });

    it('fork with a datagram queued: the parent sends it once, the child sends its own and exits without waiting for the parent', async function () {
      await startClient(['--out', 'pass', '--in', 'pass', '--hold-first-ms', '800']);
      const sink = await udpSink('127.0.0.1');
      const py = `
import os, socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
dst = ('127.0.0.1', int(sys.argv[1]))
s.sendto(b'p1', dst)
pid = os.fork()
if pid == 0:
    t0 = time.monotonic()
    s.sendto(b'c1', dst)
    s.close()
    sys.stdout.write('child sent %d\\n' % round((time.monotonic() - t0) * 1000))
    sys.stdout.flush()
    sys.exit(0)
os.waitpid(pid, 0)
s.sendto(b'p2', dst)
print('parent done')
`;
      const r = await runShimmed('python3', ['-c', py, String(sink.port)]);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout.toString(), /child sent \d+\nparent done/);
      await until(
        () => sink.got.length >= 3,
        5000,
        () => `3 datagrams (got ${sink.got.join(',')})`,
      );
      await new Promise((res) => setTimeout(res, 100));
      const got = sink.got.map((b) => b.toString());
      assert.deepEqual([...got].sort(), ['c1', 'p1', 'p2'], 'each datagram once');
      assert.ok(got.indexOf('p1') < got.indexOf('p2'), `parent's order: ${got}`);
    });

    it('a program that sends and then execs while its datagrams are held: they still arrive (exec drain)', async function () {
      await startClient(['--out', 'upper', '--in', 'pass', '--hold-first-ms', '1000']);
      const sink = await udpSink('127.0.0.1');
      const PY = `
import os, socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for m in sys.argv[2:]:
    s.sendto(m.encode(), ('127.0.0.1', int(sys.argv[1])))
os.execv('/bin/true', ['true'])
`;
      const r = await runShimmed('python3', ['-c', PY, String(sink.port), 'one', 'two', 'three']);
      assert.equal(r.code, 0, r.stderr);
      await until(() => sink.got.length >= 3, 2000, 'datagrams queued at exec');
      assert.deepEqual(
        sink.got.map((b) => b.toString()),
        ['ONE', 'TWO', 'THREE'],
      );
    });

    it('the exit drain is bounded once for UDP and TCP together (NKE_SHIM_EXIT_WAIT_MS)', async function () {
      // Every chunk and datagram is held 5 s: the drain gives up at its
      // bound. Two separate bounds (UDP, then TCP) would make exit take 2x.
      await startClient(['--out', 'hold', '--in', 'pass', '--timeout-ms', '5000']);
      const sink = await udpSink('127.0.0.1');
      const s = await tcpServer('127.0.0.1', Buffer.from(''));
      const PY = `
import ctypes, socket, sys, time
libc = ctypes.CDLL(None)
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.sendto(b'held', ('127.0.0.1', int(sys.argv[1])))
c = socket.create_connection(('127.0.0.1', int(sys.argv[2])))
c.sendall(b'held too')
time.sleep(0.2)
print(time.monotonic_ns(), flush=True)
libc.exit(0)
`;
      const r = await runShimmed('python3', ['-c', PY, String(sink.port), String(s.port)], 20000, {
        NKE_SHIM_EXIT_WAIT_MS: '600',
      });
      const end = process.hrtime.bigint(); // CLOCK_MONOTONIC, as Python's
      assert.equal(r.code, 0, r.stderr);
      const ms = Number(end - BigInt(r.stdout.toString().trim())) / 1e6;
      assert.ok(ms >= 500, `the exit waited for the held data (${ms.toFixed(0)} ms)`);
      assert.ok(ms < 1000, `one bound of 600 ms for the whole exit drain (${ms.toFixed(0)} ms)`);
    });

    it('a program that sends and exits at once while its datagrams are held: they still arrive (exit drain)', async function () {
      await startClient(['--out', 'upper', '--in', 'pass', '--hold-first-ms', '1000']);
      const sink = await udpSink('127.0.0.1');
      const msgs = ['bye', 'see you', 'later'].map((m) => Buffer.from(m));
      const r = await runShimmed('python3', [
        '-c',
        PY_UDP_SEND,
        '127.0.0.1',
        String(sink.port),
        'exit',
        ...msgs.map(hex),
      ]);
      assert.equal(r.code, 0, r.stderr);
      const sendMs = Number(r.stdout.toString().trim().split(' ')[1]);
      assert.ok(sendMs < 600, `sendto calls took ${sendMs} ms with the first held 1000 ms`);
      await until(() => sink.got.length >= 3, 2000, 'datagrams queued at exit');
      assert.deepEqual(
        sink.got.map((b) => b.toString()),
        ['BYE', 'SEE YOU', 'LATER'],
      );
    });
  });
});
