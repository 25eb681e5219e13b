// Socket semantics under the shim are the kernel's: each case runs the same
// program raw, under the shim with no user client, and under the shim with
// a pass-everything client, against the same unshimmed peer, and expects
// the same result (what the program saw and what the peer saw).
'use strict';
const assert = require('node:assert/strict');
const H = require('./shim-harness');

const MODES = ['raw', 'shim, no client', 'shim, client attached'];

/**
 * Runs peer (unshimmed python; its first stdout line is its port) and prog
 * (python; argv[1] = that port) once per mode; returns one
 * { prog, peer } of trimmed stdout per mode.
 */
async function compare(peerPy, progPy, { peerArgs = [], progArgs = [], ms = 20000 } = {}) {
  const out = [];
  for (const mode of MODES) {
    const emu = await H.emulator();
    try {
      if (mode === 'shim, client attached') await emu.client();
      const peer = H.start('python3', ['-c', peerPy, ...peerArgs], {
        env: { ...process.env, LD_PRELOAD: '' },
      });
      const port = (await peer.waitLine(/^\d+$/)).trim();
      const env = mode === 'raw' ? { ...process.env, LD_PRELOAD: '' } : emu.env();
      const r = await H.run('python3', ['-c', progPy, port, ...progArgs], env, ms).catch((e) => {
        throw new Error(`${mode}: ${e.message}`);
      });
      assert.equal(r.code, 0, `${mode}: ${r.stderr}`);
      const pr = await Promise.race([
        peer.exited,
        new Promise((res) => setTimeout(() => res({ code: 'timeout' }), ms).unref()),
      ]);
      assert.equal(pr.code, 0, `${mode}: peer ${pr.code}: ${peer.stderrText}`);
      out.push({ mode, prog: r.stdout.trim(), peer: peer.lines.slice(1).join('\n').trim() });
    } finally {
      await H.killAll();
      await emu.close();
    }
  }
  return out;
}

/** Every mode gave what raw gave. */
function sameAsRaw(res) {
  for (const r of res.slice(1)) {
    assert.equal(r.prog, res[0].prog, `${r.mode}: the program saw what it sees raw`);
    assert.equal(r.peer, res[0].peer, `${r.mode}: the peer saw what it sees raw`);
  }
}

// An unshimmed TCP peer: accepts one connection, reads until EOF (or an
// error), prints what it read and how it ended.
const PEER_READ = `
import socket, sys
l = socket.socket(); l.bind(('127.0.0.1', 0)); l.listen(1)
print(l.getsockname()[1], flush=True)
c, _ = l.accept()
c.settimeout(10)
got = b''
end = 'eof'
while True:
    try:
        d = c.recv(65536)
    except OSError as e:
        end = type(e).__name__
        break
    if not d: break
    got += d
print(got.decode('latin1'), end, flush=True)
`;

