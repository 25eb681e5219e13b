// Decoding of notification records and encoding of the client's messages, for
// the helper. Offsets are those of kext/include/nke/nke_abi.h.
// TODO(abi-ts): when extension/src/shared/abi.ts lands (branch abi-ts), its
// layout tables (checked against the C header by test/native/abi-layout)
// replace the offsets written out here; keep this module's exported shapes
// so the model and engine do not change.

export const ABI_VERSION = 1;
export const BUFFER_COUNT = 64;
export const BUFFER_SIZE = 64 * 1024;
export const CHUNK_MAX_BUFFERS = 8;
export const BUF_NONE = 0xffff;
export const RESPONSE_MAX_VERDICTS = 256;
export const RESPONSE_MAX_RELEASES = BUFFER_COUNT * 2;
export const PUT_DATA_MAX_PIECE = 60 * 1024;
export const MODIFIED_MAX_LEN = 16 * 1024 * 1024;
export const MAX_RULES = 64;
export const COMM_LEN = 32;
export const AF_INET = 2;
export const AF_INET6 = 30;
export const PROTO_TCP = 6;
export const PROTO_UDP = 17;
export const DIR_IN = 1;
export const DIR_OUT = 2;
export const DATA_F_HELD = 0x1;
export const DATA_F_DATAGRAM = 0x2;
export const DATA_F_HAS_ADDR = 0x8;

export const enum NotifyType {
  Attach = 1,
  Detach = 2,
  ConnectIn = 3,
  ConnectOut = 4,
  Bound = 5,
  Listen = 6,
  Event = 7,
  Data = 8,
  ChunkReleased = 9,
  State = 10,
  Option = 11,
}

export const enum Action {
  Allow = 1,
  AllowModified = 2,
  Drop = 3,
}

export const enum CaptureMode {
  Nothing = 0,
  All = 1,
  Rules = 2,
}

export const enum RuleAction {
  Pass = 0,
  Report = 1,
  Hold = 2,
}

export const RELEASE_REASONS: Record<number, string> = {
  1: 'timeout',
  2: 'client-gone',
  3: 'socket-gone',
  4: 'inject-failed',
};

export const SOCK_EVENTS: Record<number, string> = {
  1: 'connecting',
  2: 'connected',
  3: 'disconnecting',
  4: 'disconnected',
  5: 'flush-read',
  6: 'shutdown',
  7: 'cantrecvmore',
  8: 'cantsendmore',
  9: 'closing',
  10: 'bound',
};

export interface SockId {
  slot: number;
  gen: number;
}

export interface Addr {
  family: number; // AF_INET, AF_INET6 or 0
  port: number;
  address: string; // printable; '' when family is 0
  raw: Uint8Array; // 16 bytes, network order
}

interface Base {
  sock: SockId;
  /** filter's monotonic clock; a Number (exact for 104 days of uptime) to avoid a BigInt per record */
  timeNs: number;
  flags: number;
}

export type Notification =
  | (Base & {
      type: NotifyType.Attach;
      pid: number;
      uid: number;
      family: number;
      sockType: number;
      protocol: number;
      comm: string;
    })
  | (Base & { type: NotifyType.Detach; bytesIn: bigint; bytesOut: bigint })
  | (Base & {
      type: NotifyType.ConnectIn | NotifyType.ConnectOut | NotifyType.Bound | NotifyType.Listen;
      local: Addr;
      remote: Addr;
    })
  | (Base & { type: NotifyType.Event; event: number })
  | (Base & {
      type: NotifyType.Data;
      chunkId: bigint;
      streamOffset: number;
      size: number;
      direction: number;
      deadlineMs: number;
      addr: Addr | undefined;
      buffers: number[];
    })
  | (Base & { type: NotifyType.ChunkReleased; chunkId: bigint; reason: number; size: number })
  | (Base & { type: NotifyType.State; state: FilterState })
  | (Base & { type: NotifyType.Option; level: number; name: number; isSet: boolean });

