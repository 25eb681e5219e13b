// The one command wrapper, in the real extension host: errors are logged and
// do not escape to the caller, cancellation is silent, results pass through.
import * as assert from 'node:assert/strict';
import * as vscode from 'vscode';
import {
  ActionableError,
  registerNkeCommand,
  UserCancelled,
} from '../../extension/src/commands/commandWrapper';

/** Records what the wrapper writes to the log channel. */
function recordingLog(): {
  log: vscode.LogOutputChannel;
  errors: string[];
  debug: string[];
  dispose(): void;
} {
  const channel = vscode.window.createOutputChannel('NKE wrapper test', { log: true });
  const errors: string[] = [];
  const debug: string[] = [];
  const log = Object.create(channel) as vscode.LogOutputChannel;
  log.error = (message: string | Error) => void errors.push(String(message));
  log.debug = (message: string) => void debug.push(message);
  return { log, errors, debug, dispose: () => channel.dispose() };
}

describe('command wrapper', () => {
  let n = 0;
  const id = () => `nke.test.wrapper${++n}`;

  it('returns the handler result and logs start and end', async () => {
    const rec = recordingLog();
    const cmd = id();
    const reg = registerNkeCommand(cmd, (a: unknown) => `got ${String(a)}`, rec.log);
    try {
      assert.equal(await vscode.commands.executeCommand(cmd, 42), 'got 42');
      assert.deepEqual(rec.debug, [`${cmd}: started`, `${cmd}: done`]);
      assert.deepEqual(rec.errors, []);
    } finally {
      reg.dispose();
      rec.dispose();
    }
  });

  it('logs a failure with the command id and does not reject the caller', async () => {
    const rec = recordingLog();
    const cmd = id();
    const reg = registerNkeCommand(
      cmd,
      () => {
        throw new ActionableError('socket 3:7 is gone', { title: 'Show Log', command: 'nke.showLog' });
      },
      rec.log,
    );
    try {
      assert.equal(await vscode.commands.executeCommand(cmd), undefined);
      assert.equal(rec.errors[0], `${cmd}: socket 3:7 is gone`);
    } finally {
      reg.dispose();
      rec.dispose();
    }
  });

  it('treats cancellation as silent: no error logged', async () => {
    const rec = recordingLog();
    const cmds = [id(), id()];
    const regs = [
      registerNkeCommand(cmds[0], () => Promise.reject(new UserCancelled()), rec.log),
      registerNkeCommand(cmds[1], () => Promise.reject(new vscode.CancellationError()), rec.log),
    ];
    try {
      for (const c of cmds) assert.equal(await vscode.commands.executeCommand(c), undefined);
      assert.deepEqual(rec.errors, []);
      assert.ok(rec.debug.includes(`${cmds[0]}: cancelled`) && rec.debug.includes(`${cmds[1]}: cancelled`));
    } finally {
      for (const r of regs) r.dispose();
      rec.dispose();
    }
  });
});
