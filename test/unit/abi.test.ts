// Codec behaviour of extension/src/shared/abi.ts: byte positions checked
// against hand-written offsets from nke_abi.h (not only encode/decode
// symmetry), round trips of every record, and hostile bytes that must give a
// clear error value, never an exception.
import { strict as assert } from 'node:assert';

import {
  AbiError,
  Action,
  CaptureConfigLayout,
  CaptureMode,
  Direction,
  FilterStateLayout,
  GapReason,
  NKE_ABI_VERSION,
  NKE_AF_INET,
  NKE_AF_INET6,
  NKE_BUF_NONE,
  NKE_DATA_F_DATAGRAM,
  NKE_DATA_F_HAS_ADDR,
  NKE_DATA_F_HELD,
  NKE_KEV_CLASS,
  NKE_KEV_EVENT_EXEC,
  NKE_KEV_MSG_LIMIT_X86_64,
  NKE_KEV_SUBCLASS_EXEC,
  NKE_MATCH_COMM,
  NKE_MATCH_REMOTE_PORT,
  NKE_PUT_DATA_MAX_PIECE,
  NkeError,
  NotifyType,
  OpenReplyLayout,
  RuleAction,
  SockEvent,
  type NkeAddr,
  type Notification,
  type NtHdr,
  decodeFilterState,
  decodeNotification,
  decodeStruct,
  encodeCaptureConfig,
  encodePutData,
  encodePutDataPieces,
  encodeResponse,
  encodeStruct,
} from '../../extension/src/shared/abi';
import {
  decodeExecChunkEvent,
  decodeKernEventMsg,
  decodeOpenReply,
  decodeResponse,
  describeNkeError,
  encodeExecChunkEvent,
  encodeNotification,
  encodeOpenRequest,
  formatAddr,
  parseAddr,
  parseIp,
  parseU64,
} from '../shared/abiTestCodecs';

const hdr = (over: Partial<NtHdr> = {}): NtHdr => ({
  type: 0,
  size: 0,
  flags: 0,
  sock: { slot: 7, gen: 3 },
  time_ns: 123456789012345678n,
  ...over,
});
const v4 = (text: string): NkeAddr => parseAddr(text);

const samples: Notification[] = [
  {
    kind: 'attach',
    hdr: hdr(),
    pid: 4242,
    uid: 501,
    family: NKE_AF_INET,
    type: 1,
    protocol: 6,
    comm: 'curl',
  },
  { kind: 'detach', hdr: hdr(), bytes_in: 2n ** 40n + 1n, bytes_out: 0xffffffffffffffffn },
  { kind: 'connect_out', hdr: hdr(), local: v4('10.0.0.2:50000'), remote: v4('[2001:db8::1]:443') },
  { kind: 'connect_in', hdr: hdr(), local: v4('127.0.0.1:80'), remote: v4('127.0.0.1:40000') },
  {
    kind: 'bound',
    hdr: hdr(),
    local: v4('0.0.0.0:8080'),
    remote: { family: 0, port: 0, scope_id: 0, addr: new Uint8Array(16) },
  },
  { kind: 'listen', hdr: hdr(), local: v4('[::]:22'), remote: v4('[fe80::1%4]:0') },
  { kind: 'event', hdr: hdr(), event: SockEvent.Disconnected },
  { kind: 'option', hdr: hdr(), level: 0xffff, name: 0x1006, is_set: 1 },
  {
    kind: 'data',
    hdr: hdr({ flags: NKE_DATA_F_HELD | NKE_DATA_F_HAS_ADDR }),
    chunk_id: 2n ** 53n + 1n, // not representable as a double: must stay exact
    stream_offset: 1_000_000_000_000n,
    size: 70000,
    direction: Direction.Out,
    nbuffers: 2,
    deadline_ms: 5000,
    capture_tag: 0xfedcba98,
    rule: 63,
    addr: v4('192.0.2.1:53'),
    buffers: [5, 63, NKE_BUF_NONE, 0, 0, 0, 0, 0],
  },
  { kind: 'chunk_released', hdr: hdr(), chunk_id: 99n, reason: 1, size: 512 },
  {
    kind: 'state',
    hdr: hdr({ sock: { slot: 0, gen: 0 } }),
    state: {
      abi_version: NKE_ABI_VERSION,
      flags: 3,
      capture_mode: CaptureMode.Rules,
      sockets_live: 10,
      chunks_pending: 2,
      buffers_in_use: 4,
      sockets_attached: 100n,
      chunks_held: 200n,
      chunks_reported: 300n,
      chunks_passed_pool_full: 1n,
      chunks_auto_released: 2n,
      chunks_dropped: 3n,
      chunks_modified: 4n,
      bytes_held: 5n,
      responses_rejected: 6n,
      notifications_lost: 7n,
      sockets_untracked: 8n,
      stale_entries: 9n,
      bytes_kept: 10n,
      chunks_queued: 11n,
      chunks_passed_budget: 12n,
    },
  },
  {
    kind: 'owner',
    hdr: hdr(),
    pid: 4242,
    uid: 0,
    family: NKE_AF_INET,
    type: 1,
    protocol: 6,
    comm: 'httpd',
  },
  {
    kind: 'data_gap',
    hdr: hdr({ flags: NKE_DATA_F_DATAGRAM }),
    stream_offset: 2n ** 40n,
    size: 65536,
    direction: Direction.In,
    reason: GapReason.NoBuffer,
  },
];

