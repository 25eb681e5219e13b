// The engine's decisions on synthetic notifications, through a recording
// stand-in for the addon's filter client (the real one needs the emulator:
// see emu.test.ts). Covers what the emulator on main cannot produce yet:
// several held chunks of one flow in flight, so a rewrite's `find` split
// across two chunks.
import assert from 'node:assert/strict';
import { carryLength, FilterEngine } from '../../extension/src/helper/engine';
import type { NativeAddon, NativeFilterClient } from '../../extension/src/helper/native';
import {
  Action,
  Direction,
  NKE_AF_INET,
  NKE_BUF_NONE,
  NKE_DATA_F_HELD,
  PutDataHdrLayout,
  NKE_RULE_DEFAULT,
} from '../../extension/src/shared/abi';
import { decodeResponse, encodeNotification } from '../shared/abiTestCodecs';

const hdr = (slot: number, flags = 0) => ({ type: 0, size: 0, flags, sock: { slot, gen: 1 }, time_ns: 0n });
const none = { family: 0, port: 0, scope_id: 0, addr: new Uint8Array(16) };

function attach(slot: number): Buffer {
  return Buffer.from(
    encodeNotification({
      kind: 'attach',
      hdr: hdr(slot),
      pid: 4242,
      uid: 0,
      family: NKE_AF_INET,
      type: 1,
      protocol: 6,
      comm: 'prog',
    }),
  );
}
function detach(slot: number): Buffer {
  return Buffer.from(encodeNotification({ kind: 'detach', hdr: hdr(slot), bytes_in: 0n, bytes_out: 0n }));
}

/** The stand-in filter: buffers by index, every respond/putData recorded. */
class Recorder {
  /** Of the last config the engine sent: its tag, and the rule a data record names as the
   * filter would (these tests' rules match every flow, so the first; the default when none). */
  captureTag = 0;
  firstRule = NKE_RULE_DEFAULT;
  bufs = new Map<number, Buffer>();
  verdicts: { chunk: bigint; action: number; len: number }[] = [];
  releases: { chunk: bigint; buffer: number }[] = [];
  staged = new Map<bigint, Buffer>();
  nextBuf = 0;
  onBatch?: (records: Buffer, skipped: number) => void;

  addon(): NativeAddon {
    // eslint-disable-next-line @typescript-eslint/no-this-alias
    const rec = this;
    const client: NativeFilterClient = {
      isOpen: true,
      open(onBatch) {
        rec.onBatch = onBatch;
        return { sessionId: 1n } as ReturnType<NativeFilterClient['open']>;
      },
      readChunk(buffers, size) {
        return Buffer.from(rec.bufs.get(buffers[0])!.subarray(0, size));
      },
      captureWrite() {
        return -1;
      },
      captureStatus() {
        return undefined;
      },
      respond(m) {
        const r = decodeResponse(m);
        assert.ok(r.ok);
        for (const v of r.value.verdicts) {
          rec.verdicts.push({ chunk: v.chunk_id, action: v.action, len: v.modified_len });
        }
        for (const x of r.value.releases) rec.releases.push({ chunk: x.chunk_id, buffer: x.buffer });
      },
      putData(m) {
        const id = m.readBigUInt64LE(0);
        rec.staged.set(
          id,
          Buffer.concat([rec.staged.get(id) ?? Buffer.alloc(0), m.subarray(PutDataHdrLayout.size)]),
        );
      },
      setCapture(m) {
        rec.captureTag = m.readUInt32LE(20);
        rec.firstRule = m.readUInt32LE(16) > 0 ? 0 : NKE_RULE_DEFAULT;
      },
      getState() {
        return Buffer.alloc(0);
      },
      close() {},
    };
    return {
      FilterClient: function () {
        return client;
      } as unknown as NativeAddon['FilterClient'],
      KevSocket: function () {
        return { open: () => ({ vendorCode: 0, msgLimit: 0 }), close() {}, stats: () => ({}) };
      } as unknown as NativeAddon['KevSocket'],
      abiVersion: 1,
      kevVendor: 'test',
      platform: 'emulator',
    };
  }

  /** A held data record of `text` on socket `slot`, direction out (1). */
  data(slot: number, chunk: bigint, text: string): Buffer {
    const idx = this.nextBuf++ % 64;
    this.bufs.set(idx, Buffer.from(text));
    return Buffer.from(
      encodeNotification({
        kind: 'data',
        hdr: hdr(slot, NKE_DATA_F_HELD),
        chunk_id: chunk,
        stream_offset: 0n,
        size: text.length,
        direction: Direction.Out,
        nbuffers: 1,
        deadline_ms: 5000,
        capture_tag: this.captureTag,
        rule: this.firstRule,
        addr: none,
        buffers: [
          idx,
          NKE_BUF_NONE,
          NKE_BUF_NONE,
          NKE_BUF_NONE,
          NKE_BUF_NONE,
          NKE_BUF_NONE,
          NKE_BUF_NONE,
          NKE_BUF_NONE,
        ],
      }),
    );
  }

  feed(...recs: Buffer[]): void {
    this.onBatch!(Buffer.concat(recs), 0);
  }

  verdictOf(chunk: bigint): { action: number; len: number } | undefined {
    const v = this.verdicts.find((x) => x.chunk === chunk);
    return v && { action: v.action, len: v.len };
  }
}

