// Helper protocol 2: a socket whose bytes alone moved goes in a batch as an
// [id, bytesIn, bytesOut] tuple, not as its whole view; a batch on the wire
// carries no history events (nke/history serves them); the CLI's in-process
// update still has them.
import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import { createMessageConnection, StreamMessageReader, StreamMessageWriter } from 'vscode-jsonrpc/node';
import { FilterEngine } from '../../extension/src/helper/engine';
import { LiveModel } from '../../extension/src/helper/model';
import { serveHelperProtocol } from '../../extension/src/helper/service';
import { NotifyType } from '../../extension/src/shared/abi';
import { NKE_RULE_DEFAULT, NtDataLayout } from '../../extension/src/shared/abi';
import * as P from '../../extension/src/shared/helperProtocol';
import { attach, connectOut, feed, hdr } from './rawRecords';

/** A data record of ABI 4, reported (not held), decided by the default. */
function data(slot: number, chunk: bigint, size: number, dir: 1 | 2): Buffer {
  const b = hdr(NotifyType.Data, NtDataLayout.size, slot, 1, 0);
  b.writeBigUInt64LE(chunk, 24);
  b.writeUInt32LE(size, 40);
  b[44] = dir;
  b.writeUInt16LE(1, 46);
  b.writeUInt16LE(3, 80);
  for (let i = 1; i < 8; i++) b.writeUInt16LE(0xffff, 80 + 2 * i);
  b.writeUInt16LE(NKE_RULE_DEFAULT, 96);
  return b;
}

describe('helper protocol 2: byte counts as tuples, no history events on the wire', () => {
  it('bytes alone: a tuple with the totals; with a state change: the whole view', () => {
    const m = new LiveModel();
    feed(m, attach(3, 1, 77, 'curl'), connectOut(3, 1, 80), attach(4, 1, 77, 'curl'), connectOut(4, 1, 81));
    const first = m.takeUpdate();
    assert.deepEqual(
      first.sockets.map((s) => s.id),
      ['3:1', '4:1'],
    );
    assert.equal(first.bytes, undefined);

    feed(m, data(3, 1n, 100, 2), data(3, 2n, 5, 1), data(4, 3n, 7, 2));
    const second = m.takeUpdate();
    // connecting -> connected (bytes flow on TCP): socket 3:1's view goes whole, once
    assert.deepEqual(
      second.sockets.map((s) => [s.id, s.state, s.bytesIn, s.bytesOut]),
      [
        ['3:1', 'connected', 5, 100],
        ['4:1', 'connected', 0, 7],
      ],
    );
    assert.equal(second.bytes, undefined);

    feed(m, data(3, 4n, 1000, 1), data(4, 5n, 3, 2), data(4, 6n, 4, 2));
    const third = m.takeUpdate();
    assert.deepEqual(third.sockets, []);
    assert.deepEqual(third.bytes, [
      ['3:1', 1005, 100],
      ['4:1', 0, 14],
    ]);
    assert.deepEqual(
      third.events.map((e) => e.kind),
      ['data', 'data', 'data'],
      'the in-process update (the CLI) keeps its history events',
    );
  });

  it('a batch sent to a client has its tuples and no events', async () => {
    const engine = new FilterEngine();
    const a = new PassThrough();
    const b = new PassThrough();
    const helperSide = createMessageConnection(new StreamMessageReader(a), new StreamMessageWriter(b));
    const clientSide = createMessageConnection(new StreamMessageReader(b), new StreamMessageWriter(a));
    const got: P.UpdateBatch[] = [];
    clientSide.onNotification(P.Update, (u) => got.push(u));
    const unwire = serveHelperProtocol(helperSide, engine);
    helperSide.listen();
    clientSide.listen();
    try {
      const hello = await clientSide.sendRequest(P.Hello);
      assert.equal(hello.protocolVersion, P.HELPER_PROTOCOL_VERSION);
      feed(engine.model, attach(5, 1, 9, 'curl'), connectOut(5, 1, 443), data(5, 1n, 10, 2));
      engine.flushUpdates();
      feed(engine.model, data(5, 2n, 20, 2));
      engine.flushUpdates();
      for (let i = 0; i < 100 && got.length < 2; i++) await new Promise((r) => setTimeout(r, 10));
      assert.equal(got.length, 2);
      for (const u of got) assert.equal('events' in u, false, 'no history events in a batch on the wire');
      assert.deepEqual(
        got[0].sockets.map((s) => s.id),
        ['5:1'],
      );
      assert.deepEqual(got[1].sockets, []);
      assert.deepEqual(got[1].bytes, [['5:1', 0, 30]]);
    } finally {
      unwire();
      helperSide.dispose();
      clientSide.dispose();
      engine.dispose();
    }
  });
});
