// The extension's live model: the link to the helper, the filter's status and
// counters, sockets, exec events and pending payloads. It holds the helper
// protocol's own types (shared/helperProtocol.ts): the helper's snapshot and
// update batches are applied as they come, so there is one family of model
// types from the helper to the tree items. Never imports `vscode`, so plain
// mocha tests use it too.
//
// Single-threaded (the extension host's event loop): every mutation runs to
// completion and then fires one change event per part it touched.
import type {
  Counters,
  PendingRemovalReason,
  RulesConfig,
  ExecView,
  FilterStatus,
  PendingView,
  Snapshot,
  SocketView,
  UpdateBatch,
} from '../shared/helperProtocol';
import { emptyCounters } from '../shared/helperProtocol';
import { type ExecScope, ExecStore, type ExecTree } from './execStore';

// The protocol types the views take from here (the model holds them as they come).
export type { Counters, ExecScope, ExecView, PendingView, SocketView };

/** How long closed sockets stay in the model by default (nke.closedSocketsKeptSeconds). */
export const DEFAULT_CLOSED_SOCKETS_KEPT_MS = 300_000;

/** Pending payloads that left the model in one change, and why. */
export type PendingRemoval = { id: string; reason: PendingRemovalReason };

/** Where the filter runs: the Linux user-space emulator or the macOS kext. */
export type FilterMode = 'emulator' | 'kext';

/**
 * This window's link to the filter, as the status bar and Filter view show it:
 * - disconnected: no helper, or the helper is not attached to the filter;
 * - connecting: the helper is starting / opening the filter;
 * - connected / paused: the filter feeds the model live;
 * - failed: the helper died or the filter connection was lost; the model
 *   keeps its last state, marked stale, until Restart or Connect.
 */
export type LinkStatus = 'disconnected' | 'connecting' | 'connected' | 'paused' | 'failed';

export interface LinkState {
  status: LinkStatus;
  mode: FilterMode;
  /** The filter as the helper last reported it (transport, session, its own counters). */
  filter?: FilterStatus;
  /** Why the data shown is no longer live (set with status 'failed'). */
  staleReason?: string;
  /** The command that brings the link back (Restart Helper, or Load Filter when the filter went away). */
  recoverWith?: string;
  /** The rules the helper accepted last (capture default, intercept rules). */
  rules?: RulesConfig;
}

export type ModelPart = 'filter' | 'sockets' | 'execs' | 'pending';

/**
 * What changed among the sockets in one 'sockets' change, so a view can
 * redraw those rows only. SocketView objects stay the same objects while a
 * socket lives in the model (updated in place).
 */
export interface SocketChanges {
  /** the whole socket list was replaced (snapshot, Clear, reset): nothing kept is the same object */
  reset?: boolean;
  /** sockets added, removed, pruned, or given another owner: their processes' rows change */
  structural: Set<number>;
  /** sockets whose state or addresses changed in place (same owner) */
  changed: Set<SocketView>;
  /** pids whose sockets' byte counts alone moved */
  bytes: Set<number>;
  /** pids that went from no live socket to some, or back (the process order changes) */
  liveness: Set<number>;
}

export interface ModelChange {
  part: ModelPart;
  /** with part 'sockets': what changed (absent: assume everything) */
  sockets?: SocketChanges;
}

/** Same shape as vscode.Event, so views can subscribe without adapters. */
export type ModelEvent<T> = (listener: (e: T) => void) => { dispose(): void };

export { emptyCounters };

/** An update with nothing in it; tests and the snapshot path fill in what they need. */
export const emptyUpdate = (counters: Counters = emptyCounters()): UpdateBatch => ({
  sockets: [],
  socketsRemoved: [],
  execs: [],
  pendingAdded: [],
  pendingRemoved: [],
  counters,
});

const noSocketChanges = (): SocketChanges => ({
  structural: new Set(),
  changed: new Set(),
  bytes: new Set(),
  liveness: new Set(),
});

export class WorkbenchModel {
  private linkState: LinkState;
  private counterValues: Counters = emptyCounters();
  private readonly socketsById = new Map<string, SocketView>();
  /** Closed sockets by the time they closed (oldest first), for aging them out. */
  private readonly closedAt = new Map<string, number>();
  /** Sockets by owner pid, rebuilt when the sockets changed (the Sockets view asks per process). */
  private socketsByPidCache?: Map<number, SocketView[]>;
  private readonly execStore: ExecStore;
  private scope: ExecScope = 'underFilter';
  private readonly pendingById = new Map<string, PendingView>();
  private readonly listeners = new Set<(e: ModelChange) => void>();
  /** nke.closedSocketsKeptSeconds, in ms: closed sockets older than this are forgotten. */
  private closedKeptMs = DEFAULT_CLOSED_SOCKETS_KEPT_MS;
  private readonly removalListeners = new Set<(removed: PendingRemoval[]) => void>();

