// The helper's engine: owns the filter client and the event socket (addon),
// feeds the live model, applies the rules to every held chunk and answers the
// filter. Uninteresting data is answered here, in the same batch it arrived
// in, with no round trip to any UI; only chunks a rule holds for a person
// wait for verdict().
import { EventEmitter } from 'node:events';
import type { FilterStatus, RulesConfig, Snapshot, UpdateBatch } from '../shared/helperProtocol';
import { LiveModel, type PendingEntry, sockKey } from './model';
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
  type Flow,
  rewriteBytes,
} from './rules';
import {
  Action,
  CaptureMode,
  DATA_F_HELD,
  decodeBatch,
  decodeFilterState,
  encodeCaptureConfig,
  encodePutDataPieces,
  encodeResponse,
  type FilterState,
  MODIFIED_MAX_LEN,
  type Notification,
  NotifyType,
  type Release,
  RESPONSE_MAX_RELEASES,
  RESPONSE_MAX_VERDICTS,
  RuleAction,
  type Verdict,
} from './wire';

export class EngineError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

export interface EngineOptions {
  historyLimit?: number;
  /** Bound on the bytes kept for pending payloads (default 64 MiB); beyond it held chunks pass. */
  pendingBytesLimit?: number;
  /** Max update batches a second sent to listeners (default 30). */
  updatesPerSecond?: number;
  addon?: NativeAddon;
  log?: (level: 'info' | 'warn' | 'error', message: string) => void;
}

type DataNotification = Extract<Notification, { type: NotifyType.Data }>;

