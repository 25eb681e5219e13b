// The Pending Payloads view: data the filter holds for the user, with its
// direction, size, socket and the time left before it is released unchanged.
import * as vscode from 'vscode';
import type { PendingView, WorkbenchModel } from '../model/workbenchModel';
import { formatBytes, ModelTreeProvider } from './modelTreeView';
import { formatEndpoint } from './socketTreeProvider';

/** How often "s left" counts down while payloads are held and the view is visible. */
const countdownMs = 1000;

export class PendingPayloadTreeProvider extends ModelTreeProvider<PendingView> {
  private countdown: ReturnType<typeof setInterval> | undefined;
  private readonly pendingChanges: { dispose(): void };

  constructor(
    model: WorkbenchModel,
    private readonly now: () => number = Date.now,
  ) {
    super(model, ['pending']);
    this.pendingChanges = model.onDidChange((e) => {
      if (e.part === 'pending') this.updateCountdown();
    });
  }

  override setVisible(visible: boolean): void {
    super.setVisible(visible);
    this.updateCountdown();
  }

  /** The clock ticks only while someone can see it and something is held. */
  private updateCountdown(): void {
    const wanted = this.isVisible() && this.model.pending().length > 0;
    if (wanted && !this.countdown) this.countdown = setInterval(() => this.requestRefresh(), countdownMs);
    else if (!wanted && this.countdown) {
      clearInterval(this.countdown);
      this.countdown = undefined;
    }
  }

  override dispose(): void {
    if (this.countdown) clearInterval(this.countdown);
    this.pendingChanges.dispose();
    super.dispose();
  }

  getChildren(element?: PendingView): PendingView[] {
    if (element) return [];
    return this.model.pending().sort((a, b) => a.deadline - b.deadline);
  }

  getTreeItem(p: PendingView): vscode.TreeItem {
    const peer = formatEndpoint(p.remote) ?? formatEndpoint(p.local) ?? `socket ${p.socketId}`;
    const item = new vscode.TreeItem(
      `${p.direction === 'in' ? '↓ in' : '↑ out'} ${formatBytes(p.size)} ${peer}`,
    );
    item.id = `pending:${p.id}`;
    const left = Math.max(0, p.deadline - this.now());
    item.description = `${p.process} · ${(left / 1000).toFixed(1)} s left`;
    item.tooltip = `payload ${p.id} on socket ${p.socketId} of ${p.process} (pid ${p.pid}), stream offset ${p.streamOffset}`;
    item.contextValue = 'pendingPayload';
    item.iconPath = new vscode.ThemeIcon(p.direction === 'in' ? 'arrow-down' : 'arrow-up');
    return item;
  }
}
