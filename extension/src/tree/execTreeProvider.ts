// The Exec Events view: the process tree by parent pid. An exec whose parent
// was not itself seen exec'ing is a root.
import * as vscode from 'vscode';
import type { ExecView, WorkbenchModel } from '../model/workbenchModel';
import { ModelTreeProvider } from './modelTreeView';

export class ExecTreeProvider extends ModelTreeProvider<ExecView> {
  constructor(model: WorkbenchModel) {
    super(model, ['execs']);
  }

  getChildren(element?: ExecView): ExecView[] {
    const execs = this.model.execs();
    // The newest exec of a pid before a child is that child's parent (a pid
    // can exec several times; its children belong to the image that forked
    // them). execs() is in order of arrival.
    const latestByPid = new Map<number, ExecView>();
    const parentOf = new Map<string, ExecView | undefined>();
    for (const e of execs) {
      parentOf.set(e.id, latestByPid.get(e.ppid));
      latestByPid.set(e.pid, e);
    }
    return execs.filter((e) => parentOf.get(e.id)?.id === element?.id);
  }

  getTreeItem(e: ExecView): vscode.TreeItem {
    const hasChildren = this.getChildren(e).length > 0;
    const name = e.path.slice(e.path.lastIndexOf('/') + 1) || e.path;
    const item = new vscode.TreeItem(
      name,
      hasChildren ? vscode.TreeItemCollapsibleState.Expanded : vscode.TreeItemCollapsibleState.None,
    );
    item.id = `exec:${e.id}`;
    item.description = `pid ${e.pid} · uid ${e.uid}${e.complete ? '' : ' · path incomplete'}${e.truncated ? ' · path truncated' : ''}`;
    item.tooltip = `${e.path}\npid ${e.pid}, ppid ${e.ppid}, uid ${e.uid}\n${new Date(e.time).toISOString()}`;
    item.contextValue = 'exec';
    item.iconPath = new vscode.ThemeIcon('terminal');
    return item;
  }
}
