// An epoll wait never reports a descriptor the program closed before the
// call, under the shim as raw. The shim's waits report relayed sockets
// first and keep the other ready descriptors for the thread's next call
// (readiness.c); a descriptor closed in between once came back from that
// call although the kernel had removed its registration with the close.
'use strict';
const assert = require('node:assert/strict');
const H = require('./shim-harness');

// Answers the program's 'go' with one byte, then waits for its EOF.
const PEER = `
import socket
l = socket.socket(); l.bind(('127.0.0.1', 0)); l.listen(1)
print(l.getsockname()[1], flush=True)
c, _ = l.accept()
c.recv(2); c.sendall(b'x')
c.settimeout(20); c.recv(1)
`;

// A relayed socket and a pipe on one epoll, both made ready; the first wait
// reports what it reports (the shim: the socket first), then the program
// reads the socket, closes the pipe's read end and waits again.
const PROG = `
import socket, select, os, sys, time
s = socket.create_connection(('127.0.0.1', int(sys.argv[1])))
r, w = os.pipe()
ep = select.epoll()
ep.register(s.fileno(), select.EPOLLIN)
ep.register(r, select.EPOLLIN)
s.sendall(b'go')
os.write(w, b'p')
time.sleep(0.5)
names = {s.fileno(): 'sock', r: 'pipe'}
first = sorted(names[fd] for fd, _ in ep.poll(2))
s.recv(1)
os.close(r)
after = sorted(names.get(fd, str(fd)) for fd, _ in ep.poll(0.3))
print('first:', ','.join(first), 'after the close:', ','.join(after) or '-')
`;

describe('epoll under the shim never reports a descriptor closed before the wait', function () {
  this.timeout(120000);
  afterEach(H.killAll);

  for (const withClient of [false, true])
    it(`a pipe closed after a wait that kept its event is not reported by the next wait (raw vs shim${withClient ? ', client attached' : ''})`, async function () {
      const seen = [];
      for (const mode of ['raw', 'shim']) {
        const emu = mode === 'raw' ? null : await H.emulator();
        try {
          if (emu && withClient) await emu.client();
          const peer = H.start('python3', ['-c', PEER], { env: { ...process.env, LD_PRELOAD: '' } });
          const port = (await peer.waitLine(/^\d+$/)).trim();
          const env = emu ? emu.env() : { ...process.env, LD_PRELOAD: '' };
          const r = await H.run('python3', ['-c', PROG, port], env, 30000);
          assert.equal(r.code, 0, `${mode}: ${r.stderr}`);
          seen.push(`${mode}: ${r.stdout.trim()}`);
          assert.match(r.stdout, /after the close: -$/m, `${mode}: ${r.stdout}`);
          assert.match(r.stdout, /first: (pipe,)?sock /, `${mode}: the socket's byte is reported first time`);
        } finally {
          await H.killAll();
          if (emu) await emu.close();
        }
      }
      this.test.title += ` [${seen.join('; ')}]`;
    });
});
