// The helper's view of the ABI: thin adapters over extension/src/shared/abi.ts
// (the TS mirror of kext/include/nke/nke_abi.h, layout-checked against the C
// header), shaped for the live model: camelCase, printable addresses, plain
// numbers where they are exact. No offsets are written out here.
import * as abi from '../shared/abi';
import type { PendingRemovalReason } from '../shared/helperProtocol';

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
  NKE_RULE_DEFAULT,
  NKE_BUFFER_COUNT as BUFFER_COUNT,
  NKE_RESPONSE_MAX_VERDICTS as RESPONSE_MAX_VERDICTS,
  NKE_RESPONSE_MAX_RELEASES as RESPONSE_MAX_RELEASES,
  NKE_PUT_DATA_MAX_PIECE as PUT_DATA_MAX_PIECE,
  NKE_MODIFIED_MAX_LEN as MODIFIED_MAX_LEN,
  NKE_HOLD_TOTAL_MAX_MS as HOLD_TOTAL_MAX_MS,
  NKE_DATA_F_HELD as DATA_F_HELD,
  NKE_DATA_F_HAS_ADDR as DATA_F_HAS_ADDR,
} from '../shared/abi';
import { NotifyType, type CaptureMode, type RuleAction } from '../shared/abi';

export const DIR_IN = abi.Direction.In;
export const DIR_OUT = abi.Direction.Out;

/** NKE_RELEASE_* as the protocol names them (PendingRemovalReason). */
export const RELEASE_REASONS: Readonly<Record<number, PendingRemovalReason>> = {
  1: 'timeout',
  2: 'client-gone',
  3: 'socket-gone',
  4: 'inject-failed',
  5: 'budget',
  6: 'socket-closing',
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
      /** Owner: the socket's process is now known to be this one (pid, uid, comm replace the attach's). */
      type: NotifyType.Attach | NotifyType.Owner;
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
      /** the tag of the capture config that decided (nke_capture_config.tag) */
      captureTag: number;
      /** index of the deciding rule in that config, or abi.NKE_RULE_DEFAULT */
      rule: number;
    })
  | (Base & { type: NotifyType.ChunkReleased; chunkId: bigint; reason: number; size: number })
  | (Base & { type: NotifyType.State; state: FilterState })
  | (Base & { type: NotifyType.Option; level: number; name: number; isSet: boolean })
  | (Base & {
      type: NotifyType.DataGap;
      streamOffset: number;
      size: number;
      direction: number;
      /** enum nke_gap_reason */
      reason: number;
    });

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
  /** Verdicts and releases the filter skipped: their chunk was already released (deadline). */
  staleEntries: number;
  /** bytes the filter keeps right now (held, queued behind held, staged, being re-injected) */
  bytesKept: number;
  /** chunks that waited behind held data of their socket to keep the stream order */
  chunksQueued: number;
  /** chunks not held because the byte budget was used up */
  chunksPassedBudget: number;
}

function addr(a: abi.NkeAddr): Addr {
  return {
    family: a.family,
    port: a.port,
    address: a.family ? abi.formatIp(a.family, a.addr) : '',
    raw: a.addr,
  };
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
    staleEntries: n(s.stale_entries),
    bytesKept: n(s.bytes_kept),
    chunksQueued: n(s.chunks_queued),
    chunksPassedBudget: n(s.chunks_passed_budget),
  };
}

export function decodeFilterState(b: Uint8Array): FilterState {
  const r = abi.decodeFilterState(b);
  if (!r.ok) throw new Error(r.error.message);
  return state(r.value);
}

/** One batch from FilterClient (framing and decoding: abi.decodeNotificationBatch), adapted for the model. */
export function decodeBatch(b: Uint8Array, out: Notification[]): number {
  const { notifications, malformed } = abi.decodeNotificationBatch(b);
  for (const n of notifications) out.push(adapt(n));
  return malformed;
}

function adapt(n: abi.Notification): Notification {
  const { flags, sock } = n.hdr;
  const timeNs = Number(n.hdr.time_ns);
  switch (n.kind) {
    case 'attach':
    case 'owner':
      return {
        type: n.kind === 'owner' ? NotifyType.Owner : NotifyType.Attach,
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
        captureTag: n.capture_tag,
        rule: n.rule,
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
    case 'data_gap':
      return {
        type: NotifyType.DataGap,
        flags,
        sock,
        timeNs,
        streamOffset: Number(n.stream_offset),
        size: n.size,
        direction: n.direction,
        reason: n.reason,
      };
  }
}

/** Wraps an encoder's bytes for the addon (a view, no copy). */
export const toBuffer = (u: Uint8Array) => Buffer.from(u.buffer, u.byteOffset, u.byteLength);

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

/** nke_capture_config (the whole fixed-size struct); `tag` names it in the data notifications it decides. */
export function encodeCaptureConfig(
  mode: CaptureMode,
  defaultAction: RuleAction,
  holdTimeoutMs: number,
  rules: KernelRule[],
  tag = 0,
): Buffer {
  return toBuffer(
    abi.encodeCaptureConfig({
      mode,
      default_action: defaultAction,
      hold_timeout_ms: holdTimeoutMs,
      tag,
      rules,
    }),
  );
}
