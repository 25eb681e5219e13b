// The one place every NKE command is registered. Handlers take (node?, nodes?)
// so they work from the palette, a tree item and a multi-selection.
import * as vscode from 'vscode';
import { execFile } from 'node:child_process';
import { emulatorBinary } from '../filter/emulatorProcess';
import type { FilterByMode } from '../filter/filterByMode';
import type { FilterBackend, StepReporter } from '../filter/filterBackend';
import { isNkeTaskName } from '../tasks/nkeTaskDefinition';
import type { NkeTaskProvider } from '../tasks/nkeTaskProvider';
import type { HelperSession } from '../helperClient/helperSession';
import type { PendingView, WorkbenchModel } from '../model/workbenchModel';
import { type CaptureMode, readSettings, rulesFromSettings } from '../settings';
import { ActionableError, type CommandHandler, registerNkeCommand, UserCancelled } from './commandWrapper';
import { explorerCommandHandlers, type ExplorerViews } from './explorerCommands';

export interface CommandDeps {
  model: WorkbenchModel;
  session: HelperSession;
  /** the commands go through the FilterBackend interface; `emulator` is for Run Program Under Filter */
  filter: FilterByMode;
  /** the `nke` tasks (the walkthrough's buttons run them) */
  tasks: NkeTaskProvider;
  log: vscode.LogOutputChannel;
  extensionRoot: string;
  /** The explorer's tree views (Find Process and the Sockets link reveal items in them). */
  views: () => ExplorerViews | undefined;
}

/** Says so when a command has nothing to do (the user learns why nothing happened). */
function noOp(message: string): void {
  void vscode.window.showInformationMessage(`NKE: ${message}`);
}

/** "the emulator, session 3": what this window is connected to, for the no-op messages. */
function connectedTo(model: WorkbenchModel): string | undefined {
  const { status, filter, mode } = model.link;
  if (status !== 'connected' && status !== 'paused') return undefined;
  return `${mode === 'kext' ? 'the kext' : 'the emulator'}${filter?.sessionId ? `, session ${filter.sessionId}` : ''}`;
}