function ok<T>(r: { ok: true; value: T } | { ok: false; error: { message: string } }): T {
  if (!r.ok) assert.fail(`expected success, got: ${r.error.message}`);
  return r.value;
}

describe('abi: notifications', () => {
  it('every notification kind round-trips with hdr.type and hdr.size set from its kind', () => {
    const kinds = new Set<string>();
    for (const n of samples) {
      const bytes = encodeNotification(n);
      const back = ok(decodeNotification(bytes));
      assert.equal(back.kind, n.kind);
      assert.equal(back.hdr.size, bytes.length);
      assert.deepEqual(back, { ...n, hdr: { ...n.hdr, type: back.hdr.type, size: bytes.length } });
      kinds.add(n.kind);
    }
    assert.equal(kinds.size, 13, 'one sample per enum nke_notify_type member');
  });

  it('decodes nke_nt_data from bytes placed at the header offsets (not just its own encoding)', () => {
    const buf = new Uint8Array(104);
    const dv = new DataView(buf.buffer);
    dv.setUint16(0, NotifyType.Data, true);
    dv.setUint16(2, 104, true);
    dv.setUint32(4, NKE_DATA_F_HELD, true);
    dv.setUint32(8, 12, true); // sock.slot
    dv.setUint32(12, 34, true); // sock.gen
    dv.setBigUint64(16, 555n, true); // time_ns
    dv.setBigUint64(24, 0xfedcba9876543210n, true); // chunk_id
    dv.setBigUint64(32, 4096n, true); // stream_offset
    dv.setUint32(40, 100, true); // size
    dv.setUint8(44, Direction.In);
    dv.setUint16(46, 1, true); // nbuffers
    dv.setUint32(48, 4999, true); // deadline_ms
    dv.setUint32(52, 0x01020304, true); // capture_tag
    dv.setUint16(80, 17, true); // buffers[0]
    dv.setUint16(96, 5, true); // rule
    for (let i = 1; i < 8; i++) dv.setUint16(80 + 2 * i, NKE_BUF_NONE, true);
    const n = ok(decodeNotification(buf));
    assert.equal(n.kind, 'data');
    if (n.kind !== 'data') return;
    assert.deepEqual(n.hdr.sock, { slot: 12, gen: 34 });
    assert.equal(n.hdr.time_ns, 555n);
    assert.equal(n.chunk_id, 0xfedcba9876543210n);
    assert.equal(n.stream_offset, 4096n);
    assert.equal(n.size, 100);
    assert.equal(n.direction, Direction.In);
    assert.equal(n.deadline_ms, 4999);
    assert.equal(n.capture_tag, 0x01020304);
    assert.equal(n.rule, 5);
    assert.deepEqual(n.buffers, [17, ...new Array(7).fill(NKE_BUF_NONE)]);
  });

  it('decodes a record at an offset inside a larger Buffer that itself has a byteOffset', () => {
    const a = encodeNotification(samples[0]);
    const b = encodeNotification(samples[8]);
    const pool = Buffer.alloc(8 + a.length + b.length);
    pool.set(a, 8);
    pool.set(b, 8 + a.length);
    const view = pool.subarray(8); // byteOffset 8 within the pool
    assert.equal(ok(decodeNotification(view, 0)).kind, 'attach');
    const d = ok(decodeNotification(view, a.length));
    assert.equal(d.kind, 'data');
    if (d.kind === 'data') assert.equal(d.chunk_id, 2n ** 53n + 1n);
  });

  it('an unterminated comm is decoded whole, not read past its 32 bytes', () => {
    const bytes = encodeNotification(samples[0]);
    bytes.fill(0x41, 40, 72);
    const n = ok(decodeNotification(bytes));
    assert.equal(n.kind === 'attach' && n.comm, 'A'.repeat(32));
  });

  const hostile: Array<[string, (b: Uint8Array) => Uint8Array, string, RegExp]> = [
    ['a truncated header', (b) => b.subarray(0, 23), 'truncated', /23 bytes left, a header needs 24/],
    [
      'an unknown type',
      (b) => (new DataView(b.buffer, b.byteOffset).setUint16(0, 99, true), b),
      'unknown_type',
      /unknown type 99 .*update the extension/,
    ],
    [
      'a size field that disagrees with the type',
      (b) => (new DataView(b.buffer, b.byteOffset).setUint16(2, 88, true), b),
      'bad_size',
      /data \(type 8\) says size 88, the ABI size is 104/,
    ],
    ['a truncated body', (b) => b.subarray(0, 103), 'truncated', /data needs 104 bytes, 103 left/],
    [
      'a buffer index past the pool',
      (b) => (new DataView(b.buffer, b.byteOffset).setUint16(82, 64, true), b),
      'bad_field',
      /buffers\[1\] is 64, must be < 64/,
    ],
    [
      'more buffers than a chunk may span',
      (b) => (new DataView(b.buffer, b.byteOffset).setUint16(46, 9, true), b),
      'bad_field',
      /nbuffers is 9, at most 8/,
    ],
    ['an unknown direction', (b) => ((b[44] = 0), b), 'bad_field', /direction is 0/],
    [
      'a size larger than its buffers',
      (b) => (new DataView(b.buffer, b.byteOffset).setUint32(40, 2 * 65536 + 1, true), b),
      'bad_field',
      /size 131073 exceeds 2 buffers/,
    ],
    ['an address of an unknown family', (b) => ((b[56] = 7), b), 'bad_field', /addr\.family is 7/],
  ];
  for (const [what, mutate, code, message] of hostile) {
    it(`rejects ${what} with a ${code} error value`, () => {
      const r = decodeNotification(mutate(encodeNotification(samples[8])));
      assert.equal(r.ok, false);
      if (r.ok) return;
      assert.equal(r.error.code, code);
      assert.match(r.error.message, message);
      // Past the header, the error carries its type and size fields so a
      // reader can log the record it skipped.
      if (code !== 'truncated' || /needs 104/.test(r.error.message)) {
        assert.ok(r.error.type !== undefined && r.error.size !== undefined, 'type/size on the error');
      }
    });
  }

  it('rejects offsets outside the buffer or not integers', () => {
    const b = encodeNotification(samples[6]);
    for (const off of [-1, 1.5, b.length + 1, NaN]) {
      const r = decodeNotification(b, off);
      assert.equal(!r.ok && r.error.code, 'bad_offset', `offset ${off}`);
    }
  });

  it('never throws on random bytes, and every failure carries a message', () => {
    // Deterministic PRNG (xorshift32) so a failure reproduces.
    let s = 0x9e3779b9;
    const rnd = () => ((s ^= s << 13), (s ^= s >>> 17), (s ^= s << 5), s >>> 0);
    let decoded = 0;
    for (let i = 0; i < 20000; i++) {
      const buf = new Uint8Array(rnd() % 160);
      for (let j = 0; j < buf.length; j++) buf[j] = rnd() & 0xff;
      // Half the cases get a plausible header so the deeper checks run too.
      if (buf.length >= 4 && i % 2 === 0) {
        const t = 1 + (rnd() % 11);
        buf[0] = t;
        buf[1] = 0;
        const size = [0, 72, 40, 72, 72, 72, 72, 32, 104, 40, 144, 40][t];
        buf[2] = size & 0xff;
        buf[3] = size >> 8;
      }
      const r = decodeNotification(buf);
      if (r.ok) decoded++;
      else assert.ok(r.error.message.length > 20, r.error.message);
    }
    assert.ok(decoded > 0, 'some random records with a valid header must decode');
  });
});