export interface FilterState {
  abiVersion: number;
  flags: number;
  captureMode: number;
  socketsLive: number;
  chunksPending: number;
  buffersInUse: number;
  socketsAttached: number;
  chunksHeld: number;
  chunksReported: number;
  chunksPassedPoolFull: number;
  chunksAutoReleased: number;
  chunksDropped: number;
  chunksModified: number;
  bytesHeld: number;
  responsesRejected: number;
  notificationsLost: number;
  socketsUntracked: number;
}

const RECORD_SIZES: Record<number, number> = {
  [NotifyType.Attach]: 72,
  [NotifyType.Detach]: 40,
  [NotifyType.ConnectIn]: 72,
  [NotifyType.ConnectOut]: 72,
  [NotifyType.Bound]: 72,
  [NotifyType.Listen]: 72,
  [NotifyType.Event]: 32,
  [NotifyType.Data]: 96,
  [NotifyType.ChunkReleased]: 40,
  [NotifyType.State]: 136,
  [NotifyType.Option]: 40,
};

export function formatAddress(family: number, raw: Uint8Array): string {
  if (family === AF_INET) return `${raw[0]}.${raw[1]}.${raw[2]}.${raw[3]}`;
  if (family === AF_INET6) {
    const groups: string[] = [];
    for (let i = 0; i < 16; i += 2) groups.push(((raw[i] << 8) | raw[i + 1]).toString(16));
    // Compress the longest run of zero groups (RFC 5952).
    let best = -1;
    let bestLen = 0;
    for (let i = 0; i < 8; ) {
      if (groups[i] !== '0') {
        i++;
        continue;
      }
      let j = i;
      while (j < 8 && groups[j] === '0') j++;
      if (j - i > bestLen && j - i > 1) {
        best = i;
        bestLen = j - i;
      }
      i = j;
    }
    if (best < 0) return groups.join(':');
    return `${groups.slice(0, best).join(':')}::${groups.slice(best + bestLen).join(':')}`;
  }
  return '';
}

function addrAt(b: Buffer, off: number): Addr {
  const family = b[off];
  const raw = new Uint8Array(b.subarray(off + 8, off + 24));
  return { family, port: b.readUInt16LE(off + 2), address: formatAddress(family, raw), raw };
}

function stateAt(b: Buffer, o: number): FilterState {
  const u64 = (k: number) => Number(b.readBigUInt64LE(o + k));
  return {
    abiVersion: b.readUInt32LE(o),
    flags: b.readUInt32LE(o + 4),
    captureMode: b.readUInt32LE(o + 8),
    socketsLive: b.readUInt32LE(o + 12),
    chunksPending: b.readUInt32LE(o + 16),
    buffersInUse: b.readUInt32LE(o + 20),
    socketsAttached: u64(24),
    chunksHeld: u64(32),
    chunksReported: u64(40),
    chunksPassedPoolFull: u64(48),
    chunksAutoReleased: u64(56),
    chunksDropped: u64(64),
    chunksModified: u64(72),
    bytesHeld: u64(80),
    responsesRejected: u64(88),
    notificationsLost: u64(96),
    socketsUntracked: u64(104),
  };
}

export function decodeFilterState(b: Buffer): FilterState {
  if (b.length !== 112) throw new Error(`filter state of ${b.length} bytes, expected 112`);
  return stateAt(b, 0);
}

/** Splits one batch from FilterClient into records; malformed ones are counted. */
export function decodeBatch(b: Buffer, out: Notification[]): number {
  let bad = 0;
  let off = 0;
  while (off + 24 <= b.length) {
    const type = b.readUInt16LE(off);
    const size = b.readUInt16LE(off + 2);
    if (size < 24 || off + size > b.length) {
      bad++;
      break;
    }
    const n = RECORD_SIZES[type] === size ? decodeRecord(b, off, type) : undefined;
    if (n) out.push(n);
    else bad++;
    off += size;
  }
  return bad;
}

