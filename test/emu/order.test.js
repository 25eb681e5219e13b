// Stream order in the emulator: nke-emud keeps each socket direction's data
// in order with kext/core's rule (kext/core/nke_order.h) — once something is
// held, every later chunk waits behind it, whatever would let it pass (the
// capture turned off, a report-only rule, the buffer pool full, the client
// gone) — and sends its verdicts in stream order.
//
// The real shim applies verdicts in seq order whatever order they come in,
// which would hide a nke-emud that answered a later chunk first; so most
// tests here speak the shim's side of the link themselves (fake_shim.py) and
// look at the verdicts nke-emud sends. The last one runs a real program
// under the real shim and checks the bytes a real server received.
'use strict';
const assert = require('node:assert/strict');
const fs = require('node:fs');
const net = require('node:net');
const path = require('node:path');
const H = require('./shim-harness');

const FAKE_SHIM = path.join(__dirname, 'fake_shim.py');

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Resolves once `p` has printed at least `n` lines matching `re`; returns them. */
async function lines(p, re, n, ms = 10000) {
  const t0 = Date.now();
  for (;;) {
    const got = p.lines.filter((l) => re.test(l));
    if (got.length >= n) return got;
    if (Date.now() - t0 > ms)
      assert.fail(`${re}: ${got.length} lines of ${n} in ${ms} ms:\n${p.lines.join('\n')}`);
    await sleep(10);
  }
}

/** The fake shim's verdict lines as { dir, seq, action, len, ms }, in arrival order. */
function verdicts(shim, dir) {
  return shim.lines
    .filter((l) => l.startsWith('verdict '))
    .map((l) => {
      const [, d, seq, action, len, ms] = l.split(' ');
      return { dir: d, seq: Number(seq), action: Number(action), len: Number(len), ms: Number(ms) };
    })
    .filter((v) => !dir || v.dir === dir);
}

