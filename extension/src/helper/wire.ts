// The helper's view of the ABI: thin adapters over extension/src/shared/abi.ts
// (the TS mirror of kext/include/nke/nke_abi.h, layout-checked against the C
// header), shaped for the live model: camelCase, printable addresses, plain
// numbers where they are exact. No offsets are written out here.
import * as abi from '../shared/abi';

export {
  emptyRule,
  Action,
  CaptureMode,
  NotifyType,
  RuleAction,
  NKE_ABI_VERSION as ABI_VERSION,
  NKE_AF_INET as AF_INET,
  NKE_AF_INET6 as AF_INET6,
  NKE_PROTO_TCP as PROTO_TCP,
  NKE_PROTO_UDP as PROTO_UDP,
  NKE_COMM_LEN as COMM_LEN,
  NKE_MAX_RULES as MAX_RULES,
  NKE_BUFFER_COUNT as BUFFER_COUNT,
  NKE_RESPONSE_MAX_VERDICTS as RESPONSE_MAX_VERDICTS,
  NKE_RESPONSE_MAX_RELEASES as RESPONSE_MAX_RELEASES,
  NKE_PUT_DATA_MAX_PIECE as PUT_DATA_MAX_PIECE,
  NKE_MODIFIED_MAX_LEN as MODIFIED_MAX_LEN,
  NKE_DATA_F_HELD as DATA_F_HELD,
  NKE_DATA_F_HAS_ADDR as DATA_F_HAS_ADDR,
} from '../shared/abi';
import { NotifyType, type CaptureMode, type RuleAction, type Action } from '../shared/abi';

export const DIR_IN = abi.Direction.In;
export const DIR_OUT = abi.Direction.Out;

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

export function formatAddress(family: number, raw: Uint8Array): string {
  return family ? abi.formatIp(family, raw) : '';
}

function addr(a: abi.NkeAddr): Addr {
  return { family: a.family, port: a.port, address: formatAddress(a.family, a.addr), raw: a.addr };
}

function state(s: abi.FilterState): FilterState {
  const n = (v: bigint) => Number(v);
  return {
    abiVersion: s.abi_version,
    flags: s.flags,
    captureMode: s.capture_mode,
    socketsLive: s.sockets_live,
    chunksPending: s.chunks_pending,
    buffersInUse: s.buffers_in_use,
    socketsAttached: n(s.sockets_attached),
    chunksHeld: n(s.chunks_held),
    chunksReported: n(s.chunks_reported),
    chunksPassedPoolFull: n(s.chunks_passed_pool_full),
    chunksAutoReleased: n(s.chunks_auto_released),
    chunksDropped: n(s.chunks_dropped),
    chunksModified: n(s.chunks_modified),
    bytesHeld: n(s.bytes_held),
    responsesRejected: n(s.responses_rejected),
    notificationsLost: n(s.notifications_lost),
    socketsUntracked: n(s.sockets_untracked),
  };
}

export function decodeFilterState(b: Uint8Array): FilterState {
  const r = abi.decodeFilterState(b);
  if (!r.ok) throw new Error(r.error.message);
  return state(r.value);
}

/** Splits one batch from FilterClient into records; malformed ones are counted, never trusted. */
export function decodeBatch(b: Uint8Array, out: Notification[]): number {
  let bad = 0;
  let off = 0;
  while (off + 24 <= b.length) {
    const r = abi.decodeNotification(b, off);
    const size = b[off + 2] | (b[off + 3] << 8);
    if (r.ok) out.push(adapt(r.value));
    else bad++;
    // A record with a believable size can be skipped; otherwise the rest of
    // the batch cannot be framed.
    if (size < 24 || size % 8 !== 0) return bad + 1;
    off += size;
  }
  return bad;
}

