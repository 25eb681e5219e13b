// Extension entry point. activate() only composes: every feature exposes a
// register(...) that returns a Disposable, and every Disposable is kept.
import * as path from 'node:path';
import * as vscode from 'vscode';
import { registerCommands } from './commands/registerCommands';
import { NKE_EMU_DIR_ENV } from './shared/abi';
import { resolveEmulatorRuntimeDir } from './shared/privateDir';
import type { FilterByMode } from './filter/filterByMode';
import { macAddonPath, registerFilter } from './filter/registerFilter';
import { registerFailureNotice } from './helperClient/failureNotice';
import { HelperSession } from './helperClient/helperSession';
import { WorkbenchModel } from './model/workbenchModel';
import * as os from 'node:os';
import { type ExplorerViews, linkExecsToSockets } from './commands/explorerCommands';
import { FilterOwnership } from './helperClient/filterOwner';
import { type PayloadEditorProvider, registerPayloadEditor } from './payload/payloadEditorProvider';
import { PayloadStore } from './payload/payloadStore';
import { type PayloadProviders, registerPayloadEditing } from './payload/registerPayloadEditing';
import { helperLaunchSettings, readSettings, rulesFromSettings, rulesSettings } from './settings';
import { registerStatusBar } from './statusBar';
import { ExecTreeProvider } from './tree/execTreeProvider';
import { FilterTreeProvider } from './tree/filterTreeProvider';
import { createModelTreeView, registerModelTreeView } from './tree/modelTreeView';
import { PendingPayloadTreeProvider } from './tree/pendingPayloadTreeProvider';
import { SocketTreeProvider } from './tree/socketTreeProvider';

/** What activate() returns to other extensions and to the in-host tests. */
export interface NkeWorkbenchApi {
  /** The live model; the helper session feeds it. */
  readonly model: WorkbenchModel;
  /** The link to the helper process (its pid, connection state). */
  readonly session: HelperSession;
  /** Load / Unload / Connect / Show Kernel Log: the backend nke.mode names (emulator or kext). */
  readonly filter: FilterByMode;
  /** The window's payload store: what every payload document and editor shows. */
  readonly payloads: PayloadStore;
  /** The webview payload editor (its Open → first paint timings, for the bench). */
  readonly payloadEditor: PayloadEditorProvider;
  /** The code action and CodeLens providers of payload documents, as registered. */
  readonly payloadProviders: PayloadProviders;
  /** The registered tree providers, so tests read the very items the views show. */
  readonly trees: {
    readonly filter: FilterTreeProvider;
    readonly sockets: SocketTreeProvider;
    readonly execEvents: ExecTreeProvider;
    readonly pendingPayloads: PendingPayloadTreeProvider;
  };
}

let deactivateFilter: (() => Promise<void>) | undefined;

export function activate(context: vscode.ExtensionContext): NkeWorkbenchApi {
  const log = vscode.window.createOutputChannel('NKE Workbench', { log: true });
  context.subscriptions.push(log);

  const settings = readSettings();
  const model = new WorkbenchModel(settings.mode, settings.historyLimit);
  applyExplorerSettings(model, log);
  const ownership = new FilterOwnership({
    // The emulator's runtime directory is private to this user already; the
    // kext's one filter gets a per-user directory of its own.
    dir: () => {
      const s = readSettings();
      return s.mode === 'emulator'
        ? resolveEmulatorRuntimeDir(s.emulatorRuntimeDir)
        : path.join(os.tmpdir(), `nke-workbench-${process.getuid?.() ?? 0}`);
    },
    describeWindow: () =>
      `the window on ${vscode.workspace.name ? `workspace "${vscode.workspace.name}"` : 'no folder'} (extension host pid ${process.pid})`,
    log: (m) => log.info(m),
  });
  const session = new HelperSession({
    ownership,
    helperScript: path.join(context.extensionPath, 'dist', 'helper.js'),
    launch: () => {
      const s = readSettings();
      return {
        asAdministrator: process.platform === 'darwin' && s.mode === 'kext',
        captureHistoryMiB: s.captureHistoryMiB,
        env:
          s.mode === 'emulator'
            ? { [NKE_EMU_DIR_ENV]: resolveEmulatorRuntimeDir(s.emulatorRuntimeDir) }
            : process.platform === 'darwin'
              ? { NKE_ADDON: macAddonPath(context) } // built on this Mac by the addon task
              : {},
        rules: rulesFromSettings(s),
      };
    },
    model,
    log,
  });
  const filterWindow = registerFilter({ context, session, log });
  const { filter } = filterWindow;
  deactivateFilter = () => filter.dispose();
  const payloads = new PayloadStore({
    model,
    helper: session,
    holdTimeoutMs: () => readSettings().holdTimeoutMs,
    editHoldMaxMs: () => readSettings().editHoldMaxMs,
    log: (m) => log.warn(m),
    debug: (m) => log.debug(m),
  });
  const editing = registerPayloadEditing({ model, payloads, log });
  const editor = registerPayloadEditor({ store: payloads, extensionUri: context.extensionUri, log });
  const trees = {
    filter: new FilterTreeProvider(model),
    sockets: new SocketTreeProvider(model),
    execEvents: new ExecTreeProvider(model),
    pendingPayloads: new PendingPayloadTreeProvider(model, Date.now, payloads),
  };

  const socketsView = createModelTreeView('nke.sockets', trees.sockets);
  const execView = createModelTreeView('nke.execEvents', trees.execEvents);
  const views: ExplorerViews = {
    sockets: socketsView.view,
    execEvents: execView.view,
    processRow: (pid) => trees.sockets.processNode(pid),
  };

  context.subscriptions.push(
    session,
    filterWindow.disposable,
    new vscode.Disposable(() => payloads.dispose()),
    registerModelTreeView('nke.filter', trees.filter),
    socketsView.disposable,
    execView.disposable,
    registerModelTreeView('nke.pendingPayloads', trees.pendingPayloads),
    linkExecsToSockets(views, model),
    registerCommands({
      model,
      session,
      filter,
      tasks: filterWindow.tasks,
      payloads,
      payloadEditor: editor.provider,
      selectedPayloads: () => trees.pendingPayloads.settledSelection(),
      log,
      extensionRoot: context.extensionPath,
      views: () => views,
      selectedSockets: () => trees.sockets.selection,
    }),
    registerTakeOverNotice(session),
    editing.registration,
    editor.registration,
    registerStatusBar(model),
    registerFailureNotice(session, log),
    registerSettingsListener(model, session, log),
  );
  log.info(`NKE Workbench activated (mode ${settings.mode})`);
  if (settings.connectOnStartup) void vscode.commands.executeCommand('nke.connect');
  return {
    model,
    session,
    filter,
    payloads,
    payloadEditor: editor.provider,
    payloadProviders: editing.providers,
    trees,
  };
}

