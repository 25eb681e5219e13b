// The helper's live model: sockets, exec tree, pending payloads, counters and
// a bounded history. Fed by the engine with decoded notifications and exec
// records; collects what changed since the last flush so updates go out in
// batches. Memory is bounded: the events (socket opens, data, verdicts...)
// are a ring of `eventRingLimit` (nke/history serves it; not the extension's
// nke.historyLimit, which counts exec events kept in the window), closed
// sockets and execs are capped too.
import type {
  Endpoint,
  ExecView,
  HistoryEvent,
  PendingRemovalReason,
  PendingView,
  SocketBytes,
  SocketState,
  SocketView,
  UpdateBatch,
} from '../shared/helperProtocol';
import { emptyCounters } from '../shared/helperProtocol';
import {
  decodeFilterState as decodeAbiFilterState,
  decodeNotificationBatch,
  Direction,
  type FilterState as AbiFilterState,
  formatIp,
  NKE_AF_INET6,
  NKE_DATA_F_HAS_ADDR,
  NKE_EXEC_F_FROM_SHIM,
  NKE_EXEC_F_TRUNCATED,
  NKE_PROTO_TCP,
  NKE_PROTO_UDP,
  type NkeAddr,
  type Notification as AbiNotification,
  NotifyType,
  ReleaseReason,
  SockEvent,
  type SockId,
} from '../shared/abi';

// ---------------------------------------------------------------------------
// The model's input: the filter's notifications (shared/abi.ts decodes them)
// in the model's shape: camelCase, printable addresses, plain numbers where
// they are exact.
// ---------------------------------------------------------------------------

/** NKE_RELEASE_* as the protocol names them (PendingRemovalReason). */
export const RELEASE_REASONS: Readonly<Record<number, PendingRemovalReason>> = {
  [ReleaseReason.Timeout]: 'timeout',
  [ReleaseReason.ClientGone]: 'client-gone',
  [ReleaseReason.SocketGone]: 'socket-gone',
  [ReleaseReason.InjectFail]: 'inject-failed',
  [ReleaseReason.Budget]: 'budget',
  [ReleaseReason.SocketClosing]: 'socket-closing',
};

/** NKE_EV_* as history events and stateAfterEvent name them. */
const SOCK_EVENTS: Readonly<Record<number, string>> = {
  [SockEvent.Connecting]: 'connecting',
  [SockEvent.Connected]: 'connected',
  [SockEvent.Disconnecting]: 'disconnecting',
  [SockEvent.Disconnected]: 'disconnected',
  [SockEvent.FlushRead]: 'flush-read',
  [SockEvent.Shutdown]: 'shutdown',
  [SockEvent.CantRecvMore]: 'cantrecvmore',
  [SockEvent.CantSendMore]: 'cantsendmore',
  [SockEvent.Closing]: 'closing',
  [SockEvent.Bound]: 'bound',
};

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
      /** index of the deciding rule in that config, or NKE_RULE_DEFAULT */
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

function addr(a: NkeAddr): Addr {
  return {
    family: a.family,
    port: a.port,
    address: a.family ? formatIp(a.family, a.addr) : '',
    raw: a.addr,
  };
}

function state(s: AbiFilterState): FilterState {
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
  const r = decodeAbiFilterState(b);
  if (!r.ok) throw new Error(r.error.message);
  return state(r.value);
}

/** One batch from FilterClient (framing and decoding: shared/abi.ts decodeNotificationBatch), adapted for the model. */
export function decodeBatch(b: Uint8Array, out: Notification[]): number {
  const { notifications, malformed } = decodeNotificationBatch(b);
  for (const n of notifications) out.push(adaptNotification(n));
  return malformed;
}

