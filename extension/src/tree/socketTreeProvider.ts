// The Sockets view: processes, and under each its sockets with peer, state
// and bytes, short enough to read at the default sidebar width (the rest is
// in the tooltip: protocol, both addresses, the process's path and
// ancestry). A socket that closed stays in place, marked closed, for a few
// seconds, then moves into its process's "closed (N)" group; the model
// forgets it after nke.closedSocketsKeptSeconds. A process row shows its
// live byte rates.
//
// Rows are stable objects, one per process, socket and closed group, kept
// while the model keeps what they show, so a change redraws the rows it
// touched (a busy machine moves bytes on thousands of sockets a second):
// bytes alone redraw their process rows once a second (the rates), a
// socket's state its own row, a socket added, removed or aged out its
// process row; only a process that appears, goes, or has no live socket
// any more reorders the whole tree.
import * as vscode from 'vscode';
import type { Endpoint } from '../shared/helperProtocol';
import type { ModelChange, SocketView, WorkbenchModel } from '../model/workbenchModel';
import { formatBytes, ModelTreeProvider, refreshDelayMs } from './modelTreeView';
import { plural } from '../shared/plural';

export type SocketNode =
  | { kind: 'process'; pid: number; name: string }
  | { kind: 'socket'; socket: SocketView }
  | { kind: 'closed'; pid: number; count: number };

const attachedEarlierNote =
  "Opened before this window connected to the filter (another window held it, or an earlier helper): the filter names a socket's process and addresses only when it attaches. Its bytes and state from now on are real.";

/** How long a closed socket stays in place before it moves into "closed (N)". */
export const recentlyClosedMs = 5000;
/** Rates are sampled at most this often (and refreshed this often while bytes move). */
const rateSampleMs = 1000;
/**
 * Socket rows VS Code is asked to send again, a second, for rates: a
 * process row redrawn is redrawn with all its children, so on a machine
 * with thousands of sockets the processes take turns (oldest drawn first)
 * and each one's rate is a few seconds old at most.
 */
export const rateRowsPerSecond = 2000;

/** "127.0.0.1:80", "[::1]:53"; undefined when the filter has not seen it yet. */
export function formatEndpoint(e: Endpoint | undefined): string | undefined {
  if (!e) return undefined;
  return e.address.includes(':') ? `[${e.address}]:${e.port}` : `${e.address}:${e.port}`;
}