describe("socket semantics under the shim are the kernel's (raw vs shim, with and without a client)", function () {
  this.timeout(120000);
  afterEach(H.killAll);

  it('UDP recvmsg: ancillary data (IPv6 packet info, hop limit; IPv4 packet info, TTL) and MSG_TRUNC', async function () {
    const PEER = `
import socket, sys, time
print(0, flush=True)
time.sleep(0.3)
for fam, host, port in ((socket.AF_INET6, '::1', int(sys.argv[1])), (socket.AF_INET, '127.0.0.1', int(sys.argv[2]))):
    s = socket.socket(fam, socket.SOCK_DGRAM)
    s.sendto(b'x' * 100, (host, port))
    s.sendto(b'y' * 7, (host, port))
print('sent', flush=True)
`;
    const PROG = `
import socket, sys, os, subprocess
v6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
v6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
v6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVHOPLIMIT, 1)
v6.bind(('::1', 0))
v4 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
v4.setsockopt(socket.IPPROTO_IP, 8, 1)   # IP_PKTINFO
v4.setsockopt(socket.IPPROTO_IP, 12, 1)  # IP_RECVTTL
v4.bind(('127.0.0.1', 0))
env = dict(os.environ); env['LD_PRELOAD'] = ''
peer = subprocess.Popen([sys.executable, '-c', sys.argv[2], str(v6.getsockname()[1]), str(v4.getsockname()[1])], env=env, stdout=subprocess.DEVNULL)
out = []
for s in (v6, v4):
    s.settimeout(10)
    data, anc, flags, addr = s.recvmsg(10, 256)
    out.append('%d %s %s' % (len(data), bool(flags & socket.MSG_TRUNC), sorted((l, t, len(d)) for l, t, d in anc)))
    data, anc, flags, addr = s.recvmsg(64, 256)
    out.append('%d %s %s' % (len(data), bool(flags & socket.MSG_TRUNC), sorted((l, t, len(d)) for l, t, d in anc)))
peer.wait()
print('\\n'.join(out))
`;
    // The "peer" here is started by the program itself (it needs the
    // program's ports); the harness's peer only prints a port.
    const res = await compare('print(0, flush=True)', PROG, { progArgs: [PEER] });
    assert.match(res[0].prog, /^10 True \[.*\]\n7 False/, res[0].prog);
    assert.ok(
      res[0].prog.split('\n').every((l) => l.includes('[(')),
      `ancillary data raw: ${res[0].prog}`,
    );
    sameAsRaw(res);
  });

  it('getsockname right after sendto on an unbound UDP socket shows the ephemeral port', async function () {
    const PROG = `
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.sendto(b'hello', ('127.0.0.1', int(sys.argv[1])))
a = s.getsockname()
print(a[0], a[1] != 0)
`;
    const PEER = `
import socket
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(('127.0.0.1', 0))
print(u.getsockname()[1], flush=True)
u.settimeout(10)
print(u.recv(100).decode(), flush=True)
`;
    const res = await compare(PEER, PROG);
    assert.equal(res[0].prog, '0.0.0.0 True');
    sameAsRaw(res);
  });

  it('sendto with an address on a connected TCP socket: the address is ignored', async function () {
    const PROG = `
import socket, sys
s = socket.create_connection(('127.0.0.1', int(sys.argv[1])))
n = s.sendto(b'via-sendto,', ('127.0.0.1', int(sys.argv[1])))
m = s.sendmsg([b'via-sendmsg'], [], 0, ('127.0.0.1', 9))
s.close()
print(n, m)
`;
    const res = await compare(PEER_READ, PROG);
    assert.equal(res[0].prog, '11 11');
    assert.equal(res[0].peer, 'via-sendto,via-sendmsg eof');
    sameAsRaw(res);
  });

  it('a second connect on a connecting, connected or failed socket: EALREADY / EISCONN / the real result; a retry after a failure connects', async function () {
    const PROG = `
import socket, errno, select, sys
port_open = int(sys.argv[1])
c = socket.socket(); c.bind(('127.0.0.1', 0)); port_closed = c.getsockname()[1]; c.close()
name = lambda r: errno.errorcode.get(r, str(r)) if r else '0'
res = []
s = socket.socket(); s.setblocking(False)
res.append(name(s.connect_ex(('127.0.0.1', port_open))))
select.select([], [s], [], 5)
res.append(name(s.connect_ex(('127.0.0.1', port_open))))
res.append(name(s.connect_ex(('127.0.0.1', port_open))))
s.setblocking(True); s.sendall(b'first,'); s.close()
f = socket.socket(); f.setblocking(False)
first = f.connect_ex(('127.0.0.1', port_closed))
if first == errno.EINPROGRESS:
    select.select([], [f], [], 5)
    res.append(name(f.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)))
else:
    res.append(name(first))
seq = []
for i in range(5):
    r = f.connect_ex(('127.0.0.1', port_open))
    seq.append(name(r))
    if r in (0, errno.EISCONN): break
    select.select([], [f], [], 5)
res.append('/'.join(seq))
f.setblocking(True); f.sendall(b'retried'); f.close()
print(' '.join(res))
`;
    const PEER = `
import socket
l = socket.socket(); l.bind(('127.0.0.1', 0)); l.listen(4)
print(l.getsockname()[1], flush=True)
got = []
for i in range(2):
    c, _ = l.accept(); c.settimeout(10)
    b = b''
    while True:
        d = c.recv(100)
        if not d: break
        b += d
    got.append(b.decode())
print(' '.join(got), flush=True)
`;
    const res = await compare(PEER, PROG);
    assert.match(res[0].prog, /^EINPROGRESS 0 EISCONN ECONNREFUSED ECONNABORTED\/EINPROGRESS\/(0|EISCONN)$/);
    assert.equal(res[0].peer, 'first, retried');
    sameAsRaw(res);
  });

  it('MSG_OOB urgent data reaches the other side as urgent data, both ways', async function () {
    // Each side sends "ab", one urgent "!" (or "#"), then "cd", and reads
    // the other's normal bytes and urgent byte.
    const READER = `
def read_all(c):
    import select, socket
    got, oob = b'', b''
    while True:
        r, _, x = select.select([c], [], [c], 5)
        if x:
            try: oob += c.recv(1, socket.MSG_OOB)
            except OSError: pass
        if r:
            d = c.recv(100)
            if not d: break
            got += d
        if not r and not x: break
    return got.decode() + '|' + oob.decode()
`;
    const PEER = `
import socket, time
${READER}
l = socket.socket(); l.bind(('127.0.0.1', 0)); l.listen(1)
print(l.getsockname()[1], flush=True)
c, _ = l.accept()
c.sendall(b'xy'); time.sleep(0.1); c.send(b'#', socket.MSG_OOB); time.sleep(0.1); c.sendall(b'zw')
print(read_all(c), flush=True)
c.close()
`;
    const PROG = `
import socket, sys, time
${READER}
s = socket.create_connection(('127.0.0.1', int(sys.argv[1])))
s.sendall(b'ab'); time.sleep(0.1); s.send(b'!', socket.MSG_OOB); time.sleep(0.1); s.sendall(b'cd')
s.shutdown(socket.SHUT_WR)
print(read_all(s))
`;
    const res = await compare(PEER, PROG);
    assert.equal(res[0].peer, 'abcd|!');
    assert.equal(res[0].prog, 'xyzw|#');
    sameAsRaw(res);
  });

  it('an abortive close (SO_LINGER on, 0 s) reaches the peer as a reset', async function () {
    const PROG = `
import socket, struct, sys, time
s = socket.create_connection(('127.0.0.1', int(sys.argv[1])))
s.sendall(b'before-reset')
time.sleep(0.3)
s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
s.close()
time.sleep(0.3)
`;
    const PEER = PEER_READ.replace('c.settimeout(10)', 'c.settimeout(10)\nimport time; time.sleep(0.5)');
    const res = await compare(PEER, PROG);
    assert.equal(res[0].peer, 'before-reset ConnectionResetError');
    sameAsRaw(res);
  });

  it("a peer's reset reaches a writer as ECONNRESET, after about as many bytes as raw", async function () {
    // The peer reads nothing and resets the connection 0.5 s in; the
    // program writes 16 KiB at a time (blocking) until a send fails.
    const PEER = `
import socket, struct, time
l = socket.socket(); l.bind(('127.0.0.1', 0)); l.listen(1)
print(l.getsockname()[1], flush=True)
c, _ = l.accept()
time.sleep(0.5)
c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
c.close()
`;
    const PROG = `
import socket, sys
s = socket.create_connection(('127.0.0.1', int(sys.argv[1])))
total = 0
b = b'z' * 16384
try:
    while True:
        total += s.send(b)
except OSError as e:
    print(type(e).__name__, total, s.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF))
`;
    const res = await compare(PEER, PROG);
    const [errRaw, bytesRaw] = res[0].prog.split(' ');
    assert.equal(errRaw, 'ConnectionResetError');
    for (const r of res.slice(1)) {
      const [err, bytes] = r.prog.split(' ');
      assert.equal(err, errRaw, `${r.mode}: ${r.prog} (raw: ${res[0].prog})`);
      // What the relay holds beyond the kernel's buffers: the program's
      // end of the pair (32 KiB) and what it reads ahead (at most 128 KiB
      // while verdicts are awaited, one read otherwise).
      assert.ok(
        Number(bytes) <= Number(bytesRaw) + 192 * 1024,
        `${r.mode}: ${bytes} bytes accepted before the error (raw ${bytesRaw})`,
      );
    }
    this.test.title += ` [bytes before the error: ${res.map((r) => r.prog.split(' ')[1]).join(' / ')}]`;
  });
});