/** One decoded ABI record as the model reads it (test/unit/abi-layout.test.ts checks it reads every field). */
export function adaptNotification(n: AbiNotification): Notification {
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
        addr: flags & NKE_DATA_F_HAS_ADDR ? addr(n.addr) : undefined,
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

/** A history event before it gets its sequence number and time. */
type NewEvent = HistoryEvent extends infer E
  ? E extends HistoryEvent
    ? Omit<E, 'seq' | 'time'>
    : never
  : never;

/** Events the helper's ring keeps by default (nke watch/run --event-ring N; helper --event-ring N). */
export const DEFAULT_EVENT_RING_LIMIT = 100_000;
const CLOSED_SOCKETS_KEPT = 1_000;
const EXECS_KEPT = 10_000;
/** Chunks whose end is remembered, so a late verdict is told why (a verdict, a release), not just "unknown". */
const ENDED_PENDING_KEPT = 4_096;

/**
 * One flush of the model: the batch the clients get, plus the history events
 * recorded since the last one (the CLI's event log writes them; the RPC
 * batch leaves them out: nke/history serves them to whoever asks).
 */
export interface ModelUpdate extends UpdateBatch {
  events: HistoryEvent[];
}

/** How a chunk that was pending ended: a verdict action or a release reason (RELEASE_REASONS), and when. */
export interface EndedPending {
  how: PendingRemovalReason;
  /** wall clock ms */
  at: number;
}

export interface ExecRecord {
  execId: number;
  pid: number;
  ppid: number;
  uid: number;
  flags: number;
  complete: boolean;
  path: Buffer;
}

/** Internal socket state: the view plus raw addresses for rule matching. */
export interface SocketEntry {
  view: SocketView;
  familyCode: number;
  protocolCode: number;
  localRaw: Uint8Array;
  remoteRaw: Uint8Array;
}

export interface PendingEntry {
  view: PendingView;
  chunkId: bigint;
  sock: SockId;
  /**
   * The chunk's bytes, copied out of the shared buffers when it was held.
   * Ownership: the model's; the shared buffers themselves were released in
   * the same response that kept the chunk held, so a person taking minutes
   * over a verdict never pins the filter's buffer pool.
   */
  data: Buffer;
  /** an edit staged for it (nke/stageEdit), counted in pendingBytes too */
  staged?: Buffer;
}

/** Default bound on the bytes kept for pending payloads (all of them together). */
export const DEFAULT_PENDING_BYTES_LIMIT = 64 * 1024 * 1024;

export function sockKey(s: SockId): string {
  return `${s.slot}:${s.gen}`;
}

/**
 * A socket's state after one of the filter's socket events (sf_notify):
 * connected once the handshake is done; closing from the first sign of the
 * end (a side shut, the peer's EOF, disconnecting) until the detach, which
 * alone makes it closed. Events that say nothing about the state keep it.
 */
export function stateAfterEvent(state: SocketState, event: string | undefined): SocketState {
  if (state === 'closed') return state;
  switch (event) {
    case 'connecting':
      return state === 'open' || state === 'bound' ? 'connecting' : state;
    case 'connected':
      return state === 'closing' ? state : 'connected';
    case 'disconnecting':
    case 'disconnected':
    case 'cantrecvmore':
    case 'cantsendmore':
    case 'shutdown':
    case 'closing':
      return state === 'listening' ? state : 'closing';
    default:
      return state;
  }
}

function endpoint(a: Addr): Endpoint | undefined {
  return a.family ? { address: a.address, port: a.port } : undefined;
}

export class LiveModel {
  readonly sockets = new Map<string, SocketEntry>();
  readonly closedSockets = new Map<string, SocketView>(); // insertion order = age
  readonly execs = new Map<string, ExecView>();
  readonly pending = new Map<string, PendingEntry>();
  /** the last ENDED_PENDING_KEPT chunks that stopped being pending, oldest first */
  readonly endedPending = new Map<string, EndedPending>();
  counters = emptyCounters();

  // Event ring: `eventRing[(eventRingStart + i) % eventRingLimit]`, i < length.
  private eventRing: HistoryEvent[] = [];
  private eventRingStart = 0;
  /** events the ring let go, oldest first, to make room */
  eventsDropped = 0;
  private seq = 0;

  // Changes since the last takeUpdate().
  private dirtySockets = new Set<string>();
  /** live sockets whose byte counts alone changed: sent as compact tuples */
  private bytesDirty = new Set<string>();
  private removedSockets = new Set<string>();
  private newExecs: ExecView[] = [];
  private addedPending = new Map<string, PendingView>();
  private updatedPending = new Set<string>();
  private removedPending: { id: string; reason: PendingRemovalReason }[] = [];
  // Why recent payloads stopped being pending (insertion order = age), so a
  // late verdict or extend is answered "released (its deadline passed)"
  // rather than "unknown".
  private newEvents: HistoryEvent[] = [];
  private dirty = false;

  /** Bytes held in `pending` entries' data right now. */
  pendingBytes = 0;

  constructor(
    public eventRingLimit = DEFAULT_EVENT_RING_LIMIT,
    public pendingBytesLimit = DEFAULT_PENDING_BYTES_LIMIT,
  ) {
    if (!Number.isInteger(eventRingLimit) || eventRingLimit < 1) {
      throw new RangeError('the event ring limit must be >= 1');
    }
    if (!Number.isInteger(pendingBytesLimit) || pendingBytesLimit < 0) {
      throw new RangeError('pending bytes limit must be an integer >= 0');
    }
  }

  /** Whether `size` more pending bytes stay within pendingBytesLimit. */
  canHoldBytes(size: number): boolean {
    return this.pendingBytes + size <= this.pendingBytesLimit;
  }

  get isDirty(): boolean {
    return this.dirty;
  }

  /** Events in the ring now. */
  get eventRingSize(): number {
    return this.eventRing.length;
  }

  private record(e: NewEvent): void {
    // Completed in place: one allocation per event on the hot path.
    const ev = e as HistoryEvent;
    ev.seq = ++this.seq;
    ev.time = Date.now();
    if (this.eventRing.length < this.eventRingLimit) this.eventRing.push(ev);
    else {
      this.eventRing[this.eventRingStart] = ev;
      this.eventRingStart = (this.eventRingStart + 1) % this.eventRingLimit;
      this.eventsDropped++;
    }
    // Bound the pending batch too: a client that never drains must not grow us.
    if (this.newEvents.length < this.eventRingLimit) this.newEvents.push(ev);
    this.dirty = true;
  }

  /** The ring's events with seq > since, oldest first, at most `limit` (nke/history). */
  eventsSince(since = 0, limit = 1000): HistoryEvent[] {
    const out: HistoryEvent[] = [];
    const n = this.eventRing.length;
    for (let i = 0; i < n && out.length < limit; i++) {
      const ev = this.eventRing[(this.eventRingStart + i) % n];
      if (ev.seq > since) out.push(ev);
    }
    return out;
  }

  private touch(key: string): void {
    this.dirtySockets.add(key);
    this.dirty = true;
  }

  /** The socket's bytes moved (and nothing else, unless touch() says so too). */
  private touchBytes(key: string): void {
    this.bytesDirty.add(key);
    this.dirty = true;
  }

  /**
   * The socket of a notification; one attached before this helper connected
   * (a restarted helper) is adopted with what is known so far, so the model
   * rebuilds from the traffic that follows.
   */
  private adopt(key: string): SocketEntry {
    let s = this.sockets.get(key);
    if (!s) {
      s = {
        view: {
          id: key,
          pid: 0,
          uid: 0,
          process: '',
          family: 'ipv4',
          protocol: 'other',
          state: 'connected',
          bytesIn: 0,
          bytesOut: 0,
          openedAt: Date.now(),
          attachedEarlier: true,
        },
        familyCode: 0,
        protocolCode: 0,
        localRaw: new Uint8Array(16),
        remoteRaw: new Uint8Array(16),
      };
      this.sockets.set(key, s);
      this.counters.socketsAdopted++;
      this.touch(key); // new to the clients: sent whole
    }
    return s;
  }

  /** Records passed over as malformed (by the addon's reader, or by decodeBatch): counted and sent. */
  countMalformed(n: number): void {
    if (n <= 0) return;
    this.counters.malformedRecords += n;
    this.dirty = true;
  }

  /** Applies one notification to sockets and counters (not data decisions). */
  apply(n: Notification): void {
    const key = sockKey(n.sock);
    switch (n.type) {
      case NotifyType.Attach: {
        // The filter's replay of a socket this helper knows already (one of
        // its records was lost to a full queue): its bytes and age stay.
        const known = this.sockets.get(key);
        const view: SocketView = {
          id: key,
          pid: n.pid,
          uid: n.uid,
          process: n.comm,
          family: n.family === NKE_AF_INET6 ? 'ipv6' : 'ipv4',
          protocol: n.protocol === NKE_PROTO_TCP ? 'tcp' : n.protocol === NKE_PROTO_UDP ? 'udp' : 'other',
          state: 'open',
          bytesIn: known?.view.bytesIn ?? 0,
          bytesOut: known?.view.bytesOut ?? 0,
          openedAt: known?.view.openedAt ?? Date.now(),
        };
        this.sockets.set(key, {
          view,
          familyCode: n.family,
          protocolCode: n.protocol,
          localRaw: new Uint8Array(16),
          remoteRaw: new Uint8Array(16),
        });
        this.touch(key);
        this.record({
          kind: 'socket-open',
          socketId: key,
          pid: n.pid,
          process: n.comm,
          protocol: view.protocol,
        });
        return;
      }
      case NotifyType.Owner: {
        // The kext learns who accepted a connection only at sf_accept (it
        // attached the socket in the kernel's input path): the socket's
        // process changes in place, its addresses and counters stay.
        const s = this.adopt(key);
        s.view.pid = n.pid;
        s.view.uid = n.uid;
        s.view.process = n.comm;
        delete s.view.attachedEarlier; // its process is known now
        this.touch(key);
        return;
      }
      case NotifyType.Detach: {
        const s = this.sockets.get(key);
        if (!s) return;
        s.view.state = 'closed';
        s.view.closedAt = Date.now();
        s.view.bytesIn = Number(n.bytesIn);
        s.view.bytesOut = Number(n.bytesOut);
        this.sockets.delete(key);
        this.closedSockets.set(key, s.view);
        if (this.closedSockets.size > CLOSED_SOCKETS_KEPT) {
          const oldest = this.closedSockets.keys().next().value as string;
          this.closedSockets.delete(oldest);
          this.removedSockets.add(oldest);
        }
        this.touch(key);
        this.record({
          kind: 'socket-close',
          socketId: key,
          bytesIn: s.view.bytesIn,
          bytesOut: s.view.bytesOut,
        });
        return;
      }
      case NotifyType.ConnectIn:
      case NotifyType.ConnectOut:
      case NotifyType.Bound:
      case NotifyType.Listen: {
        const s = this.adopt(key);
        if (!s.familyCode && (n.local.family || n.remote.family)) {
          s.familyCode = n.local.family || n.remote.family;
          s.view.family = s.familyCode === NKE_AF_INET6 ? 'ipv6' : 'ipv4';
        }
        if (n.local.family) {
          s.view.local = endpoint(n.local);
          s.localRaw = n.local.raw;
        }
        if (n.remote.family) {
          s.view.remote = endpoint(n.remote);
          s.remoteRaw = n.remote.raw;
        }
        const state: SocketState =
          n.type === NotifyType.Listen
            ? 'listening'
            : n.type === NotifyType.Bound
              ? s.view.state === 'open'
                ? 'bound'
                : s.view.state
              : n.type === NotifyType.ConnectIn
                ? 'connected'
                : 'connecting';
        s.view.state = state;
        if (n.type === NotifyType.ConnectIn) s.view.incoming = true;
        this.touch(key);
        this.record({
          kind: 'socket-state',
          socketId: key,
          state,
          local: s.view.local,
          remote: s.view.remote,
        });
        return;
      }
      case NotifyType.Event: {
        const s = this.adopt(key);
        const name = SOCK_EVENTS[n.event];
        const state = stateAfterEvent(s.view.state, name);
        if (state && state !== s.view.state) {
          s.view.state = state;
          this.touch(key);
          this.record({ kind: 'socket-state', socketId: key, state });
        }
        return;
      }
      case NotifyType.Data: {
        this.counters.dataChunks++;
        const s = this.adopt(key);
        if (n.direction === Direction.In) this.counters.bytesIn += n.size;
        else this.counters.bytesOut += n.size;
        if (n.direction === Direction.In) s.view.bytesIn += n.size;
        else s.view.bytesOut += n.size;
        // Stream bytes move only on a connected TCP socket: a "connected"
        // note lost on the way (best effort in the emulator) must not leave
        // it shown as connecting while data flows.
        if (s.view.state === 'connecting' && s.view.protocol === 'tcp') {
          s.view.state = 'connected';
          this.touch(key);
        } else this.touchBytes(key);
        this.record({
          kind: 'data',
          socketId: key,
          chunkId: n.chunkId.toString(),
          direction: n.direction === Direction.In ? 'in' : 'out',
          size: n.size,
          held: (n.flags & 1) !== 0,
        });
        return;
      }
      case NotifyType.ChunkReleased: {
        this.counters.releasedByFilter++;
        const id = n.chunkId.toString();
        const reason: PendingRemovalReason = RELEASE_REASONS[n.reason] ?? 'released';
        this.removePending(id, reason);
        this.record({ kind: 'released', chunkId: id, reason });
        return;
      }
      case NotifyType.DataGap: {
        // Counted and in the history; the bytes are a gap in the capture history.
        this.counters.dataGaps = (this.counters.dataGaps ?? 0) + 1;
        this.counters.dataGapBytes = (this.counters.dataGapBytes ?? 0) + n.size;
        // The filter passed these bytes unreported (no buffer free): they
        // went over the socket all the same, so its byte counts and the
        // helper's include them (a busy machine's Sockets view under-counted
        // by every chunk passed pool-full).
        const s = this.adopt(key);
        if (n.direction === Direction.In) {
          this.counters.bytesIn += n.size;
          s.view.bytesIn += n.size;
        } else {
          this.counters.bytesOut += n.size;
          s.view.bytesOut += n.size;
        }
        this.touchBytes(key);
        this.record({
          kind: 'data-gap',
          socketId: key,
          direction: n.direction === Direction.In ? 'in' : 'out',
          size: n.size,
          reason: n.reason === 1 ? 'no-buffer' : n.reason === 2 ? 'queue-full' : `reason ${n.reason}`,
        });
        return;
      }
      case NotifyType.State:
      case NotifyType.Option:
        return;
    }
  }

  /** `data` is the chunk's bytes, already copied out of the shared buffers. */
  addPending(n: Extract<Notification, { type: NotifyType.Data }>, data: Buffer): PendingEntry {
    // The filter's deadline counts from when it held the chunk; the batch
    // reached us a few microseconds later, so the countdown from `now` is
    // the filter's own within that.
    const now = Date.now();
    const key = sockKey(n.sock);
    const s = this.sockets.get(key);
    const view: PendingView = {
      id: n.chunkId.toString(),
      socketId: key,
      pid: s?.view.pid ?? 0,
      process: s?.view.process ?? '',
      direction: n.direction === Direction.In ? 'in' : 'out',
      size: n.size,
      streamOffset: n.streamOffset,
      local: s?.view.local,
      remote: n.addr ? endpoint(n.addr) : s?.view.remote,
      deadline: now + n.deadlineMs,
      heldAt: now,
    };
    const e: PendingEntry = { view, chunkId: n.chunkId, sock: n.sock, data };
    this.pending.set(view.id, e);
    this.pendingBytes += data.length;
    this.addedPending.set(view.id, view);
    this.counters.heldForPerson++;
    this.dirty = true;
    return e;
  }

  removePending(id: string, reason: PendingRemovalReason): PendingEntry | undefined {
    const e = this.pending.get(id);
    if (!e) return undefined;
    this.pending.delete(id);
    this.pendingBytes -= e.data.length + (e.staged?.length ?? 0);
    this.updatedPending.delete(id);
    this.endedPending.set(id, { how: reason, at: Date.now() });
    if (this.endedPending.size > ENDED_PENDING_KEPT) {
      this.endedPending.delete(this.endedPending.keys().next().value as string);
    }
    // Added and removed within one batch: the client never needs to see it.
    if (!this.addedPending.delete(id)) this.removedPending.push({ id, reason });
    this.dirty = true;
    return e;
  }

  /** Stages an edit for a pending payload (undefined clears it); false when it would pass pendingBytesLimit. */
  setStaged(e: PendingEntry, bytes: Buffer | undefined): boolean {
    const delta = (bytes?.length ?? 0) - (e.staged?.length ?? 0);
    if (delta > 0 && !this.canHoldBytes(delta)) return false;
    this.pendingBytes += delta;
    e.staged = bytes;
    if (bytes) e.view.staged = { size: bytes.length };
    else delete e.view.staged;
    this.viewChanged(e.view.id);
    return true;
  }

  /** The filter now holds a pending payload until `deadline` (an extend was applied). */
  setPendingDeadline(id: string, deadline: number): PendingView | undefined {
    const e = this.pending.get(id);
    if (!e) return undefined;
    e.view.deadline = deadline;
    this.viewChanged(id);
    return e.view;
  }

  /** A pending view changed after it was announced: the next batch carries it in pendingUpdated. */
  private viewChanged(id: string): void {
    // Not sent yet: the added view carries the change already.
    if (!this.addedPending.has(id)) this.updatedPending.add(id);
    this.dirty = true;
  }

  verdict(
    chunkId: string,
    action: 'allow' | 'drop' | 'replace' | 'rewrite' | 'auto-pass',
    size: number,
  ): void {
    if (action === 'allow') this.counters.verdictsAllow++;
    else if (action === 'drop') this.counters.verdictsDrop++;
    else if (action === 'replace') this.counters.verdictsReplace++;
    else if (action === 'rewrite') this.counters.rewritten++;
    else {
      // Auto-passed chunks are the bulk of traffic: counted, and their data
      // event is in the history already; no second event each.
      this.counters.autoPassed++;
      return;
    }
    this.record({ kind: 'verdict', chunkId, action, size });
  }

  addExec(r: ExecRecord): ExecView {
    const view: ExecView = {
      id: String(r.execId),
      pid: r.pid,
      ppid: r.ppid,
      uid: r.uid,
      // An incomplete path has zero bytes where chunks are missing: shown as U+FFFD.
      path: r.complete ? r.path.toString('utf8') : r.path.toString('latin1').replace(/\0/g, '\ufffd'),
      complete: r.complete,
      truncated: (r.flags & NKE_EXEC_F_TRUNCATED) !== 0,
      underShim: (r.flags & NKE_EXEC_F_FROM_SHIM) !== 0,
      time: Date.now(),
    };
    this.counters.execs++;
    if (!r.complete) this.counters.execsIncomplete++;
    this.execs.set(view.id, view);
    if (this.execs.size > EXECS_KEPT) this.execs.delete(this.execs.keys().next().value as string);
    this.newExecs.push(view);
    this.record({
      kind: 'exec',
      execId: view.id,
      pid: r.pid,
      ppid: r.ppid,
      path: view.path,
      complete: r.complete,
      truncated: view.truncated,
    });
    return view;
  }

  /** Children of pid in the exec tree (by ppid), oldest first. */
  execChildren(pid: number): ExecView[] {
    return [...this.execs.values()].filter((e) => e.ppid === pid);
  }

  /** Forgets closed sockets, execs and history (live sockets and pending stay). */
  clear(): void {
    for (const k of this.closedSockets.keys()) this.removedSockets.add(k);
    this.closedSockets.clear();
    this.execs.clear();
    this.eventRing = [];
    this.eventRingStart = 0;
    this.dirty = true;
  }

  /** Drops everything that belonged to a filter session (on disconnect). */
  resetSession(): void {
    for (const k of this.sockets.keys()) this.removedSockets.add(k);
    this.sockets.clear();
    for (const id of [...this.pending.keys()]) this.removePending(id, 'client-gone');
    this.dirty = true;
  }

  takeUpdate(): ModelUpdate {
    const sockets: SocketView[] = [];
    for (const k of this.dirtySockets) {
      const v = this.sockets.get(k)?.view ?? this.closedSockets.get(k);
      if (v) sockets.push(v);
    }
    const bytes: SocketBytes[] = [];
    for (const k of this.bytesDirty) {
      if (this.dirtySockets.has(k)) continue; // its whole view goes
      const v = this.sockets.get(k)?.view;
      if (v) bytes.push([k, v.bytesIn, v.bytesOut]);
    }
    const batch: ModelUpdate = {
      sockets,
      ...(bytes.length ? { bytes } : {}),
      socketsRemoved: [...this.removedSockets],
      execs: this.newExecs,
      pendingAdded: [...this.addedPending.values()],
      pendingUpdated: [...this.updatedPending].map((id) => this.pending.get(id)!.view),
      pendingRemoved: this.removedPending,
      events: this.newEvents,
      counters: { ...this.counters },
    };
    this.dirtySockets = new Set();
    this.bytesDirty = new Set();
    this.removedSockets = new Set();
    this.newExecs = [];
    this.addedPending = new Map();
    this.updatedPending = new Set();
    this.removedPending = [];
    this.newEvents = [];
    this.dirty = false;
    return batch;
  }

  socketViews(): SocketView[] {
    return [...[...this.sockets.values()].map((s) => s.view), ...this.closedSockets.values()];
  }
}