function decodeRecord(b: Buffer, o: number, type: number): Notification | undefined {
  // Hot path (every notification): plain object literals, no spreads.
  const flags = b.readUInt32LE(o + 4);
  const sock = { slot: b.readUInt32LE(o + 8), gen: b.readUInt32LE(o + 12) };
  const timeNs = b.readUInt32LE(o + 20) * 4294967296 + b.readUInt32LE(o + 16);
  switch (type) {
    case NotifyType.Attach: {
      let end = o + 40;
      while (end < o + 72 && b[end] !== 0) end++;
      return {
        type,
        flags,
        sock,
        timeNs,
        pid: b.readInt32LE(o + 24),
        uid: b.readUInt32LE(o + 28),
        family: b[o + 32],
        sockType: b[o + 33],
        protocol: b[o + 34],
        comm: b.toString('utf8', o + 40, end),
      };
    }
    case NotifyType.Detach:
      return { type, flags, sock, timeNs, bytesIn: b.readBigUInt64LE(o + 24), bytesOut: b.readBigUInt64LE(o + 32) };
    case NotifyType.ConnectIn:
    case NotifyType.ConnectOut:
    case NotifyType.Bound:
    case NotifyType.Listen:
      return { type, flags, sock, timeNs, local: addrAt(b, o + 24), remote: addrAt(b, o + 48) };
    case NotifyType.Event:
      return { type, flags, sock, timeNs, event: b.readUInt32LE(o + 24) };
    case NotifyType.Data: {
      const nbuf = b.readUInt16LE(o + 46);
      if (nbuf < 1 || nbuf > CHUNK_MAX_BUFFERS) return undefined;
      const buffers: number[] = [];
      for (let i = 0; i < nbuf; i++) {
        const idx = b.readUInt16LE(o + 80 + 2 * i);
        if (idx >= BUFFER_COUNT) return undefined;
        buffers.push(idx);
      }
      return {
        type,
        flags,
        sock,
        timeNs,
        chunkId: b.readBigUInt64LE(o + 24),
        streamOffset: b.readUInt32LE(o + 36) * 4294967296 + b.readUInt32LE(o + 32),
        size: b.readUInt32LE(o + 40),
        direction: b[o + 44],
        deadlineMs: b.readUInt32LE(o + 48),
        addr: flags & DATA_F_HAS_ADDR ? addrAt(b, o + 56) : undefined,
        buffers,
      };
    }
    case NotifyType.ChunkReleased:
      return {
        type,
        flags,
        sock,
        timeNs,
        chunkId: b.readBigUInt64LE(o + 24),
        reason: b.readUInt32LE(o + 32),
        size: b.readUInt32LE(o + 36),
      };
    case NotifyType.State:
      return { type, flags, sock, timeNs, state: stateAt(b, o + 24) };
    case NotifyType.Option:
      return {
        type,
        flags,
        sock,
        timeNs,
        level: b.readUInt32LE(o + 24),
        name: b.readUInt32LE(o + 28),
        isSet: b.readUInt32LE(o + 32) === 1,
      };
  }
  return undefined;
}

export interface Verdict {
  chunkId: bigint;
  sock: SockId;
  action: Action;
  modifiedLen: number;
}
export interface Release {
  chunkId: bigint;
  buffer: number;
}

/** nke_response_hdr + verdicts + releases (counts within the ABI limits). */
export function encodeResponse(verdicts: Verdict[], releases: Release[]): Buffer {
  if (verdicts.length > RESPONSE_MAX_VERDICTS || releases.length > RESPONSE_MAX_RELEASES)
    throw new RangeError(`response with ${verdicts.length} verdicts, ${releases.length} releases exceeds the ABI limits`);
  const size = 16 + 24 * verdicts.length + 16 * releases.length;
  const b = Buffer.alloc(size);
  b.writeUInt32LE(ABI_VERSION, 0);
  b.writeUInt32LE(size, 4);
  b.writeUInt16LE(verdicts.length, 8);
  b.writeUInt16LE(releases.length, 10);
  let o = 16;
  for (const v of verdicts) {
    b.writeBigUInt64LE(v.chunkId, o);
    b.writeUInt32LE(v.sock.slot, o + 8);
    b.writeUInt32LE(v.sock.gen, o + 12);
    b[o + 16] = v.action;
    b.writeUInt32LE(v.modifiedLen, o + 20);
    o += 24;
  }
  for (const r of releases) {
    b.writeBigUInt64LE(r.chunkId, o);
    b.writeUInt16LE(r.buffer, o + 8);
    o += 16;
  }
  return b;
}