function adapt(n: abi.Notification): Notification {
  const { flags, sock } = n.hdr;
  const timeNs = Number(n.hdr.time_ns);
  switch (n.kind) {
    case 'attach':
      return {
        type: NotifyType.Attach,
        flags,
        sock,
        timeNs,
        pid: n.pid,
        uid: n.uid,
        family: n.family,
        sockType: n.type,
        protocol: n.protocol,
        comm: n.comm,
      };
    case 'detach':
      return { type: NotifyType.Detach, flags, sock, timeNs, bytesIn: n.bytes_in, bytesOut: n.bytes_out };
    case 'connect_in':
    case 'connect_out':
    case 'bound':
    case 'listen':
      return {
        type: n.hdr.type as NotifyType.ConnectIn,
        flags,
        sock,
        timeNs,
        local: addr(n.local),
        remote: addr(n.remote),
      };
    case 'event':
      return { type: NotifyType.Event, flags, sock, timeNs, event: n.event };
    case 'data':
      return {
        type: NotifyType.Data,
        flags,
        sock,
        timeNs,
        chunkId: n.chunk_id,
        streamOffset: Number(n.stream_offset),
        size: n.size,
        direction: n.direction,
        deadlineMs: n.deadline_ms,
        addr: flags & abi.NKE_DATA_F_HAS_ADDR ? addr(n.addr) : undefined,
        buffers: n.buffers.slice(0, n.nbuffers),
      };
    case 'chunk_released':
      return {
        type: NotifyType.ChunkReleased,
        flags,
        sock,
        timeNs,
        chunkId: n.chunk_id,
        reason: n.reason,
        size: n.size,
      };
    case 'state':
      return { type: NotifyType.State, flags, sock, timeNs, state: state(n.state) };
    case 'option':
      return {
        type: NotifyType.Option,
        flags,
        sock,
        timeNs,
        level: n.level,
        name: n.name,
        isSet: n.is_set === 1,
      };
  }
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

const toBuffer = (u: Uint8Array) => Buffer.from(u.buffer, u.byteOffset, u.byteLength);

/** NKE_SEL_RESPOND message (abi.encodeResponse checks counts and actions). */
export function encodeResponse(verdicts: Verdict[], releases: Release[]): Buffer {
  return toBuffer(
    abi.encodeResponse(
      verdicts.map((v) => ({
        chunk_id: v.chunkId,
        sock: v.sock,
        action: v.action,
        modified_len: v.modifiedLen,
      })),
      releases.map((r) => ({ chunk_id: r.chunkId, buffer: r.buffer })),
    ),
  );
}

/** The NKE_SEL_PUT_DATA messages staging `data` for a held chunk, in order. */
export function encodePutDataPieces(chunkId: bigint, sock: SockId, data: Uint8Array): Buffer[] {
  return abi.encodePutDataPieces(chunkId, sock, data).map(toBuffer);
}

export type KernelRule = abi.Rule;

export const MATCH = {
  PID: abi.NKE_MATCH_PID,
  COMM: abi.NKE_MATCH_COMM,
  DIRECTION: abi.NKE_MATCH_DIRECTION,
  PROTOCOL: abi.NKE_MATCH_PROTOCOL,
  LOCAL_PORT: abi.NKE_MATCH_LOCAL_PORT,
  REMOTE_PORT: abi.NKE_MATCH_REMOTE_PORT,
  LOCAL_ADDR: abi.NKE_MATCH_LOCAL_ADDR,
  REMOTE_ADDR: abi.NKE_MATCH_REMOTE_ADDR,
  FAMILY: abi.NKE_MATCH_FAMILY,
} as const;

/** nke_capture_config (the whole fixed-size struct). */
export function encodeCaptureConfig(
  mode: CaptureMode,
  defaultAction: RuleAction,
  holdTimeoutMs: number,
  rules: KernelRule[],
): Buffer {
  return toBuffer(
    abi.encodeCaptureConfig({ mode, default_action: defaultAction, hold_timeout_ms: holdTimeoutMs, rules }),
  );
}
