// The mux link's socket ids: a TCP socket attached unconnected (an option
// set before connect, while a user client is open) keeps its slot until
// its relay takes it. Its slot once looked free meanwhile, so another
// socket got it; the put of either then unlinked the other, whose verdicts
// were dropped: its bytes waited forever (2 of 3 threads stuck within
// ~10 000 round trips).
'use strict';
const assert = require('node:assert/strict');
const net = require('node:net');
const H = require('./shim-harness');

// Threads that each set an option on a fresh socket, connect, send a line
// and read its echo, ROUNDS times; a recv that waits 10 s is a lost verdict.
const ROUNDS_CLIENT = `
import socket, sys, threading
port, rounds = int(sys.argv[1]), int(sys.argv[2])
stuck = []
def worker(k):
    for i in range(rounds):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.settimeout(10)
        s.connect(('127.0.0.1', port))
        line = b'%d.%d\\n' % (k, i)
        s.sendall(line)
        got = b''
        try:
            while len(got) < len(line):
                d = s.recv(64)
                if not d: break
                got += d
        except socket.timeout:
            stuck.append('thread %d round %d' % (k, i)); s.close(); return
        s.close()
        if got != line:
            stuck.append('thread %d round %d: got %r' % (k, i, got)); return
ts = [threading.Thread(target=worker, args=(k,)) for k in range(3)]
[t.start() for t in ts]; [t.join() for t in ts]
print('stuck: ' + ', '.join(stuck) if stuck else 'all rounds done')
`;
const ROUNDS = 3000;

describe('mux link ids of sockets attached before connect', function () {
  this.timeout(180000);
  const emu = H.useEmulator();
  let echo;
  beforeEach(async function () {
    echo = net.createServer((s) => {
      s.on('data', (d) => s.write(d));
      s.on('error', () => {});
    });
    await new Promise((r) => echo.listen(0, '127.0.0.1', r));
  });
  afterEach(() => echo.close());

  it(`3 threads x ${ROUNDS} sockets (option, connect, echo) with every chunk held and passed: no verdict lost`, async function () {
    const client = await emu.client(['--out', 'pass', '--in', 'pass']);
    const r = await H.run(
      'python3',
      ['-c', ROUNDS_CLIENT, String(echo.address().port), String(ROUNDS)],
      emu.env(),
      170000,
    );
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.trim(), 'all rounds done');
    // The client judged them (both directions of every connection).
    assert.ok(client.lines.filter((l) => l.startsWith('data ')).length >= 2 * 3 * ROUNDS);
  });
});
