// Bytes the filter passed without reporting them (a DATA_GAP record: no
// buffer was free) still went over the socket: the socket's counts and the
// helper's include them, and the socket is in the next batch to the views.
import assert from 'node:assert/strict';
import { LiveModel } from '../../extension/src/helper/model';
import { Direction, NotifyType } from '../../extension/src/shared/abi';
import type { Notification } from '../../extension/src/helper/model';

const sock = { slot: 9, gen: 1 };
const base = { sock, timeNs: 0, flags: 0 };
const attach: Notification = {
  ...base,
  type: NotifyType.Attach,
  pid: 42,
  uid: 1000,
  family: 2,
  sockType: 1,
  protocol: 6,
  comm: 'curl',
};
const gap = (direction: number, size: number): Notification => ({
  ...base,
  type: NotifyType.DataGap,
  streamOffset: 0,
  size,
  direction,
  reason: 1,
});

describe('bytes passed unreported (data gaps)', () => {
  it("count in the socket's bytes and the helper's, and reach the next batch", () => {
    const m = new LiveModel();
    m.apply(attach);
    m.takeUpdate();
    m.apply(gap(Direction.Out, 700));
    m.apply(gap(Direction.In, 300));
    const s = m.sockets.get('9:1')!.view;
    assert.equal(s.bytesOut, 700);
    assert.equal(s.bytesIn, 300);
    assert.equal(s.pid, 42, 'the socket keeps its process');
    assert.equal(m.counters.bytesOut, 700);
    assert.equal(m.counters.bytesIn, 300);
    assert.equal(m.counters.dataGaps, 2);
    assert.equal(m.counters.dataGapBytes, 1000);
    const batch = m.takeUpdate();
    // bytes alone moved: the compact tuple of protocol 2, not the whole view
    assert.deepEqual(batch.sockets, []);
    assert.deepEqual(batch.bytes, [['9:1', 300, 700]]);
  });
});
