// Extension entry point. activate() only composes: every feature exposes a
// register(...) that returns a Disposable, and every Disposable is kept.
import * as path from 'node:path';
import * as vscode from 'vscode';
import { registerCommands } from './commands/registerCommands';
import { emulatorRuntimeDir } from './filter/emulatorProcess';
import type { FilterByMode } from './filter/filterByMode';
import { macAddonPath, registerFilter } from './filter/registerFilter';
import { registerFailureNotice } from './helperClient/failureNotice';
import { HelperSession } from './helperClient/helperSession';
import { WorkbenchModel } from './model/workbenchModel';
import { type PayloadEditorProvider, registerPayloadEditor } from './payload/payloadEditorProvider';
import { PayloadStore } from './payload/payloadStore';
import { type PayloadProviders, registerPayloadEditing } from './payload/registerPayloadEditing';
import { readSettings, rulesFromSettings, rulesSettings } from './settings';
import { registerStatusBar } from './statusBar';
import { ExecTreeProvider } from './tree/execTreeProvider';
import { FilterTreeProvider } from './tree/filterTreeProvider';
import { registerModelTreeView } from './tree/modelTreeView';
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
  const session = new HelperSession({
    helperScript: path.join(context.extensionPath, 'dist', 'helper.js'),
    launch: () => {
      const s = readSettings();
      return {
        asAdministrator: process.platform === 'darwin' && s.mode === 'kext',
        historyLimit: s.historyLimit,
        captureHistoryMiB: s.captureHistoryMiB,
        env:
          s.mode === 'emulator'
            ? { NKE_EMU_DIR: emulatorRuntimeDir(s.emulatorRuntimeDir) }
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

  context.subscriptions.push(
    session,
    filterWindow.disposable,
    new vscode.Disposable(() => payloads.dispose()),
    registerModelTreeView('nke.filter', trees.filter),
    registerModelTreeView('nke.sockets', trees.sockets),
    registerModelTreeView('nke.execEvents', trees.execEvents),
    registerModelTreeView('nke.pendingPayloads', trees.pendingPayloads),
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
      selectedSockets: () => trees.sockets.selection,
    }),
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

function registerSettingsListener(
  model: WorkbenchModel,
  session: HelperSession,
  log: vscode.LogOutputChannel,
): vscode.Disposable {
  return vscode.workspace.onDidChangeConfiguration((e) => {
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
