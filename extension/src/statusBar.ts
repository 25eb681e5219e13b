// Status bar item: the filter's state at a glance and how many payloads wait.
import * as vscode from 'vscode';
import type { WorkbenchModel } from './model/workbenchModel';

export function registerStatusBar(model: WorkbenchModel): vscode.Disposable {
  const item = vscode.window.createStatusBarItem('nke.status', vscode.StatusBarAlignment.Left, 50);
  item.name = 'NKE Workbench';
  item.command = 'workbench.view.extension.nke';
  const update = () => {
    const f = model.filter;
    const pending = model.pending().length;
    const icon =
      f.status === 'connected' ? '$(plug)' : f.status === 'paused' ? '$(debug-pause)' : '$(debug-disconnect)';
    item.text = `${icon} NKE: ${f.status}${pending ? ` · ${pending} held` : ''}`;
    item.tooltip = `NKE Workbench (${f.mode}): ${f.status}. Click to open the NKE views.`;
  };
  update();
  item.show();
  const sub = model.onDidChange((e) => {
    if (e.part === 'filter' || e.part === 'pending') update();
  });
  return vscode.Disposable.from(item, sub);
}