/** One NKE_SEL_PUT_DATA piece. */
export function encodePutData(
  chunkId: bigint,
  sock: SockId,
  totalLen: number,
  offset: number,
  piece: Uint8Array,
): Buffer {
  if (piece.length > PUT_DATA_MAX_PIECE) throw new RangeError(`put-data piece of ${piece.length} bytes`);
  const b = Buffer.alloc(32 + piece.length);
  b.writeBigUInt64LE(chunkId, 0);
  b.writeUInt32LE(sock.slot, 8);
  b.writeUInt32LE(sock.gen, 12);
  b.writeUInt32LE(totalLen, 16);
  b.writeUInt32LE(offset, 20);
  b.writeUInt32LE(piece.length, 24);
  b.set(piece, 32);
  return b;
}

export interface KernelRule {
  match: number; // NKE_MATCH_* bits
  action: RuleAction;
  direction: number; // bitmask of DIR_IN/DIR_OUT
  protocol: number;
  family: number;
  pid: number;
  localPortMin: number;
  localPortMax: number;
  remotePortMin: number;
  remotePortMax: number;
  localPrefix: number;
  remotePrefix: number;
  localAddr: Uint8Array;
  remoteAddr: Uint8Array;
  comm: string;
}

export const MATCH = {
  PID: 0x001,
  COMM: 0x002,
  DIRECTION: 0x004,
  PROTOCOL: 0x008,
  LOCAL_PORT: 0x010,
  REMOTE_PORT: 0x020,
  LOCAL_ADDR: 0x040,
  REMOTE_ADDR: 0x080,
  FAMILY: 0x100,
} as const;

/** nke_capture_config (the whole fixed-size struct). */
export function encodeCaptureConfig(
  mode: CaptureMode,
  defaultAction: RuleAction,
  holdTimeoutMs: number,
  rules: KernelRule[],
): Buffer {
  if (rules.length > MAX_RULES) throw new RangeError(`${rules.length} rules; the filter takes at most ${MAX_RULES}`);
  const b = Buffer.alloc(24 + 88 * MAX_RULES);
  b.writeUInt32LE(ABI_VERSION, 0);
  b.writeUInt32LE(mode, 4);
  b.writeUInt32LE(defaultAction, 8);
  b.writeUInt32LE(holdTimeoutMs, 12);
  b.writeUInt32LE(rules.length, 16);
  rules.forEach((r, i) => {
    const o = 24 + 88 * i;
    b.writeUInt32LE(r.match, o);
    b[o + 4] = r.action;
    b[o + 5] = r.direction;
    b[o + 6] = r.protocol;
    b[o + 7] = r.family;
    b.writeInt32LE(r.pid, o + 8);
    b.writeUInt16LE(r.localPortMin, o + 12);
    b.writeUInt16LE(r.localPortMax, o + 14);
    b.writeUInt16LE(r.remotePortMin, o + 16);
    b.writeUInt16LE(r.remotePortMax, o + 18);
    b[o + 20] = r.localPrefix;
    b[o + 21] = r.remotePrefix;
    b.set(r.localAddr.subarray(0, 16), o + 24);
    b.set(r.remoteAddr.subarray(0, 16), o + 40);
    const comm = Buffer.from(r.comm, 'utf8');
    if (comm.length >= COMM_LEN) throw new RangeError(`process name "${r.comm}" longer than ${COMM_LEN - 1} bytes`);
    comm.copy(b, o + 56);
  });
  return b;
}
