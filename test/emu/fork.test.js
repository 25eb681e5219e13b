// fork() from a multithreaded program under the shim: while other threads
// open links to nke-emud, relay TCP and queue UDP datagrams, every child
// the main thread forks completes (the shim's fork handlers take every
// shim lock in its order, so no child inherits one held by a thread it
// does not have). test/emu/forkstress.c is the program.
'use strict';
const assert = require('node:assert/strict');
const dgram = require('node:dgram');
const net = require('node:net');
const path = require('node:path');
const H = require('./shim-harness');

const FORK_STRESS = path.join(H.build, 'fork-stress');
const FORKS = 200;

describe('fork under the shim while other threads use sockets', function () {
  this.timeout(180000);
  const emu = H.useEmulator();
  let echo;
  let sink;
  let lines;
  let datagrams;

  beforeEach(async function () {
    lines = new Set();
    datagrams = new Set();
    echo = net.createServer((s) => {
      let buf = '';
      s.on('data', (d) => {
        buf += d;
        let i;
        while ((i = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, i);
          buf = buf.slice(i + 1);
          lines.add(line);
          s.write(`${line}\n`);
        }
      });
      s.on('error', () => {});
    });
    await new Promise((r) => echo.listen(0, '127.0.0.1', r));
    sink = dgram.createSocket('udp4');
    sink.on('message', (m) => datagrams.add(m.toString()));
    await new Promise((r) => sink.bind(0, '127.0.0.1', r));
  });
  afterEach(async function () {
    echo.close();
    sink.close();
  });

  async function forkStress() {
    const r = await H.run(
      FORK_STRESS,
      ['--tcp', String(echo.address().port), '--udp', String(sink.address().port), '--forks', String(FORKS)],
      emu.env(),
      150000,
    );
    assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`);
    const m = /^forks (\d+) completed (\d+) failed (\d+) stuck (\d+) worker-rounds (\d+)$/m.exec(r.stdout);
    assert.ok(m, r.stdout);
    assert.deepEqual(m.slice(1, 5).map(Number), [FORKS, FORKS, 0, 0]);
    // The other threads really were busy while the forks happened.
    assert.ok(Number(m[5]) >= 10, `worker rounds: ${m[5]}`);
    for (let i = 0; i < FORKS; i++) {
      assert.ok(lines.has(`child ${i}`), `the echo server never got "child ${i}"`);
      assert.ok(lines.has(`child ${i} again`), `the echo server never got "child ${i} again"`);
    }
    await H.until(() => datagrams.size >= FORKS + 1, 5000, 'every child datagram');
    for (let i = 0; i < FORKS; i++) assert.ok(datagrams.has(`child ${i}`), `no datagram "child ${i}"`);
  }

  it(`${FORKS} children of a program whose threads open, relay and close sockets all complete (client attached: every chunk held and passed)`, async function () {
    const client = await emu.client(['--out', 'pass', '--in', 'pass']);
    await forkStress();
    // The filter saw the children's data (it held and passed it).
    assert.ok(client.lines.filter((l) => l.startsWith('data ')).length >= 2 * FORKS, 'data the client saw');
  });

  it(`${FORKS} children complete with no user client (links opened, nothing held)`, async function () {
    await forkStress();
  });
});
