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

export type { Counters, ExecView, FilterStatus, PendingRemovalReason, PendingView, SocketView };

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

export interface ModelChange {
  part: ModelPart;
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
  events: [],
  counters,
});

export class WorkbenchModel {
  private linkState: LinkState;
  private counterValues: Counters = emptyCounters();
  private readonly socketsById = new Map<string, SocketView>();
  /** By exec id, in order of arrival (Map keeps insertion order). */
  private readonly execsById = new Map<string, ExecView>();
  private readonly pendingById = new Map<string, PendingView>();
  private readonly listeners = new Set<(e: ModelChange) => void>();
  private readonly removalListeners = new Set<(removed: PendingRemoval[]) => void>();

  constructor(
    mode: FilterMode,
    /** Oldest exec events beyond this many are dropped (nke.historyLimit). */
    private historyLimit: number,
  ) {
    checkLimit(historyLimit);
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

  /** Exec events, oldest first, at most historyLimit of them. */
  execs(): ExecView[] {
    return [...this.execsById.values()];
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
    this.execsById.clear();
    this.pendingById.clear();
    this.apply({
      ...emptyUpdate(s.counters),
      sockets: s.sockets,
      execs: s.execs,
      pendingAdded: s.pending,
      filter: s.filter,
    });
    this.linkState = { ...this.linkState, rules: s.rules };
    for (const part of ['sockets', 'execs', 'pending'] as const) this.fire(part);
    this.fireRemoved(gone);
  }

  /** Applies one batch of changes from the helper (at most ~30 a second). */
  applyUpdate(b: UpdateBatch): void {
    const touched = this.apply(b);
    for (const part of touched) this.fire(part);
    this.fireRemoved(b.pendingRemoved);
  }

  private apply(b: UpdateBatch): Set<ModelPart> {
    const touched = new Set<ModelPart>(['filter']);
    for (const s of b.sockets) this.socketsById.set(s.id, { ...s });
    for (const id of b.socketsRemoved) this.socketsById.delete(id);
    if (b.sockets.length || b.socketsRemoved.length) touched.add('sockets');
    // An exec may come again (its path completed); it keeps its place.
    for (const e of b.execs) this.execsById.set(e.id, { ...e });
    if (b.execs.length) {
      this.trimHistory();
      touched.add('execs');
    }
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
    this.historyLimit = limit;
    if (this.trimHistory()) this.fire('execs');
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
    this.execsById.clear();
    this.pendingById.clear();
    this.counterValues = emptyCounters();
    for (const part of ['filter', 'sockets', 'execs', 'pending'] as const) this.fire(part);
  }

  private trimHistory(): boolean {
    let excess = this.execsById.size - this.historyLimit;
    if (excess <= 0) return false;
    for (const id of this.execsById.keys()) {
      if (excess-- <= 0) break;
      this.execsById.delete(id);
    }
    return true;
  }

  private fire(part: ModelPart): void {
    for (const l of [...this.listeners]) l({ part });
  }

  private fireRemoved(removed: PendingRemoval[]): void {
    if (!removed.length) return;
    for (const l of [...this.removalListeners]) l(removed);
  }
}

function checkLimit(limit: number): void {
  if (!Number.isInteger(limit) || limit < 1) {
    throw new RangeError(`historyLimit must be a positive integer, got ${limit}`);
  }
}