describe('emulator stream order (kext/core order rule in nke-emud)', function () {
  this.timeout(60000);
  before(function () {
    for (const f of ['nke-emud', 'test-client', 'libnkeshim.so'].map((n) => path.join(H.build, n)))
      assert.ok(fs.existsSync(f), `${f} missing: run make -C native/emu`);
  });
  const emu = H.useEmulator();
  const client = (args) => emu.client(args);
  async function fakeShim() {
    // It reads its commands (send) on stdin.
    const s = H.start('python3', [FAKE_SHIM, emu.rt], { stdio: ['pipe', 'pipe', 'pipe'] });
    s.stdin.on('error', () => {});
    await s.waitLine(/^ready$/);
    s.send = (line) => s.stdin.write(`${line}\n`);
    return s;
  }

  it('a later chunk answered at once waits for the first one, held 300 ms: verdicts in stream order', async function () {
    const c = await client(['--out', 'pass', '--in', 'pass', '--hold-first-ms', '300']);
    const shim = await fakeShim();
    shim.send('data out 0 100');
    await c.waitLine(/^held-first$/);
    shim.send('data out 1 200');
    shim.send('data out 2 300');
    await lines(c, /^data out \d+ 1$/, 3); // all three held; 1 and 2 answered at once
    await lines(shim, /^verdict out /, 3);
    const v = verdicts(shim, 'out');
    assert.deepEqual(
      v.map((x) => x.seq),
      [0, 1, 2],
      shim.lines.join('\n'),
    );
    assert.ok(v[0].ms >= 250, `the first was held (${v[0].ms} ms)`);
    assert.ok(
      v.every((x) => x.action === 1 && x.len === 0),
      'ALLOW, no modified bytes',
    );
  });

  it('capture turned off while a chunk is held: the later chunks, which now pass, wait behind it; the other direction does not', async function () {
    const c = await client([
      '--out',
      'pass',
      '--in',
      'pass',
      '--hold-first-ms',
      '300',
      '--then-capture',
      'nothing',
    ]);
    const shim = await fakeShim();
    shim.send('data out 0 100');
    await c.waitLine(/^capture-changed$/);
    shim.send('data out 1 100');
    shim.send('data out 2 100');
    shim.send('data in 0 100');
    await lines(shim, /^verdict /, 4);
    const all = verdicts(shim);
    assert.deepEqual(
      all.filter((x) => x.dir === 'out').map((x) => x.seq),
      [0, 1, 2],
      shim.lines.join('\n'),
    );
    // Nothing is kept inbound: its chunk passes at once, ahead of the held outbound one.
    assert.equal(all[0].dir, 'in', shim.lines.join('\n'));
    // The client never heard of the chunks that passed the capture (they were only queued).
    assert.equal(c.lines.filter((l) => /^data out/.test(l)).length, 1, c.lines.join('\n'));
  });

  it('a report-only rule while a chunk is held: the later chunks are reported, and still wait behind it', async function () {
    const c = await client([
      '--out',
      'pass',
      '--in',
      'pass',
      '--hold-first-ms',
      '300',
      '--then-capture',
      'report',
    ]);
    const shim = await fakeShim();
    shim.send('data out 0 100');
    await c.waitLine(/^capture-changed$/);
    shim.send('data out 1 100');
    shim.send('data out 2 100');
    await lines(c, /^data out 100 0$/, 2); // reported, not held
    await lines(shim, /^verdict out /, 3);
    assert.deepEqual(
      verdicts(shim, 'out').map((x) => x.seq),
      [0, 1, 2],
      shim.lines.join('\n'),
    );
  });

  it('buffer pool full: a chunk with no buffer waits behind the held ones; the client dies and all go out in order; then nothing waits', async function () {
    // 64 chunks of one buffer each take the whole pool (the client keeps them held and their buffers).
    const c = await client(['--out', 'hold', '--in', 'pass', '--timeout-ms', '30000']);
    const shim = await fakeShim();
    for (let i = 0; i < 64; i++) shim.send(`data out ${i} 65536`);
    await c.waitLine(/^held-total 64$/, 20000);
    shim.send('data out 64 100');
    // It is counted as queued, never held nor passed...
    await c.waitLine(/^state pending 64 passed-full 1 lost 0 queued 1 /, 5000);
    // ...and no verdict has gone out.
    await sleep(300);
    assert.deepEqual(verdicts(shim), [], shim.lines.join('\n'));
    // Without a client: everything held goes as it was, the queued one last.
    await H.kill(c, 'SIGKILL');
    await lines(shim, /^verdict out /, 65);
    const v = verdicts(shim, 'out');
    assert.deepEqual(
      v.map((x) => x.seq),
      [...Array(65).keys()],
    );
    assert.ok(
      v.every((x) => x.action === 1),
      'originals (ALLOW)',
    );
    // Nothing is kept any more: a new chunk passes at once.
    shim.send('data out 65 10');
    await lines(shim, /^verdict out 65 1 0 /, 1, 5000);
  });

  it('the client dies while a chunk is held and the next ones are on their way: they all follow it, in order', async function () {
    const c = await client(['--out', 'hold', '--in', 'pass', '--timeout-ms', '30000']);
    const shim = await fakeShim();
    shim.send('data out 0 100');
    await c.waitLine(/^held-total 1$/);
    // Racing the client's death: nke-emud sees these before or after it,
    // held (client still there) or not (client gone); either way behind 0.
    const died = H.kill(c, 'SIGKILL');
    for (let i = 1; i <= 5; i++) shim.send(`data out ${i} 100`);
    await died;
    await lines(shim, /^verdict out /, 6);
    assert.deepEqual(
      verdicts(shim, 'out').map((x) => x.seq),
      [0, 1, 2, 3, 4, 5],
      shim.lines.join('\n'),
    );
  });

  it('a real program under the shim: held first piece, capture off, later pieces in order at a real server', async function () {
    const c = await client([
      '--out',
      'pass',
      '--in',
      'pass',
      '--hold-first-ms',
      '400',
      '--then-capture',
      'nothing',
    ]);
    const got = [];
    const srv = net.createServer((s) => {
      const parts = [];
      s.on('data', (d) => parts.push(d));
      s.on('end', () => {
        got.push(Buffer.concat(parts).toString());
        s.end('ok');
      });
    });
    await new Promise((r) => srv.listen(0, '127.0.0.1', r));
    const script = `
import socket, sys, time
s = socket.create_connection(('127.0.0.1', int(sys.argv[1])))
for p in ['one.', 'two.', 'three.']:
    s.sendall(p.encode())
    time.sleep(0.1)
s.shutdown(socket.SHUT_WR)
print(s.recv(10).decode())
`;
    const prog = H.start('python3', ['-c', script, String(srv.address().port)], {
      env: emu.env(),
    });
    await prog.waitLine(/^ok$/, 20000);
    srv.close();
    assert.deepEqual(got, ['one.two.three.']);
    assert.ok(c.lines.includes('held-first') && c.lines.includes('capture-changed'), c.lines.join('\n'));
  });
});
