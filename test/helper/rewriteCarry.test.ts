// Rewrite rules across chunk boundaries are exact whatever the timing: a
// carried chunk waits for the next one as long as its deadline allows (no
// fixed 20 ms window), is decided when its socket closes, and a rule's own
// carryMs bounds the wait; a match that still goes out unrewritten (the
// window ended first, the filter released the chunk itself) is counted and
// said, never silent. Also: edits staged in the helper and sent by a replace
// verdict without bytes. A stand-in for the addon feeds real ABI records.
import assert from 'node:assert/strict';
import { FilterEngine } from '../../extension/src/helper/engine';
import type { NativeAddon, NativeFilterClient } from '../../extension/src/helper/native';
import {
  Action,
  Direction,
  NKE_ABI_VERSION,
  NKE_AF_INET,
  NKE_BUF_NONE,
  NKE_DATA_F_HELD,
  PutDataHdrLayout,
  SockEvent,
  NKE_RULE_DEFAULT,
} from '../../extension/src/shared/abi';
import { decodeResponse, encodeNotification } from '../shared/abiTestCodecs';

const hdr = (slot: number, flags = 0) => ({ type: 0, size: 0, flags, sock: { slot, gen: 1 }, time_ns: 0n });
const none = { family: 0, port: 0, scope_id: 0, addr: new Uint8Array(16) };
const rec = (n: Parameters<typeof encodeNotification>[0]) => Buffer.from(encodeNotification(n));

/** The filter, as far as the engine can tell: buffers by index, every answer recorded. */
class StandIn {
  /** Of the last config the engine sent: its tag, and the rule a data record names as the
   * filter would (these tests' rules match every flow, so the first; the default when none). */
  captureTag = 0;
  firstRule = NKE_RULE_DEFAULT;
  bufs = new Map<number, Buffer>();
  verdicts = new Map<bigint, { action: number; len: number }>();
  staged = new Map<bigint, Buffer>();
  private next = 0;
  private onBatch?: (records: Buffer, skipped: number) => void;

