// Editing held data where you work: the `nke-payload:` documents over the
// payload store, their diagnostics, code actions and CodeLens, holds kept
// while a payload is open in a tab, and the message when a payload goes away
// under its open editor.
import * as vscode from 'vscode';
import type { WorkbenchModel } from '../model/workbenchModel';
import { noLongerHeld } from '../shared/payloadReasons';
import { PayloadCodeActionProvider } from './payloadCodeActions';
import { PayloadCodeLensProvider } from './payloadCodeLens';
import { PayloadDiagnostics } from './payloadDiagnostics';
import { parsePayloadUri, PayloadFileSystem } from './payloadFileSystem';
import type { PayloadStore } from './payloadStore';
import { PAYLOAD_SCHEME } from './payloadUri';

/** Payload ids shown in any editor tab (text, diff or custom editor such as the webview). */
function idsInTabs(): Set<string> {
  const ids = new Set<string>();
  for (const tab of vscode.window.tabGroups.all.flatMap((g) => g.tabs)) {
    const input = tab.input;
    const uris =
      input instanceof vscode.TabInputText || input instanceof vscode.TabInputCustom
        ? [input.uri]
        : input instanceof vscode.TabInputTextDiff
          ? [input.original, input.modified]
          : [];
    for (const u of uris) {
      const p = parsePayloadUri(u);
      if (p) ids.add(p.id);
    }
  }
  return ids;
}

/** Keeps every payload that is open in a tab held (PayloadStore.keepHeld), and lets go on close. */
function registerHoldsForOpenTabs(store: PayloadStore): vscode.Disposable {
  const leases = new Map<string, { dispose(): void }>();
  const sync = () => {
    const open = idsInTabs();
    for (const id of open) if (!leases.has(id)) leases.set(id, store.keepHeld(id, 'editor tab'));
    for (const [id, lease] of leases) {
      if (!open.has(id)) {
        lease.dispose();
        leases.delete(id);
      }
    }
    store.prune();
  };
  sync();
  const sub = vscode.window.tabGroups.onDidChangeTabs(sync);
  return new vscode.Disposable(() => {
    sub.dispose();
    for (const l of leases.values()) l.dispose();
    leases.clear();
  });
}

/** Says so at once when a payload open in an editor is released by the filter. */
function registerReleasedNotice(store: PayloadStore, log: vscode.LogOutputChannel): vscode.Disposable {
  const told = new Set<string>();
  const sub = store.onDidChange(({ id }) => {
    const s = store.state(id);
    if (s.kind !== 'released' || told.has(id) || !idsInTabs().has(id)) return;
    told.add(id);
    const message = `${noLongerHeld(id, s.reason)}. Its editor is read-only now; nothing will be sent for it.`;
    log.warn(message);
    void vscode.window.showWarningMessage(`NKE: ${message}`);
  });
  return new vscode.Disposable(() => sub.dispose());
}

/**
 * The code actions of payload documents, registered again whenever a payload
 * document becomes the active editor. VS Code's code action model decides
 * once per model switch whether the editor is read-only, and never again when
 * that changes: an editor that showed a read-only payload (sent, released)
 * and is then reused for the next, held payload offers no light bulb and no
 * Ctrl+. at all. A registry change makes every editor decide again, now.
 */
function registerCodeActionsAfterReadOnly(
  selector: vscode.DocumentSelector,
  actions: PayloadCodeActionProvider,
): vscode.Disposable {
  const register = () =>
    vscode.languages.registerCodeActionsProvider(selector, actions, {
      providedCodeActionKinds: PayloadCodeActionProvider.providedCodeActionKinds,
    });
  let current = register();
  const sub = vscode.window.onDidChangeActiveTextEditor((editor) => {
    if (!editor || !parsePayloadUri(editor.document.uri)) return;
    current.dispose();
    current = register();
  });
  return new vscode.Disposable(() => {
    sub.dispose();
    current.dispose();
  });
}

/** The registered providers, so in-host tests read what the editor gets (disabled actions included). */
export interface PayloadProviders {
  readonly codeActions: PayloadCodeActionProvider;
  readonly codeLenses: PayloadCodeLensProvider;
}

export function registerPayloadEditing(deps: {
  model: WorkbenchModel;
  payloads: PayloadStore;
  log: vscode.LogOutputChannel;
}): { registration: vscode.Disposable; providers: PayloadProviders } {
  const { payloads, log } = deps;
  const files = new PayloadFileSystem(payloads);
  const diagnostics = new PayloadDiagnostics();
  const lenses = new PayloadCodeLensProvider(payloads, diagnostics);
  const actions = new PayloadCodeActionProvider(payloads, diagnostics);
  const selector: vscode.DocumentSelector = { scheme: PAYLOAD_SCHEME };
  const registration = vscode.Disposable.from(
    files,
    vscode.workspace.registerFileSystemProvider(PAYLOAD_SCHEME, files, { isCaseSensitive: true }),
    diagnostics,
    lenses,
    vscode.languages.registerCodeLensProvider(selector, lenses),
    registerCodeActionsAfterReadOnly(selector, actions),
    registerHoldsForOpenTabs(payloads),
    registerReleasedNotice(payloads, log),
  );
  return { registration, providers: { codeActions: actions, codeLenses: lenses } };
}
