// A peer's FIN reaches a program under the shim in the kernel's order: a
// peer that closes its connections and then connects again is seen to have
// closed them before the new connection is accepted. In the kernel the FIN
// is readable the moment it arrives; under the shim it comes through the
// relay loop, while a listening socket is the kernel's own, so a lagging
// loop once let redis accept 60 new clients while it still counted the 60
// that had closed (servers.test.js, --maxclients 100). The assertion is an
// order, not a time, so a slow machine cannot make it fail: the server
// (python, selectors = epoll, one thread, like redis) counts the EOFs it has
// read when it accepts each connection.
'use strict';
const H = require('./shim-harness');
const { MODES, eofOrderRounds } = require('./eof-order-peer');

const SERVER = `
import selectors, socket
sel = selectors.DefaultSelector()
ls = socket.socket()
ls.bind(('127.0.0.1', 0))
ls.listen(512)
ls.setblocking(False)
sel.register(ls, selectors.EVENT_READ, None)
print(ls.getsockname()[1], flush=True)
eofs = 0
seen = {}  # connection -> EOFs read before it was accepted
while True:
    for key, _ in sel.select():
        if key.data is None:
            while True:
                try:
                    c, _ = ls.accept()
                except BlockingIOError:
                    break
                c.setblocking(False)
                seen[c] = eofs
                sel.register(c, selectors.EVENT_READ, 'conn')
            continue
        s = key.fileobj
        try:
            b = s.recv(4096)
        except (BlockingIOError, ConnectionResetError):
            continue
        if not b:
            eofs += 1
            sel.unregister(s)
            s.close()
        elif b.startswith(b'PING'):
            s.sendall(b'PONG\\n')
        elif b.startswith(b'SEEN'):
            s.sendall(b'%d\\n' % seen[s])
`;

describe('a peer closing connections, then connecting again: the EOFs come first', function () {
  this.timeout(120000);
  const emu = H.useEmulator();

  for (const mode of MODES) {
    it(`40 connections closed, then one opened, 8 rounds: every EOF is read before the new one is accepted (${mode.name})`, async function () {
      await eofOrderRounds(H, emu, mode, 'python3', ['-c', SERVER]);
    });
  }
});
