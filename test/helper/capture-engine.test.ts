// The engine feeds its capture history from the filter's records: sockets,
// data with its ring position as the addon reports it, NKE_NT_DATA_GAP,
// verdicts and filter releases. Records are encoded with shared/abi.ts and
// handed over as the addon's reader does (a batch, plus the chunk positions
// of the bytes it wrote to the ring); the real emulator cannot be made to
// run its buffer pool dry on demand, which is what a gap record announces.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { FilterEngine } from '../../extension/src/helper/engine';
import type { NativeAddon, NativeFilterClient } from '../../extension/src/helper/native';
import {
  Direction,
  GapReason,
  NKE_AF_INET,
  NKE_BUF_NONE,
  NKE_DATA_F_HELD,
  NKE_RULE_DEFAULT,
} from '../../extension/src/shared/abi';
import { encodeNotification, parseAddr } from '../shared/abiTestCodecs';
import { RingWriter } from './ringWriter';

const hdr = (flags = 0) => ({ type: 0, size: 0, flags, sock: { slot: 5, gen: 2 }, time_ns: 0n });
const rec = (n: Parameters<typeof encodeNotification>[0]) => Buffer.from(encodeNotification(n));

/** The addon's part the engine uses, writing chunk bytes to the ring as the reader thread does. */
class Reader {
  /** Of the last config the engine sent: its tag, and the rule a data record names as the
   * filter would (these tests' rules match every flow, so the first; the default when none). */
  captureTag = 0;
  firstRule = NKE_RULE_DEFAULT;
  onBatch?: (records: Buffer, skipped: number, wakeNs?: number, captured?: Buffer) => void;
  ring?: RingWriter;
  verdicts: { chunk: bigint; action: number }[] = [];
  private chunk = 1n;

