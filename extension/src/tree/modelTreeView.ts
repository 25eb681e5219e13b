// Shared plumbing for the four NKE views: a TreeView over one part of the
// model whose refresh is event-driven, debounced, and deferred while the view
// is hidden (polling or refreshing hidden trees burns CPU for nothing).
import * as vscode from 'vscode';
import type { ModelPart, WorkbenchModel } from '../model/workbenchModel';

export const refreshDelayMs = 100;

export abstract class ModelTreeProvider<T> implements vscode.TreeDataProvider<T>, vscode.Disposable {
  private readonly changed = new vscode.EventEmitter<T | T[] | undefined>();
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

  /** The rows selected in the view: commands run from the palette or the view's title bar, and a row's click command (see PendingPayloadTreeProvider), read them. */
  selection: readonly T[] = [];
  private selectionWaiters: ((items: readonly T[]) => void)[] = [];

  setSelection(items: readonly T[]): void {
    this.selection = items;
    for (const w of this.selectionWaiters.splice(0)) w(items);
  }

  /**
   * The selection as of a click: a row's click sends the selection change
   * and the row's command separately, in either order, so this waits up to
   * `ms` for a change that may still be on its way (none comes when the
   * clicked row was selected already).
   */
  settledSelection(ms = 500): Promise<readonly T[]> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.selectionWaiters = this.selectionWaiters.filter((w) => w !== done);
        resolve(this.selection);
      }, ms);
      const done = (items: readonly T[]) => {
        clearTimeout(timer);
        resolve(items);
      };
      this.selectionWaiters.push(done);
    });
  }

  protected isVisible(): boolean {
    return this.visible;
  }

  /** Asks for a (debounced) refresh that is not caused by a model change. */
  protected requestRefresh(): void {
    this.scheduleRefresh();
  }

  /**
   * Re-renders these rows only (a countdown), keeping the view's rows and
   * their handles in place: a whole-tree refresh every second makes a click
   * or an inline action land on a row that is being replaced.
   */
  protected refreshRows(rows: T[]): void {
    if (this.visible && !this.timer && rows.length) this.changed.fire(rows);
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
    // Sockets: several can be exported together (NKE: Export Capture).
    canSelectMany: viewId === 'nke.sockets',
  });
  provider.setVisible(view.visible);
  const describe = () => (view.description = provider.describe());
  describe();
  const visibility = view.onDidChangeVisibility((e) => provider.setVisible(e.visible));
  const selection = view.onDidChangeSelection((e) => provider.setSelection(e.selection));
  const refreshed = provider.onDidRefresh(describe);
  return { view, disposable: vscode.Disposable.from(visibility, selection, refreshed, view, provider) };
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