describe('abi: requests', () => {
  it('open request: ABI version, flags and pid at their offsets, padding zero', () => {
    const b = encodeOpenRequest({ client_pid: -2 });
    const dv = new DataView(b.buffer);
    assert.equal(b.length, 16);
    assert.equal(dv.getUint32(0, true), NKE_ABI_VERSION);
    assert.equal(dv.getUint32(4, true), 0);
    assert.equal(dv.getInt32(8, true), -2);
    assert.equal(dv.getUint32(12, true), 0);
  });

  it('response: header counts the whole message; verdicts and releases follow in order', () => {
    const b = encodeResponse(
      [
        { chunk_id: 1n, sock: { slot: 1, gen: 1 }, action: Action.Allow },
        {
          chunk_id: 2n ** 64n - 1n,
          sock: { slot: 2, gen: 9 },
          action: Action.AllowModified,
          modified_len: 77,
        },
      ],
      [
        { chunk_id: 1n, buffer: 0 },
        { chunk_id: 2n ** 64n - 1n, buffer: 63 },
        { chunk_id: 2n ** 64n - 1n, buffer: 62 },
      ],
    );
    assert.equal(b.length, 16 + 2 * 24 + 3 * 16);
    const dv = new DataView(b.buffer);
    assert.equal(dv.getUint32(4, true), b.length);
    assert.equal(dv.getUint16(8, true), 2);
    assert.equal(dv.getUint16(10, true), 3);
    assert.equal(dv.getBigUint64(16 + 24, true), 2n ** 64n - 1n);
    assert.equal(b[16 + 24 + 16], Action.AllowModified);
    assert.equal(dv.getUint32(16 + 24 + 20, true), 77);
    assert.equal(dv.getUint16(16 + 48 + 16 + 8, true), 63);
    const back = ok(decodeResponse(b));
    assert.equal(back.verdicts[1].modified_len, 77);
    assert.deepEqual(
      back.releases.map((r) => r.buffer),
      [0, 63, 62],
    );
  });

  it('response: refuses what the filter would reject, naming the entry', () => {
    const sock = { slot: 1, gen: 1 };
    assert.throws(
      () => encodeResponse([{ chunk_id: 1n, sock, action: 9 as Action }], []),
      /verdicts\[0\]\.action is 9/,
    );
    assert.throws(
      () => encodeResponse([{ chunk_id: 1n, sock, action: Action.Drop, modified_len: 3 }], []),
      /modified_len must be 0/,
    );
    assert.throws(() => encodeResponse([], [{ chunk_id: 1n, buffer: 64 }]), /releases\[0\]\.buffer is 64/);
    const many = Array.from({ length: 257 }, (_, i) => ({ chunk_id: BigInt(i), sock, action: Action.Allow }));
    assert.throws(() => encodeResponse(many, []), /257 verdicts, at most 256/);
    assert.throws(
      () => encodeResponse([{ chunk_id: 1 as unknown as bigint, sock, action: Action.Allow }], []),
      (e: unknown) => e instanceof AbiError && /nke_verdict\.chunk_id: expected a bigint/.test(e.message),
    );
  });

  it('response decoder rejects a size field that disagrees with its counts', () => {
    const b = encodeResponse([], [{ chunk_id: 1n, buffer: 1 }]);
    new DataView(b.buffer).setUint16(8, 1, true); // claims one verdict
    const r = decodeResponse(b);
    assert.equal(!r.ok && r.error.code, 'bad_size');
  });

  it('put-data: pieces of at most 60 KiB, offsets in order, total_len on each', () => {
    const data = new Uint8Array(150000).map((_, i) => i & 0xff);
    const pieces = encodePutDataPieces(42n, { slot: 3, gen: 4 }, data);
    assert.deepEqual(
      pieces.map((p) => p.length - 32),
      [NKE_PUT_DATA_MAX_PIECE, NKE_PUT_DATA_MAX_PIECE, 150000 - 2 * NKE_PUT_DATA_MAX_PIECE],
    );
    const joined: number[] = [];
    pieces.forEach((p, i) => {
      const dv = new DataView(p.buffer);
      assert.equal(dv.getBigUint64(0, true), 42n);
      assert.equal(dv.getUint32(8, true), 3);
      assert.equal(dv.getUint32(16, true), 150000);
      assert.equal(dv.getUint32(20, true), i * NKE_PUT_DATA_MAX_PIECE);
      assert.equal(dv.getUint32(24, true), p.length - 32);
      joined.push(...p.subarray(32));
    });
    assert.deepEqual(Uint8Array.from(joined), data);
    const empty = encodePutDataPieces(1n, { slot: 0, gen: 1 }, new Uint8Array(0));
    assert.equal(empty.length, 1);
    assert.equal(empty[0].length, 32);
    assert.throws(
      () =>
        encodePutData(
          { chunk_id: 1n, sock: { slot: 0, gen: 1 }, total_len: 10, offset: 8 },
          new Uint8Array(3),
        ),
      /runs past total_len 10/,
    );
  });

  it('capture config: fixed size, rules at 24 + 88*i, unused rules zero, round-trips', () => {
    const b = encodeCaptureConfig({
      mode: CaptureMode.Rules,
      default_action: RuleAction.Report,
      hold_timeout_ms: 2000,
      rules: [
        { match: NKE_MATCH_COMM, action: RuleAction.Hold, comm: 'curl' },
        { match: NKE_MATCH_REMOTE_PORT, action: RuleAction.Pass, remote_port_min: 443, remote_port_max: 443 },
      ],
    });
    assert.equal(b.length, CaptureConfigLayout.size);
    const dv = new DataView(b.buffer);
    assert.equal(dv.getUint32(16, true), 2);
    assert.equal(b[24 + 4], RuleAction.Hold);
    assert.equal(new TextDecoder().decode(b.subarray(24 + 56, 24 + 56 + 4)), 'curl');
    assert.equal(dv.getUint16(24 + 88 + 16, true), 443);
    assert.ok(b.subarray(24 + 2 * 88).every((x) => x === 0));
    const back = decodeStruct(CaptureConfigLayout, b);
    assert.equal(back.rules[1].remote_port_max, 443);
    assert.equal(back.rules[0].comm, 'curl');
    assert.throws(
      () =>
        encodeCaptureConfig({
          mode: CaptureMode.Rules,
          rules: [{ match: 0, action: 0, comm: 'x'.repeat(32) }],
        }),
      /comm: .* 32 UTF-8 bytes; at most 31/,
    );
    assert.throws(
      () =>
        encodeCaptureConfig({
          mode: CaptureMode.Rules,
          rules: [{ match: 0, action: 0, local_port_min: 2, local_port_max: 1 }],
        }),
      /rules\[0\] has a port range with min > max/,
    );
    assert.throws(() => encodeCaptureConfig({ mode: 7 as CaptureMode }), /unknown mode 7/);
  });

  it('encodeStruct names the field whose value does not fit its C type', () => {
    const base = {
      abi_version: 1,
      buffer_count: 64,
      buffer_size: 65536,
      queue_data_size: 0,
      kev_vendor_code: 0,
    };
    assert.throws(
      () => encodeStruct(OpenReplyLayout, { ...base, kev_msg_limit: 2 ** 32, session_id: 1n }),
      /nke_open_reply\.kev_msg_limit: expected an integer in 0\.\.4294967295 \(u32\), got 4294967296/,
    );
    assert.throws(
      () => encodeStruct(OpenReplyLayout, { ...base, kev_msg_limit: 1, session_id: -1n }),
      /session_id: expected a bigint in 0\.\.2\^64-1/,
    );
  });
});

