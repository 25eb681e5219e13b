// The peer of the EOF-order tests (eof-latency.test.js: python's epoll;
// waits.test.js: select, pselect, epoll_pwait2), unshimmed python.
// argv: port, connections per round, rounds. Prints a line per round,
// "closed N seen M": M is what the server says it had read of EOFs when it
// accepted the round's last connection, N how many the peer had closed by
// then; the kernel's order makes them equal.
'use strict';
const assert = require('node:assert/strict');

// Per round: N connections, a PING/PONG on each (so each is accepted,
// relayed and idle), all closed, then one more connection asks how many
// EOFs the server had read when it accepted that one.
const PEER = `
import socket, sys
port, n, rounds = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
def line(s):
    b = b''
    while not b.endswith(b'\\n'):
        d = s.recv(64)
        if not d:
            raise SystemExit('server closed early')
        b += d
    return b.decode().strip()
closed = 0
for r in range(rounds):
    conns = [socket.create_connection(('127.0.0.1', port)) for _ in range(n)]
    for c in conns:
        c.sendall(b'PING\\n')
    for c in conns:
        assert line(c) == 'PONG'
    for c in conns:
        c.close()
    closed += n
    q = socket.create_connection(('127.0.0.1', port))
    q.sendall(b'SEEN\\n')
    print('closed %d seen %s' % (closed, line(q)), flush=True)
    q.close()
    closed += 1
`;

// The three ways the server runs in those tests.
const MODES = [
  { name: 'raw (the kernel)', shim: false, client: false },
  { name: 'under the shim', shim: true, client: false },
  { name: 'under the shim, client attached', shim: true, client: true },
];

// The peer's output: 8 rounds, each with every EOF read before the accept.
function checkRounds(stdout, rounds = 8) {
  const lines = stdout.trim().split('\n');
  assert.equal(lines.length, rounds, stdout);
  for (const l of lines) {
    const [, closed, seen] = l.match(/^closed (\d+) seen (\d+)$/);
    assert.equal(Number(seen), Number(closed), `EOFs read before the next accept: ${stdout}`);
  }
}

// One test of the order: starts the server (cmd, args) raw or under the
// shim as `mode` says, runs the unshimmed peer for 8 rounds of 40
// connections against the port the server prints, and checks every round.
async function eofOrderRounds(H, emu, mode, cmd, args) {
  if (mode.client) await emu.client();
  const env = mode.shim ? emu.env() : { ...process.env, LD_PRELOAD: '' };
  const srv = H.start(cmd, args, { env });
  const port = (await srv.waitLine(/^\d+$/)).trim();
  const r = await H.run('python3', ['-c', PEER, port, '40', '8'], { ...process.env, LD_PRELOAD: '' }, 90000);
  assert.equal(r.code, 0, `peer: ${r.stderr}\nserver: ${srv.stderrText}`);
  checkRounds(r.stdout);
}

module.exports = { MODES, eofOrderRounds };
