// Status bar item: the link's state at a glance, live counters, and how many
// payloads wait. A failed link (dead helper, lost filter) shows as an error
// and clicking it restarts the helper.
import * as vscode from 'vscode';
import type { WorkbenchModel } from './model/workbenchModel';

export function registerStatusBar(model: WorkbenchModel): vscode.Disposable {
  const item = vscode.window.createStatusBarItem('nke.status', vscode.StatusBarAlignment.Left, 50);
  item.name = 'NKE Workbench';
  let shownStatus: string | undefined;
  const update = () => {
    const link = model.link;
    if (link.status !== shownStatus) {
      shownStatus = link.status;
      // Welcome contents and menus follow the link (package.json `when`).
      void vscode.commands.executeCommand('setContext', 'nke.linkStatus', link.status);
    }
    const pending = model.pending().length;
    const live = link.status === 'connected' || link.status === 'paused';
    const icon = {
      connected: '$(plug)',
      paused: '$(debug-pause)',
      connecting: '$(sync~spin)',
      disconnected: '$(debug-disconnect)',
      failed: '$(error)',
    }[link.status];
    const sockets = model.sockets().filter((s) => s.state !== 'closed').length;
    const counts = live ? ` · ${sockets} open sockets · ${model.counters.dataChunks} chunks` : '';
    item.text = `${icon} NKE: ${link.status}${counts}${pending ? ` · ${pending} held` : ''}`;
    item.tooltip =
      `NKE Workbench (${link.mode}): ${link.status}` +
      (link.staleReason
        ? `\n${link.staleReason}\nThe views show the last state. Click to ${link.recoverWith === 'nke.loadFilter' ? 'load the filter again' : 'restart the helper'}.`
        : '') +
      (live ? `\n${model.counters.bytesIn} bytes in, ${model.counters.bytesOut} bytes out` : '');
    item.command =
      link.status === 'failed' ? (link.recoverWith ?? 'nke.restartHelper') : 'workbench.view.extension.nke';
    item.backgroundColor =
      link.status === 'failed' ? new vscode.ThemeColor('statusBarItem.errorBackground') : undefined;
  };
  update();
  item.show();
  // Counters change with every batch (<= 30/s); the status bar is cheap to set.
  const sub = model.onDidChange(() => update());
  return vscode.Disposable.from(item, sub);
}