  constructor(
    mode: FilterMode,
    /** Oldest exec events beyond this many are dropped (nke.historyLimit), in each scope. */
    historyLimit: number,
    private readonly now: () => number = Date.now,
  ) {
    checkLimit(historyLimit);
    this.execStore = new ExecStore(historyLimit);
    this.linkState = { status: 'disconnected', mode };
  }

  readonly onDidChange: ModelEvent<ModelChange> = (listener) => {
    this.listeners.add(listener);
    return { dispose: () => this.listeners.delete(listener) };
  };

  /**
   * Pending payloads removed, with the reason (the filter released them, a
   * client answered, the link went away). Fires after the 'pending' change.
   */
  readonly onDidRemovePending: ModelEvent<PendingRemoval[]> = (listener) => {
    this.removalListeners.add(listener);
    return { dispose: () => this.removalListeners.delete(listener) };
  };

  get link(): Readonly<LinkState> {
    return this.linkState;
  }

  /** The helper's counters as of its last batch. */
  get counters(): Readonly<Counters> {
    return this.counterValues;
  }

  /** True while the model shows the last state of a helper that is gone. */
  get stale(): boolean {
    return this.linkState.staleReason !== undefined;
  }

  sockets(): SocketView[] {
    return [...this.socketsById.values()];
  }

  socket(id: string): SocketView | undefined {
    return this.socketsById.get(id);
  }

  /** Sockets of one process (live and closed), in order of arrival. */
  socketsOf(pid: number): SocketView[] {
    if (!this.socketsByPidCache) {
      const m = new Map<number, SocketView[]>();
      for (const s of this.socketsById.values()) {
        let l = m.get(s.pid);
        if (!l) m.set(s.pid, (l = []));
        l.push(s);
      }
      this.socketsByPidCache = m;
    }
    return this.socketsByPidCache.get(pid) ?? [];
  }

  /** Pids owning at least one socket, ascending. */
  socketPids(): number[] {
    this.socketsOf(0);
    return [...this.socketsByPidCache!.keys()].sort((a, b) => a - b);
  }

  /** Exec events, oldest first: every one kept, in and out of the scope (at most historyLimit of each). */
  execs(): ExecView[] {
    return this.execStore.all();
  }

  /** What Exec Events shows: nke.execScope. */
  get execScope(): ExecScope {
    return this.scope;
  }

  setExecScope(scope: ExecScope): void {
    if (scope === this.scope) return;
    this.scope = scope;
    this.fire('execs');
  }

  /** The process tree Exec Events shows (the current scope), built once per change. */
  execTree(): ExecTree {
    return this.execStore.tree(this.scope);
  }

  /** Execs outside the scope the filter reported since Clear, and those in it kept now. */
  execCounts(): { inScope: number; hidden: number } {
    return { inScope: this.execStore.scopedCount, hidden: this.execStore.hiddenCount };
  }

  isExecInScope(e: ExecView): boolean {
    return this.execStore.isInScope(e);
  }

  /** The newest exec of a pid, and its ancestors by ppid (nearest first, at most `depth`). */
  ancestry(pid: number, depth = 8): ExecView[] {
    const chain: ExecView[] = [];
    const seen = new Set<number>();
    for (let p = pid; chain.length < depth && p > 0 && !seen.has(p);) {
      seen.add(p);
      const e = this.execStore.latestOfPid(p);
      if (!e) break;
      chain.push(e);
      p = e.ppid;
    }
    return chain;
  }

  /** When a closed socket closed (the Sockets view groups the older ones). */
  closedSince(id: string): number | undefined {
    return this.closedAt.get(id);
  }

  setClosedSocketsKeptMs(ms: number): void {
    if (!Number.isFinite(ms) || ms < 0) {
      throw new RangeError(`closed sockets kept for ${ms} ms: must be >= 0`);
    }
    this.closedKeptMs = ms;
    if (this.pruneClosed()) this.fire('sockets');
  }