describe('abi: replies', () => {
  it('open reply decodes; a different ABI version is an error naming both versions', () => {
    const value = {
      abi_version: NKE_ABI_VERSION,
      buffer_count: 64,
      buffer_size: 65536,
      queue_data_size: 262144,
      kev_vendor_code: 1000,
      kev_msg_limit: 224,
      session_id: 0x1234567890abcdefn,
    };
    const b = encodeStruct(OpenReplyLayout, value);
    assert.equal(new DataView(b.buffer).getBigUint64(24, true), 0x1234567890abcdefn);
    assert.deepEqual(ok(decodeOpenReply(b)), value);
    new DataView(b.buffer).setUint32(0, NKE_ABI_VERSION + 1, true);
    const r = decodeOpenReply(b);
    assert.ok(
      !r.ok &&
        r.error.message.includes(
          `filter ABI version ${NKE_ABI_VERSION + 1}, this client speaks ${NKE_ABI_VERSION}`,
        ),
    );
    const t = decodeOpenReply(b.subarray(0, 31));
    assert.equal(!t.ok && t.error.code, 'truncated');
  });

  it('filter state decodes its u64 counters exactly', () => {
    const b = new Uint8Array(FilterStateLayout.size);
    new DataView(b.buffer).setBigUint64(104, 2n ** 64n - 2n, true);
    new DataView(b.buffer).setBigUint64(112, 2n ** 64n - 3n, true);
    assert.equal(ok(decodeFilterState(b)).sockets_untracked, 2n ** 64n - 2n);
    assert.equal(ok(decodeFilterState(b)).stale_entries, 2n ** 64n - 3n);
  });
});

