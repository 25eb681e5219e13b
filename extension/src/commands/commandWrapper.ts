// The one wrapper around every NKE command: logs the call and its outcome to
// the output channel, shows errors with an action that opens the log, and
// stays silent when the user cancelled (closed a prompt, pressed Escape).
import * as vscode from 'vscode';
import { ActionableError, UserCancelled } from './actionableError';

export { ActionableError, UserCancelled };

function isCancellation(e: unknown): boolean {
  return e instanceof UserCancelled || e instanceof vscode.CancellationError;
}

const showLog = 'Show Log';

/**
 * A command handler. Its arguments come from whoever runs the command (the
 * palette: none; a tree item: (node, selectedNodes)), so each handler declares
 * what it accepts; `never[]` lets handlers of any parameter types register.
 */
export type CommandHandler = (...args: never[]) => unknown;

export function registerNkeCommand(
  id: string,
  handler: CommandHandler,
  log: vscode.LogOutputChannel,
): vscode.Disposable {
  return vscode.commands.registerCommand(id, async (...args: unknown[]) => {
    log.debug(`${id}: started`);
    try {
      const result = await (handler as (...a: unknown[]) => unknown)(...args);
      log.debug(`${id}: done`);
      return result;
    } catch (e) {
      if (isCancellation(e)) {
        log.debug(`${id}: cancelled`);
        return undefined;
      }
      const message = e instanceof Error ? e.message : String(e);
      log.error(`${id}: ${message}`, ...(e instanceof Error && e.stack ? [e.stack] : []));
      const action = e instanceof ActionableError ? e.action : undefined;
      const choices = action ? [action.title, showLog] : [showLog];
      // Not awaited: the command completes when its work failed, not when the
      // user dismisses the notification.
      void vscode.window.showErrorMessage(`NKE: ${message}`, ...choices).then((picked) => {
        if (picked === showLog) log.show(true);
        else if (action && picked === action.title) {
          void vscode.commands.executeCommand(action.command, ...(action.args ?? []));
        }
      });
      return undefined;
    }
  });
}