  addon(): NativeAddon {
    // eslint-disable-next-line @typescript-eslint/no-this-alias
    const r = this;
    const client: NativeFilterClient = {
      isOpen: true,
      open(onBatch, _closed, options) {
        r.onBatch = onBatch;
        r.ring = new RingWriter(options!.capture!);
        return { sessionId: 1n } as ReturnType<NativeFilterClient['open']>;
      },
      readChunk: () => Buffer.alloc(0),
      respond(m) {
        const n = m.readUInt16LE(8);
        for (let i = 0; i < n; i++) {
          const o = 16 + i * 24;
          r.verdicts.push({ chunk: m.readBigUInt64LE(o), action: m[o + 16] });
        }
      },
      putData() {},
      setCapture(m) {
        r.captureTag = m.readUInt32LE(20);
        r.firstRule = m.readUInt32LE(16) > 0 ? 0 : NKE_RULE_DEFAULT;
      },
      getState: () => Buffer.alloc(0),
      close() {},
      captureWrite: (b) => r.ring!.captureWrite(b),
      captureStatus: () => r.ring!.captureStatus(),
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

  /** One batch: records, with the bytes of each data record written to the ring first. */
  feed(items: (Buffer | { data: string; dir: Direction; offset: number; held?: boolean })[]): bigint[] {
    const ids: bigint[] = [];
    const captured: Buffer[] = [];
    const recs = items.map((it) => {
      if (Buffer.isBuffer(it)) return it;
      const id = this.chunk++;
      ids.push(id);
      const pos = Buffer.alloc(16);
      pos.writeBigUInt64LE(id, 0);
      pos.writeBigInt64LE(BigInt(this.ring!.captureWrite(Buffer.from(it.data))), 8);
      captured.push(pos);
      return rec({
        kind: 'data',
        hdr: hdr(it.held ? NKE_DATA_F_HELD : 0),
        chunk_id: id,
        stream_offset: BigInt(it.offset),
        size: it.data.length,
        direction: it.dir,
        nbuffers: 1,
        deadline_ms: it.held ? 5000 : 0,
        capture_tag: this.captureTag,
        rule: this.firstRule,
        addr: parseAddr('0.0.0.0:0'),
        buffers: [
          0,
          NKE_BUF_NONE,
          NKE_BUF_NONE,
          NKE_BUF_NONE,
          NKE_BUF_NONE,
          NKE_BUF_NONE,
          NKE_BUF_NONE,
          NKE_BUF_NONE,
        ],
      });
    });
    this.onBatch!(Buffer.concat(recs), 0, 0, Buffer.concat(captured));
    return ids;
  }
}

const tshark = (args: string[]) => {
  const r = spawnSync('tshark', args, { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  return r.stdout;
};

describe('engine -> capture history: what the filter records become', function () {
  this.timeout(60000);
  let dir: string;
  let engine: FilterEngine;
  let reader: Reader;
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nke-capture-engine-'));
    reader = new Reader();
    engine = new FilterEngine({
      addon: reader.addon(),
      captureHistoryBytes: 1 << 20,
      captureHistoryDir: dir,
    });
    engine.setRules({ default: 'report', intercept: [{ action: 'hold', remotePort: 9 }] });
    engine.connect();
  });
  afterEach(() => {
    engine.dispose();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('a gap record is a hole in the export that Wireshark flags; the socket, its process and the verdicts are named', async () => {
    reader.feed([
      rec({
        kind: 'attach',
        hdr: hdr(),
        pid: 777,
        uid: 0,
        family: NKE_AF_INET,
        type: 1,
        protocol: 6,
        comm: 'client',
      }),
      rec({
        kind: 'connect_out',
        hdr: hdr(),
        local: parseAddr('127.0.0.1:50000'),
        remote: parseAddr('127.0.0.1:9'),
      }),
      { data: 'hello ', dir: Direction.Out, offset: 0, held: true },
      rec({
        kind: 'data_gap',
        hdr: hdr(),
        stream_offset: 6n,
        size: 4096,
        direction: Direction.Out,
        reason: GapReason.NoBuffer,
      }),
    ]);
    const [held] = [...engine.model.pending.values()].map((p) => p.view.id);
    assert.ok(held, 'the first chunk is held for a person');
    engine.verdict(held, 'drop');
    reader.feed([
      { data: 'world', dir: Direction.Out, offset: 6 + 4096, held: true },
      rec({ kind: 'detach', hdr: hdr(), bytes_in: 0n, bytes_out: 4107n }),
    ]);
    const second = [...engine.model.pending.values()][0];
    engine.verdict(second.view.id, 'allow');
    assert.equal(engine.model.counters.dataGaps, 1);
    assert.ok(
      engine.model
        .eventsSince(0)
        .some(
          (e) => e.kind === 'data-gap' && e.size === 4096 && e.reason === 'no-buffer' && e.socketId === '5:2',
        ),
      'nke watch shows the hole as it happens',
    );
    assert.equal(engine.snapshot().capture?.gaps, 1);

    const file = path.join(dir, 'gap.pcapng');
    const r = await engine.exportPcapng(file);
    assert.equal(r.gaps, 1);
    const expert = tshark(['-r', file, '-q', '-z', 'expert']);
    assert.doesNotMatch(expert, /Errors \(/);
    assert.match(expert, /Previous segment\(s\) not captured/);
    const comments = tshark(['-r', file, '-T', 'fields', '-e', 'frame.comment']).split('\n');
    assert.ok(comments.some((c) => /^client \(pid 777\) socket 5:2 out: held, dropped: NOT SENT/.test(c)));
    assert.ok(
      comments.some((c) =>
        /^client \(pid 777\) socket 5:2 out: held, allowed \(original\) \[4096 bytes before this passed by the filter without a report: no free buffer/.test(
          c,
        ),
      ),
      comments.join('\n'),
    );
    // What went through: "world" after a 4096-byte hole; "hello " was dropped.
    const follow = tshark(['-r', file, '-q', '-z', 'follow,tcp,ascii,0']);
    assert.match(follow, /4096 bytes missing in capture file/);
    assert.match(follow, /world/);
    assert.doesNotMatch(follow, /hello/);
  });

  it("a gap right before the socket closed: the FIN's sequence number counts it and its comment names it", async () => {
    reader.feed([
      rec({
        kind: 'attach',
        hdr: hdr(),
        pid: 778,
        uid: 0,
        family: NKE_AF_INET,
        type: 1,
        protocol: 6,
        comm: 'sender',
      }),
      rec({
        kind: 'connect_out',
        hdr: hdr(),
        local: parseAddr('127.0.0.1:50001'),
        remote: parseAddr('127.0.0.1:8080'),
      }),
      { data: 'the start', dir: Direction.Out, offset: 0 },
      rec({
        kind: 'data_gap',
        hdr: hdr(),
        stream_offset: 9n,
        size: 32768,
        direction: Direction.Out,
        reason: GapReason.NoBuffer,
      }),
      rec({ kind: 'detach', hdr: hdr(), bytes_in: 0n, bytes_out: 32777n }),
    ]);
    const file = path.join(dir, 'tail-gap.pcapng');
    const r = await engine.exportPcapng(file);
    assert.equal(r.gaps, 1);
    const fins = tshark([
      '-r',
      file,
      '-Y',
      'tcp.flags.fin == 1',
      '-T',
      'fields',
      '-e',
      'tcp.srcport',
      '-e',
      'tcp.seq',
      '-e',
      'frame.comment',
    ])
      .split('\n')
      .filter(Boolean)
      .map((l) => l.split('\t'));
    const out = fins.find((f) => f[0] === '50001')!;
    const back = fins.find((f) => f[0] === '8080')!;
    assert.equal(Number(out[1]), 1 + 9 + 32768, 'relative sequence of the FIN: SYN + every byte sent');
    assert.match(
      out[2],
      /^sender \(pid 778\) socket 5:2: closed \(FIN synthesized\) \[32768 bytes before this passed by the filter without a report: no free buffer/,
    );
    assert.doesNotMatch(back[2], /bytes before this/, 'the other direction had no hole');
  });

  it('an export of selected sockets (the Sockets view selection, nke export --socket) holds only those; --process by name', async () => {
    const on = (slot: number) => ({ ...hdr(), sock: { slot, gen: 1 } });
    const open = (slot: number, comm: string, port: number) => [
      rec({
        kind: 'attach',
        hdr: on(slot),
        pid: 900 + slot,
        uid: 0,
        family: NKE_AF_INET,
        type: 1,
        protocol: 6,
        comm,
      }),
      rec({
        kind: 'connect_out',
        hdr: on(slot),
        local: parseAddr(`127.0.0.1:${51000 + slot}`),
        remote: parseAddr(`127.0.0.1:${port}`),
      }),
    ];
    reader.feed([...open(7, 'alpha', 7001), ...open(8, 'beta', 7002)]);
    // Data records of two sockets: feed() sends them as socket 5:2, so
    // encode these by hand with their own socket in the header.
    for (const [slot, text] of [
      [7, 'for alpha'],
      [8, 'for beta'],
    ] as const) {
      const pos = Buffer.alloc(16);
      pos.writeBigUInt64LE(BigInt(slot), 0);
      pos.writeBigInt64LE(BigInt(reader.ring!.captureWrite(Buffer.from(text))), 8);
      const data = rec({
        kind: 'data',
        hdr: on(slot),
        chunk_id: BigInt(slot),
        stream_offset: 0n,
        size: text.length,
        direction: Direction.Out,
        nbuffers: 1,
        deadline_ms: 0,
        capture_tag: reader.captureTag,
        rule: NKE_RULE_DEFAULT,
        addr: parseAddr('0.0.0.0:0'),
        buffers: [
          0,
          NKE_BUF_NONE,
          NKE_BUF_NONE,
          NKE_BUF_NONE,
          NKE_BUF_NONE,
          NKE_BUF_NONE,
          NKE_BUF_NONE,
          NKE_BUF_NONE,
        ],
      });
      reader.onBatch!(data, 0, 0, pos);
    }
    const payloads = (file: string) =>
      tshark(['-r', file, '-Y', 'tcp.len > 0', '-T', 'fields', '-e', 'tcp.payload'])
        .split('\n')
        .filter(Boolean)
        .map((h) => Buffer.from(h, 'hex').toString());
    const all = path.join(dir, 'all.pcapng');
    assert.equal((await engine.exportPcapng(all)).sockets, 2);
    assert.deepEqual(payloads(all), ['for alpha', 'for beta']);
    const one = path.join(dir, 'one.pcapng');
    const r = await engine.exportPcapng(one, { sockets: ['8:1'] });
    assert.equal(r.sockets, 1);
    assert.deepEqual(payloads(one), ['for beta']);
    const byName = path.join(dir, 'by-name.pcapng');
    assert.equal((await engine.exportPcapng(byName, { process: 'alpha' })).sockets, 1);
    assert.deepEqual(payloads(byName), ['for alpha']);
  });

  it("a held chunk the filter released keeps the filter's reason; one still held exports as not sent", async () => {
    reader.feed([
      rec({
        kind: 'attach',
        hdr: hdr(),
        pid: 1,
        uid: 0,
        family: NKE_AF_INET,
        type: 1,
        protocol: 6,
        comm: 'p',
      }),
      rec({
        kind: 'connect_out',
        hdr: hdr(),
        local: parseAddr('10.0.0.1:1'),
        remote: parseAddr('10.0.0.2:9'),
      }),
      { data: 'timed out', dir: Direction.Out, offset: 0, held: true },
    ]);
    const [first] = [...engine.model.pending.values()];
    reader.feed([rec({ kind: 'chunk_released', hdr: hdr(), chunk_id: first.chunkId, reason: 1, size: 9 })]);
    reader.feed([{ data: 'still held', dir: Direction.Out, offset: 9, held: true }]);
    const file = path.join(dir, 'held.pcapng');
    await engine.exportPcapng(file, { sockets: ['5:2'] });
    const comments = tshark(['-r', file, '-T', 'fields', '-e', 'frame.comment']);
    assert.match(comments, /out: held, released unchanged by the filter \(deadline or client gone\)/);
    assert.match(comments, /out: held, no verdict yet when exported: NOT SENT to the peer \(so far\)/);
    assert.equal(
      tshark(['-r', file, '-q', '-z', 'follow,tcp,ascii,0']).includes('timed out'),
      true,
      'the released original went out',
    );
    await assert.rejects(engine.exportPcapng('rel.pcapng'), /absolute path/);
  });
});
