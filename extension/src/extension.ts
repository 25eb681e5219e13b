// Extension entry point. activate() only composes: every feature exposes a
// register(...) that returns a Disposable, and every Disposable is kept.
import * as vscode from 'vscode';
import { registerCommands } from './commands/registerCommands';
import { HelperSlot } from './helperClient/helperPort';
import { WorkbenchModel } from './model/workbenchModel';
import { readSettings } from './settings';
import { registerStatusBar } from './statusBar';
import { ExecTreeProvider } from './tree/execTreeProvider';
import { FilterTreeProvider } from './tree/filterTreeProvider';
import { registerModelTreeView } from './tree/modelTreeView';
import { PendingPayloadTreeProvider } from './tree/pendingPayloadTreeProvider';
import { SocketTreeProvider } from './tree/socketTreeProvider';

/** What activate() returns to other extensions and to the in-host tests. */
export interface NkeWorkbenchApi {
  /** The live model; the helper client feeds it. */
  readonly model: WorkbenchModel;
  /** Where the helper client plugs in; commands that need it fail until it is set. */
  readonly helper: HelperSlot;
  /** The registered tree providers, so tests read the very items the views show. */
  readonly trees: {
    readonly filter: FilterTreeProvider;
    readonly sockets: SocketTreeProvider;
    readonly execEvents: ExecTreeProvider;
    readonly pendingPayloads: PendingPayloadTreeProvider;
  };
}

export function activate(context: vscode.ExtensionContext): NkeWorkbenchApi {
  const log = vscode.window.createOutputChannel('NKE Workbench', { log: true });
  context.subscriptions.push(log);

  const settings = readSettings();
  const model = new WorkbenchModel(settings.mode, settings.historyLimit);
  const helper = new HelperSlot(context.extensionPath);
  const trees = {
    filter: new FilterTreeProvider(model),
    sockets: new SocketTreeProvider(model),
    execEvents: new ExecTreeProvider(model),
    pendingPayloads: new PendingPayloadTreeProvider(model),
  };

  context.subscriptions.push(
    registerModelTreeView('nke.filter', trees.filter),
    registerModelTreeView('nke.sockets', trees.sockets),
    registerModelTreeView('nke.execEvents', trees.execEvents),
    registerModelTreeView('nke.pendingPayloads', trees.pendingPayloads),
    registerCommands({ model, helper, log, extensionRoot: context.extensionPath }),
    registerStatusBar(model),
    registerSettingsListener(model, log),
  );
  log.info(`NKE Workbench activated (mode ${settings.mode})`);
  return { model, helper, trees };
}

function registerSettingsListener(model: WorkbenchModel, log: vscode.LogOutputChannel): vscode.Disposable {
  return vscode.workspace.onDidChangeConfiguration((e) => {
    if (!e.affectsConfiguration('nke.historyLimit')) return;
    const limit = readSettings().historyLimit;
    try {
      model.setHistoryLimit(limit);
    } catch (err) {
      log.error(`nke.historyLimit: ${(err as Error).message}; keeping the previous limit`);
    }
  });
}

export function deactivate(): void {}