async function runUnderFilter({ filter: { emulator } }: CommandDeps): Promise<void> {
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
  const runner = emulatorBinary(emulator.binDir(), 'nke-emu');
  const commandLine = await vscode.window.showInputBox({
    title: 'NKE: Run Program Under Filter',
    prompt: 'Command line to run with its sockets under the emulated filter',
    placeHolder: 'curl -s http://example.com/',
  });
  if (!commandLine) throw new UserCancelled();
  // The terminal stays open after the program exits (its output is what
  // the person wanted to see) until a key is pressed. The wrapping sh is not
  // under the shim: only the program's own sockets and execs are filtered.
  const keepOpen = [
    '"$0" run -- sh -c "$1"; status=$?',
    `printf '\\r\\n[NKE: the program exited with status %s. Press any key to close this terminal.]' "$status"`,
    'stty -icanon -echo 2>/dev/null; dd bs=1 count=1 >/dev/null 2>&1',
  ].join('; ');
  const term = vscode.window.createTerminal({
    name: `NKE: ${commandLine}`,
    shellPath: '/bin/sh',
    shellArgs: ['-c', keepOpen, runner, commandLine],
    // The same runtime directory the helper connects to.
    env: { NKE_EMU_DIR: emulator.runtimeDir() },
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
    link: model.link,
    counters: model.counters,
    sockets: model.sockets(),
    execs: model.execs(),
    pending: model.pending(),
  };
  await vscode.workspace.fs.writeFile(target, Buffer.from(JSON.stringify(capture, null, 2) + '\n'));
  log.info(`capture exported to ${target.fsPath}`);
  // Show what was written: the capture is meant to be read and diffed.
  await vscode.window.showTextDocument(target, { preview: false });
}

/** One progress notification whose message is the backend's current step. */
function withSteps(title: string, work: (steps: StepReporter) => Promise<void>): Thenable<void> {
  return vscode.window.withProgress({ location: vscode.ProgressLocation.Notification, title }, (progress) =>
    work({ step: (message) => progress.report({ message }) }),
  );
}

/** The Mac's approval pane (kext "not approved"), on the Mac the workspace runs on. */
function openMacSecuritySettings(): Promise<void> {
  if (process.platform !== 'darwin') {
    throw new Error(
      'the security settings to approve a kext are on the Mac: open this folder there (Remote-SSH)',
    );
  }
  return new Promise((resolve, reject) =>
    execFile('open', ['x-apple.systempreferences:com.apple.preference.security?General'], (err) =>
      err ? reject(new Error(`cannot open the security settings: ${err.message}`)) : resolve(),
    ),
  );
}

/** Runs one `nke` task by name (the walkthrough's buttons). */
async function runNkeTask({ tasks }: CommandDeps, name?: unknown): Promise<void> {
  if (!isNkeTaskName(name)) throw new Error(`not an nke task: ${JSON.stringify(name)}`);
  await vscode.tasks.executeTask(tasks.task(name));
}

const captureChoices: (vscode.QuickPickItem & { mode: CaptureMode })[] = [
  {
    mode: 'report',
    label: 'Report',
    detail: 'Show all traffic; hold nothing (intercept rules still hold what they match)',
  },
  {
    mode: 'hold',
    label: 'Hold everything',
    detail: 'Every chunk waits for Allow or Drop (released unchanged after nke.holdTimeoutMs)',
  },
  {
    mode: 'pass',
    label: 'Pass',
    detail: 'Show sockets only; data is neither held nor reported unless a rule says so',
  },
];

/** Sets nke.capture (palette: a pick; tests and keybindings: the mode as argument). */
async function setCaptureMode({ session }: CommandDeps, mode?: CaptureMode): Promise<void> {
  if (mode !== undefined && !captureChoices.some((c) => c.mode === mode)) {
    throw new Error(`unknown capture mode ${JSON.stringify(mode)}: use "report", "hold" or "pass"`);
  }
  if (mode === undefined) {
    const current = readSettings().capture;
    const picked = await vscode.window.showQuickPick(
      captureChoices.map((c) => ({ ...c, description: c.mode === current ? '(current)' : undefined })),
      { title: 'NKE: Set Capture Mode' },
    );
    if (!picked) throw new UserCancelled();
    mode = picked.mode;
  }
  await vscode.workspace.getConfiguration('nke').update('capture', mode, vscode.ConfigurationTarget.Global);
  // Sent here too (the settings listener also sends them) so that the mode is
  // in force in the helper when this command completes.
  await session.updateRules({ ...rulesFromSettings(), default: mode });
}

function payloadsFrom(node?: PendingView, nodes?: PendingView[]): PendingView[] {
  if (nodes?.length) return nodes;
  if (node) return [node];
  throw new Error('select a pending payload in the Pending Payloads view first');
}

export function registerCommands(deps: CommandDeps): vscode.Disposable {
  const { model, session, log } = deps;
  const filter: FilterBackend = deps.filter;
  const handlers: Record<string, CommandHandler> = {
    'nke.loadFilter': () => {
      const to = connectedTo(model);
      if (to) return noOp(`already connected to ${to}: the filter is loaded (Unload Filter stops it)`);
      return withSteps(`NKE: Load Filter (${filter.kind})`, (steps) => filter.load(steps));
    },
    'nke.unloadFilter': () =>
      withSteps(`NKE: Unload Filter (${filter.kind})`, (steps) => filter.unload(steps)),
    'nke.connect': () => {
      const to = connectedTo(model);
      if (to) {
        const later = session.launchChanged()
          ? '; changed settings apply at the next Connect (Disconnect first)'
          : '';
        return noOp(`already connected to ${to}${later}`);
      }
      return filter.connect();
    },
    'nke.disconnect': () => {
      if (!session.isConnected) return noOp('not connected: nothing to disconnect');
      return session.disconnect();
    },
    'nke.restartHelper': () => session.restart(),
    'nke.runUnderFilter': () => runUnderFilter(deps),
    'nke.exportCapture': () => exportCapture(deps),
    'nke.showKernelLog': () => filter.log(),
    'nke.openMacSecuritySettings': () => openMacSecuritySettings(),
    'nke.runTask': (name?: string) => runNkeTask(deps, name),
    'nke.openWalkthrough': () =>
      vscode.commands.executeCommand(
        'workbench.action.openWalkthrough',
        'nkeworkbench.nke-workbench#nke.gettingStarted',
        false,
      ),
    'nke.pauseInterception': () => {
      if (model.link.status === 'paused') {
        return noOp('interception is already paused (Resume Interception holds again)');
      }
      return session.setPaused(true);
    },
    'nke.resumeInterception': () => {
      if (model.link.status === 'connected') {
        return noOp('interception is not paused: data the rules hold is held');
      }
      return session.setPaused(false);
    },
    'nke.setCaptureMode': (mode?: CaptureMode) => setCaptureMode(deps, mode),
    'nke.clear': async () => {
      await session.clear();
      model.clear();
      log.info('cleared sockets, exec events and pending payloads');
    },
    'nke.showLog': () => log.show(),
    'nke.reinjectOriginal': async (node?: PendingView, nodes?: PendingView[]) => {
      for (const p of payloadsFrom(node, nodes)) await session.verdict(p.id, 'allow');
    },
    'nke.dropPayload': async (node?: PendingView, nodes?: PendingView[]) => {
      for (const p of payloadsFrom(node, nodes)) await session.verdict(p.id, 'drop');
    },
    ...explorerCommandHandlers({ model, session, log, views: deps.views }),
  };
  return vscode.Disposable.from(...Object.entries(handlers).map(([id, h]) => registerNkeCommand(id, h, log)));
}
