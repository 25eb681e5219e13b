// The one place every NKE command is registered. Handlers take (node?, nodes?)
// so they work from the palette, a tree item and a multi-selection.
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as vscode from 'vscode';
import type { HelperSlot } from '../helperClient/helperPort';
import type { PendingPayload, WorkbenchModel } from '../model/workbenchModel';
import { readSettings } from '../settings';
import { ActionableError, type CommandHandler, registerNkeCommand, UserCancelled } from './commandWrapper';

export interface CommandDeps {
  model: WorkbenchModel;
  helper: HelperSlot;
  log: vscode.LogOutputChannel;
  extensionRoot: string;
}

function emulatorDir(extensionRoot: string): string {
  return readSettings().emulatorDir || path.join(extensionRoot, 'native', 'emu', 'build');
}

async function runUnderFilter({ extensionRoot }: CommandDeps): Promise<void> {
  if (readSettings().mode !== 'emulator') {
    throw new ActionableError(
      'Run Program Under Filter needs nke.mode "emulator"; under the kext every process is already filtered',
      {
        title: 'Open Settings',
        command: 'workbench.action.openSettings',
        args: ['nke.mode'],
      },
    );
  }
  const runner = path.join(emulatorDir(extensionRoot), 'nke-emu');
  if (!fs.existsSync(runner)) {
    throw new ActionableError(
      `emulator not built: ${runner} is missing (run npm run build, or set nke.emulatorDir)`,
      {
        title: 'Open Settings',
        command: 'workbench.action.openSettings',
        args: ['nke.emulatorDir'],
      },
    );
  }
  const commandLine = await vscode.window.showInputBox({
    title: 'NKE: Run Program Under Filter',
    prompt: 'Command line to run with its sockets under the emulated filter',
    placeHolder: 'curl -s http://example.com/',
  });
  if (!commandLine) throw new UserCancelled();
  const term = vscode.window.createTerminal({
    name: `NKE: ${commandLine}`,
    shellPath: runner,
    shellArgs: ['run', '--', 'sh', '-c', commandLine],
  });
  term.show();
}

async function exportCapture({ model, log }: CommandDeps): Promise<void> {
  const folder = vscode.workspace.workspaceFolders?.[0]?.uri;
  const target = await vscode.window.showSaveDialog({
    title: 'NKE: Export Capture',
    filters: { 'NKE capture (JSON)': ['json'] },
    defaultUri: folder ? vscode.Uri.joinPath(folder, 'nke-capture.json') : undefined,
  });
  if (!target) throw new UserCancelled();
  const capture = {
    exportedAt: new Date().toISOString(),
    filter: model.filter,
    sockets: model.sockets(),
    execs: model.execs(),
    pending: model.pending(),
  };
  await vscode.workspace.fs.writeFile(target, Buffer.from(JSON.stringify(capture, null, 2) + '\n'));
  log.info(`capture exported to ${target.fsPath}`);
  // Show what was written: the capture is meant to be read and diffed.
  await vscode.window.showTextDocument(target, { preview: false });
}

async function showKernelLog({ helper, log }: CommandDeps): Promise<void> {
  if (process.platform === 'darwin' && readSettings().mode === 'kext') {
    const term = vscode.window.createTerminal({
      name: 'NKE: kernel log',
      shellPath: '/usr/bin/log',
      shellArgs: ['stream', '--predicate', 'sender CONTAINS "NKEWorkbench"'],
    });
    term.show();
    return;
  }
  // The emulator's log is streamed by the helper process that started it.
  helper.require();
  log.show(true);
}

function payloadsFrom(node?: PendingPayload, nodes?: PendingPayload[]): PendingPayload[] {
  if (nodes?.length) return nodes;
  if (node) return [node];
  throw new Error('select a pending payload in the Pending Payloads view first');
}

export function registerCommands(deps: CommandDeps): vscode.Disposable {
  const { model, helper, log } = deps;
  const handlers: Record<string, CommandHandler> = {
    'nke.loadFilter': () => helper.require().loadFilter(),
    'nke.unloadFilter': () => helper.require().unloadFilter(),
    'nke.connect': () => helper.require().connect(),
    'nke.disconnect': () => helper.require().disconnect(),
    'nke.runUnderFilter': () => runUnderFilter(deps),
    'nke.exportCapture': () => exportCapture(deps),
    'nke.showKernelLog': () => showKernelLog(deps),
    'nke.pauseInterception': () => helper.require().setInterceptionPaused(true),
    'nke.resumeInterception': () => helper.require().setInterceptionPaused(false),
    'nke.clear': () => {
      model.clear();
      log.info('cleared sockets, exec events and pending payloads');
    },
    'nke.showLog': () => log.show(),
    'nke.reinjectOriginal': async (node?: PendingPayload, nodes?: PendingPayload[]) => {
      for (const p of payloadsFrom(node, nodes)) {
        await helper.require().releasePayload(p.id, 'reinjectOriginal');
      }
    },
    'nke.dropPayload': async (node?: PendingPayload, nodes?: PendingPayload[]) => {
      for (const p of payloadsFrom(node, nodes)) await helper.require().releasePayload(p.id, 'drop');
    },
  };
  return vscode.Disposable.from(...Object.entries(handlers).map(([id, h]) => registerNkeCommand(id, h, log)));
}
