// NKE_ACT_EXTEND on the TS side of the ABI: hold_ms travels in the u32 that
// C names both modified_len and hold_ms (a union), and the encoder refuses
// what the filter would refuse (0, past the total hold cap, hold_ms with
// another action) naming the entry.
import { strict as assert } from 'node:assert';
import { Action, encodeResponse, NKE_HOLD_TOTAL_MAX_MS, NkeError } from '../../extension/src/shared/abi';
import { decodeResponse, describeNkeError } from '../shared/abiTestCodecs';

const sock = { slot: 3, gen: 7 };

describe('abi: Extend (time to edit a held chunk)', () => {
  it('hold_ms is written where C reads nke_verdict.hold_ms (offset 20 of the verdict)', () => {
    const b = encodeResponse([{ chunk_id: 17n, sock, action: Action.Extend, hold_ms: 120000 }], []);
    const dv = new DataView(b.buffer);
    assert.equal(b[16 + 16], Action.Extend);
    assert.equal(dv.getUint32(16 + 20, true), 120000);
    const back = decodeResponse(b);
    assert.ok(back.ok);
    assert.equal(back.value.verdicts[0].modified_len, 120000);
  });

  it('the cap itself is allowed; 0, past the cap, fractions and a missing hold_ms are refused', () => {
    assert.doesNotThrow(() =>
      encodeResponse([{ chunk_id: 1n, sock, action: Action.Extend, hold_ms: NKE_HOLD_TOTAL_MAX_MS }], []),
    );
    for (const hold_ms of [0, NKE_HOLD_TOTAL_MAX_MS + 1, 1.5, -1, undefined]) {
      assert.throws(
        () =>
          encodeResponse(
            [
              { chunk_id: 1n, sock, action: Action.Allow },
              { chunk_id: 2n, sock, action: Action.Extend, hold_ms },
            ],
            [],
          ),
        new RegExp(`verdicts\\[1\\]\\.hold_ms is ${hold_ms}; Extend needs 1\\.\\.${NKE_HOLD_TOTAL_MAX_MS}`),
      );
    }
  });

  it('hold_ms with another action, or modified_len with Extend, is refused', () => {
    assert.throws(
      () => encodeResponse([{ chunk_id: 1n, sock, action: Action.Drop, hold_ms: 5000 }], []),
      /verdicts\[0\]\.hold_ms is only for action Extend/,
    );
    assert.throws(
      () =>
        encodeResponse([{ chunk_id: 1n, sock, action: Action.Extend, hold_ms: 5000, modified_len: 4 }], []),
      /verdicts\[0\]\.modified_len must be 0 unless action is AllowModified/,
    );
  });

  it('the filter status for a bad hold_ms says what range to ask for', () => {
    assert.match(describeNkeError(NkeError.HoldMs), /HoldMs \(25\): Extend with hold_ms 0 or above/);
    assert.match(describeNkeError(NkeError.HoldMs), new RegExp(`1\\.\\.${NKE_HOLD_TOTAL_MAX_MS} ms`));
  });
});
