// The helper against the real emulator and real programs: rules hold what
// they should and nothing else, verdicts with edited bytes reach a real
// server exactly, rewrite rules edit every matching chunk, the exec tree
// holds long paths with their parentage, and a killed helper loses nothing.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { FilterEngine } from '../../extension/src/helper/engine';
import { HelperClient } from '../../extension/src/helperClient/helperClient';
import * as P from '../../extension/src/shared/helperProtocol';
import {
  closeRecordingServers,
  recordingServer,
  root,
  runUnder,
  sender,
  useEmulator,
  waitFor,
} from './emu-support';

// A real client program: python sends each argument as one write, 100 ms apart.
const SENDER = sender(0.1);

/** Rules that hold every outgoing chunk to `port` and pass the rest; connects the engine. */
function holdOutgoingTo(engine: FilterEngine, port: number): void {
  engine.setRules({ default: 'pass', intercept: [{ action: 'hold', remotePort: port, direction: 'out' }] });
  engine.connect();
}

/** The id of the next chunk the engine holds for a person. */
function firstPendingId(engine: FilterEngine): Promise<string> {
  return new Promise((r) => engine.once('pending', (p) => r(p.view.id)));
}

describe('helper with the emulator', function () {
  this.timeout(60000);
  const emu = useEmulator();

  let engine: FilterEngine;
  beforeEach(() => {
    engine = new FilterEngine();
  });
  afterEach(() => {
    engine.dispose();
    closeRecordingServers();
  });

  it('holds the chosen request; the edited verdict reaches the real server exactly', async () => {
    const server = await recordingServer();
    holdOutgoingTo(engine, server.port);
    const pending = firstPendingId(engine);
    const prog = runUnder(emu, [...SENDER, String(server.port), 'GET /secret HTTP/1.0\r\n\r\n']);
    const id = await pending;
    assert.equal(engine.getPayload(id).toString(), 'GET /secret HTTP/1.0\r\n\r\n');
    const edited = Buffer.from('GET /edited/and/longer HTTP/1.0\r\n\r\n');
    engine.verdict(id, 'replace', edited);
    assert.equal((await prog.done).code, 0);
    assert.deepEqual(await server.whenBytes(edited.length), edited);
    await new Promise((r) => setTimeout(r, 200));
    assert.deepEqual(server.received(), edited);
    server.close();
  });

  it('a pending chunk keeps its bytes in the model, not the shared buffers; over the byte bound it passes', async () => {
    const server = await recordingServer();
    holdOutgoingTo(engine, server.port);
    const pending = firstPendingId(engine);
    const prog = runUnder(emu, [...SENDER, String(server.port), 'held-bytes']);
    const id = await pending;
    // Buffers went back in the same response that kept the chunk held.
    const st = engine.status().state!;
    assert.equal(st.now.chunksHeld, 1);
    assert.equal(st.now.buffersInUse, 0);
    assert.equal(engine.model.pendingBytes, 10);
    assert.equal(engine.getPayload(id).toString(), 'held-bytes');
    engine.verdict(id, 'allow');
    assert.equal((await prog.done).code, 0);
    assert.equal((await server.whenBytes(10)).toString(), 'held-bytes');
    assert.equal(engine.model.pendingBytes, 0);
    engine.dispose();

    // A bound of 5 bytes: a 10-byte chunk passes at once and is counted.
    engine = new FilterEngine({ pendingBytesLimit: 5 });
    holdOutgoingTo(engine, server.port);
    let held = 0;
    engine.on('pending', () => held++);
    const prog2 = runUnder(emu, [...SENDER, String(server.port), 'over-limit']);
    assert.equal((await prog2.done).code, 0);
    assert.equal((await server.whenBytes(20)).toString(), 'held-bytesover-limit');
    assert.equal(held, 0);
    assert.equal(engine.model.counters.pendingOverLimit, 1);
    server.close();
  });

  it('passes unmatched traffic with no verdict from outside', async () => {
    const server = await recordingServer();
    engine.setRules({ default: 'pass', intercept: [{ action: 'hold', remotePort: 1 }] });
    engine.connect();
    let held = 0;
    engine.on('pending', () => held++);
    const msgs = ['one ', 'two ', 'three'];
    const prog = runUnder(emu, [...SENDER, String(server.port), ...msgs]);
    assert.equal((await prog.done).code, 0);
    assert.equal((await server.whenBytes(13)).toString(), msgs.join(''));
    assert.equal(held, 0);
    server.close();
  });

  it('reported chunks: the addon gives their buffers back itself, once', async () => {
    const server = await recordingServer();
    engine.setRules({ default: 'report' });
    engine.connect();
    // The filter's totals count since the emulator started: compare deltas.
    const before = engine.status().state!;
    const msgs = Array.from({ length: 30 }, (_, i) => `m${i} `);
    const prog = runUnder(emu, [
      ...SENDER.slice(0, 2),
      SENDER[2].replace('time.sleep(0.1)', 'time.sleep(0.005)'),
      String(server.port),
      ...msgs,
    ]);
    assert.equal((await prog.done).code, 0);
    assert.equal((await server.whenBytes(msgs.join('').length)).toString(), msgs.join(''));
    await waitFor(
      () => engine.model.counters.dataChunks >= 1 && engine.status().state!.now.buffersInUse === 0,
      5000,
      'buffers back',
    );
    const st = engine.status().state!;
    assert.ok(st.sinceStart.chunksReported > before.sinceStart.chunksReported);
    assert.equal(st.sinceStart.chunksHeld, before.sinceStart.chunksHeld);
    assert.equal(st.now.buffersInUse, 0, 'every reported chunk released');
    assert.equal(
      st.sinceStart.responsesRejected,
      before.sinceStart.responsesRejected,
      'no release refused (none twice)',
    );
    assert.equal(st.sinceStart.chunksPassedPoolFull, before.sinceStart.chunksPassedPoolFull);
  });

  it('a rewrite rule changes every matching chunk', async () => {
    const server = await recordingServer();
    engine.setRules({
      default: 'pass',
      rewrite: [{ find: 'cat', replace: 'tiger', remotePort: server.port }],
    });
    engine.connect();
    const prog = runUnder(emu, [...SENDER, String(server.port), 'cat1 ', 'dog ', 'cat-cat ']);
    assert.equal((await prog.done).code, 0);
    const want = 'tiger1 dog tiger-tiger ';
    assert.equal((await server.whenBytes(want.length)).toString(), want);
    await waitFor(() => engine.model.counters.rewritten >= 2, 5000, 'two rewrites counted');
    server.close();
  });

  it('a rewrite whose find is split across two writes (two chunks) is still replaced', async () => {
    const server = await recordingServer();
    engine = new FilterEngine({ rewriteCarryMs: 500 });
    engine.setRules({
      default: 'pass',
      rewrite: [{ find: 'password', replace: 'REDACTED', remotePort: server.port }],
    });
    engine.connect();
    // Two writes 100 ms apart: "user=x pass" then "word=y" -- the find spans them.
    const prog = runUnder(emu, [...SENDER, String(server.port), 'user=x pass', 'word=y ', 'end']);
    assert.equal((await prog.done).code, 0);
    const want = 'user=x REDACTED=y end';
    assert.equal((await server.whenBytes(want.length)).toString(), want);
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(server.received().toString(), want);
    assert.equal(engine.model.counters.rewritten, 1);
    assert.ok(
      engine.status().state!.sinceStart.chunksDropped >= 1,
      'the second chunk went out inside the first',
    );
    server.close();
  });

  it('the exec tree holds a 1000-byte path with correct parentage', async () => {
    // A real executable at a path of exactly 1000 bytes.
    let dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nke-long-'));
    const base = dir;
    while (dir.length < 1000 - 60) dir = path.join(dir, 'd'.repeat(50));
    fs.mkdirSync(dir, { recursive: true });
    const exe = path.join(dir, 'x'.repeat(1000 - dir.length - 1));
    assert.equal(exe.length, 1000);
    fs.copyFileSync('/bin/true', exe);
    fs.chmodSync(exe, 0o755);
    engine.connect();
    const prog = runUnder(emu, ['/bin/sh', '-c', `"${exe}"; echo $$`]);
    const out = await prog.done;
    const shPid = Number(out.stdout.trim());
    await waitFor(() => [...engine.model.execs.values()].some((e) => e.path === exe), 10000, 'the long exec');
    const ev = [...engine.model.execs.values()].find((e) => e.path === exe)!;
    assert.equal(ev.complete, true);
    assert.equal(ev.path.length, 1000);
    assert.equal(ev.ppid, shPid);
    assert.ok(engine.model.execChildren(shPid).some((e) => e.path === exe));
    fs.rmSync(base, { recursive: true, force: true });
  });

  it('a killed helper with held chunks: released, streams byte-exact, restarted helper rebuilds', async () => {
    engine.dispose(); // this test's filter client is the helper process
    const server = await recordingServer();
    const client = new HelperClient({ helperScript: path.join(root, 'dist/helper.js'), env: emu.env });
    try {
      const conn = await client.start();
      await conn.sendRequest(P.SetRules, {
        rules: {
          default: 'pass',
          intercept: [{ action: 'hold', remotePort: server.port }],
          holdTimeoutMs: 60000,
        },
      });
      const pending = new Promise<string>((r) =>
        conn.onNotification(P.Update, (b) => {
          if (b.pendingAdded.length) r(b.pendingAdded[0].id);
        }),
      );
      const msgs = ['first-held ', 'second ', 'third'];
      const prog = runUnder(emu, [...SENDER, String(server.port), ...msgs]);
      await pending;
      process.kill(client.pid!, 'SIGKILL');
      // The emulator re-injects the originals (client gone): byte-exact, in order.
      assert.equal((await prog.done).code, 0);
      assert.equal((await server.whenBytes(msgs.join('').length, 15000)).toString(), msgs.join(''));
      await new Promise((r) => setTimeout(r, 200)); // nothing more (no duplicate re-injection)
      assert.equal(server.received().toString(), msgs.join(''));
      const conn2 = await client.restart();
      const st = await conn2.sendRequest(P.GetStatus);
      assert.equal(st.connected, true);
      const prog2 = runUnder(emu, [...SENDER, String(server.port), 'after']);
      assert.equal((await prog2.done).code, 0);
      await waitFor(() => server.received().toString().endsWith('after'), 10000, 'traffic after restart');
      const snap = await conn2.sendRequest(P.GetSnapshot);
      assert.ok(snap.counters.dataChunks >= 1, 'the restarted helper sees traffic again');
    } finally {
      client.stop();
      server.close();
    }
  });
});
