// Shared plumbing for the four NKE views: a TreeView over one part of the
// model whose refresh is event-driven, debounced, and deferred while the view
// is hidden (polling or refreshing hidden trees burns CPU for nothing).
import * as vscode from 'vscode';
import type { ModelPart, WorkbenchModel } from '../model/workbenchModel';

export const refreshDelayMs = 100;

export abstract class ModelTreeProvider<T> implements vscode.TreeDataProvider<T>, vscode.Disposable {
  private readonly changed = new vscode.EventEmitter<T | undefined>();
  readonly onDidChangeTreeData = this.changed.event;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private visible = false;
  private stale = false;
  private readonly subscription: { dispose(): void };
  private readonly refreshed = new vscode.EventEmitter<void>();
  /** Fires after each refresh was announced (the view's description follows). */
  readonly onDidRefresh = this.refreshed.event;

  constructor(
    protected readonly model: WorkbenchModel,
    private readonly parts: readonly ModelPart[],
  ) {
    this.subscription = model.onDidChange((e) => {
      if (this.parts.includes(e.part)) this.scheduleRefresh();
    });
  }

  abstract getTreeItem(element: T): vscode.TreeItem;
  abstract getChildren(element?: T): T[];

  /** The view's description (shown next to its title), if it has one. */
  describe(): string | undefined {
    return undefined;
  }

  setVisible(visible: boolean): void {
    this.visible = visible;
    if (visible && this.stale) this.scheduleRefresh();
  }

  protected isVisible(): boolean {
    return this.visible;
  }

  /** Asks for a (debounced) refresh that is not caused by a model change. */
  protected requestRefresh(): void {
    this.scheduleRefresh();
  }

  private scheduleRefresh(): void {
    this.stale = true;
    if (!this.visible || this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.stale = false;
      this.changed.fire(undefined);
      this.refreshed.fire();
    }, refreshDelayMs);
  }

  dispose(): void {
    if (this.timer) clearTimeout(this.timer);
    this.subscription.dispose();
    this.changed.dispose();
    this.refreshed.dispose();
  }
}

/** Creates the view for a provider and keeps the provider told of its visibility. */
export function createModelTreeView<T>(
  viewId: string,
  provider: ModelTreeProvider<T>,
): { view: vscode.TreeView<T>; disposable: vscode.Disposable } {
  const view = vscode.window.createTreeView(viewId, {
    treeDataProvider: provider,
    showCollapseAll: viewId === 'nke.execEvents' || viewId === 'nke.sockets',
  });
  provider.setVisible(view.visible);
  const describe = () => (view.description = provider.describe());
  describe();
  const visibility = view.onDidChangeVisibility((e) => provider.setVisible(e.visible));
  const refreshed = provider.onDidRefresh(describe);
  return { view, disposable: vscode.Disposable.from(visibility, refreshed, view, provider) };
}

/** Creates the view for a provider and keeps the provider told of its visibility. */
export function registerModelTreeView<T>(viewId: string, provider: ModelTreeProvider<T>): vscode.Disposable {
  return createModelTreeView(viewId, provider).disposable;
}

export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / (1024 * 1024)).toFixed(1)} MiB`;
}
