// Shared plumbing for the four NKE views: a TreeView over one part of the
// model whose refresh is event-driven, debounced, and deferred while the view
// is hidden (polling or refreshing hidden trees burns CPU for nothing). A
// provider that knows which rows a change touched (rowsFor) redraws those
// rows only: on a busy machine a whole-tree refresh per batch is most of the
// extension host's work, and it replaces the rows under a person's click.
import * as vscode from 'vscode';
import type { ModelChange, ModelPart, WorkbenchModel } from '../model/workbenchModel';

export const refreshDelayMs = 100;

export abstract class ModelTreeProvider<T> implements vscode.TreeDataProvider<T>, vscode.Disposable {
  private readonly changed = new vscode.EventEmitter<T | T[] | undefined>();
  readonly onDidChangeTreeData = this.changed.event;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private visible = false;
  private stale = false;
  /** rows to redraw at the next refresh; undefined with `stale`: the whole tree */
  private staleRows: Set<T> | undefined;
  private readonly subscription: { dispose(): void };
  private readonly refreshed = new vscode.EventEmitter<void>();
  /** Fires after each refresh was announced (the view's description follows). */
  readonly onDidRefresh = this.refreshed.event;

  constructor(
    protected readonly model: WorkbenchModel,
    private readonly parts: readonly ModelPart[],
  ) {
    this.subscription = model.onDidChange((e) => {
      if (!this.parts.includes(e.part)) return;
      const rows = this.rowsFor(e);
      if (rows === undefined) this.scheduleRefresh();
      else if (rows.length) this.scheduleRefresh(rows);
    });
  }

  /**
   * The rows a model change redraws: undefined for the whole tree (the
   * default), [] for none. Rows are the provider's own element objects, the
   * same ones getChildren returned (VS Code finds a row by its element).
   */
  protected rowsFor(_e: ModelChange): T[] | undefined {
    return undefined;
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

  /** Asks for a (debounced) refresh that is not caused by a model change: of these rows, or the whole tree. */
  protected requestRefresh(rows?: T[]): void {
    if (rows && !rows.length) return;
    this.scheduleRefresh(rows);
  }

  /**
   * Re-renders these rows only (a countdown), keeping the view's rows and
   * their handles in place: a whole-tree refresh every second makes a click
   * or an inline action land on a row that is being replaced.
   */
  protected refreshRows(rows: T[]): void {
    if (this.visible && !this.timer && rows.length) this.changed.fire(rows);
  }

  private scheduleRefresh(rows?: T[]): void {
    if (!rows) this.staleRows = undefined;
    else if (!this.stale) this.staleRows = new Set(rows);
    else if (this.staleRows) for (const r of rows) this.staleRows.add(r);
    this.stale = true;
    // Hidden: the whole tree when it shows again (rows may be gone by then).
    if (!this.visible) this.staleRows = undefined;
    if (!this.visible || this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.stale = false;
      const rows = this.staleRows;
      this.staleRows = undefined;
      this.changed.fire(rows ? [...rows] : undefined);
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
