// The Exec Events view: the process tree by parent pid, scoped by default to
// the processes under the filter and their descendants (nke.execScope); the
// view's description says how many of the machine's other execs it hides.
// An exec whose parent was not itself seen exec'ing is a root.
import * as vscode from 'vscode';
import type { ExecView, WorkbenchModel } from '../model/workbenchModel';
import { ModelTreeProvider } from './modelTreeView';
import { plural } from '../shared/plural';

/** The last path component: what a person calls the program. */
export function execName(e: ExecView): string {
  return e.path.slice(e.path.lastIndexOf('/') + 1) || e.path;
}

export class ExecTreeProvider extends ModelTreeProvider<ExecView> {
  constructor(model: WorkbenchModel) {
    super(model, ['execs']);
  }

  getChildren(element?: ExecView): ExecView[] {
    const tree = this.model.execTree();
    if (!element) return tree.roots;
    return tree.childrenOf.get(element.id) ?? [];
  }

  getParent(element: ExecView): ExecView | undefined {
    return this.model.execTree().parentOf.get(element.id);
  }

  /** The view's description: the scope, and how many execs it hides. */
  override describe(): string | undefined {
    const { inScope, hidden } = this.model.execCounts();
    if (this.model.execScope === 'machine') {
      return `machine-wide · ${this.model.execs().length.toLocaleString('en-US')} kept`;
    }
    // Short: the header leaves little room at the default sidebar width.
    return `${inScope.toLocaleString('en-US')} under the filter · ${hidden.toLocaleString('en-US')} hidden`;
  }

  getTreeItem(e: ExecView): vscode.TreeItem {
    const hasChildren = (this.model.execTree().childrenOf.get(e.id)?.length ?? 0) > 0;
    const item = new vscode.TreeItem(
      execName(e),
      hasChildren ? vscode.TreeItemCollapsibleState.Expanded : vscode.TreeItemCollapsibleState.None,
    );
    item.id = `exec:${e.id}`;
    const marks = [...(e.complete ? [] : ['path incomplete']), ...(e.truncated ? ['path truncated'] : [])];
    item.description = `pid ${e.pid} · uid ${e.uid}${marks.map((m) => ` · ${m}`).join('')}`;
    const sockets = this.model.socketsOf(e.pid).length;
    item.tooltip = [
      e.path,
      `pid ${e.pid}, ppid ${e.ppid}, uid ${e.uid}`,
      ...(e.complete
        ? []
        : ['Path incomplete: a piece of the kernel event never arrived; the gaps show as \ufffd.']),
      ...(e.truncated ? ['Path truncated: longer than the filter carries; this is its start.'] : []),
      ...(e.underShim ? ['Runs under the emulated filter (its shim).'] : []),
      ...(sockets ? [`${plural(sockets, 'socket')} in the Sockets view`] : []),
      new Date(e.time).toISOString(),
    ].join('\n');
    item.contextValue = 'exec';
    item.iconPath = new vscode.ThemeIcon(
      e.complete && !e.truncated ? 'terminal' : 'warning',
      e.complete && !e.truncated ? undefined : new vscode.ThemeColor('problemsWarningIcon.foreground'),
    );
    return item;
  }
}
