// The live model: sockets follow their notifications, the exec tree keeps
// long paths and parentage, history stays bounded, updates carry only changes.
import assert from 'node:assert/strict';
import { LiveModel } from '../../extension/src/helper/model';
import { NotifyType } from '../../extension/src/shared/abi';
import { decodeBatch, type Notification } from '../../extension/src/helper/model';
import { attach, connectOut, feed, hdr } from './rawRecords';

function data(slot: number, gen: number, chunk: bigint, size: number, held: boolean): Buffer {
  const b = hdr(NotifyType.Data, 104, slot, gen, held ? 1 : 0);
  b.writeBigUInt64LE(chunk, 24);
  b.writeUInt32LE(size, 40);
  b[44] = 2;
  b.writeUInt16LE(1, 46);
  b.writeUInt32LE(5000, 48);
  b.writeUInt16LE(3, 80);
  for (let i = 1; i < 8; i++) b.writeUInt16LE(0xffff, 80 + 2 * i);
  return b;
}
function detach(slot: number, gen: number): Buffer {
  const b = hdr(NotifyType.Detach, 40, slot, gen);
  b.writeBigUInt64LE(10n, 24);
  b.writeBigUInt64LE(20n, 32);
  return b;
}

describe('helper live model', () => {
  it('tracks a socket from attach to detach with addresses and bytes', () => {
    const m = new LiveModel();
    feed(m, attach(1, 1, 42, 'curl'), connectOut(1, 1, 8080));
    const s = m.sockets.get('1:1')!.view;
    assert.equal(s.state, 'connecting');
    feed(m, data(1, 1, 7n, 300, false));
    assert.equal(s.process, 'curl');
    assert.equal(s.pid, 42);
    assert.equal(s.state, 'connected', 'stream bytes flow only on a connected socket');
    assert.deepEqual(s.remote, { address: '127.0.0.1', port: 8080 });
    assert.equal(s.bytesOut, 300);
    feed(m, detach(1, 1));
    assert.equal(m.sockets.size, 0);
    assert.equal(m.closedSockets.get('1:1')!.state, 'closed');
    assert.equal(m.closedSockets.get('1:1')!.bytesOut, 20);
  });

  it('does not confuse a reused slot with its predecessor', () => {
    const m = new LiveModel();
    feed(m, attach(1, 1, 42, 'a'), detach(1, 1), attach(1, 2, 43, 'b'));
    assert.equal(m.sockets.get('1:2')!.view.process, 'b');
    assert.equal(m.closedSockets.get('1:1')!.process, 'a');
  });

  it('keeps held chunks pending until released by the filter', () => {
    const m = new LiveModel();
    const [, n] = feed(m, attach(1, 1, 42, 'curl'), data(1, 1, 9n, 50, true));
    assert.equal(n.type, NotifyType.Data);
    const p = m.addPending(n as Extract<Notification, { type: NotifyType.Data }>, Buffer.alloc(50, 7));
    assert.equal(p.view.process, 'curl');
    assert.equal(m.pendingBytes, 50);
    assert.ok(p.view.deadline > Date.now());
    m.takeUpdate();
    const rel = hdr(NotifyType.ChunkReleased, 40, 1, 1);
    rel.writeBigUInt64LE(9n, 24);
    rel.writeUInt32LE(1, 32);
    feed(m, rel);
    assert.equal(m.pending.size, 0);
    assert.equal(m.pendingBytes, 0);
    assert.deepEqual(m.takeUpdate().pendingRemoved, [{ id: '9', reason: 'timeout' }]);
  });

  it('holds a 1000-byte exec path and the tree by parent pid', () => {
    const m = new LiveModel();
    const long = `/${'d/'.repeat(499)}x`.slice(0, 1000);
    m.addExec({
      execId: 1,
      pid: 10,
      ppid: 1,
      uid: 0,
      flags: 0,
      complete: true,
      path: Buffer.from('/bin/sh'),
    });
    m.addExec({ execId: 2, pid: 11, ppid: 10, uid: 0, flags: 0, complete: true, path: Buffer.from(long) });
    const gap = Buffer.from('/usr/bin/ab');
    gap[5] = 0;
    m.addExec({ execId: 3, pid: 12, ppid: 10, uid: 0, flags: 0, complete: false, path: gap });
    const kids = m.execChildren(10);
    assert.deepEqual(
      kids.map((k) => k.pid),
      [11, 12],
    );
    assert.equal(kids[0].path.length, 1000);
    assert.equal(kids[0].path, long);
    assert.equal(kids[1].complete, false);
    assert.ok(kids[1].path.includes('\ufffd'));
    assert.equal(m.counters.execsIncomplete, 1);
  });

  it('bounds the event ring to its limit and counts what it dropped', () => {
    const m = new LiveModel(100);
    for (let i = 1; i <= 250; i++) feed(m, attach(i, 1, i, 'p'));
    assert.equal(m.eventRingSize, 100);
    assert.equal(m.eventsDropped, 150);
    const h = m.eventsSince(0, 1000);
    assert.equal(h.length, 100);
    assert.equal(h[0].seq, 151);
    assert.equal(h[99].seq, 250);
    assert.deepEqual(
      m.eventsSince(240, 1000).map((e) => e.seq),
      [241, 242, 243, 244, 245, 246, 247, 248, 249, 250],
    );
  });

  it('sends only changes in an update and nothing when idle', () => {
    const m = new LiveModel();
    feed(m, attach(1, 1, 1, 'a'), attach(2, 1, 2, 'b'));
    const u1 = m.takeUpdate();
    assert.equal(u1.sockets.length, 2);
    assert.equal(m.isDirty, false);
    feed(m, data(2, 1, 1n, 10, false));
    const u2 = m.takeUpdate();
    // only socket 2:1, and only its bytes (protocol 2's tuple)
    assert.deepEqual(u2.sockets, []);
    assert.deepEqual(u2.bytes, [['2:1', 0, 10]]);
  });

  it('adopts sockets attached before the helper connected (restarted helper)', () => {
    const m = new LiveModel();
    feed(m, connectOut(5, 3, 443), data(5, 3, 11n, 99, false));
    const s = m.sockets.get('5:3')!.view;
    assert.deepEqual(s.remote, { address: '127.0.0.1', port: 443 });
    assert.equal(s.bytesOut, 99);
    assert.equal(m.counters.socketsAdopted, 1);
  });

  it('counts malformed records instead of trusting them', () => {
    const bad = data(1, 1, 1n, 10, true);
    bad.writeUInt16LE(9, 46); // nbuffers > 8
    const wrongSize = hdr(NotifyType.Attach, 40, 1, 1);
    const list: Notification[] = [];
    assert.equal(decodeBatch(Buffer.concat([bad, wrongSize, attach(3, 1, 3, 'ok')]), list), 2);
    assert.equal(list.length, 1);
  });
});
