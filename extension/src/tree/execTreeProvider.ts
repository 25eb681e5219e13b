// The Exec Events view: the process tree by parent pid. An exec whose parent
// was not itself seen exec'ing is a root.
import * as vscode from 'vscode';
import type { ExecRecord, WorkbenchModel } from '../model/workbenchModel';
import { ModelTreeProvider } from './modelTreeView';

export class ExecTreeProvider extends ModelTreeProvider<ExecRecord> {
  constructor(model: WorkbenchModel) {
    super(model, ['execs']);
  }

  getChildren(element?: ExecRecord): ExecRecord[] {
    const execs = this.model.execs();
    // The newest exec of a pid is the parent of later children (a pid can exec
    // several times; its children belong to the image that forked them).
    const latestByPid = new Map<number, ExecRecord>();
    const parentOf = new Map<ExecRecord, ExecRecord | undefined>();
    for (const e of execs) {
      const parent = latestByPid.get(e.ppid);
      parentOf.set(e, parent && parent.seq < e.seq ? parent : undefined);
      latestByPid.set(e.pid, e);
    }
    return execs.filter((e) => parentOf.get(e) === element);
  }

  getTreeItem(e: ExecRecord): vscode.TreeItem {
    const hasChildren = this.getChildren(e).length > 0;
    const name = e.path.slice(e.path.lastIndexOf('/') + 1) || e.path;
    const item = new vscode.TreeItem(
      name,
      hasChildren ? vscode.TreeItemCollapsibleState.Expanded : vscode.TreeItemCollapsibleState.None,
    );
    item.id = `exec:${e.seq}`;
    item.description = `pid ${e.pid} · uid ${e.uid}`;
    item.tooltip = `${e.path}\npid ${e.pid}, ppid ${e.ppid}, uid ${e.uid}\n${new Date(e.time).toISOString()}`;
    item.contextValue = 'exec';
    item.iconPath = new vscode.ThemeIcon('terminal');
    return item;
  }
}
