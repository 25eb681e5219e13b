// An edge-triggered epoll event the shim keeps for a thread's next call
// (readiness.c: relayed sockets first, the others next call) is not lost
// when that thread exits first: the kernel reports an edge once, and raw
// the thread would have had it. Any thread's next wait on that epoll gets
// it under the shim.
'use strict';
const assert = require('node:assert/strict');
const H = require('./shim-harness');

const PEER = `
import socket
l = socket.socket(); l.bind(('127.0.0.1', 0)); l.listen(1)
print(l.getsockname()[1], flush=True)
c, _ = l.accept()
c.recv(2); c.sendall(b'x')
c.settimeout(20); c.recv(1)
`;

// A relayed socket and a pipe on one edge-triggered epoll, both made ready;
// a worker thread waits once and exits; then the main thread waits. Prints
// every descriptor reported, by whom.
const PROG = `
import socket, select, os, sys, time, threading
s = socket.create_connection(('127.0.0.1', int(sys.argv[1])))
r, w = os.pipe()
ep = select.epoll()
ep.register(s.fileno(), select.EPOLLIN | select.EPOLLET)
ep.register(r, select.EPOLLIN | select.EPOLLET)
s.sendall(b'go')
os.write(w, b'p')
time.sleep(0.5)
names = {s.fileno(): 'sock', r: 'pipe'}
seen = []
def worker():
    seen.extend('worker:' + names[fd] for fd, _ in ep.poll(2))
t = threading.Thread(target=worker); t.start(); t.join()
time.sleep(0.3)  # join returns before the thread's exit is over (a wait already under way is not woken)
seen.extend('main:' + names[fd] for fd, _ in ep.poll(0.5))
print('pipe reported' if any(x.endswith(':pipe') for x in seen) else 'pipe lost', ' '.join(seen))
`;

describe('epoll under the shim keeps an edge for a thread that exits', function () {
  this.timeout(120000);
  afterEach(H.killAll);

  it('an edge-triggered event kept for a worker thread that exits reaches the next wait (raw vs shim)', async function () {
    const seen = [];
    for (const mode of ['raw', 'shim']) {
      const emu = mode === 'raw' ? null : await H.emulator();
      try {
        const peer = H.start('python3', ['-c', PEER], { env: { ...process.env, LD_PRELOAD: '' } });
        const port = (await peer.waitLine(/^\d+$/)).trim();
        const env = emu ? emu.env() : { ...process.env, LD_PRELOAD: '' };
        const r = await H.run('python3', ['-c', PROG, port], env, 30000);
        assert.equal(r.code, 0, `${mode}: ${r.stderr}`);
        seen.push(`${mode}: ${r.stdout.trim()}`);
        assert.match(r.stdout, /^pipe reported /, `${mode}: ${r.stdout}`);
        assert.match(r.stdout, /worker:sock/, `${mode}: ${r.stdout}`);
      } finally {
        await H.killAll();
        if (emu) await emu.close();
      }
    }
    this.test.title += ` [${seen.join('; ')}]`;
  });
});
