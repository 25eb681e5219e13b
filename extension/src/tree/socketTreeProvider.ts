// The Sockets view: processes, and under each its sockets with addresses,
// protocol, state and bytes.
import * as vscode from 'vscode';
import type { SocketRecord, WorkbenchModel } from '../model/workbenchModel';
import { formatBytes, ModelTreeProvider } from './modelTreeView';

export type SocketNode =
  { kind: 'process'; pid: number; name: string } | { kind: 'socket'; socket: SocketRecord };

export class SocketTreeProvider extends ModelTreeProvider<SocketNode> {
  constructor(model: WorkbenchModel) {
    super(model, ['sockets']);
  }

  getChildren(element?: SocketNode): SocketNode[] {
    const sockets = this.model.sockets();
    if (!element) {
      const byPid = new Map<number, string>();
      for (const s of sockets) byPid.set(s.pid, s.processName);
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
      item.contextValue = 'process';
      item.iconPath = new vscode.ThemeIcon('server-process');
      return item;
    }
    const s = n.socket;
    const proto = `${s.protocol.toUpperCase()}${s.family === 6 ? '6' : ''}`;
    const item = new vscode.TreeItem(`${proto} ${s.local}${s.remote ? ` → ${s.remote}` : ''}`);
    item.id = `socket:${s.id}`;
    item.description = `${s.state} · ↓${formatBytes(s.bytesIn)} ↑${formatBytes(s.bytesOut)}`;
    item.tooltip = `socket ${s.id} of ${s.processName} (${s.pid})`;
    item.contextValue = 'socket';
    item.iconPath = new vscode.ThemeIcon('plug');
    return item;
  }
}
