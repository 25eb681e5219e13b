// The helper's engine: owns the filter client and the event socket (addon),
// feeds the live model, applies the rules to every held chunk and answers the
// filter. Uninteresting data is answered here, in the same batch it arrived
// in, with no round trip to any UI; only chunks a rule holds for a person
// wait for verdict().
import { EventEmitter } from 'node:events';
import type {
  CaptureExportResult,
  FilterError,
  FilterStateView,
  FilterStatus,
  NkeErrorCode,
  PendingView,
  RulesConfig,
  Snapshot,
} from '../shared/helperProtocol';
import { noLongerHeld } from '../shared/payloadReasons';
import { LiveModel, type ModelUpdate, type PendingEntry, sockKey } from './model';
import { type CaptureEndpoint, CaptureHistory, Fate, FilterClock } from './captureHistory';
import { type ExportSelection, exportToFile, streamToFifo } from './captureExport';
import {
  loadAddon,
  type NativeAddon,
  type NativeError,
  type NativeFilterClient,
  type NativeKevSocket,
} from './native';
import {
  compileRules,
  type CompiledRules,
  decideHeld,
  DEFAULT_RULES,
  type CompiledRewrite,
  InstalledConfigs,
  rewriteBytes,
} from './rules';
import {
  type Addr,
  decodeBatch,
  decodeFilterState,
  type FilterState,
  type Notification,
  RELEASE_REASONS,
} from './model';
import {
  Action,
  CaptureMode,
  Direction,
  encodeCaptureConfig,
  encodePutDataPieces,
  encodeResponse as encodeResponseBytes,
  NKE_AF_INET,
  NKE_AF_INET6,
  NKE_DATA_F_HELD,
  NKE_HOLD_TOTAL_MAX_MS,
  NKE_MODIFIED_MAX_LEN,
  NKE_PROTO_TCP,
  NKE_PROTO_UDP,
  NKE_RESPONSE_MAX_RELEASES,
  NKE_RESPONSE_MAX_VERDICTS,
  NotifyType,
  RuleAction,
  SockEvent,
  type ReleaseInput as Release,
  type VerdictInput as Verdict,
} from '../shared/abi';

/** Wraps an encoder's bytes for the addon (a view, no copy). */
const toBuffer = (u: Uint8Array) => Buffer.from(u.buffer, u.byteOffset, u.byteLength);

/** NKE_SEL_RESPOND bytes for the addon (the one encoder: shared/abi.ts). */
const encodeResponse = (v: readonly Verdict[], r: readonly Release[]) => toBuffer(encodeResponseBytes(v, r));

export class EngineError extends Error {
  constructor(
    readonly code: NkeErrorCode,
    message: string,
    /** Extra facts for the client (e.g. why a payload is gone), sent as the error's data. */
    readonly data?: Record<string, unknown>,
  ) {
    super(message);
  }
}

export interface EngineOptions {
  /** Events the model's ring keeps for nke/history (default DEFAULT_EVENT_RING_LIMIT). */
  eventRingLimit?: number;
  /** Bound on the bytes kept for pending payloads (default 64 MiB); beyond it held chunks pass. */
  pendingBytesLimit?: number;
  /**
   * How long a chunk whose tail may begin a rewrite's `find` waits for the
   * next chunk, for rules that set no carryMs of their own. Default: no
   * window (until the next chunk, the socket's closing, or shortly before
   * the chunk's deadline).
   */
  rewriteCarryMs?: number;
  /** Max update batches a second sent to listeners (default 30). */
  updatesPerSecond?: number;
  addon?: NativeAddon;
  log?: (level: 'info' | 'warn' | 'error', message: string) => void;
  /** Bytes of payload the capture history keeps (nke.captureHistoryMiB); 0 or absent: none. */
  captureHistoryBytes?: number;
  /** Where the history's private spill directory goes (default: the OS temp directory). */
  captureHistoryDir?: string;
}

/** A wire address as the capture history keeps it (undefined: none reported). */
function captureEndpoint(a: Addr | undefined): CaptureEndpoint | undefined {
  if (!a || (a.family !== NKE_AF_INET && a.family !== NKE_AF_INET6)) return undefined;
  return a.family === NKE_AF_INET
    ? { family: 4, addr: a.raw.slice(0, 4), port: a.port }
    : { family: 6, addr: a.raw.slice(0, 16), port: a.port };
}

/** chunk id -> ring position of its bytes, from the addon's `captured` list (16 bytes per data record). */
function capturedPositions(captured: Buffer | undefined): Map<bigint, number> | undefined {
  if (!captured) return undefined;
  const m = new Map<bigint, number>();
  for (let off = 0; off + 16 <= captured.length; off += 16) {
    m.set(captured.readBigUInt64LE(off), Number(captured.readBigInt64LE(off + 8)));
  }
  return m;
}

const RELEASE_FATES: Record<number, Fate> = {
  1: Fate.ReleasedSent, // timeout: the original went out
  2: Fate.ReleasedSent, // client gone: the original went out
  3: Fate.ReleasedDiscarded, // socket gone
  4: Fate.InjectFailed,
};