/** nke.execScope and nke.closedSocketsKeptSeconds into the model (a bad value is logged, the old kept). */
function applyExplorerSettings(model: WorkbenchModel, log: vscode.LogOutputChannel): void {
  const s = readSettings();
  model.setExecScope(s.execScope);
  void vscode.commands.executeCommand('setContext', 'nke.execScope', s.execScope);
  try {
    model.setClosedSocketsKeptMs(s.closedSocketsKeptSeconds * 1000);
  } catch (err) {
    log.error(`nke.closedSocketsKeptSeconds: ${(err as Error).message}; keeping the previous value`);
  }
}

/**
 * Another window took the filter over: say so and offer Take Back. This
 * window never reconnects on its own (the two would take the filter from
 * each other in turn); only a person's Take Back or Connect does.
 */
function registerTakeOverNotice(session: HelperSession): vscode.Disposable {
  return session.onDidYield((by) => {
    void vscode.window
      .showWarningMessage(
        `NKE: ${by} took over the filter. This window stays disconnected (its views show the last state) until you take it back.`,
        'Take Back',
      )
      .then((picked) => {
        if (picked === 'Take Back') void vscode.commands.executeCommand('nke.takeOver');
      });
  });
}

function registerSettingsListener(
  model: WorkbenchModel,
  session: HelperSession,
  log: vscode.LogOutputChannel,
): vscode.Disposable {
  return vscode.workspace.onDidChangeConfiguration((e) => {
    if (e.affectsConfiguration('nke.execScope') || e.affectsConfiguration('nke.closedSocketsKeptSeconds')) {
      applyExplorerSettings(model, log);
    }
    if (helperLaunchSettings.some((k) => e.affectsConfiguration(k)) && session.launchChanged()) {
      const live = model.link.status === 'connected' || model.link.status === 'paused';
      log.info(
        live
          ? 'a setting the helper starts with changed: it applies at the next Connect (Disconnect, then Connect)'
          : 'a setting the helper starts with changed: the next Connect starts a new helper with it',
      );
      if (live) {
        void vscode.window.showInformationMessage(
          'NKE: the changed setting applies at the next Connect (Disconnect, then Connect).',
        );
      }
    }
    if (e.affectsConfiguration('nke.historyLimit')) {
      try {
        model.setHistoryLimit(readSettings().historyLimit);
      } catch (err) {
        log.error(`nke.historyLimit: ${(err as Error).message}; keeping the previous limit`);
      }
    }
    if (rulesSettings.some((s) => e.affectsConfiguration(s))) {
      session.updateRules(rulesFromSettings()).then(
        () => log.info('rules from the nke.* settings sent to the helper'),
        (err: Error) => {
          log.error(`the helper refused the rules from the settings: ${err.message}`);
          void vscode.window.showErrorMessage(
            `NKE: the rules in the nke.* settings were refused: ${err.message}`,
          );
        },
      );
    }
  });
}

/** Stops what this window's filter backends started; the helper exits with its connection. */
export function deactivate(): Promise<void> | undefined {
  return deactivateFilter?.();
}