/** Bytes in a few characters: 77, 2.0K, 3.1M. */
function shortBytes(n: number): string {
  if (n < 1024) return String(n);
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)}K`;
  if (n < 1024 * 1024 * 1024) return `${(n / (1024 * 1024)).toFixed(1)}M`;
  return `${(n / (1024 * 1024 * 1024)).toFixed(1)}G`;
}

function protoName(s: SocketView): string {
  return `${s.protocol.toUpperCase()}${s.family === 'ipv6' ? '6' : ''}`;
}

/** The socket's row label: its peer and which way it was made (the protocol when not TCP). */
export function socketLabel(s: SocketView): string {
  if (s.attachedEarlier && !s.remote && !s.local) return `socket ${s.id}`;
  const proto = s.protocol === 'tcp' ? '' : `${protoName(s)} `;
  const remote = formatEndpoint(s.remote);
  const localPort = s.local ? `:${s.local.port}` : '(unbound)';
  if (s.state === 'listening') return `${proto}listening ${localPort}`;
  if (!remote) return `${proto || `${protoName(s)} `}${localPort}`;
  return `${proto}${s.incoming ? '←' : '→'} ${remote}`;
}

interface RateSample {
  at: number;
  bytesIn: number;
  bytesOut: number;
  rateIn: number;
  rateOut: number;
}

type ProcessNode = Extract<SocketNode, { kind: 'process' }>;
type SocketRow = Extract<SocketNode, { kind: 'socket' }>;
type ClosedNode = Extract<SocketNode, { kind: 'closed' }>;

export class SocketTreeProvider extends ModelTreeProvider<SocketNode> {
  private readonly rates = new Map<number, RateSample>();
  private ticker: ReturnType<typeof setTimeout> | undefined;
  private readonly processRows = new Map<number, ProcessNode>();
  /** a socket's row, by the model's object for it (the same while the socket lives there) */
  private socketRows = new WeakMap<SocketView, SocketRow>();
  private readonly closedRows = new Map<number, ClosedNode>();
  /** pids shown at the root by the last getChildren(), and whether each had a live socket */
  private rootLive = new Map<number, boolean>();
  /** pids whose sockets' bytes moved since their row was last drawn */
  private readonly bytesMoved = new Set<number>();
  /** when the ticker fires */
  private tickAt = 0;
  /** when process rows were last redrawn for their rates */
  private ratesDrawnAt = 0;
  /**
   * Socket rows' items as last made, by row: a row whose socket did
   * not change (the model says which did) is not made again when its
   * process row is redrawn, so redrawing a process of a thousand sockets
   * costs a thousand lookups.
   */
  private items = new WeakMap<SocketNode, vscode.TreeItem>();

  constructor(
    model: WorkbenchModel,
    private readonly now: () => number = Date.now,
  ) {
    super(model, ['sockets', 'execs']);
  }

  private isRecent(s: SocketView, now: number): boolean {
    if (s.state !== 'closed') return true;
    const at = this.model.closedSince(s.id) ?? s.closedAt ?? 0;
    return now - at < recentlyClosedMs;
  }

  /** The row of a process (the same object while it has sockets in the model). */
  processNode(pid: number): SocketNode {
    let n = this.processRows.get(pid);
    if (!n) this.processRows.set(pid, (n = { kind: 'process', pid, name: '' }));
    n.name = this.model.socketsOf(pid)[0]?.process ?? n.name;
    return n;
  }

  private socketNode(socket: SocketView): SocketRow {
    let n = this.socketRows.get(socket);
    if (!n) this.socketRows.set(socket, (n = { kind: 'socket', socket }));
    return n;
  }

  private closedNode(pid: number, count: number): ClosedNode {
    let n = this.closedRows.get(pid);
    if (!n) this.closedRows.set(pid, (n = { kind: 'closed', pid, count }));
    n.count = count;
    return n;
  }

  /** Forgets the rows of sockets and processes the model no longer has. */
  private pruneRows(): void {
    for (const pid of this.processRows.keys()) {
      if (!this.model.socketsOf(pid).length) {
        this.processRows.delete(pid);
        this.closedRows.delete(pid);
        this.rates.delete(pid);
      }
    }
  }

  protected override rowsFor(e: ModelChange): SocketNode[] | undefined {
    if (e.part !== 'sockets') return []; // execs: only tooltips (made on hover) show them
    const c = e.sockets;
    if (!c || c.reset) {
      this.processRows.clear();
      this.socketRows = new WeakMap();
      this.closedRows.clear();
      this.items = new WeakMap();
      return undefined;
    }
    for (const s of c.changed) {
      const row = this.socketRows.get(s);
      if (row) this.items.delete(row);
    }
    const live = (pid: number) => this.model.socketsOf(pid).some((s) => s.state !== 'closed');
    // A process appeared, went, or has no live socket any more (or again): the order changes.
    for (const pid of c.liveness) {
      if (this.rootLive.get(pid) !== (this.model.socketsOf(pid).length ? live(pid) : undefined)) {
        return undefined;
      }
    }
    const rows = new Set<SocketNode>();
    for (const pid of [...c.structural, ...c.liveness]) {
      const n = this.processRows.get(pid);
      if (n) rows.add(n);
    }
    for (const s of c.changed) {
      if (rows.has(this.processRows.get(s.pid)!)) continue; // redrawn with its process
      const n = this.socketRows.get(s);
      if (n) rows.add(n);
    }
    for (const pid of c.bytes) this.bytesMoved.add(pid);
    if (c.bytes.size || c.changed.size || c.structural.size) this.scheduleTick(this.now());
    return [...rows];
  }

  getChildren(element?: SocketNode): SocketNode[] {
    const now = this.now();
    if (!element) {
      // Processes with live sockets first: the view is about what is alive.
      // Then the others, the one whose socket closed last first (a program
      // that just ended is what a person looks for, not one from minutes ago).
      this.pruneRows();
      const live = (pid: number) => this.model.socketsOf(pid).some((s) => s.state !== 'closed');
      const lastClosed = (pid: number) =>
        Math.max(0, ...this.model.socketsOf(pid).map((s) => this.model.closedSince(s.id) ?? s.closedAt ?? 0));
      const pids = this.model.socketPids();
      const livePids = pids.filter(live);
      const ended = pids.filter((p) => !live(p)).sort((a, b) => lastClosed(b) - lastClosed(a));
      this.rootLive = new Map([
        ...livePids.map((p) => [p, true] as const),
        ...ended.map((p) => [p, false] as const),
      ]);
      const nodes = [...livePids, ...ended].map((pid) => this.processNode(pid));
      this.scheduleTick(now);
      return nodes;
    }
    if (element.kind === 'process') {
      const all = this.model.socketsOf(element.pid);
      const shown: SocketNode[] = [];
      for (const s of all) if (this.isRecent(s, now)) shown.push(this.socketNode(s));
      const closed = all.length - shown.length;
      if (closed) shown.push(this.closedNode(element.pid, closed));
      this.bytesMoved.delete(element.pid);
      return shown;
    }
    if (element.kind === 'closed') {
      return this.model
        .socketsOf(element.pid)
        .filter((s) => !this.isRecent(s, now))
        .reverse() // newest first
        .map((socket) => this.socketNode(socket));
    }
    return [];
  }

  getParent(n: SocketNode): SocketNode | undefined {
    if (n.kind === 'process') return undefined;
    const pid = n.kind === 'socket' ? n.socket.pid : n.pid;
    if (n.kind === 'socket' && !this.isRecent(n.socket, this.now())) {
      return this.closedRows.get(pid) ?? this.closedNode(pid, 0);
    }
    return this.processNode(pid);
  }

  /**
   * The next moment the tree changes on its own (a socket moves into
   * "closed (N)", one ages out, rates move), and what to redraw then.
   */
  private scheduleTick(now: number): void {
    if (!this.isVisible()) {
      if (this.ticker) clearTimeout(this.ticker);
      this.ticker = undefined;
      return;
    }
    let next = Infinity;
    const recentPids = new Set<number>();
    for (const pid of this.model.socketPids()) {
      for (const s of this.model.socketsOf(pid)) {
        if (s.state !== 'closed') continue;
        const at = this.model.closedSince(s.id) ?? s.closedAt ?? 0;
        if (now - at < recentlyClosedMs) {
          next = Math.min(next, at + recentlyClosedMs);
          recentPids.add(pid);
        }
      }
    }
    const expiry = this.model.nextClosedExpiry();
    if (expiry !== undefined) next = Math.min(next, expiry);
    // Rates: soon after bytes start to move (a burst after a quiet spell shows
    // at once), then once a sample interval while they keep moving.
    const moving = () =>
      this.bytesMoved.size > 0 || [...this.rates.values()].some((r) => r.rateIn || r.rateOut);
    if (moving()) next = Math.min(next, Math.max(now + refreshDelayMs, this.ratesDrawnAt + rateSampleMs));
    // A ticker due sooner stays (batches come 30 times a second: each must not push it back).
    const at = Math.max(50, next - now + 20) + now;
    if (this.ticker && this.tickAt <= at) return;
    if (this.ticker) clearTimeout(this.ticker);
    this.ticker = undefined;
    if (next === Infinity) return;
    this.tickAt = at;
    this.ticker = setTimeout(() => {
      this.ticker = undefined;
      const t = this.now();
      const rows = new Set<SocketNode>();
      // Sockets closed long enough ago move into their process's "closed (N)".
      for (const pid of recentPids) {
        const moved = this.model
          .socketsOf(pid)
          .some(
            (s) =>
              s.state === 'closed' &&
              t - (this.model.closedSince(s.id) ?? s.closedAt ?? 0) >= recentlyClosedMs,
          );
        const n = this.processRows.get(pid);
        if (moved && n) rows.add(n);
      }
      // Aged out of the model: their processes' rows (or the whole tree, when a process goes).
      const pruned = {
        structural: new Set<number>(),
        changed: new Set<SocketView>(),
        bytes: new Set<number>(),
        liveness: new Set<number>(),
      };
      if (this.model.pruneClosed(pruned)) {
        for (const pid of pruned.structural) {
          const n = this.processRows.get(pid);
          if (!this.model.socketsOf(pid).length || !n) {
            this.requestRefresh();
            return;
          }
          rows.add(n);
        }
      }
      // Rates: the processes whose bytes moved, and those whose rate falls
      // back to 0, within the budget of rows (the longest undrawn first).
      for (const [pid, r] of this.rates) if (r.rateIn || r.rateOut) this.bytesMoved.add(pid);
      const due = [...this.bytesMoved].sort(
        (a, b) => (this.rates.get(a)?.at ?? 0) - (this.rates.get(b)?.at ?? 0),
      );
      let budget = (rateRowsPerSecond * rateSampleMs) / 1000;
      for (const pid of due) {
        const n = this.processRows.get(pid);
        if (!n) {
          this.bytesMoved.delete(pid);
          continue;
        }
        const cost = this.model.socketsOf(pid).length + 1;
        if (cost > budget && budget < (rateRowsPerSecond * rateSampleMs) / 1000) break; // next turn
        budget -= cost;
        rows.add(n);
        this.bytesMoved.delete(pid);
      }
      if (rows.size) this.ratesDrawnAt = t;
      if (rows.size) this.requestRefresh([...rows]);
      this.scheduleTick(t);
    }, at - now);
  }

  override setVisible(visible: boolean): void {
    super.setVisible(visible);
    if (!visible && this.ticker) {
      clearTimeout(this.ticker);
      this.ticker = undefined;
    }
  }

  override dispose(): void {
    if (this.ticker) clearTimeout(this.ticker);
    super.dispose();
  }

  /** Bytes a second in and out of a process's sockets, sampled at most once a second. */
  private rate(pid: number): RateSample {
    const now = this.now();
    let bytesIn = 0;
    let bytesOut = 0;
    for (const s of this.model.socketsOf(pid)) {
      bytesIn += s.bytesIn;
      bytesOut += s.bytesOut;
    }
    const prev = this.rates.get(pid);
    if (prev && now - prev.at < rateSampleMs) return prev;
    const dt = prev ? (now - prev.at) / 1000 : 0;
    const sample: RateSample = {
      at: now,
      bytesIn,
      bytesOut,
      rateIn: prev && dt > 0 ? Math.max(0, (bytesIn - prev.bytesIn) / dt) : 0,
      rateOut: prev && dt > 0 ? Math.max(0, (bytesOut - prev.bytesOut) / dt) : 0,
    };
    this.rates.set(pid, sample);
    return sample;
  }

  /**
   * The tooltip, made when VS Code shows it (hover), not at each refresh:
   * an ancestry per row made the refresh of 10 000 sockets too slow.
   */
  resolveTreeItem(item: vscode.TreeItem, n: SocketNode): vscode.TreeItem {
    // A copy: socket rows' items are kept between redraws, and a tooltip on
    // one would be shown stale at the next hover (VS Code resolves only
    // items without one).
    const resolved = new vscode.TreeItem(item.label ?? '', item.collapsibleState);
    Object.assign(resolved, item);
    resolved.tooltip = this.tooltip(n);
    return resolved;
  }

  /** What the tooltip of a row says (both addresses, bytes, the process's path and ancestry). */
  tooltip(n: SocketNode): string {
    if (n.kind === 'process') {
      const r = this.rate(n.pid);
      const live = this.model.socketsOf(n.pid).filter((s) => s.state !== 'closed').length;
      const chain = this.model.ancestry(n.pid);
      return [
        `${n.name} (pid ${n.pid}): ${plural(live, 'open socket')}`,
        `now ↓${formatBytes(Math.round(r.rateIn))}/s ↑${formatBytes(Math.round(r.rateOut))}/s; in all ↓${formatBytes(r.bytesIn)} ↑${formatBytes(r.bytesOut)}`,
        ...(chain.length ? [chain.map((e) => `${e.path} (pid ${e.pid})`).join('\n  ← ')] : []),
        ...(n.pid === 0 && !n.name ? [attachedEarlierNote] : []),
      ].join('\n');
    }
    if (n.kind === 'closed') {
      return `Sockets of pid ${n.pid} that closed more than ${recentlyClosedMs / 1000} s ago; forgotten after nke.closedSocketsKeptSeconds`;
    }
    const s = n.socket;
    const local = formatEndpoint(s.local) ?? '(unbound)';
    const remote = formatEndpoint(s.remote);
    const chain = this.model.ancestry(s.pid);
    return [
      `${protoName(s)} ${local}${remote ? ` ${s.incoming ? '←' : '→'} ${remote}` : ''}: ${s.state}`,
      `↓${formatBytes(s.bytesIn)} ↑${formatBytes(s.bytesOut)}; socket ${s.id} of ${s.process} (pid ${s.pid}, uid ${s.uid})`,
      ...(chain.length
        ? [`${chain[0].path}`, ...chain.slice(1).map((e) => `  ← ${e.path} (pid ${e.pid})`)]
        : ['(no exec of this process seen)']),
      ...(s.attachedEarlier ? [attachedEarlierNote] : []),
    ].join('\n');
  }

  getTreeItem(n: SocketNode): vscode.TreeItem {
    if (n.kind === 'process') {
      const unknown = n.pid === 0 && !n.name;
      const item = new vscode.TreeItem(
        unknown ? 'process not known' : `${n.name} (${n.pid})`,
        vscode.TreeItemCollapsibleState.Expanded,
      );
      item.id = `process:${n.pid}`;
      const r = this.rate(n.pid);
      const live = this.model.socketsOf(n.pid).filter((s) => s.state !== 'closed').length;
      item.description = `${live} open · ↓${shortBytes(Math.round(r.rateIn))}/s ↑${shortBytes(Math.round(r.rateOut))}/s`;
      item.contextValue = 'process';
      item.iconPath = new vscode.ThemeIcon('server-process');
      return item;
    }
    if (n.kind === 'closed') {
      const item = new vscode.TreeItem(`closed (${n.count})`, vscode.TreeItemCollapsibleState.Collapsed);
      item.id = `closed:${n.pid}`;
      item.contextValue = 'closedSockets';
      item.iconPath = new vscode.ThemeIcon('history');
      return item;
    }
    const s = n.socket;
    const kept = this.items.get(n);
    if (kept) return kept;
    const item = new vscode.TreeItem(socketLabel(s));
    this.items.set(n, item);
    item.id = `socket:${s.id}`;
    // The state only: with the peer it fits the default sidebar width at
    // this depth (with the bytes too it was cut off); the bytes are in the
    // tooltip and the process row shows its rates.
    item.description = s.state;
    item.contextValue = s.state === 'closed' ? 'closedSocket' : 'socket';
    item.iconPath = new vscode.ThemeIcon(
      s.state === 'closed' ? 'debug-disconnect' : s.state === 'listening' ? 'radio-tower' : 'plug',
    );
    return item;
  }
}
