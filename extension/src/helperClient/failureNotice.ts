// Tells the user when the helper process dies or the filter goes away, with
// the action that brings the link back. The views keep their last state
// (marked stale by the session) meanwhile.
import * as vscode from 'vscode';
import type { HelperSession } from './helperSession';

export function registerFailureNotice(
  session: HelperSession,
  log: vscode.LogOutputChannel,
): vscode.Disposable {
  return session.onDidFail((f) => {
    const fix = f.kind === 'helper-exited' ? 'Restart' : 'Load Filter';
    void vscode.window
      .showErrorMessage(`NKE: ${f.message}. The views show the last state.`, fix, 'Show Log')
      .then((picked) => {
        if (picked === 'Show Log') log.show(true);
        else if (picked === 'Restart') void vscode.commands.executeCommand('nke.restartHelper');
        else if (picked === 'Load Filter') void vscode.commands.executeCommand('nke.loadFilter');
      });
  });
}
