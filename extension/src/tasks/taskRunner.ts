// Runs a task in its terminal and resolves with its exit code: how Load
// Filter chains the `nke` tasks (the user sees each in its terminal; sudo
// asks there).
import * as vscode from 'vscode';

/** Resolves with the task process's exit code, or undefined when it ended without one (terminated). */
export async function runTaskToEnd(task: vscode.Task): Promise<number | undefined> {
  // Subscribed before the task starts: a quick task may end before
  // executeTask's promise settles.
  const ended = new Map<vscode.TaskExecution, number | undefined>();
  let execution: vscode.TaskExecution | undefined;
  let settle: ((code: number | undefined) => void) | undefined;
  const onProcessEnd = vscode.tasks.onDidEndTaskProcess((e) => {
    if (execution && e.execution === execution) settle?.(e.exitCode);
    else ended.set(e.execution, e.exitCode);
  });
  // A task that never started a process (cancelled, terminated) only ends.
  const onEnd = vscode.tasks.onDidEndTask((e) => {
    if (execution && e.execution === execution) setTimeout(() => settle?.(undefined), 500);
  });
  try {
    const done = new Promise<number | undefined>((resolve) => (settle = resolve));
    execution = await vscode.tasks.executeTask(task);
    if (ended.has(execution)) return ended.get(execution);
    return await done;
  } finally {
    onProcessEnd.dispose();
    onEnd.dispose();
  }
}