describe('abi: kernel events', () => {
  const msg = {
    vendor_code: 1000,
    kev_class: NKE_KEV_CLASS,
    kev_subclass: NKE_KEV_SUBCLASS_EXEC,
    id: 5,
    event_code: NKE_KEV_EVENT_EXEC,
  };
  const chunk = {
    exec_id: 9,
    pid: 100,
    ppid: 1,
    uid: 0,
    total_len: 300,
    offset: 176,
    chunk_index: 1,
    chunk_count: 2,
    flags: 0,
  };
  // The second of two pieces of a 300-byte path: 124 bytes at offset 176
  // (a first piece of 176 bytes fills the x86_64 limit: 224 - 24 - 24).
  const piece = new TextEncoder().encode('p'.repeat(124));

  it('exec chunk round-trips and its header is at the documented offsets', () => {
    const b = encodeExecChunkEvent(msg, chunk, piece);
    assert.ok(b.length <= NKE_KEV_MSG_LIMIT_X86_64);
    const dv = new DataView(b.buffer);
    assert.equal(dv.getUint32(0, true), b.length);
    assert.equal(dv.getUint16(24 + 16, true), 300);
    assert.equal(b[24 + 21], 2);
    const back = ok(decodeExecChunkEvent(b));
    assert.deepEqual(back.chunk, chunk);
    assert.deepEqual(back.piece, piece);
    assert.equal(back.msg.id, 5);
  });

  it('rejects a total_size beyond the datagram, another class, bad chunk counts and pieces past the path', () => {
    const b = encodeExecChunkEvent(msg, chunk, piece);
    const r1 = decodeKernEventMsg(b.subarray(0, b.length - 1));
    assert.ok(
      !r1.ok && r1.error.code === 'bad_size' && /total_size 172, datagram has 171/.test(r1.error.message),
    );
    const r2 = decodeExecChunkEvent(encodeExecChunkEvent({ ...msg, kev_class: 2 }, chunk, piece));
    assert.equal(!r2.ok && r2.error.code, 'bad_class');
    const r3 = decodeExecChunkEvent(
      encodeExecChunkEvent(msg, { ...chunk, chunk_count: 0, chunk_index: 0 }, piece),
    );
    assert.ok(!r3.ok && /count must be 1\.\.64/.test(r3.error.message));
    const r4 = decodeExecChunkEvent(encodeExecChunkEvent(msg, { ...chunk, offset: 200 }, piece));
    assert.ok(!r4.ok && /piece 200\+124 outside path length 300/.test(r4.error.message));
    const r5 = decodeExecChunkEvent(b.subarray(0, 30));
    assert.equal(r5.ok, false);
  });
});