const nowUs = () => Date.now() * 1000;

type DataNotification = Extract<Notification, { type: NotifyType.Data }>;

/**
 * Held chunks of one flow (socket + direction) kept back by a rewrite rule
 * because their bytes end in a proper prefix of `find`: the match may finish
 * in the next chunk. Their shared buffers are already released (bytes copied
 * here); the chunks stay held in the filter until decided together.
 */
interface Carry {
  chunks: DataNotification[];
  data: Buffer;
  rewrite: CompiledRewrite;
  timer: NodeJS.Timeout;
  /** Date.now() by which the first chunk must be decided (its filter deadline, less a margin) */
  decideBy: number;
}

/**
 * What a carry decided before its chunks' stream went on: the tail that may
 * begin a match. If the next chunk of the flow completes the match, it was
 * missed, and that is said (log, rewriteMatchesMissed), never silent.
 */
interface CutTail {
  tail: Buffer;
  rewrite: CompiledRewrite;
  why: string;
}

/** At most this many chunks are carried together; then they are decided as they are. */
const CARRY_MAX_CHUNKS = 8;

/**
 * A carried chunk is decided this long before its filter deadline (at most
 * a quarter of its hold): the verdict must reach the filter before the
 * filter releases the chunk itself, which would pass it unrewritten.
 */
const CARRY_DEADLINE_MARGIN_MS = 250;

/**
 * Socket events after which no more data comes in a direction, so nothing
 * can complete a carried match there: decide what is carried at once.
 */
function directionsEnded(event: number): number[] {
  switch (event) {
    case SockEvent.CantSendMore:
      return [Direction.Out];
    case SockEvent.CantRecvMore:
      return [Direction.In];
    case SockEvent.Disconnecting:
    case SockEvent.Disconnected:
    case SockEvent.Shutdown:
    case SockEvent.Closing:
      return [Direction.In, Direction.Out];
    default:
      return [];
  }
}

/** The filter's state record, grouped by what each number counts (now, or since the filter started). */
export function filterStateView(s: FilterState): FilterStateView {
  return {
    captureMode:
      s.captureMode === CaptureMode.Nothing
        ? 'nothing'
        : s.captureMode === CaptureMode.All
          ? 'all'
          : s.captureMode === CaptureMode.Rules
            ? 'rules'
            : 'unknown',
    now: {
      socketsLive: s.socketsLive,
      chunksHeld: s.chunksPending,
      buffersInUse: s.buffersInUse,
      bytesKept: s.bytesKept,
    },
    sinceStart: {
      socketsAttached: s.socketsAttached,
      chunksHeld: s.chunksHeld,
      bytesHeld: s.bytesHeld,
      chunksReported: s.chunksReported,
      chunksPassedPoolFull: s.chunksPassedPoolFull,
      chunksAutoReleased: s.chunksAutoReleased,
      chunksDropped: s.chunksDropped,
      chunksModified: s.chunksModified,
      chunksQueued: s.chunksQueued,
      chunksPassedBudget: s.chunksPassedBudget,
      responsesRejected: s.responsesRejected,
      notificationsLost: s.notificationsLost,
      socketsUntracked: s.socketsUntracked,
      staleEntries: s.staleEntries,
    },
  };
}

/**
 * Length of the longest proper prefix of `find` that `data` ends with,
 * counting only bytes from `from` on (bytes before it are inside a match).
 */
export function carryLength(data: Buffer, find: Buffer, from = 0): number {
  for (let k = Math.min(find.length - 1, data.length - from); k > 0; k--) {
    if (data.compare(find, 0, k, data.length - k) === 0) return k;
  }
  return 0;
}

/** Non-overlapping matches of `find` in `data`. */
function countMatches(data: Buffer, find: Buffer): number {
  let n = 0;
  for (let at = data.indexOf(find); at >= 0; at = data.indexOf(find, at + find.length)) n++;
  return n;
}

/** End of the last non-overlapping match of `find` in `data` (0 if none). */
function lastMatchEnd(data: Buffer, find: Buffer): number {
  let end = 0;
  for (let at = data.indexOf(find); at >= 0; at = data.indexOf(find, end)) end = at + find.length;
  return end;
}

