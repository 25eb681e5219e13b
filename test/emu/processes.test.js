// Processes under the shim: exec with and without fork keeps relayed
// sockets working, _exit() loses no queued datagram, nke-emu run reports
// the command's own exec.
'use strict';
const assert = require('node:assert/strict');
const dgram = require('node:dgram');
const net = require('node:net');
const path = require('node:path');
const H = require('./shim-harness');

// Connects, writes, then execs itself (no fork) with the socket inherited;
// the new image reads its peer's port, writes and reads the reply.
const EXEC_SELF = `
import os, socket, sys
if len(sys.argv) > 2:
    s = socket.socket(fileno=int(sys.argv[2]))
    print('after-exec', s.getpeername()[1], s.family == socket.AF_INET, flush=True)
    s.sendall(b'after-exec,'); s.shutdown(socket.SHUT_WR)
    print(s.recv(100).decode())
    sys.exit(0)
s = socket.create_connection(('127.0.0.1', int(sys.argv[1])))
s.sendall(b'before-exec,')
os.set_inheritable(s.fileno(), True)
if os.environ.get('FORK') and os.fork():
    s.close(); os.wait(); sys.exit(0)
os.execv(sys.executable, [sys.executable, '-c', os.environ['EXEC_SRC'], sys.argv[1], str(s.fileno())])
`;

describe('processes under the shim (exec, fork, _exit)', function () {
  this.timeout(120000);
  const emu = H.useEmulator();

  for (const fork of [false, true])
    for (const withClient of [false, true])
      it(`a relayed socket inherited across exec ${fork ? 'in a forked child' : 'without fork'} keeps working and keeps its addresses${withClient ? ', client attached' : ''}`, async function () {
        if (withClient) await emu.client();
        let got = '';
        const srv = net.createServer((s) => {
          s.on('data', (d) => (got += d));
          s.on('end', () => s.end('reply'));
          s.on('error', () => {});
        });
        await new Promise((r) => srv.listen(0, '127.0.0.1', r));
        const port = srv.address().port;
        const env = emu.env({ EXEC_SRC: EXEC_SELF, ...(fork ? { FORK: '1' } : {}) });
        const r = await H.run('python3', ['-c', EXEC_SELF, String(port)], env);
        srv.close();
        assert.equal(r.code, 0, r.stderr);
        // Without the fix the new image's fd is the shim's AF_UNIX end: no
        // peer port, and (without fork) no relay behind it.
        assert.equal(r.stdout.trim(), `after-exec ${port} True\nreply`);
        assert.equal(got, 'before-exec,after-exec,');
      });

  it('a datagram queued for a verdict is sent although the process leaves by _exit()', async function () {
    await emu.client(['--out', 'upper', '--in', 'pass', '--hold-first-ms', '500']);
    const sink = dgram.createSocket('udp4');
    const got = [];
    sink.on('message', (m) => got.push(m.toString()));
    await new Promise((r) => sink.bind(0, '127.0.0.1', r));
    const PY = `
import os, socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.sendto(b'sent before _exit', ('127.0.0.1', int(sys.argv[1])))
os._exit(0)
`;
    const r = await H.run('python3', ['-c', PY, String(sink.address().port)], emu.env());
    assert.equal(r.code, 0, r.stderr);
    await H.until(() => got.length > 0, 3000, 'the datagram');
    sink.close();
    assert.deepEqual(got, ['SENT BEFORE _EXIT']);
  });

  it("nke-emu run -- CMD reports CMD's own exec", async function () {
    const kev = await emu.client(['--kev']);
    const r = await H.run(path.join(H.build, 'nke-emu'), ['run', '--dir', emu.rt, '--', 'true'], {
      ...process.env,
      LD_PRELOAD: '',
    });
    assert.equal(r.code, 0, r.stderr);
    await kev.waitLine(/^exec \d+ \d+ \d+ \d+ \d+ \/(usr\/)?bin\/true$/, 5000);
  });
});