function setup(carryMs = 50): { rec: Recorder; engine: FilterEngine } {
  const rec = new Recorder();
  const engine = new FilterEngine({ addon: rec.addon(), rewriteCarryMs: carryMs });
  engine.setRules({ default: 'pass', rewrite: [{ find: 'secret', replace: 'XX' }] });
  engine.connect();
  rec.feed(attach(1));
  return { rec, engine };
}

describe('engine rewrite across chunk boundaries', () => {
  it('carryLength: longest proper prefix of find at the end, after the last match', () => {
    const f = Buffer.from('secret');
    assert.equal(carryLength(Buffer.from('xx sec'), f), 3);
    assert.equal(carryLength(Buffer.from('xx secre'), f), 5);
    assert.equal(carryLength(Buffer.from('xx secret'), f), 0); // whole match: not a proper prefix
    assert.equal(carryLength(Buffer.from('xx'), f), 0);
    assert.equal(carryLength(Buffer.from('s'), f), 1);
    assert.equal(carryLength(Buffer.from('secrets'), f, 6), 1);
  });

  it('a find split between two chunks of one flow is replaced; buffers released at once', () => {
    const { rec, engine } = setup();
    rec.feed(rec.data(1, 10n, 'GET /sec'));
    // Held back: no verdict yet, but its buffer is already released.
    assert.equal(rec.verdictOf(10n), undefined);
    assert.deepEqual(rec.releases, [{ chunk: 10n, buffer: 0 }]);
    rec.feed(rec.data(1, 11n, 'ret HTTP'));
    assert.deepEqual(rec.verdictOf(10n), { action: Action.AllowModified, len: 'GET /XX HTTP'.length });
    assert.equal(rec.staged.get(10n)!.toString(), 'GET /XX HTTP');
    assert.deepEqual(rec.verdictOf(11n), { action: Action.Drop, len: 0 });
    assert.equal(rec.releases.length, 2);
    engine.dispose();
  });

  it('a find split over three chunks is replaced', () => {
    const { rec, engine } = setup();
    rec.feed(rec.data(1, 20n, 'a se'));
    rec.feed(rec.data(1, 21n, 'cr'));
    rec.feed(rec.data(1, 22n, 'et b'));
    assert.equal(rec.staged.get(20n)!.toString(), 'a XX b');
    assert.equal(rec.verdictOf(21n)!.action, Action.Drop);
    assert.equal(rec.verdictOf(22n)!.action, Action.Drop);
    engine.dispose();
  });

  it('a prefix that does not continue: both chunks pass unchanged', () => {
    const { rec, engine } = setup();
    rec.feed(rec.data(1, 30n, 'the sec'));
    rec.feed(rec.data(1, 31n, 'ond one'));
    assert.deepEqual(rec.verdictOf(30n), { action: Action.Allow, len: 0 });
    assert.deepEqual(rec.verdictOf(31n), { action: Action.Allow, len: 0 });
    assert.equal(rec.staged.size, 0);
    engine.dispose();
  });

  it('other flows are not mixed in: a different socket decides on its own', () => {
    const { rec, engine } = setup();
    rec.feed(attach(2));
    rec.feed(rec.data(1, 40n, 'x sec'), rec.data(2, 41n, 'ret y'));
    assert.equal(rec.verdictOf(40n), undefined); // still waiting for socket 1's next chunk
    assert.deepEqual(rec.verdictOf(41n), { action: Action.Allow, len: 0 });
    engine.dispose();
  });

  it('the carry timer passes a held-back chunk as it is', async () => {
    const { rec, engine } = setup(20);
    rec.feed(rec.data(1, 50n, 'tail s'));
    assert.equal(rec.verdictOf(50n), undefined);
    await new Promise((r) => setTimeout(r, 80));
    assert.deepEqual(rec.verdictOf(50n), { action: Action.Allow, len: 0 });
    engine.dispose();
  });

  it('socket detach decides the carried chunk at once', () => {
    const { rec, engine } = setup(10000);
    rec.feed(rec.data(1, 60n, 'ends secr'));
    rec.feed(detach(1));
    assert.deepEqual(rec.verdictOf(60n), { action: Action.Allow, len: 0 });
    engine.dispose();
  });

  it('a chunk held for a person is copied and its buffers released in the same response', () => {
    const rec = new Recorder();
    const engine = new FilterEngine({ addon: rec.addon(), pendingBytesLimit: 12 });
    engine.setRules({ default: 'hold' });
    engine.connect();
    rec.feed(attach(1));
    rec.feed(rec.data(1, 70n, 'first-10by'), rec.data(1, 71n, 'second-too'));
    // The first fits the 12-byte bound and stays pending; the second passes and is counted.
    assert.deepEqual(
      rec.releases.map((r) => r.chunk),
      [70n, 71n],
    );
    assert.equal(rec.verdictOf(70n), undefined);
    assert.deepEqual(rec.verdictOf(71n), { action: Action.Allow, len: 0 });
    assert.equal(engine.model.counters.pendingOverLimit, 1);
    rec.bufs.get(0)!.fill(0); // the buffer is reused by the filter: the payload must not change
    assert.equal(engine.getPayload('70').toString(), 'first-10by');
    engine.verdict('70', 'drop');
    assert.deepEqual(rec.verdictOf(70n), { action: Action.Drop, len: 0 });
    assert.equal(rec.releases.length, 2, 'no second release of the same buffers');
    assert.equal(engine.model.pendingBytes, 0);
    engine.dispose();
  });
});