export class FilterEngine extends EventEmitter<{
  update: [ModelUpdate];
  filterClosed: [FilterError];
  pending: [PendingEntry];
}> {
  readonly model: LiveModel;
  /** payload bytes for export and live capture (absent: nke.captureHistoryMiB is 0) */
  readonly history?: CaptureHistory;
  private readonly clock = new FilterClock();
  private rules: CompiledRules = compileRules(DEFAULT_RULES);
  /** The configs sent to the filter, by tag: a held chunk is decided by the one it names. */
  private readonly installed = new InstalledConfigs();
  private paused = false;
  private client?: NativeFilterClient;
  private kev?: NativeKevSocket;
  private sessionId?: bigint;
  private lastError?: FilterError;
  private lastState?: FilterState;
  /** The filter's state record changed what the views show (stale entries): send status with the next update. */
  private filterStateChanged = false;
  private flushTimer?: NodeJS.Timeout;
  private readonly log: NonNullable<EngineOptions['log']>;
  private readonly addonOverride?: NativeAddon;
  private readonly flushMs: number;
  private readonly carryMs?: number;
  // Rewrite carries by flow key `${sockKey}/${direction}`. JS thread only.
  private readonly carries = new Map<string, Carry>();
  // Tails a carry had to decide early, by flow key, until the flow's next chunk.
  private readonly cutTails = new Map<string, CutTail>();

  constructor(opts: EngineOptions = {}) {
    super();
    this.model = new LiveModel(opts.eventRingLimit, opts.pendingBytesLimit);
    if (opts.captureHistoryBytes) {
      this.history = new CaptureHistory({
        limitBytes: opts.captureHistoryBytes,
        parentDir: opts.captureHistoryDir,
      });
    }
    this.log = opts.log ?? (() => {});
    this.addonOverride = opts.addon;
    this.flushMs = Math.ceil(1000 / (opts.updatesPerSecond ?? 30));
    this.carryMs = opts.rewriteCarryMs;
  }

  private get addon(): NativeAddon {
    return this.addonOverride ?? loadAddon();
  }

  get connected(): boolean {
    return !!this.client?.isOpen;
  }

  /** fresh: ask the filter now; else the last state record it sent. */
  status(fresh = true): FilterStatus {
    let state: FilterState | undefined = this.lastState;
    if (fresh && this.client?.isOpen) {
      try {
        state = this.lastState = decodeFilterState(this.client.getState());
      } catch (e) {
        this.log('warn', `reading the filter state failed: ${(e as Error).message}`);
      }
    }
    let transport = 'unknown';
    try {
      transport = this.addon.platform;
    } catch {
      // addon missing: status still answers, with the error below
    }
    return {
      connected: this.connected,
      transport,
      sessionId: this.sessionId?.toString(),
      state: state && this.connected ? filterStateView(state) : undefined,
      error: this.connected ? undefined : this.lastError,
      paused: this.paused,
    };
  }

  snapshot(): Snapshot {
    return {
      filter: this.status(),
      sockets: this.model.socketViews(),
      execs: [...this.model.execs.values()],
      pending: [...this.model.pending.values()].map((p) => p.view),
      counters: { ...this.model.counters },
      rules: this.rules.config,
      capture: this.history?.status(),
    };
  }

  private requireHistory(): CaptureHistory {
    if (!this.history) {
      throw new EngineError(
        'NKE_NO_CAPTURE',
        'this helper keeps no capture history (its size is 0): set nke.captureHistoryMiB, or --capture-mib, above 0 and restart it',
      );
    }
    return this.history;
  }

  private exportOptions(sel: ExportSelection) {
    return { ...sel, tool: `NKE Workbench helper (pid ${process.pid})`, transport: this.status().transport };
  }

  /** The capture history as pcapng in `file` (absolute), streamed. */
  exportPcapng(
    file: string,
    sel: ExportSelection = {},
    owner?: { uid: number; gid: number },
  ): Promise<CaptureExportResult> {
    return exportToFile(this.requireHistory(), file, { ...this.exportOptions(sel), owner });
  }

  /** Live pcapng into a FIFO (Wireshark's extcap) until `signal` aborts or the reader leaves. */
  streamCapture(
    fifo: string,
    sel: ExportSelection,
    signal: AbortSignal,
    fromHistory = false,
  ): Promise<CaptureExportResult> {
    return streamToFifo(this.requireHistory(), fifo, this.exportOptions(sel), signal, fromHistory);
  }

  /** Forgets closed sockets, execs, history events and the capture history (NKE: Clear). */
  clear(): void {
    this.model.clear();
    this.history?.clear();
  }

  /** Opens the filter client and the event socket, then installs the rules. */
  connect(): FilterStatus {
    if (this.client?.isOpen) return this.status();
    let addon: NativeAddon;
    let client: NativeFilterClient;
    try {
      addon = this.addon;
      client = new addon.FilterClient();
      const reply = client.open(
        (records, skipped, wakeNs, captured) => {
          // Never let an exception escape into the addon's callback: log it,
          // the filter's deadlines release whatever was not answered.
          try {
            // Records the reader passed over (too large, size not as its header says).
            this.model.countMalformed(skipped);
            this.onRecords(records, wakeNs, captured);
          } catch (e) {
            this.log('error', `processing notifications failed: ${(e as Error).stack ?? e}`);
          }
        },
        (err) => this.onFilterClosed(err),
        // Reported chunks' buffers go back from the addon's reader thread,
        // after it wrote their bytes to the capture history's ring.
        { releaseReported: true, capture: this.history?.spillTarget() },
      );
      this.sessionId = reply.sessionId;
      this.history?.attachWriter(client);
    } catch (e) {
      const err = e as NativeError;
      this.lastError = { code: err.code ?? 'NKE_SYSTEM', message: err.message };
      throw new EngineError(this.lastError.code, err.message);
    }
    this.client = client;
    this.lastError = undefined;
    try {
      this.installCapture();
    } catch (e) {
      // Connected but not filtering as asked would be a lie: close (the
      // filter releases what it holds) and say why.
      const err = e as NativeError;
      this.closeNative();
      this.lastError = {
        code: err.code ?? 'NKE_SYSTEM',
        message: `the filter refused the rules: ${err.message}`,
      };
      throw new EngineError(this.lastError.code, this.lastError.message);
    }
    this.openKev(addon);
    this.startFlushing();
    this.log('info', `connected to the filter (${addon.platform}, session ${this.sessionId})`);
    return this.status();
  }

  private openKev(addon: NativeAddon): void {
    const kev = new addon.KevSocket();
    try {
      kev.open(
        addon.kevVendor,
        (records) => {
          for (const r of records) this.model.addExec(r);
        },
        (err) => {
          this.log('warn', `exec events stopped: ${err.message}`);
          kev.close();
          if (this.kev === kev) this.kev = undefined;
        },
      );
      this.kev = kev;
    } catch (e) {
      this.log('warn', `no exec events: ${(e as Error).message}`);
    }
  }

  disconnect(): FilterStatus {
    this.closeNative();
    this.model.resetSession();
    return this.status();
  }

  private closeNative(): void {
    // Carried chunks: the filter re-injects them unchanged when the client closes.
    for (const c of this.carries.values()) clearTimeout(c.timer);
    this.carries.clear();
    this.cutTails.clear();
    // The filter re-injects every held chunk's original when the client closes.
    if (this.history) {
      this.history.releaseAllPending(Fate.ReleasedSent, nowUs());
      this.history.detachWriter();
      this.history.flush();
    }
    this.kev?.close();
    this.kev = undefined;
    this.client?.close();
    this.client = undefined;
    this.sessionId = undefined;
  }

  private onFilterClosed(err: NativeError): void {
    this.lastError = { code: err.code, message: err.message };
    this.log('error', `filter connection lost: ${err.message}`);
    this.closeNative();
    this.model.resetSession();
    this.emit('filterClosed', this.lastError);
  }

  setRules(input: RulesConfig | unknown): void {
    const compiled = compileRules(input); // throws RulesError naming the field
    this.rules = compiled;
    if (this.client?.isOpen) this.installCapture();
  }

  get rulesConfig(): RulesConfig {
    return this.rules.config;
  }

  setPaused(paused: boolean): void {
    this.paused = paused;
    if (this.client?.isOpen) this.installCapture();
    if (paused) {
      // Everything waiting for a person goes on at once.
      for (const id of [...this.model.pending.keys()]) this.verdict(id, 'allow');
    }
  }

  private installCapture(): void {
    const k = this.rules.kernel;
    // nke_capture_config (the whole fixed-size struct); `tag` names it in the data notifications it decides.
    const cfg = this.paused
      ? encodeCaptureConfig({
          mode: CaptureMode.Nothing,
          default_action: RuleAction.Pass,
          hold_timeout_ms: 0,
          tag: 0,
        })
      : encodeCaptureConfig({
          mode: k.mode,
          default_action: k.defaultAction,
          hold_timeout_ms: k.holdTimeoutMs,
          tag: this.installed.install(this.rules),
          rules: k.rules,
        });
    this.client!.setCapture(toBuffer(cfg));
  }

  private startFlushing(): void {
    if (this.flushTimer) return;
    // One timer, at most 1000/flushMs batches a second, only when something changed.
    this.flushTimer = setInterval(() => this.flushUpdates(), this.flushMs);
    this.flushTimer.unref();
  }

  flushUpdates(): void {
    if (!this.model.isDirty && !this.filterStateChanged) return;
    const batch = this.model.takeUpdate();
    if (this.filterStateChanged) {
      this.filterStateChanged = false;
      batch.filter = this.status(false);
    }
    this.emit('update', batch);
  }

  dispose(): void {
    if (this.flushTimer) clearInterval(this.flushTimer);
    this.flushTimer = undefined;
    this.closeNative();
    this.history?.dispose();
  }

  /** The pending entry, or the error that says why there is none (data.reason when the model remembers). */
  private pendingOrThrow(id: string): PendingEntry {
    const p = this.model.pending.get(id);
    if (p) return p;
    const ended = this.model.endedPending.get(id);
    throw new EngineError(
      'NKE_UNKNOWN_PAYLOAD',
      noLongerHeld(id, ended?.how, ended?.at),
      ended ? { reason: ended.how } : {},
    );
  }

  /** Bytes of a pending chunk, or of its staged edit (a copy of the model's; its shared buffers are long released). */
  getPayload(id: string, staged = false): Buffer {
    const p = this.pendingOrThrow(id);
    if (staged && !p.staged) {
      throw new EngineError(
        'NKE_NO_STAGED_EDIT',
        `payload ${id} has no staged edit (nke stage ${id} FILE stages one)`,
      );
    }
    return Buffer.from(staged ? p.staged! : p.data);
  }

  /** Keeps an edit for a pending chunk (undefined clears it); nothing is sent until a replace verdict. */
  stageEdit(id: string, bytes: Buffer | undefined): PendingView {
    const p = this.pendingOrThrow(id);
    if (bytes && bytes.length > NKE_MODIFIED_MAX_LEN) {
      throw new EngineError(
        'NKE_BAD_VERDICT',
        `an edit of ${bytes.length} bytes exceeds ${NKE_MODIFIED_MAX_LEN}`,
      );
    }
    if (!this.model.setStaged(p, bytes)) {
      throw new EngineError(
        'NKE_BAD_VERDICT',
        `staging ${bytes!.length} bytes would pass the helper's bound on bytes kept for pending payloads (${this.model.pendingBytesLimit})`,
      );
    }
    return { ...p.view };
  }

  /**
   * Keeps a pending chunk held until heldAt + holdMs (NKE_ACT_EXTEND): the
   * filter never moves a deadline earlier, and never past its cap on the
   * total hold. Returns the view with the filter's new deadline.
   */
  extendHold(id: string, holdMs: number): PendingView {
    const p = this.pendingOrThrow(id);
    if (!this.client?.isOpen) throw new EngineError('NKE_NOT_CONNECTED', 'the filter is not connected');
    if (!Number.isInteger(holdMs) || holdMs < 1 || holdMs > NKE_HOLD_TOTAL_MAX_MS) {
      throw new EngineError(
        'NKE_BAD_VERDICT',
        `payload ${id}: a hold of ${holdMs} ms is outside 1..${NKE_HOLD_TOTAL_MAX_MS} (the filter's cap on a chunk's total hold)`,
      );
    }
    this.client.respond(
      encodeResponse([{ chunk_id: p.chunkId, sock: p.sock, action: Action.Extend, hold_ms: holdMs }], []),
    );
    // The filter's own rule, so the view shows the real deadline: the hold
    // counts from when the chunk was held and never shrinks.
    const deadline = Math.max(p.view.deadline, p.view.heldAt + holdMs);
    return this.model.setPendingDeadline(id, deadline) ?? p.view;
  }

  /** A person's verdict on a pending chunk. */
  verdict(id: string, action: 'allow' | 'drop' | 'replace', bytes?: Buffer): void {
    const p = this.pendingOrThrow(id);
    if (!this.client?.isOpen) throw new EngineError('NKE_NOT_CONNECTED', 'the filter is not connected');
    if (action === 'replace') {
      bytes ??= p.staged;
      if (!bytes) {
        throw new EngineError(
          'NKE_BAD_VERDICT',
          `replace needs the new bytes, and payload ${id} has no staged edit (nke stage ${id} FILE)`,
        );
      }
      if (bytes.length > NKE_MODIFIED_MAX_LEN) {
        throw new EngineError(
          'NKE_BAD_VERDICT',
          `replacement of ${bytes.length} bytes exceeds ${NKE_MODIFIED_MAX_LEN}`,
        );
      }
    }
    const v: Verdict[] = [];
    if (action === 'replace') {
      this.stage(p.chunkId, p.sock, bytes!);
      v.push({
        chunk_id: p.chunkId,
        sock: p.sock,
        action: Action.AllowModified,
        modified_len: bytes!.length,
      });
    } else {
      v.push({
        chunk_id: p.chunkId,
        sock: p.sock,
        action: action === 'drop' ? Action.Drop : Action.Allow,
        modified_len: 0,
      });
    }
    // No releases: the buffers went back when the chunk was held (decide()).
    this.client.respond(encodeResponse(v, []));
    this.model.removePending(id, action);
    this.model.verdict(id, action, action === 'replace' ? bytes!.length : p.view.size);
    this.history?.decide(
      p.chunkId,
      action === 'replace' ? Fate.Edited : action === 'drop' ? Fate.Dropped : Fate.Allowed,
      nowUs(),
      action === 'replace' ? bytes : undefined,
    );
  }

  /** Stages modified bytes, in order, before the ALLOW_MODIFIED verdict that uses them. */
  private stage(chunkId: bigint, sock: { slot: number; gen: number }, bytes: Buffer): void {
    for (const piece of encodePutDataPieces(chunkId, sock, bytes)) this.client!.putData(toBuffer(piece));
  }

  /**
   * One batch from the reader thread: decode, model, decide, answer once.
   * _wakeNs (when the reader thread woke for it, process.hrtime's clock) is
   * for latency measurement only (test/bench/helper-bench.js wraps this).
   */
  onRecords(records: Buffer, _wakeNs?: number, captured?: Buffer): void {
    const list: Notification[] = [];
    this.model.countMalformed(decodeBatch(records, list));
    const verdicts: Verdict[] = [];
    const releases: Release[] = [];
    const positions = this.history ? capturedPositions(captured) : undefined;
    for (const n of list) {
      this.model.apply(n);
      if (this.history) this.toHistory(n, positions);
      if (n.type === NotifyType.State) {
        // A verdict that came too late is skipped by the filter and only
        // counted there: the Filter view shows it as soon as it moves.
        if (this.lastState?.staleEntries !== n.state.staleEntries) this.filterStateChanged = true;
        this.lastState = n.state;
      }
      if (n.type === NotifyType.Detach || n.type === NotifyType.Event) {
        // The socket is closing or gone: no more data completes a match, so
        // what is carried for it is decided now, with the bytes it has.
        const ended = n.type === NotifyType.Detach ? [Direction.In, Direction.Out] : directionsEnded(n.event);
        for (const dir of ended) {
          const flow = `${sockKey(n.sock)}/${dir}`;
          this.flushCarry(flow, verdicts, releases);
          this.cutTails.delete(flow);
        }
      }
      if (n.type === NotifyType.ChunkReleased) {
        this.forgetCarried(n.chunkId, RELEASE_REASONS[n.reason] ?? `reason ${n.reason}`);
      }
      if (n.type !== NotifyType.Data) continue;
      // Reported only: nothing to decide; the addon's reader already gave
      // its buffers back (open's releaseReported).
      if (!(n.flags & NKE_DATA_F_HELD)) continue;
      this.decide(n, verdicts, releases);
    }
    this.answer(verdicts, releases);
    this.history?.flush();
  }

  /** One notification into the capture history (after the model took it). */
  private toHistory(n: Notification, positions: Map<bigint, number> | undefined): void {
    const h = this.history!;
    const key = sockKey(n.sock);
    const t = this.clock.toWallUs(n.timeNs);
    switch (n.type) {
      case NotifyType.Attach:
        h.socketAttached(key, {
          pid: n.pid,
          process: n.comm,
          family: n.family === NKE_AF_INET6 ? 6 : 4,
          protocol: n.protocol === NKE_PROTO_TCP ? 'tcp' : n.protocol === NKE_PROTO_UDP ? 'udp' : 'other',
        });
        return;
      case NotifyType.Owner:
        // An accepted socket's process, learned after attach (the kext's sf_accept).
        h.socketInfo(key, { pid: n.pid, process: n.comm });
        return;
      case NotifyType.ConnectIn:
      case NotifyType.ConnectOut:
      case NotifyType.Bound:
      case NotifyType.Listen: {
        const s = this.model.sockets.get(key);
        // An adopted socket: what the model knows of it (attach came before this helper).
        if (s) h.socketInfo(key, { pid: s.view.pid, process: s.view.process });
        const connect =
          n.type === NotifyType.ConnectOut ? 'local' : n.type === NotifyType.ConnectIn ? 'remote' : undefined;
        h.socketAddrs(key, captureEndpoint(n.local), captureEndpoint(n.remote), connect, t);
        return;
      }
      case NotifyType.Detach:
        h.socketClosed(key, t);
        return;
      case NotifyType.Data:
        h.data(
          key,
          {
            chunkId: n.chunkId,
            direction: n.direction,
            flags: n.flags,
            streamOffset: n.streamOffset,
            size: n.size,
            held: (n.flags & NKE_DATA_F_HELD) !== 0,
            peer: captureEndpoint(n.addr),
          },
          positions?.get(n.chunkId) ?? -1,
          t,
        );
        return;
      case NotifyType.DataGap:
        h.gap(key, n.direction, n.streamOffset, n.size, n.flags, n.reason, t);
        return;
      case NotifyType.ChunkReleased:
        h.decide(n.chunkId, RELEASE_FATES[n.reason] ?? Fate.ReleasedSent, t);
        return;
      default:
        return;
    }
  }

  private decide(n: DataNotification, verdicts: Verdict[], releases: Release[]): void {
    // The filter says which rule of which config held it: no second matcher here.
    const decision = this.paused
      ? { kind: 'pass' as const }
      : decideHeld(this.installed.get(n.captureTag), n.rule);
    const release = () => {
      for (const b of n.buffers) releases.push({ chunk_id: n.chunkId, buffer: b });
    };
    const flow = `${sockKey(n.sock)}/${n.direction}`;
    const carry = this.carries.get(flow);
    if (carry && (decision.kind !== 'rewrite' || decision.rewrite !== carry.rewrite)) {
      // A different decision for this flow now: the carried chunks go first, as they are.
      this.flushCarry(flow, verdicts, releases);
    }
    if (decision.kind === 'rewrite') {
      this.decideRewrite(flow, n, decision.rewrite, verdicts, releases);
      return;
    }
    if (decision.kind === 'person') {
      if (this.model.canHoldBytes(n.size)) {
        // Copy the bytes into the model and release the shared buffers in
        // this same response; the chunk itself stays held in the filter
        // until verdict() (or its deadline).
        let data: Buffer | undefined;
        try {
          data = this.client!.readChunk(n.buffers, n.size);
        } catch (e) {
          this.log('warn', `reading held chunk ${n.chunkId} failed, passing it: ${(e as Error).message}`);
        }
        if (data) {
          const p = this.model.addPending(n, data);
          release();
          this.emit('pending', p);
          return;
        }
      } else {
        // Over the bound for pending bytes: fail open, count it.
        this.model.counters.pendingOverLimit = (this.model.counters.pendingOverLimit ?? 0) + 1;
      }
    }
    verdicts.push({ chunk_id: n.chunkId, sock: n.sock, action: Action.Allow, modified_len: 0 });
    release();
    this.model.verdict(n.chunkId.toString(), 'auto-pass', n.size);
    this.history?.decide(n.chunkId, Fate.AutoPassed, nowUs());
  }

  /**
   * A held chunk under a rewrite rule. Its bytes are copied and its buffers
   * released now. The flow's carried chunks (if any) and this one are decided
   * together: if their bytes end in a proper prefix of `find` (after the last
   * match), all stay held until the next chunk of the flow, the carry timer,
   * or the socket's detach; otherwise the first chunk gets the rewritten bytes
   * of all of them (ALLOW_MODIFIED) and the others DROP, so the stream
   * carries the rewritten bytes in order; unchanged bytes -> ALLOW each.
   */
  private decideRewrite(
    flow: string,
    n: DataNotification,
    rewrite: CompiledRewrite,
    verdicts: Verdict[],
    releases: Release[],
  ): void {
    let data: Buffer;
    try {
      data = this.client!.readChunk(n.buffers, n.size);
    } catch (e) {
      // Fail open: this chunk's original goes on; carried ones before it first.
      this.log('warn', `reading chunk ${n.chunkId} failed, passing the original: ${(e as Error).message}`);
      this.flushCarry(flow, verdicts, releases);
      verdicts.push({ chunk_id: n.chunkId, sock: n.sock, action: Action.Allow, modified_len: 0 });
      for (const b of n.buffers) releases.push({ chunk_id: n.chunkId, buffer: b });
      this.model.verdict(n.chunkId.toString(), 'auto-pass', n.size);
      this.history?.decide(n.chunkId, Fate.AutoPassed, nowUs());
      return;
    }
    for (const b of n.buffers) releases.push({ chunk_id: n.chunkId, buffer: b });
    this.checkCutTail(flow, n, data);
    const prev = this.carries.get(flow);
    if (prev) {
      clearTimeout(prev.timer);
      this.carries.delete(flow);
    }
    const chunks = prev ? [...prev.chunks, n] : [n];
    const all = prev ? Buffer.concat([prev.data, data]) : data;
    const tail = carryLength(all, rewrite.find, lastMatchEnd(all, rewrite.find));
    if (tail === 0) {
      this.decideTogether(chunks, all, rewrite, verdicts);
      return;
    }
    if (chunks.length >= CARRY_MAX_CHUNKS || all.length + rewrite.find.length > NKE_MODIFIED_MAX_LEN) {
      // No room to carry more: decided now, and a match finishing in the next chunk is reported if it comes.
      this.decideTogether(chunks, all, rewrite, verdicts);
      this.cutTails.set(flow, {
        tail: all.subarray(all.length - tail),
        rewrite,
        why: `${chunks.length} chunks (${all.length} bytes) were carried, the most one edit takes`,
      });
      return;
    }
    // The first chunk's deadline bounds the wait; the rule's window (if any) counts from this chunk.
    const decideBy =
      prev?.decideBy ?? Date.now() + n.deadlineMs - Math.min(CARRY_DEADLINE_MARGIN_MS, n.deadlineMs / 4);
    const window = rewrite.carryMs ?? this.carryMs;
    const wait = Math.max(0, Math.min(decideBy - Date.now(), window ?? Infinity));
    const byWindow = window !== undefined && Date.now() + window < decideBy;
    const timer = setTimeout(() => {
      const v: Verdict[] = [];
      const r: Release[] = [];
      const c = this.carries.get(flow);
      this.flushCarry(flow, v, r);
      if (c) {
        const t = carryLength(c.data, c.rewrite.find, lastMatchEnd(c.data, c.rewrite.find));
        this.cutTails.set(flow, {
          tail: c.data.subarray(c.data.length - t),
          rewrite: c.rewrite,
          why: byWindow
            ? `the rule's carry window (carryMs ${window}) ended`
            : "the first chunk's deadline was near (raise holdTimeoutMs for longer pauses)",
        });
      }
      this.answer(v, r);
      this.history?.flush();
    }, wait);
    timer.unref();
    this.carries.set(flow, { chunks, data: all, rewrite, timer, decideBy });
  }

  /**
   * The flow's previous carry was decided before its stream went on: if this
   * chunk completes the match its tail began, the match went out
   * unrewritten. Said, and counted, so a rule that "replaces every
   * occurrence" never misses one silently.
   */
  private checkCutTail(flow: string, n: DataNotification, data: Buffer): void {
    const cut = this.cutTails.get(flow);
    if (!cut) return;
    this.cutTails.delete(flow);
    const find = cut.rewrite.find;
    const need = find.length - cut.tail.length;
    if (need <= 0 || data.length < need) return;
    if (
      find.compare(data, 0, need, cut.tail.length) !== 0 ||
      cut.tail.compare(find, 0, cut.tail.length) !== 0
    ) {
      return;
    }
    this.missedRewrite(
      cut.rewrite,
      `a match split between socket ${sockKey(n.sock)}'s chunk before ${n.chunkId} and chunk ${n.chunkId} went out unrewritten: ${cut.why}`,
    );
  }

  private missedRewrite(rewrite: CompiledRewrite, why: string, count = 1): void {
    this.model.counters.rewriteMatchesMissed = (this.model.counters.rewriteMatchesMissed ?? 0) + count;
    const name = rewrite.rule.name ? ` "${rewrite.rule.name}"` : '';
    this.log('warn', `rewrite rule${name} (find ${JSON.stringify(rewrite.find.toString('latin1'))}): ${why}`);
  }

  /** Decides a flow's carried chunks now, with the bytes they have. */
  private flushCarry(flow: string, verdicts: Verdict[], _releases: Release[]): void {
    const c = this.carries.get(flow);
    if (!c) return;
    clearTimeout(c.timer);
    this.carries.delete(flow);
    this.decideTogether(c.chunks, c.data, c.rewrite, verdicts);
  }

  /** The filter released a carried chunk itself (deadline, socket closing): forget that carry. */
  private forgetCarried(chunkId: bigint, reason: string): void {
    for (const [flow, c] of this.carries) {
      if (c.chunks.some((x) => x.chunkId === chunkId)) {
        clearTimeout(c.timer);
        this.carries.delete(flow);
        // The filter sent (or dropped) that chunk as it was: the matches in
        // the carried bytes went out unrewritten. Never silent.
        const matches = countMatches(c.data, c.rewrite.find);
        this.missedRewrite(
          c.rewrite,
          `the filter released chunk ${chunkId} of socket ${sockKey(c.chunks[0].sock)} itself (${reason}) while the rule waited for the rest of a match: ${c.data.length} carried bytes went out as they were${matches ? ` with ${matches} match${matches > 1 ? 'es' : ''} unrewritten` : ''}`,
          Math.max(matches, 1),
        );
        // The other chunks of it are still held: they pass as they are.
        const v: Verdict[] = [];
        for (const x of c.chunks) {
          if (x.chunkId === chunkId) continue;
          v.push({ chunk_id: x.chunkId, sock: x.sock, action: Action.Allow, modified_len: 0 });
          this.model.verdict(x.chunkId.toString(), 'auto-pass', x.size);
          this.history?.decide(x.chunkId, Fate.AutoPassed, nowUs());
        }
        this.answer(v, []);
        this.history?.flush();
        return;
      }
    }
  }

  /** Verdicts for consecutive held chunks of one flow whose bytes are `all` (buffers already released). */
  private decideTogether(
    chunks: DataNotification[],
    all: Buffer,
    rewrite: CompiledRewrite,
    verdicts: Verdict[],
  ): void {
    const out = rewriteBytes(all, rewrite.find, rewrite.replace);
    if (out && out.length <= NKE_MODIFIED_MAX_LEN) {
      const first = chunks[0];
      this.stage(first.chunkId, first.sock, out);
      verdicts.push({
        chunk_id: first.chunkId,
        sock: first.sock,
        action: Action.AllowModified,
        modified_len: out.length,
      });
      this.model.verdict(first.chunkId.toString(), 'rewrite', out.length);
      this.history?.decide(first.chunkId, Fate.Rewritten, nowUs(), out);
      for (const x of chunks.slice(1)) {
        // Its bytes are already in `out`, re-injected with the first chunk.
        verdicts.push({ chunk_id: x.chunkId, sock: x.sock, action: Action.Drop, modified_len: 0 });
        this.history?.decide(x.chunkId, Fate.Merged, nowUs());
      }
      return;
    }
    if (out) {
      this.log(
        'warn',
        `rewrite of ${all.length} bytes grows past ${NKE_MODIFIED_MAX_LEN}: passing the originals`,
      );
    }
    for (const x of chunks) {
      verdicts.push({ chunk_id: x.chunkId, sock: x.sock, action: Action.Allow, modified_len: 0 });
      this.model.verdict(x.chunkId.toString(), 'auto-pass', x.size);
      this.history?.decide(x.chunkId, Fate.AutoPassed, nowUs());
    }
  }

  /** Sends verdicts and releases in as few NKE_SEL_RESPOND calls as the ABI allows. */
  private answer(verdicts: Verdict[], releases: Release[]): void {
    if (!this.client?.isOpen) return;
    let vi = 0;
    let ri = 0;
    while (vi < verdicts.length || ri < releases.length) {
      const v = verdicts.slice(vi, vi + NKE_RESPONSE_MAX_VERDICTS);
      const r = releases.slice(ri, ri + NKE_RESPONSE_MAX_RELEASES);
      vi += v.length;
      ri += r.length;
      try {
        this.client.respond(encodeResponse(v, r));
      } catch (e) {
        // A rejected message changes nothing in the filter; log it. The
        // filter's deadlines still release every chunk named (fail-open).
        this.log('error', `the filter refused a response: ${(e as Error).message}`);
      }
    }
  }
}
