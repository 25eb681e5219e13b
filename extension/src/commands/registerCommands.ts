// The one place every NKE command is registered. Handlers take (node?, nodes?)
// so they work from the palette, a tree item and a multi-selection.
import * as vscode from 'vscode';
import { execFile } from 'node:child_process';
import * as path from 'node:path';
import { EXTCAP_INTERFACE, installLauncher, personalExtcapDirs } from '../capture/extcap';
import { emulatorBinary } from '../filter/emulatorProcess';
import type { FilterByMode } from '../filter/filterByMode';
import type { FilterBackend, StepReporter } from '../filter/filterBackend';
import { isNkeTaskName } from '../tasks/nkeTaskDefinition';
import type { NkeTaskProvider } from '../tasks/nkeTaskProvider';
import type { HelperSession } from '../helperClient/helperSession';
import type { PendingView, WorkbenchModel } from '../model/workbenchModel';
import type { SocketNode } from '../tree/socketTreeProvider';
import { type PayloadEditorOpener, payloadCommandHandlers } from '../payload/payloadCommands';
import type { PayloadStore } from '../payload/payloadStore';
import { readSettings, rulesFromSettings } from '../settings';
import {
  isRuleAction,
  quotedList,
  RULE_ACTION_NAMES,
  RULE_ACTIONS,
  type RuleActionName,
} from '../shared/ruleFields';
import { ActionableError, type CommandHandler, registerNkeCommand, UserCancelled } from './commandWrapper';
import { explorerCommandHandlers, type ExplorerViews } from './explorerCommands';

