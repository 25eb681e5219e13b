// What a writer gets into a connection whose peer stops reading is the
// kernel's own send buffer and the peer's receive buffer, raw; under the
// shim it is those and what the relay holds besides: the program's end of
// the socketpair and the relay's read-ahead. That extra is measured
// directly (not as a difference between two runs, since how much a TCP
// send buffer takes depends on when the writes come: a raw writer with
// 0.5 ms between its 16 KiB writes gets ~110 KiB more in than one without):
// the program's bytes accepted minus the peer's receive queue minus the
// real socket's send queue, both read by the peer with ss once nothing
// moves any more. Run raw, under the shim with no client, with a client
// that holds every chunk (and passes it), and with one that only reports.
'use strict';
const assert = require('node:assert/strict');
const H = require('./shim-harness');

// Accepts one connection and never reads it. Once the writer has stopped
// (the queues are the same twice 300 ms apart), prints its receive queue
// and the writer's send queue (ss: the one socket connected to our port),
// then resets the connection.
const PEER = `
import socket, struct, time, fcntl, termios, array, subprocess, re
l = socket.socket(); l.bind(('127.0.0.1', 0)); l.listen(1)
port = l.getsockname()[1]
print(port, flush=True)
c, _ = l.accept()
def queues():
    b = array.array('i', [0])
    fcntl.ioctl(c.fileno(), termios.FIONREAD, b)
    out = subprocess.run(['ss', '-tnH', 'dport = :%d' % port], capture_output=True, text=True).stdout.split()
    return b[0], int(out[2]) if len(out) > 2 else -1
last = None
t0 = time.time()
while True:
    time.sleep(0.3)
    q = queues()
    if q == last and q[0] > 0 and time.time() - t0 > 1.5: break
    last = q
print(q[0], q[1], flush=True)
c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
c.close()
`;

// Sends one byte (the chunk a report-only client holds before it switches
// to reporting), then 16 KiB at a time without blocking until the peer's
// reset; prints how many bytes its sends accepted.
const PROG = `
import socket, sys, time, select
s = socket.create_connection(('127.0.0.1', int(sys.argv[1])))
s.sendall(b'h'); time.sleep(0.3)
s.setblocking(False)
total = 1
b = b'z' * 16384
try:
    while True:
        try:
            total += s.send(b)
        except BlockingIOError:
            select.select([], [s], [], 1)
except OSError as e:
    print(type(e).__name__, total, flush=True)
`;

const MODES = [
  { name: 'raw' },
  { name: 'shim, no client' },
  { name: 'shim, client holding every chunk', client: ['--out', 'pass', '--in', 'pass'] },
  {
    name: 'shim, client reporting only',
    client: ['--out', 'pass', '--in', 'pass', '--then-capture', 'report'],
  },
];

// What the relay may hold beyond the kernel's buffers: the program's end of
// the socketpair (SO_SNDBUF 16 KiB, which the kernel doubles: 32 KiB) and
// one read of the relay (64 KiB: a held direction reads ahead only what the
// real socket has room for; an unasked one only while nothing is queued),
// and 16 KiB for the kernel's rounding of both. The relay once read ahead
// 128 KiB (holding) or 192 KiB (reporting) whatever the send buffer held.
const RELAY_EXTRA_MAX = (32 + 64 + 16) * 1024;

describe('a writer whose peer stops reading gets no more in under the shim than the relay may hold', function () {
  this.timeout(180000);
  afterEach(H.killAll);

  it('bytes accepted beyond the kernel send and receive queues: raw none, shim at most the pair and one read', async function () {
    const seen = [];
    for (const mode of MODES) {
      const emu = mode.name === 'raw' ? null : await H.emulator();
      try {
        if (mode.client) await emu.client(mode.client);
        const peer = H.start('python3', ['-c', PEER], { env: { ...process.env, LD_PRELOAD: '' } });
        const port = (await peer.waitLine(/^\d+$/)).trim();
        const env = emu ? emu.env() : { ...process.env, LD_PRELOAD: '' };
        const r = await H.run('python3', ['-c', PROG, port], env, 60000);
        assert.equal(r.code, 0, `${mode.name}: ${r.stderr}`);
        const [err, total] = r.stdout.trim().split(' ');
        assert.equal(err, 'ConnectionResetError', `${mode.name}: ${r.stdout}`);
        await peer.exited;
        const [rcvq, sendq] = peer.lines[1].split(' ').map(Number);
        assert.ok(sendq >= 0, `${mode.name}: the writer's socket not found by ss`);
        const extra = Number(total) - rcvq - sendq;
        seen.push(`${mode.name}: ${extra}`);
        if (mode.name === 'raw')
          assert.ok(Math.abs(extra) < 4096, `raw: ${extra} bytes beyond the kernel's queues`);
        else
          assert.ok(
            extra <= RELAY_EXTRA_MAX,
            `${mode.name}: ${total} bytes accepted, ${rcvq} in the peer's receive queue, ${sendq} in the real socket's send queue: the relay held ${extra} (at most ${RELAY_EXTRA_MAX})`,
          );
      } finally {
        await H.killAll();
        if (emu) await emu.close();
      }
    }
    this.test.title += ` [${seen.join('; ')}]`;
  });
});