  addon(): NativeAddon {
    // eslint-disable-next-line @typescript-eslint/no-this-alias
    const self = this;
    const client = {
      isOpen: true,
      open(cb: (records: Buffer, skipped: number) => void) {
        self.onBatch = cb;
        return { sessionId: 1n };
      },
      readChunk: (buffers: number[], size: number) =>
        Buffer.from(self.bufs.get(buffers[0])!.subarray(0, size)),
      respond(m: Buffer) {
        const r = decodeResponse(m);
        assert.ok(r.ok);
        for (const v of r.value.verdicts) {
          self.verdicts.set(v.chunk_id, { action: v.action, len: v.modified_len });
        }
      },
      putData(m: Buffer) {
        const id = m.readBigUInt64LE(0);
        self.staged.set(
          id,
          Buffer.concat([self.staged.get(id) ?? Buffer.alloc(0), m.subarray(PutDataHdrLayout.size)]),
        );
      },
      setCapture(m: Buffer) {
        self.captureTag = m.readUInt32LE(20);
        self.firstRule = m.readUInt32LE(16) > 0 ? 0 : NKE_RULE_DEFAULT;
      },
      getState: () => Buffer.alloc(0),
      close() {},
    } as unknown as NativeFilterClient;
    return {
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
  }

  feed(...recs: Buffer[]): void {
    this.onBatch!(Buffer.concat(recs), 0);
  }

  attach(slot: number): Buffer {
    return rec({
      kind: 'attach',
      hdr: hdr(slot),
      pid: 7,
      uid: 0,
      family: NKE_AF_INET,
      type: 1,
      protocol: 6,
      comm: 'prog',
    });
  }

  /** A held chunk of `text`, outgoing, with `deadlineMs` left before the filter releases it. */
  data(slot: number, chunk: bigint, text: string, deadlineMs = 5000): Buffer {
    const idx = this.next++ % 64;
    this.bufs.set(idx, Buffer.from(text));
    return rec({
      kind: 'data',
      hdr: hdr(slot, NKE_DATA_F_HELD),
      chunk_id: chunk,
      stream_offset: 0n,
      size: text.length,
      direction: Direction.Out,
      nbuffers: 1,
      deadline_ms: deadlineMs,
      capture_tag: this.captureTag,
      rule: this.firstRule,
      addr: none,
      buffers: [idx, ...Array(7).fill(NKE_BUF_NONE)],
    });
  }

  event(slot: number, event: SockEvent): Buffer {
    return rec({ kind: 'event', hdr: hdr(slot), event });
  }

  released(slot: number, chunk: bigint, reason: number): Buffer {
    return rec({ kind: 'chunk_released', hdr: hdr(slot), chunk_id: chunk, reason, size: 0 });
  }
}

function setup(rewrite: Record<string, unknown>, opts: { rewriteCarryMs?: number } = {}) {
  const f = new StandIn();
  const warnings: string[] = [];
  const engine = new FilterEngine({
    addon: f.addon(),
    ...opts,
    log: (_level, m) => m.startsWith('rewrite rule') && warnings.push(m),
  });
  engine.setRules({ default: 'pass', rewrite: [{ find: 'password', replace: 'XX', ...rewrite }] });
  engine.connect();
  f.feed(f.attach(1));
  return { f, engine, warnings };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('rewrite rules across chunk boundaries, whatever the timing', () => {
  it('a match split by a 300 ms pause is replaced: no fixed window, the deadline bounds the wait', async () => {
    const { f, engine, warnings } = setup({});
    f.feed(f.data(1, 1n, 'user=x pass'));
    await sleep(300);
    assert.equal(f.verdicts.get(1n), undefined, 'still carried after 300 ms');
    f.feed(f.data(1, 2n, 'word=y'));
    assert.deepEqual(f.verdicts.get(1n), { action: Action.AllowModified, len: 'user=x XX=y'.length });
    assert.equal(f.staged.get(1n)!.toString(), 'user=x XX=y');
    assert.equal(f.verdicts.get(2n)!.action, Action.Drop);
    assert.equal(engine.model.counters.rewriteMatchesMissed, 0);
    assert.deepEqual(warnings, []);
    engine.dispose();
  });

  it('a carried chunk is decided before its deadline (as it is, when nothing came), so the filter never releases it first', async () => {
    const { f, engine } = setup({});
    f.feed(f.data(1, 3n, 'ends pass', 400)); // 400 ms hold: decided 100 ms before
    await sleep(200);
    assert.equal(f.verdicts.get(3n), undefined);
    await sleep(200);
    assert.deepEqual(f.verdicts.get(3n), { action: Action.Allow, len: 0 });
    engine.dispose();
  });

  it('the deadline of the first carried chunk bounds the whole carry', async () => {
    const { f, engine } = setup({ find: 'abcdefgh' });
    f.feed(f.data(1, 4n, 'x ab', 400));
    await sleep(150);
    f.feed(f.data(1, 5n, 'cd', 5000)); // still a prefix: carried on, but chunk 4's deadline rules
    await sleep(350);
    assert.deepEqual(f.verdicts.get(4n), { action: Action.Allow, len: 0 });
    assert.deepEqual(f.verdicts.get(5n), { action: Action.Allow, len: 0 });
    engine.dispose();
  });

  it("the socket's closing decides what is carried at once", () => {
    for (const ev of [SockEvent.CantSendMore, SockEvent.Closing, SockEvent.Disconnecting]) {
      const { f, engine } = setup({});
      f.feed(f.data(1, 6n, 'a password and pass'));
      assert.equal(f.verdicts.get(6n), undefined);
      f.feed(f.event(1, ev));
      assert.deepEqual(
        f.verdicts.get(6n),
        { action: Action.AllowModified, len: 'a XX and pass'.length },
        `event ${ev}`,
      );
      engine.dispose();
    }
    // Its incoming side ending does not end the outgoing stream.
    const { f, engine } = setup({});
    f.feed(f.data(1, 7n, 'pass'));
    f.feed(f.event(1, SockEvent.CantRecvMore));
    assert.equal(f.verdicts.get(7n), undefined);
    engine.dispose();
  });

  it("carryMs, the rule's window: a longer pause misses the match, and that is counted and said", async () => {
    const { f, engine, warnings } = setup({ name: 'hide passwords', carryMs: 50 });
    f.feed(f.data(1, 8n, 'user=x pass'));
    await sleep(120);
    assert.deepEqual(f.verdicts.get(8n), { action: Action.Allow, len: 0 }, 'decided when the window ended');
    f.feed(f.data(1, 9n, 'word=y'));
    assert.deepEqual(f.verdicts.get(9n), { action: Action.Allow, len: 0 });
    assert.equal(engine.model.counters.rewriteMatchesMissed, 1);
    assert.equal(warnings.length, 1);
    assert.match(
      warnings[0],
      /^rewrite rule "hide passwords" \(find "password"\): a match split between .* went out unrewritten: the rule's carry window \(carryMs 50\) ended/,
    );
    // A next chunk that does not complete the match is no miss.
    f.feed(f.data(1, 10n, 'the pass'));
    await sleep(120);
    f.feed(f.data(1, 11n, 'enger'));
    assert.equal(engine.model.counters.rewriteMatchesMissed, 1);
    engine.dispose();
  });

  it('the engine-wide rewriteCarryMs is the window of rules that set none', async () => {
    const { f, engine } = setup({}, { rewriteCarryMs: 30 });
    f.feed(f.data(1, 12n, 'pass'));
    await sleep(90);
    assert.deepEqual(f.verdicts.get(12n), { action: Action.Allow, len: 0 });
    engine.dispose();
  });

  it('the filter releasing a carried chunk itself (the kext at close): its matches are counted as missed and said', () => {
    const { f, engine, warnings } = setup({});
    f.feed(f.data(1, 13n, 'a password, a password and pass'));
    f.feed(f.data(1, 14n, 'wo'));
    f.feed(f.released(1, 13n, 6)); // NKE_RELEASE_SOCKET_CLOSING
    assert.equal(engine.model.counters.rewriteMatchesMissed, 2);
    assert.match(
      warnings[0],
      /the filter released chunk 13 of socket 1:1 itself \(socket-closing\) .* with 2 matches unrewritten/,
    );
    assert.deepEqual(f.verdicts.get(14n), { action: Action.Allow, len: 0 }, 'the rest passes as it is');
    engine.dispose();
  });
});

describe('edits staged in the helper', () => {
  function holding() {
    const f = new StandIn();
    const engine = new FilterEngine({ addon: f.addon(), pendingBytesLimit: 64 });
    engine.setRules({ default: 'hold' });
    engine.connect();
    f.feed(f.attach(1), f.data(1, 20n, 'GET /original'));
    return { f, engine };
  }

  it('stage, show, then a replace verdict without bytes sends the staged edit', () => {
    const { f, engine } = holding();
    const view = engine.stageEdit('20', Buffer.from('GET /edited/longer'));
    assert.deepEqual(view.staged, { size: 18 });
    assert.deepEqual(engine.snapshot().pending[0].staged, { size: 18 });
    assert.equal(engine.getPayload('20', true).toString(), 'GET /edited/longer');
    assert.equal(engine.getPayload('20').toString(), 'GET /original');
    assert.equal(f.verdicts.get(20n), undefined, 'nothing sent by staging');
    engine.verdict('20', 'replace');
    assert.deepEqual(f.verdicts.get(20n), { action: Action.AllowModified, len: 18 });
    assert.equal(f.staged.get(20n)!.toString(), 'GET /edited/longer');
    assert.equal(engine.model.pendingBytes, 0);
    engine.dispose();
  });

  it('clearing, no staged edit, and the byte bound are errors that say so', () => {
    const { engine } = holding();
    engine.stageEdit('20', Buffer.from('x'));
    assert.equal(engine.stageEdit('20', undefined).staged, undefined);
    assert.throws(() => engine.getPayload('20', true), /payload 20 has no staged edit/);
    assert.throws(
      () => engine.verdict('20', 'replace'),
      /replace needs the new bytes, and payload 20 has no staged edit/,
    );
    assert.throws(
      () => engine.stageEdit('20', Buffer.alloc(100)),
      /would pass the helper's bound on bytes kept/,
    );
    assert.throws(
      () => engine.stageEdit('21', Buffer.from('x')),
      /payload 21 is not held \(the helper does not know it/,
    );
    engine.dispose();
  });

  it('a chunk no longer held says how it ended: answered, or released by the filter and why', () => {
    const { f, engine } = holding();
    engine.verdict('20', 'drop');
    assert.throws(
      () => engine.verdict('20', 'allow'),
      /: payload 20 was already answered \(Drop\) at \d\d:\d\d:\d\d$/,
    );
    f.feed(f.data(1, 21n, 'late'));
    f.feed(f.released(1, 21n, 1)); // NKE_RELEASE_TIMEOUT
    assert.throws(
      () => engine.getPayload('21'),
      /: payload 21 was already released \(its deadline passed\) at \d\d:\d\d:\d\d: the filter sent the original bytes$/,
    );
    f.feed(f.data(1, 22n, 'closing'));
    f.feed(f.released(1, 22n, 3)); // NKE_RELEASE_SOCKET_GONE
    assert.throws(
      () => engine.stageEdit('22', Buffer.from('x')),
      /\(its socket closed\) at [\d:]+: nothing was sent$/,
    );
    engine.dispose();
  });
});
