// Extension entry point. activate() only composes: every feature exposes a
// register(...) that returns a Disposable, and every Disposable is kept.
import * as vscode from 'vscode';

export function activate(context: vscode.ExtensionContext): void {
  const log = vscode.window.createOutputChannel('NKE Workbench', { log: true });
  context.subscriptions.push(log);
  log.info('NKE Workbench activated');
}

export function deactivate(): void {}
