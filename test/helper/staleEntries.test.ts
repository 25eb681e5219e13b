// The filter's count of stale entries (late verdicts it skipped) reaches the
// views: the engine sends its status with the next update when a state
// record moves the count, and only then. A stand-in for the addon feeds the
// engine real ABI records (the emulator's side is test/emu/endpoints.test.js).
import assert from 'node:assert/strict';
import { FilterEngine } from '../../extension/src/helper/engine';
import type { NativeAddon, NativeFilterClient } from '../../extension/src/helper/native';
import type { UpdateBatch } from '../../extension/src/shared/helperProtocol';
import { NKE_ABI_VERSION } from '../../extension/src/shared/abi';
import { encodeNotification } from '../shared/abiTestCodecs';

function stateRecord(stale: bigint, held: bigint): Buffer {
  return Buffer.from(
    encodeNotification({
      kind: 'state',
      hdr: { type: 0, size: 0, flags: 0, sock: { slot: 0, gen: 0 }, time_ns: 0n },
      state: {
        abi_version: NKE_ABI_VERSION,
        flags: 1,
        capture_mode: 1,
        sockets_live: 0,
        chunks_pending: 0,
        buffers_in_use: 0,
        sockets_attached: 0n,
        chunks_held: held,
        chunks_reported: 0n,
        chunks_passed_pool_full: 0n,
        chunks_auto_released: 0n,
        chunks_dropped: 0n,
        chunks_modified: 0n,
        bytes_held: 0n,
        responses_rejected: 0n,
        notifications_lost: 0n,
        sockets_untracked: 0n,
        stale_entries: stale,
        bytes_kept: 0n,
        chunks_queued: 0n,
        chunks_passed_budget: 0n,
      },
    }),
  );
}

function fakeAddon(): { addon: NativeAddon; feed: (rec: Buffer) => void } {
  let onBatch: ((records: Buffer, skipped: number) => void) | undefined;
  const client = {
    isOpen: true,
    open(cb: (records: Buffer, skipped: number) => void) {
      onBatch = cb;
      return { sessionId: 1n };
    },
    respond() {},
    putData() {},
    setCapture() {},
    getState: () => Buffer.alloc(0),
    readChunk: () => Buffer.alloc(0),
    close() {},
  } as unknown as NativeFilterClient;
  const addon = {
    FilterClient: function () {
      return client;
    },
    KevSocket: function () {
      return { open: () => ({ vendorCode: 0, msgLimit: 0 }), close() {}, stats: () => ({}) };
    },
    abiVersion: NKE_ABI_VERSION,
    kevVendor: 'test',
    platform: 'emulator',
  } as unknown as NativeAddon;
  return { addon, feed: (rec) => onBatch!(rec, 0) };
}

describe('engine: stale entries in the filter status', () => {
  it('sends the status with the next update when stale_entries moves, and not otherwise', () => {
    const { addon, feed } = fakeAddon();
    const engine = new FilterEngine({ addon });
    engine.connect();
    const updates: UpdateBatch[] = [];
    engine.on('update', (b) => updates.push(b));

    feed(stateRecord(0n, 1n));
    engine.flushUpdates();
    feed(stateRecord(3n, 2n));
    engine.flushUpdates();
    feed(stateRecord(3n, 5n)); // other counters move: no push of its own
    engine.flushUpdates();

    const withFilter = updates.filter((u) => u.filter);
    assert.deepEqual(
      withFilter.map((u) => u.filter!.state?.sinceStart.staleEntries),
      [0, 3],
    );
    assert.equal(withFilter[1].filter!.connected, true);
    engine.dispose();
  });
});
