// The Sockets view: processes, and under each its sockets with peer, state
// and bytes, short enough to read at the default sidebar width (the rest is
// in the tooltip: protocol, both addresses, the process's path and
// ancestry). A socket that closed stays in place, marked closed, for a few
// seconds, then moves into its process's "closed (N)" group; the model
// forgets it after nke.closedSocketsKeptSeconds. A process row shows its
// live byte rates.
import * as vscode from 'vscode';
import type { Endpoint } from '../shared/helperProtocol';
import type { SocketView, WorkbenchModel } from '../model/workbenchModel';
import { formatBytes, ModelTreeProvider } from './modelTreeView';
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

export class SocketTreeProvider extends ModelTreeProvider<SocketNode> {
  private readonly rates = new Map<number, RateSample>();
  private ticker: ReturnType<typeof setTimeout> | undefined;

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

  getChildren(element?: SocketNode): SocketNode[] {
    const now = this.now();
    if (!element) {
      // Processes with live sockets first: the view is about what is alive.
      // Then the others, the one whose socket closed last first (a program
      // that just ended is what a person looks for, not one from minutes ago).
      const live = (pid: number) => this.model.socketsOf(pid).some((s) => s.state !== 'closed');
      const lastClosed = (pid: number) =>
        Math.max(0, ...this.model.socketsOf(pid).map((s) => this.model.closedSince(s.id) ?? s.closedAt ?? 0));
      const pids = this.model.socketPids();
      const ended = pids.filter((p) => !live(p)).sort((a, b) => lastClosed(b) - lastClosed(a));
      const nodes: SocketNode[] = [...pids.filter(live), ...ended].map((pid) => ({
        kind: 'process',
        pid,
        name: this.model.socketsOf(pid)[0].process,
      }));
      this.scheduleTick(now);
      return nodes;
    }
    if (element.kind === 'process') {
      const all = this.model.socketsOf(element.pid);
      const shown: SocketNode[] = all
        .filter((s) => this.isRecent(s, now))
        .map((socket) => ({ kind: 'socket', socket }));
      const closed = all.length - shown.length;
      if (closed) shown.push({ kind: 'closed', pid: element.pid, count: closed });
      return shown;
    }
    if (element.kind === 'closed') {
      return this.model
        .socketsOf(element.pid)
        .filter((s) => !this.isRecent(s, now))
        .reverse() // newest first
        .map((socket) => ({ kind: 'socket', socket }));
    }
    return [];
  }

  getParent(n: SocketNode): SocketNode | undefined {
    if (n.kind === 'process') return undefined;
    const pid = n.kind === 'socket' ? n.socket.pid : n.pid;
    const proc: SocketNode = { kind: 'process', pid, name: this.model.socketsOf(pid)[0]?.process ?? '' };
    if (n.kind === 'socket' && !this.isRecent(n.socket, this.now())) {
      return { kind: 'closed', pid, count: 0 };
    }
    return proc;
  }

  /** The next moment the tree changes on its own (a socket moves into "closed (N)", one ages out, rates move). */
  private scheduleTick(now: number): void {
    if (this.ticker) clearTimeout(this.ticker);
    this.ticker = undefined;
    if (!this.isVisible()) return;
    let next = Infinity;
    for (const pid of this.model.socketPids()) {
      for (const s of this.model.socketsOf(pid)) {
        if (s.state !== 'closed') continue;
        const at = this.model.closedSince(s.id) ?? s.closedAt ?? 0;
        if (now - at < recentlyClosedMs) next = Math.min(next, at + recentlyClosedMs);
      }
    }
    const expiry = this.model.nextClosedExpiry();
    if (expiry !== undefined) next = Math.min(next, expiry);
    if ([...this.rates.values()].some((r) => r.rateIn || r.rateOut)) {
      next = Math.min(next, now + rateSampleMs);
    }
    if (next === Infinity) return;
    this.ticker = setTimeout(
      () => {
        this.ticker = undefined;
        // Pruning fires no model event by itself: the refresh shows it.
        this.model.pruneClosed();
        this.requestRefresh();
      },
      Math.max(50, next - now + 20),
    );
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
    item.tooltip = this.tooltip(n);
    return item;
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
    const item = new vscode.TreeItem(socketLabel(s));
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