export class FilterEngine extends EventEmitter<{
  update: [UpdateBatch];
  filterClosed: [{ code: string; message: string }];
  pending: [PendingEntry];
}> {
  readonly model: LiveModel;
  private rules: CompiledRules = compileRules(DEFAULT_RULES);
  private paused = false;
  private client?: NativeFilterClient;
  private kev?: NativeKevSocket;
  private sessionId?: bigint;
  private lastError?: { code: string; message: string };
  private lastState?: FilterState;
  private flushTimer?: NodeJS.Timeout;
  private readonly log: NonNullable<EngineOptions['log']>;
  private readonly addonOverride?: NativeAddon;
  private readonly flushMs: number;

  constructor(opts: EngineOptions = {}) {
    super();
    this.model = new LiveModel(opts.historyLimit, opts.pendingBytesLimit);
    this.log = opts.log ?? (() => {});
    this.addonOverride = opts.addon;
    this.flushMs = Math.ceil(1000 / (opts.updatesPerSecond ?? 30));
  }

  private get addon(): NativeAddon {
    return this.addonOverride ?? loadAddon();
  }

  get connected(): boolean {
    return !!this.client?.isOpen;
  }

  status(): FilterStatus {
    let state: FilterState | undefined = this.lastState;
    if (this.client?.isOpen) {
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
      state: state && this.connected ? ({ ...state } as unknown as Record<string, number>) : undefined,
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
      historySize: this.model.historySize,
    };
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
        (records) => {
          // Never let an exception escape into the addon's callback: log it,
          // the filter's deadlines release whatever was not answered.
          try {
            this.onRecords(records);
          } catch (e) {
            this.log('error', `processing notifications failed: ${(e as Error).stack ?? e}`);
          }
        },
        (err) => this.onFilterClosed(err),
      );
      this.sessionId = reply.sessionId;
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
      this.log('error', `installing the rules failed: ${(e as Error).message}`);
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
    const cfg = this.paused
      ? encodeCaptureConfig(CaptureMode.Nothing, RuleAction.Pass, 0, [])
      : encodeCaptureConfig(k.mode, k.defaultAction, k.holdTimeoutMs, k.rules);
    this.client!.setCapture(cfg);
  }

  private startFlushing(): void {
    if (this.flushTimer) return;
    // One timer, at most 1000/flushMs batches a second, only when something changed.
    this.flushTimer = setInterval(() => this.flushUpdates(), this.flushMs);
    this.flushTimer.unref();
  }

  flushUpdates(): void {
    if (!this.model.isDirty) return;
    const batch = this.model.takeUpdate();
    this.emit('update', batch);
  }

  dispose(): void {
    if (this.flushTimer) clearInterval(this.flushTimer);
    this.flushTimer = undefined;
    this.closeNative();
  }

  /** Bytes of a pending chunk (a copy of the model's; its shared buffers are long released). */
  getPayload(id: string): Buffer {
    const p = this.model.pending.get(id);
    if (!p) {
      throw new EngineError('NKE_UNKNOWN_PAYLOAD', `no pending payload ${id} (already decided or released)`);
    }
    return Buffer.from(p.data);
  }

  /** A person's verdict on a pending chunk. */
  verdict(id: string, action: 'allow' | 'drop' | 'replace', bytes?: Buffer): void {
    const p = this.model.pending.get(id);
    if (!p) {
      throw new EngineError('NKE_UNKNOWN_PAYLOAD', `no pending payload ${id} (already decided or released)`);
    }
    if (!this.client?.isOpen) throw new EngineError('NKE_NOT_CONNECTED', 'the filter is not connected');
    if (action === 'replace') {
      if (!bytes) throw new EngineError('NKE_BAD_VERDICT', 'replace needs the new bytes');
      if (bytes.length > MODIFIED_MAX_LEN) {
        throw new EngineError(
          'NKE_BAD_VERDICT',
          `replacement of ${bytes.length} bytes exceeds ${MODIFIED_MAX_LEN}`,
        );
      }
    }
    const v: Verdict[] = [];
    if (action === 'replace') {
      this.stage(p.chunkId, p.sock, bytes!);
      v.push({ chunkId: p.chunkId, sock: p.sock, action: Action.AllowModified, modifiedLen: bytes!.length });
    } else {
      v.push({
        chunkId: p.chunkId,
        sock: p.sock,
        action: action === 'drop' ? Action.Drop : Action.Allow,
        modifiedLen: 0,
      });
    }
    // No releases: the buffers went back when the chunk was held (decide()).
    this.client.respond(encodeResponse(v, []));
    this.model.removePending(id, action);
    this.model.verdict(id, action, action === 'replace' ? bytes!.length : p.view.size);
  }

  /** Stages modified bytes, in order, before the ALLOW_MODIFIED verdict that uses them. */
  private stage(chunkId: bigint, sock: { slot: number; gen: number }, bytes: Buffer): void {
    for (const piece of encodePutDataPieces(chunkId, sock, bytes)) this.client!.putData(piece);
  }

  private flowOf(n: DataNotification): Flow {
    const s = this.model.sockets.get(sockKey(n.sock));
    const remote = n.addr;
    return {
      pid: s?.view.pid ?? 0,
      comm: s?.view.process ?? '',
      direction: n.direction,
      protocol: s?.protocolCode ?? 0,
      family: s?.familyCode ?? 0,
      localAddr: s?.localRaw ?? new Uint8Array(16),
      localPort: s?.view.local?.port ?? 0,
      remoteAddr: remote?.raw ?? s?.remoteRaw ?? new Uint8Array(16),
      remotePort: remote?.port ?? s?.view.remote?.port ?? 0,
    };
  }

  /** One batch from the reader thread: decode, model, decide, answer once. */
  onRecords(records: Buffer): void {
    const list: Notification[] = [];
    this.model.counters.malformedRecords += decodeBatch(records, list);
    const verdicts: Verdict[] = [];
    const releases: Release[] = [];
    for (const n of list) {
      this.model.apply(n);
      if (n.type === NotifyType.State) this.lastState = n.state;
      if (n.type !== NotifyType.Data) continue;
      if (!(n.flags & DATA_F_HELD)) {
        // Reported only: nothing to decide, give the buffers back at once.
        for (const b of n.buffers) releases.push({ chunkId: n.chunkId, buffer: b });
        continue;
      }
      this.decide(n, verdicts, releases);
    }
    this.answer(verdicts, releases);
  }

  private decide(n: DataNotification, verdicts: Verdict[], releases: Release[]): void {
    const decision = this.paused ? { kind: 'pass' as const } : decideHeld(this.rules, this.flowOf(n));
    const release = () => {
      for (const b of n.buffers) releases.push({ chunkId: n.chunkId, buffer: b });
    };
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
    if (decision.kind === 'rewrite') {
      try {
        const data = this.client!.readChunk(n.buffers, n.size);
        const out = rewriteBytes(data, decision.rewrite.find, decision.rewrite.replace);
        if (out && out.length <= MODIFIED_MAX_LEN) {
          this.stage(n.chunkId, n.sock, out);
          verdicts.push({
            chunkId: n.chunkId,
            sock: n.sock,
            action: Action.AllowModified,
            modifiedLen: out.length,
          });
          release();
          this.model.verdict(n.chunkId.toString(), 'rewrite', out.length);
          return;
        }
      } catch (e) {
        // Fail open: the original goes on.
        this.log(
          'warn',
          `rewrite of chunk ${n.chunkId} failed, passing the original: ${(e as Error).message}`,
        );
      }
    }
    verdicts.push({ chunkId: n.chunkId, sock: n.sock, action: Action.Allow, modifiedLen: 0 });
    release();
    this.model.verdict(n.chunkId.toString(), 'auto-pass', n.size);
  }

  /** Sends verdicts and releases in as few NKE_SEL_RESPOND calls as the ABI allows. */
  private answer(verdicts: Verdict[], releases: Release[]): void {
    if (!this.client?.isOpen) return;
    let vi = 0;
    let ri = 0;
    while (vi < verdicts.length || ri < releases.length) {
      const v = verdicts.slice(vi, vi + RESPONSE_MAX_VERDICTS);
      const r = releases.slice(ri, ri + RESPONSE_MAX_RELEASES);
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