describe('abi: addresses, errors, u64 text', () => {
  const cases: Array<[string, number]> = [
    ['127.0.0.1:80', NKE_AF_INET],
    ['0.0.0.0:0', NKE_AF_INET],
    ['[::1]:443', NKE_AF_INET6],
    ['[::]:22', NKE_AF_INET6],
    ['[fe80::1%4]:22', NKE_AF_INET6],
    ['[2001:db8::1:0:0:1]:8080', NKE_AF_INET6],
    ['[::ffff:192.0.2.1]:53', NKE_AF_INET6],
    ['[2001:db8:1:2:3:4:5:6]:1', NKE_AF_INET6],
  ];
  for (const [text, family] of cases) {
    it(`"${text}" parses and formats back identically`, () => {
      const a = parseAddr(text);
      assert.equal(a.family, family);
      assert.equal(formatAddr(a), text);
    });
  }

  it('formats IPv6 the RFC 5952 way whatever the input spelling', () => {
    assert.equal(formatAddr(parseAddr('[2001:0DB8:0:0:0:0:0:0001]:1')), '[2001:db8::1]:1');
    assert.equal(formatAddr(parseAddr('[1:0:0:2:0:0:0:3]:1')), '[1:0:0:2::3]:1');
    assert.equal(formatAddr(parseAddr('[1:0:2:3:4:5:6:7]:1')), '[1:0:2:3:4:5:6:7]:1');
    assert.deepEqual(
      [...parseIp('::ffff:1.2.3.4').addr],
      [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 1, 2, 3, 4],
    );
    assert.equal(formatAddr({ family: 0, port: 0, scope_id: 0, addr: new Uint8Array(16) }), '');
  });

  for (const bad of [
    '1.2.3.4',
    '::1:80',
    '[1.2.3.4]:80',
    '256.1.1.1:1',
    '1.2.3.4:65536',
    '[::1]',
    '[1::2::3]:1',
    '01.2.3.4:1',
    '[fe80::1%eth0]:1',
    '[1:2:3:4:5:6:7:8:9]:1',
  ]) {
    it(`rejects "${bad}" with an AbiError`, () => {
      assert.throws(() => parseAddr(bad), AbiError);
    });
  }

  it('every user-client status has its own message naming it; unknown codes say so', () => {
    const seen = new Set<string>();
    for (let c = NkeError.Version; c < NkeError._Count; c++) {
      const m = describeNkeError(c);
      assert.match(m, new RegExp(`NKE_ERR ${NkeError[c]} \\(${c}\\): `));
      seen.add(m);
    }
    assert.equal(seen.size, NkeError._Count - 1);
    assert.match(describeNkeError(99), /unknown filter status 99/);
    assert.match(describeNkeError(NkeError._Count), /unknown filter status/);
  });

  it('u64 decimal text parses exactly and refuses anything else', () => {
    assert.equal(parseU64('18446744073709551615'), 2n ** 64n - 1n);
    assert.equal(parseU64((2n ** 53n + 1n).toString()), 2n ** 53n + 1n);
    for (const bad of ['', '-1', '01', '1e3', '18446744073709551616', ' 1']) {
      assert.throws(() => parseU64(bad), AbiError, bad);
    }
  });
});