export interface CommandDeps {
  model: WorkbenchModel;
  session: HelperSession;
  /** the commands go through the FilterBackend interface; `emulator` is for Run Program Under Filter */
  filter: FilterByMode;
  /** the `nke` tasks (the walkthrough's buttons run them) */
  tasks: NkeTaskProvider;
  payloads: PayloadStore;
  /** the webview payload editor (Open in Payload Editor) */
  payloadEditor: PayloadEditorOpener;
  /** The rows selected in Pending Payloads, once a click settled. */
  selectedPayloads?: () => Promise<readonly PendingView[]>;
  log: vscode.LogOutputChannel;
  extensionRoot: string;
  /** The explorer's tree views (Find Process and the Sockets link reveal items in them). */
  views: () => ExplorerViews | undefined;
  /** what is selected in the Sockets view (Export Capture from the palette or the view's title) */
  selectedSockets: () => readonly SocketNode[];
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

/** Socket ids of the nodes a command got, or of the Sockets view's selection; none: every socket. */
function socketIds(model: WorkbenchModel, nodes: readonly SocketNode[]): string[] {
  const ids = new Set<string>();
  for (const n of nodes) {
    if (n.kind === 'socket') ids.add(n.socket.id);
    else for (const s of model.sockets()) if (s.pid === n.pid) ids.add(s.id);
  }
  return [...ids];
}

/**
 * NKE: Export Capture: the helper writes its capture history as pcapng
 * (every socket, or the ones selected in the Sockets view / given by the
 * context menu), streamed to the file, so Wireshark shows what the filter saw.
 */
async function exportCapture(
  { model, session, log, selectedSockets }: CommandDeps,
  node?: SocketNode,
  nodes?: SocketNode[],
): Promise<void> {
  const picked = nodes?.length ? nodes : node ? [node] : selectedSockets();
  const ids = socketIds(model, picked);
  const folder = vscode.workspace.workspaceFolders?.[0]?.uri;
  const target = await vscode.window.showSaveDialog({
    title: ids.length
      ? `NKE: Export Capture (${ids.length} socket${ids.length > 1 ? 's' : ''})`
      : 'NKE: Export Capture',
    filters: { 'pcapng (Wireshark)': ['pcapng'] },
    defaultUri: folder ? vscode.Uri.joinPath(folder, 'nke-capture.pcapng') : undefined,
  });
  if (!target) throw new UserCancelled();
  if (target.scheme !== 'file') {
    throw new Error(
      `the helper writes the capture itself: choose a file on this machine, not ${target.toString()}`,
    );
  }
  const r = await vscode.window.withProgress(
    { location: vscode.ProgressLocation.Notification, title: `NKE: exporting to ${target.fsPath}` },
    () => session.exportPcapng(target.fsPath, ids),
  );
  const what =
    `${r.packets} packets of ${r.sockets} socket${r.sockets === 1 ? '' : 's'}` +
    (r.gaps ? `, ${r.gaps} gap${r.gaps === 1 ? '' : 's'} marked` : '');
  log.info(`capture exported to ${r.path}: ${what}, ${r.bytes} bytes`);
  void vscode.window.showInformationMessage(`NKE: exported ${what} to ${path.basename(r.path)}`);
}

/** NKE: Install Wireshark Capture Interface: the extcap launcher in the personal extcap folder. */
async function installWiresharkInterface({ log, extensionRoot }: CommandDeps): Promise<void> {
  const files = installLauncher(
    personalExtcapDirs(),
    process.execPath,
    path.join(extensionRoot, 'dist', 'nke.js'),
  );
  for (const f of files) log.info(`Wireshark extcap launcher written: ${f}`);
  void vscode.window.showInformationMessage(
    `NKE: Wireshark now offers the "${EXTCAP_INTERFACE}" interface (NKE filter) through ${files.join(' and ')}. ` +
      'Restart Wireshark or use Capture → Refresh Interfaces; it streams live while this window is connected.',
  );
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

/** The default actions offered by NKE: Set Capture Mode, in the order shown; each described by RULE_ACTIONS. */
const captureChoiceLabel: Record<RuleActionName, string> = {
  report: 'Report',
  hold: 'Hold everything',
  pass: 'Pass',
};
const captureChoices = (Object.keys(captureChoiceLabel) as RuleActionName[]).map((mode) => ({
  label: captureChoiceLabel[mode],
  detail: RULE_ACTIONS[mode].default,
  mode,
}));

/** Sets nke.capture, the default action (palette: a pick; tests and keybindings: the action as argument). */
async function setCaptureMode({ session }: CommandDeps, given?: unknown): Promise<void> {
  if (given !== undefined && !isRuleAction(given)) {
    throw new Error(`unknown capture mode ${JSON.stringify(given)}: use ${quotedList(RULE_ACTION_NAMES)}`);
  }
  let mode: RuleActionName;
  if (given === undefined) {
    const current = readSettings().capture;
    const picked = await vscode.window.showQuickPick(
      captureChoices.map((c) => ({ ...c, description: c.mode === current ? '(current)' : undefined })),
      { title: 'NKE: Set Capture Mode' },
    );
    if (!picked) throw new UserCancelled();
    mode = picked.mode;
  } else {
    mode = given;
  }
  await vscode.workspace.getConfiguration('nke').update('capture', mode, vscode.ConfigurationTarget.Global);
  // Sent here too (the settings listener also sends them) so that the mode is
  // in force in the helper when this command completes.
  await session.updateRules({ ...rulesFromSettings(), default: mode });
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
    'nke.exportCapture': (node?: SocketNode, nodes?: SocketNode[]) => exportCapture(deps, node, nodes),
    'nke.installWiresharkInterface': () => installWiresharkInterface(deps),
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
    'nke.setCaptureMode': (mode?: unknown) => setCaptureMode(deps, mode),
    'nke.clear': async () => {
      const live = session.isConnected;
      await session.clear();
      log.info(
        live
          ? 'cleared closed sockets, exec events and history; live sockets and held payloads stay'
          : 'cleared sockets, exec events and pending payloads',
      );
    },
    'nke.showLog': () => log.show(),
    ...explorerCommandHandlers({ model, session, log, views: deps.views }),
    // Open (text, hex, payload editor), Reinject Edited / Original, Drop, Revert: from rows, documents and the palette.
    ...payloadCommandHandlers(deps),
  };
  return vscode.Disposable.from(...Object.entries(handlers).map(([id, h]) => registerNkeCommand(id, h, log)));
}