  /**
   * Forgets closed sockets older than nke.closedSocketsKeptSeconds; true
   * when some went (their pids added to `into`, when given).
   */
  pruneClosed(into?: SocketChanges): boolean {
    const limit = this.now() - this.closedKeptMs;
    let pruned = false;
    for (const [id, at] of this.closedAt) {
      if (at > limit) break; // oldest first
      this.closedAt.delete(id);
      const s = this.socketsById.get(id);
      this.socketsById.delete(id);
      if (s) this.noteRemoved(s, into);
      pruned = true;
    }
    return pruned;
  }

  /** A socket left socketsById: the per-pid index follows. */
  private noteRemoved(s: SocketView, into?: SocketChanges): void {
    const list = this.socketsByPidCache?.get(s.pid);
    if (list) {
      const i = list.indexOf(s);
      if (i >= 0) list.splice(i, 1);
      if (!list.length) this.socketsByPidCache!.delete(s.pid);
    }
    into?.structural.add(s.pid);
    into?.liveness.add(s.pid);
  }

  /** A socket joined socketsById (or changed owner): the per-pid index follows. */
  private noteAdded(s: SocketView, into?: SocketChanges): void {
    if (this.socketsByPidCache) {
      let l = this.socketsByPidCache.get(s.pid);
      if (!l) this.socketsByPidCache.set(s.pid, (l = []));
      l.push(s);
    }
    into?.structural.add(s.pid);
    into?.liveness.add(s.pid);
  }

  /** When the oldest closed socket is to be forgotten (a timer's deadline), if any is kept. */
  nextClosedExpiry(): number | undefined {
    for (const at of this.closedAt.values()) return at + this.closedKeptMs;
    return undefined;
  }

  pending(): PendingView[] {
    return [...this.pendingById.values()];
  }

  pendingPayload(id: string): PendingView | undefined {
    return this.pendingById.get(id);
  }

  setLink(update: Partial<LinkState>): void {
    this.linkState = { ...this.linkState, ...update };
    // A live status clears staleness unless the update sets a reason itself.
    if (update.status && update.status !== 'failed' && !('staleReason' in update)) {
      delete this.linkState.staleReason;
      delete this.linkState.recoverWith;
    }
    this.fire('filter');
  }

  /** The helper died or the filter went away: keep what we have, say it is stale. */
  markStale(reason: string, recoverWith: string): void {
    this.setLink({ status: 'failed', staleReason: reason, recoverWith });
  }

  /**
   * Every pending payload is gone at once: the filter released them when its
   * client (the helper) went away or when the filter itself did. Rows left
   * behind would count down to "0.0 s left" and offer verdicts nobody can give.
   */
  releaseAllPending(reason: PendingRemovalReason): void {
    if (this.pendingById.size === 0) return;
    const removed = [...this.pendingById.keys()].map((id) => ({ id, reason }));
    this.pendingById.clear();
    this.fire('pending');
    this.fireRemoved(removed);
  }

  /** Replaces everything with the helper's whole model (on (re)connect). */
  applySnapshot(s: Snapshot): void {
    // Pending payloads the new snapshot does not have were released meanwhile.
    const kept = new Set(s.pending.map((p) => p.id));
    const gone = [...this.pendingById.keys()]
      .filter((id) => !kept.has(id))
      .map((id) => ({ id, reason: 'released' as const }));
    this.socketsById.clear();
    this.closedAt.clear();
    this.socketsByPidCache = undefined;
    this.execStore.clear();
    this.pendingById.clear();
    this.apply({
      ...emptyUpdate(s.counters),
      sockets: s.sockets,
      execs: s.execs,
      pendingAdded: s.pending,
      filter: s.filter,
    });
    this.linkState = { ...this.linkState, rules: s.rules };
    this.fire('sockets', { ...noSocketChanges(), reset: true });
    for (const part of ['execs', 'pending'] as const) this.fire(part);
    this.fireRemoved(gone);
  }

  /** Applies one batch of changes from the helper (at most ~30 a second). */
  applyUpdate(b: UpdateBatch): void {
    const changes = noSocketChanges();
    const touched = this.apply(b, changes);
    for (const part of touched) this.fire(part, part === 'sockets' ? changes : undefined);
    this.fireRemoved(b.pendingRemoved);
  }

