// The Sockets view: processes, and under each its sockets with addresses,
// protocol, state and bytes.
import * as vscode from 'vscode';
import type { Endpoint } from '../shared/helperProtocol';
import type { SocketView, WorkbenchModel } from '../model/workbenchModel';
import { formatBytes, ModelTreeProvider } from './modelTreeView';

export type SocketNode =
  { kind: 'process'; pid: number; name: string } | { kind: 'socket'; socket: SocketView };

/** "127.0.0.1:80", "[::1]:53"; undefined when the filter has not seen it yet. */
export function formatEndpoint(e: Endpoint | undefined): string | undefined {
  if (!e) return undefined;
  return e.address.includes(':') ? `[${e.address}]:${e.port}` : `${e.address}:${e.port}`;
}

export class SocketTreeProvider extends ModelTreeProvider<SocketNode> {
  constructor(model: WorkbenchModel) {
    super(model, ['sockets']);
  }

  getChildren(element?: SocketNode): SocketNode[] {
    const sockets = this.model.sockets();
    if (!element) {
      const byPid = new Map<number, string>();
      for (const s of sockets) byPid.set(s.pid, s.process);
      return [...byPid].sort((a, b) => a[0] - b[0]).map(([pid, name]) => ({ kind: 'process', pid, name }));
    }
    if (element.kind === 'process') {
      return sockets.filter((s) => s.pid === element.pid).map((socket) => ({ kind: 'socket', socket }));
    }
    return [];
  }

  getTreeItem(n: SocketNode): vscode.TreeItem {
    if (n.kind === 'process') {
      const item = new vscode.TreeItem(`${n.name} (${n.pid})`, vscode.TreeItemCollapsibleState.Expanded);
      item.id = `process:${n.pid}`;
      item.contextValue = 'process';
      item.iconPath = new vscode.ThemeIcon('server-process');
      return item;
    }
    const s = n.socket;
    const proto = `${s.protocol.toUpperCase()}${s.family === 'ipv6' ? '6' : ''}`;
    const local = formatEndpoint(s.local) ?? '(unbound)';
    const remote = formatEndpoint(s.remote);
    const item = new vscode.TreeItem(`${proto} ${local}${remote ? ` → ${remote}` : ''}`);
    item.id = `socket:${s.id}`;
    item.description = `${s.state} · ↓${formatBytes(s.bytesIn)} ↑${formatBytes(s.bytesOut)}`;
    item.tooltip = `socket ${s.id} of ${s.process} (pid ${s.pid}, uid ${s.uid})`;
    item.contextValue = 'socket';
    item.iconPath = new vscode.ThemeIcon(s.state === 'closed' ? 'debug-disconnect' : 'plug');
    return item;
  }
}
