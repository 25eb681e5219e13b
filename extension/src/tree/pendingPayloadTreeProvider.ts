// The Pending Payloads view: data the filter holds for the user, with its
// direction, size, socket, the time left before it is released unchanged (the
// filter's real deadline, extended while the payload is open in an editor)
// and the size change of an edit staged for it. Clicking a row opens the
// payload as text.
import * as vscode from 'vscode';
import type { PendingView, WorkbenchModel } from '../model/workbenchModel';
import type { PayloadChange } from '../payload/payloadStore';
import { formatBytes, ModelTreeProvider } from './modelTreeView';
import { formatEndpoint } from './socketTreeProvider';

/** How often "s left" counts down while payloads are held and the view is visible. */
const countdownMs = 1000;

/** What the view needs of the payload store: staged edits and when they change. */
export interface StagedEdits {
  staged(id: string): Uint8Array | undefined;
  onDidChange(listener: (e: PayloadChange) => void): { dispose(): void };
}

/** "edited 77 B → 80 B (+3)" */
export function describeEdit(original: number, edited: number): string {
  const d = edited - original;
  return `edited ${formatBytes(original)} → ${formatBytes(edited)} (${d >= 0 ? '+' : ''}${d})`;
}

export class PendingPayloadTreeProvider extends ModelTreeProvider<PendingView> {
  private countdown: ReturnType<typeof setInterval> | undefined;
  private readonly pendingChanges: { dispose(): void };
  private readonly editChanges?: { dispose(): void };

  constructor(
    model: WorkbenchModel,
    private readonly now: () => number = Date.now,
    private readonly edits?: StagedEdits,
  ) {
    super(model, ['pending']);
    this.pendingChanges = model.onDidChange((e) => {
      if (e.part === 'pending') this.updateCountdown();
    });
    // Only a staged edit changes a row's text; deadlines tick with the countdown.
    this.editChanges = edits?.onDidChange((e) => {
      if (e.what === 'staged') this.requestRefresh();
    });
  }

  override setVisible(visible: boolean): void {
    super.setVisible(visible);
    this.updateCountdown();
  }

  /** The clock ticks only while someone can see it and something is held. */
  private updateCountdown(): void {
    const wanted = this.isVisible() && this.model.pending().length > 0;
    if (wanted && !this.countdown) {
      this.countdown = setInterval(() => this.refreshRows(this.model.pending()), countdownMs);
    } else if (!wanted && this.countdown) {
      clearInterval(this.countdown);
      this.countdown = undefined;
    }
  }

  override dispose(): void {
    if (this.countdown) clearInterval(this.countdown);
    this.pendingChanges.dispose();
    this.editChanges?.dispose();
    super.dispose();
  }

  getChildren(element?: PendingView): PendingView[] {
    if (element) return [];
    // Oldest first, and stable: a deadline extended while a payload is open
    // must not move rows under the pointer.
    return this.model.pending().sort((a, b) => a.heldAt - b.heldAt || Number(a.id) - Number(b.id));
  }

  getTreeItem(p: PendingView): vscode.TreeItem {
    const peer = formatEndpoint(p.remote) ?? formatEndpoint(p.local) ?? `socket ${p.socketId}`;
    const item = new vscode.TreeItem(
      `${p.direction === 'in' ? '↓ in' : '↑ out'} ${formatBytes(p.size)} ${peer}`,
    );
    item.id = `pending:${p.id}`;
    const left = Math.max(0, p.deadline - this.now());
    const staged = this.edits?.staged(p.id);
    const edit = staged ? ` · ${describeEdit(p.size, staged.length)}` : '';
    item.description = `${p.process} · ${(left / 1000).toFixed(1)} s left${edit}`;
    item.tooltip =
      `payload ${p.id} on socket ${p.socketId} of ${p.process} (pid ${p.pid}), stream offset ${p.streamOffset}` +
      (staged
        ? `\nan edit is staged (${describeEdit(p.size, staged.length)}): Reinject Edited Data sends it`
        : '') +
      '\nclick to open it as text';
    item.contextValue = 'pendingPayload';
    item.iconPath = new vscode.ThemeIcon(staged ? 'edit' : p.direction === 'in' ? 'arrow-down' : 'arrow-up');
    // No arguments: a row's command with arguments goes stale when the
    // countdown refreshes the row under the click ("actual command not
    // found"); the click selects the row, and the command opens the selection.
    item.command = { title: 'Open Payload', command: 'nke.openSelectedPayload' };
    return item;
  }
}
