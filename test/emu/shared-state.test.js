// shim.state is read by every filtered program: what sits at its path in a
// runtime directory is trusted no more than the directory. A FIFO there
// (anyone can make one in a /tmp/nke-emu-<uid> they took first) must not
// block a program's first socket call; a file in a directory open to others
// must not be believed.
const assert = require('node:assert/strict');
const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const H = require('./shim-harness');

// A TCP round trip through python3's socket module (connect, send, recv).
const ECHO_CLIENT = `
import socket, sys
s = socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=10)
s.sendall(b'ping')
print(s.recv(16).decode())
`;

describe('the shim trusts shim.state no more than its directory', function () {
  this.timeout(60000);
  let dir;
  let server;
  let port;

  beforeEach(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nke-shared-state-'));
    server = H.start('python3', [
      '-c',
      `import socket\ns=socket.socket(); s.bind(('127.0.0.1',0)); s.listen(8); print(s.getsockname()[1], flush=True)\nwhile True:\n  c,_=s.accept(); d=c.recv(16); c.sendall(b'pong:'+d); c.close()`,
    ]);
    port = Number((await server.waitLine(/^\d+$/)).trim());
  });
  afterEach(async () => {
    await H.killAll();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('a FIFO in place of shim.state does not block a program (it runs unfiltered)', async () => {
    const rt = path.join(dir, 'rt');
    fs.mkdirSync(rt, { mode: 0o700 });
    execFileSync('mkfifo', [path.join(rt, 'shim.state')]);
    const r = await H.run(
      'python3',
      ['-c', ECHO_CLIENT, String(port)],
      { ...process.env, LD_PRELOAD: H.SHIM, NKE_EMU_DIR: rt },
      15000,
    );
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.trim(), 'pong:ping');
  });

  it('a FIFO at shim.state in a directory open to others does not block either', async () => {
    const rt = path.join(dir, 'open');
    fs.mkdirSync(rt);
    fs.chmodSync(rt, 0o777);
    execFileSync('mkfifo', ['-m', '666', path.join(rt, 'shim.state')]);
    const r = await H.run(
      'python3',
      ['-c', ECHO_CLIENT, String(port)],
      { ...process.env, LD_PRELOAD: H.SHIM, NKE_EMU_DIR: rt },
      15000,
    );
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.trim(), 'pong:ping');
  });
});