  private apply(b: UpdateBatch, changes = noSocketChanges()): Set<ModelPart> {
    const touched = new Set<ModelPart>(['filter']);
    for (const s of b.sockets) {
      const old = this.socketsById.get(s.id);
      if (!old) {
        const v = { ...s };
        this.socketsById.set(s.id, v);
        this.noteAdded(v, changes);
      } else if (old.pid !== s.pid) {
        // Another owner (accepted by another process): it moves between process rows.
        this.noteRemoved(old, changes);
        replaceView(old, s);
        this.noteAdded(old, changes);
      } else {
        if ((old.state === 'closed') !== (s.state === 'closed')) changes.liveness.add(s.pid);
        // In place: the rows VS Code knows keep their element.
        replaceView(old, s);
        changes.changed.add(old);
      }
      if (s.state === 'closed') {
        if (!this.closedAt.has(s.id)) this.closedAt.set(s.id, s.closedAt ?? this.now());
      } else this.closedAt.delete(s.id);
      // A socket's owner is a process under the filter: its execs join the scope.
      if (this.execStore.noteSocketOwner(s.pid)) touched.add('execs');
    }
    for (const [id, bytesIn, bytesOut] of b.bytes ?? []) {
      const v = this.socketsById.get(id);
      if (!v) continue; // not (yet) known here: its whole view comes with the snapshot
      v.bytesIn = bytesIn;
      v.bytesOut = bytesOut;
      changes.bytes.add(v.pid);
    }
    for (const id of b.socketsRemoved) {
      const v = this.socketsById.get(id);
      this.socketsById.delete(id);
      this.closedAt.delete(id);
      if (v) this.noteRemoved(v, changes);
    }
    const pruned = this.pruneClosed(changes);
    if (b.sockets.length || b.socketsRemoved.length || b.bytes?.length || pruned) {
      touched.add('sockets');
    }
    // An exec may come again (its path completed); it keeps its place.
    for (const e of b.execs) this.execStore.add({ ...e });
    if (b.execs.length) touched.add('execs');
    for (const p of b.pendingAdded) this.pendingById.set(p.id, { ...p });
    // Only payloads still here: an update never brings back a removed one.
    for (const p of b.pendingUpdated ?? []) {
      if (this.pendingById.has(p.id)) this.pendingById.set(p.id, { ...p });
    }
    for (const r of b.pendingRemoved) this.pendingById.delete(r.id);
    if (b.pendingAdded.length || b.pendingRemoved.length || b.pendingUpdated?.length) {
      touched.add('pending');
      // The Pending view shows the socket's peer: sockets matter to it too.
    }
    this.counterValues = { ...b.counters };
    if (b.filter) this.applyFilterStatus(b.filter);
    return touched;
  }

  /** The helper's FilterStatus decides connected / paused / disconnected. */
  applyFilterStatus(f: FilterStatus): void {
    const status: LinkStatus = f.connected ? (f.paused ? 'paused' : 'connected') : 'disconnected';
    this.linkState = { mode: this.linkState.mode, status, filter: f, rules: this.linkState.rules };
    this.fire('filter');
  }

  /** Rules the helper has accepted (after nke/setRules, or from its snapshot). */
  setRules(rules: RulesConfig): void {
    this.linkState = { ...this.linkState, rules };
    this.fire('filter');
  }

  setHistoryLimit(limit: number): void {
    checkLimit(limit);
    if (this.execStore.setLimit(limit)) this.fire('execs');
  }

  /** Updates one pending payload (its deadline after an extend) if it is still pending. */
  updatePending(p: PendingView): void {
    if (!this.pendingById.has(p.id)) return;
    this.pendingById.set(p.id, { ...p });
    this.fire('pending');
  }

  /** Forgets sockets, execs and pending payloads; keeps the link's status. */
  clear(): void {
    this.socketsById.clear();
    this.closedAt.clear();
    this.socketsByPidCache = undefined;
    this.execStore.clear();
    this.pendingById.clear();
    this.counterValues = emptyCounters();
    this.fire('sockets', { ...noSocketChanges(), reset: true });
    for (const part of ['filter', 'execs', 'pending'] as const) this.fire(part);
  }

  private fire(part: ModelPart, sockets?: SocketChanges): void {
    const e: ModelChange = sockets ? { part, sockets } : { part };
    for (const l of [...this.listeners]) l(e);
  }

  private fireRemoved(removed: PendingRemoval[]): void {
    if (!removed.length) return;
    for (const l of [...this.removalListeners]) l(removed);
  }
}

/** Makes `v` say what `s` says, keeping `v` the same object (optional fields absent in `s` go). */
function replaceView(v: SocketView, s: SocketView): void {
  for (const k of Object.keys(v) as (keyof SocketView)[]) if (!(k in s)) delete v[k];
  Object.assign(v, s);
}

function checkLimit(limit: number): void {
  if (!Number.isInteger(limit) || limit < 1) {
    throw new RangeError(`historyLimit must be a positive integer, got ${limit}`);
  }
}
