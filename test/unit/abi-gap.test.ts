// nke_nt_data_gap (data the filter passed without a report): decoded from
// bytes placed at the header's offsets, and refused with a value (never a
// throw) when its direction is not one the ABI knows.
import { strict as assert } from 'node:assert';

import {
  decodeNotification,
  Direction,
  GapReason,
  NKE_DATA_F_OOB,
  NotifyType,
} from '../../extension/src/shared/abi';

function gapRecord(direction: number): Uint8Array {
  const buf = new Uint8Array(40);
  const dv = new DataView(buf.buffer);
  dv.setUint16(0, NotifyType.DataGap, true);
  dv.setUint16(2, 40, true);
  dv.setUint32(4, NKE_DATA_F_OOB, true);
  dv.setUint32(8, 3, true); // sock.slot
  dv.setUint32(12, 9, true); // sock.gen
  dv.setBigUint64(16, 777n, true); // time_ns
  dv.setBigUint64(24, 2n ** 33n + 5n, true); // stream_offset
  dv.setUint32(32, 4096, true); // size
  dv.setUint8(36, direction);
  dv.setUint8(37, GapReason.QueueFull);
  return buf;
}

describe('abi: data gap notifications', () => {
  it('decodes every field of nke_nt_data_gap from its C offsets', () => {
    const r = decodeNotification(gapRecord(Direction.Out));
    assert.ok(r.ok, r.ok ? '' : r.error.message);
    const n = r.value;
    assert.equal(n.kind, 'data_gap');
    if (n.kind !== 'data_gap') return;
    assert.deepEqual(n.hdr.sock, { slot: 3, gen: 9 });
    assert.equal(n.hdr.flags, NKE_DATA_F_OOB);
    assert.equal(n.hdr.time_ns, 777n);
    assert.equal(n.stream_offset, 2n ** 33n + 5n);
    assert.equal(n.size, 4096);
    assert.equal(n.direction, Direction.Out);
    assert.equal(n.reason, GapReason.QueueFull);
  });

  it('refuses a gap with an unknown direction as a bad_field value', () => {
    const r = decodeNotification(gapRecord(7));
    assert.equal(r.ok, false);
    if (r.ok) return;
    assert.equal(r.error.code, 'bad_field');
    assert.match(r.error.message, /data_gap: direction is 7/);
  });
});
