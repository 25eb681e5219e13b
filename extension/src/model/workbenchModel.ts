// The extension's live model: filter state, sockets, exec events and pending
// payloads. The helper-process client feeds it; tree views, the status bar and
// commands read it. It never imports `vscode` so the helper, the CLI and plain
// mocha tests can use it too.
//
// Single-threaded (the extension host's event loop): every mutation runs to
// completion and then fires one change event for the part it touched.

/** Where the filter runs: the Linux user-space emulator or the macOS kext. */
export type FilterMode = 'emulator' | 'kext';

/** Lifecycle of the filter as seen from this window. */
export type FilterStatus = 'disconnected' | 'connecting' | 'connected' | 'paused';

export interface FilterCounters {
  deferred: number;
  passed: number;
  dropped: number;
  injected: number;
  expired: number;
  poolExhausted: number;
}

export interface FilterState {
  status: FilterStatus;
  mode: FilterMode;
  /** ABI version reported by the kext or emulator once connected. */
  abiVersion?: number;
  counters: FilterCounters;
}

export type Protocol = 'tcp' | 'udp';
export type Direction = 'in' | 'out';

export interface SocketRecord {
  /** `handle:sequence`, so a reused socket handle is never confused with its predecessor. */
  id: string;
  pid: number;
  processName: string;
  protocol: Protocol;
  family: 4 | 6;
  local: string;
  remote?: string;
  state: string;
  bytesIn: number;
  bytesOut: number;
}

export interface ExecRecord {
  /** Order of arrival; unique within a model. */
  seq: number;
  pid: number;
  ppid: number;
  uid: number;
  path: string;
  /** Milliseconds since the epoch. */
  time: number;
}

export interface PendingPayload {
  id: string;
  socketId: string;
  direction: Direction;
  size: number;
  /** Milliseconds since the epoch when the filter deferred it. */
  heldAt: number;
  /** Milliseconds since the epoch when the filter releases it unchanged. */
  deadline: number;
}

export type ModelPart = 'filter' | 'sockets' | 'execs' | 'pending';

export interface ModelChange {
  part: ModelPart;
}

/** Same shape as vscode.Event, so views can subscribe without adapters. */
export type ModelEvent<T> = (listener: (e: T) => void) => { dispose(): void };

export const emptyCounters = (): FilterCounters => ({
  deferred: 0,
  passed: 0,
  dropped: 0,
  injected: 0,
  expired: 0,
  poolExhausted: 0,
});

export class WorkbenchModel {
  private filterState: FilterState;
  private readonly socketsById = new Map<string, SocketRecord>();
  private execHistory: ExecRecord[] = [];
  private readonly pendingById = new Map<string, PendingPayload>();
  private readonly listeners = new Set<(e: ModelChange) => void>();
  private nextExecSeq = 1;

  constructor(
    mode: FilterMode,
    /** Oldest exec events beyond this many are dropped (nke.historyLimit). */
    private historyLimit: number,
  ) {
    if (!Number.isInteger(historyLimit) || historyLimit < 1) {
      throw new RangeError(`historyLimit must be a positive integer, got ${historyLimit}`);
    }
    this.filterState = { status: 'disconnected', mode, counters: emptyCounters() };
  }

  readonly onDidChange: ModelEvent<ModelChange> = (listener) => {
    this.listeners.add(listener);
    return { dispose: () => this.listeners.delete(listener) };
  };

  get filter(): Readonly<FilterState> {
    return this.filterState;
  }

  sockets(): SocketRecord[] {
    return [...this.socketsById.values()];
  }

  socket(id: string): SocketRecord | undefined {
    return this.socketsById.get(id);
  }

  /** Exec events, oldest first, at most historyLimit of them. */
  execs(): readonly ExecRecord[] {
    return this.execHistory;
  }

  pending(): PendingPayload[] {
    return [...this.pendingById.values()];
  }

  setFilterState(update: Partial<FilterState>): void {
    this.filterState = {
      ...this.filterState,
      ...update,
      counters: { ...this.filterState.counters, ...update.counters },
    };
    this.fire('filter');
  }

  upsertSocket(s: SocketRecord): void {
    this.socketsById.set(s.id, { ...s });
    this.fire('sockets');
  }

  removeSocket(id: string): void {
    if (this.socketsById.delete(id)) this.fire('sockets');
  }

  addExec(e: Omit<ExecRecord, 'seq'>): ExecRecord {
    const rec = { ...e, seq: this.nextExecSeq++ };
    this.execHistory.push(rec);
    this.trimHistory();
    this.fire('execs');
    return rec;
  }

  setHistoryLimit(limit: number): void {
    if (!Number.isInteger(limit) || limit < 1) {
      throw new RangeError(`historyLimit must be a positive integer, got ${limit}`);
    }
    this.historyLimit = limit;
    if (this.trimHistory()) this.fire('execs');
  }

  addPending(p: PendingPayload): void {
    if (!this.socketsById.has(p.socketId)) {
      throw new Error(`pending payload ${p.id} refers to unknown socket ${p.socketId}`);
    }
    this.pendingById.set(p.id, { ...p });
    this.fire('pending');
  }

  removePending(id: string): void {
    if (this.pendingById.delete(id)) this.fire('pending');
  }

  /** Forgets sockets, execs and pending payloads; keeps the filter's status. */
  clear(): void {
    this.socketsById.clear();
    this.execHistory = [];
    this.pendingById.clear();
    this.filterState = { ...this.filterState, counters: emptyCounters() };
    for (const part of ['filter', 'sockets', 'execs', 'pending'] as const) this.fire(part);
  }

  private trimHistory(): boolean {
    const excess = this.execHistory.length - this.historyLimit;
    if (excess <= 0) return false;
    this.execHistory = this.execHistory.slice(excess);
    return true;
  }

  private fire(part: ModelPart): void {
    for (const l of [...this.listeners]) l({ part });
  }
}
