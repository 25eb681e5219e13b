// The payload commands. Each takes what its caller has: a Pending Payloads
// row (and the selection), a payload document's Uri (editor title, CodeLens,
// code action), or nothing (palette: the active payload editor, else a pick).
// registerCommands.ts registers them with the rest.
import * as vscode from 'vscode';
import { ActionableError, type CommandHandler, UserCancelled } from '../commands/commandWrapper';
import type { PendingView, WorkbenchModel } from '../model/workbenchModel';
import { codecFor, formatSyntaxError } from '../shared/payloadCodecs';
import { storedText } from './payloadCodeActions';
import { parsePayloadUri, payloadUri } from './payloadFileSystem';
import { type PayloadAction, PayloadActionError, type PayloadStore, refusalFor } from './payloadStore';
import type { PayloadDocKind } from './payloadUri';

export interface PayloadCommandDeps {
  model: WorkbenchModel;
  payloads: PayloadStore;
  /** The rows selected in Pending Payloads once a click settled (a row's click runs nke.openSelectedPayload). */
  selectedPayloads?: () => Promise<readonly PendingView[]>;
  /** The webview payload editor (Open in Payload Editor). */
  payloadEditor: PayloadEditorOpener;
}

/** What Open in Payload Editor needs of the custom editor (payloadEditorProvider.ts). */
export interface PayloadEditorOpener {
  open(id: string): Promise<void>;
}

/** A Pending Payloads row, a payload document, or nothing. */
type PayloadTarget = PendingView | vscode.Uri | undefined;

function isPendingView(x: unknown): x is PendingView {
  return typeof x === 'object' && x !== null && typeof (x as PendingView).id === 'string' && 'socketId' in x;
}

/** The payload ids a command was given; the active payload editor when none. */
function targetIds(target: PayloadTarget, selection?: unknown[]): string[] {
  if (selection?.length && selection.every(isPendingView)) return selection.map((p) => p.id);
  if (target instanceof vscode.Uri) {
    const p = parsePayloadUri(target);
    if (!p) throw new Error(`${target.toString()} is not a payload document`);
    return [p.id];
  }
  if (isPendingView(target)) return [target.id];
  const active = vscode.window.activeTextEditor?.document.uri;
  const p = active && parsePayloadUri(active);
  if (p) return [p.id];
  return [];
}

async function pickPending(model: WorkbenchModel, title: string): Promise<string> {
  const items = model.pending().map((p) => ({
    label: `#${p.id} ${p.process} ${p.direction === 'in' ? '↓ in' : '↑ out'} ${p.size} B`,
    description: p.remote ? `${p.remote.address}:${p.remote.port}` : `socket ${p.socketId}`,
    id: p.id,
  }));
  if (!items.length) {
    throw new ActionableError('no payload is held: set the capture mode or an intercept rule first', {
      title: 'Set Capture Mode',
      command: 'nke.setCaptureMode',
    });
  }
  const picked = await vscode.window.showQuickPick(items, { title });
  if (!picked) throw new UserCancelled();
  return picked.id;
}

async function openPayload(
  deps: PayloadCommandDeps,
  kind: PayloadDocKind,
  target: PayloadTarget,
): Promise<void> {
  let [id] = targetIds(target);
  id ??= await pickPending(deps.model, `NKE: Open Payload${kind === 'hex' ? ' as Hex' : ''}`);
  // Fetched before the editor opens: a payload released meanwhile says so here.
  await deps.payloads.original(id);
  const doc = await vscode.workspace.openTextDocument(payloadUri(deps.payloads, id, kind));
  await vscode.window.showTextDocument(doc, { preview: false });
}

/** The open document of `uri`, if an editor has it. */
function openDocument(uri: vscode.Uri): vscode.TextDocument | undefined {
  return vscode.workspace.textDocuments.find((d) => d.uri.toString() === uri.toString());
}

/**
 * Reinject Edited from a document: what the editor holds is what is sent,
 * decoded here (so an unedited document round-trips through its codec), and
 * saved first so the store and the other document have it too.
 */
async function reinjectEditedDocument(deps: PayloadCommandDeps, uri: vscode.Uri): Promise<void> {
  const p = parsePayloadUri(uri)!;
  // Gone already: say why, before trying to save a read-only document.
  const refusal = refusalFor(p.id, deps.payloads.state(p.id));
  if (refusal) throw new PayloadActionError(p.id, refusal);
  const doc = openDocument(uri);
  if (!doc) return deps.payloads.act(p.id, 'reinjectEdited');
  const r = codecFor(p.kind).decode(doc.getText());
  if (!r.ok) {
    throw new ActionableError(
      `payload ${p.id} was not sent: its ${p.kind === 'hex' ? 'hex dump' : 'text'} has an error at ${formatSyntaxError(r.errors[0])}. It is still held; fix the line or revert it`,
      { title: 'Show Problems', command: 'workbench.actions.view.problems' },
    );
  }
  // Saved so the other document and the row show the edit. What is sent is
  // what the editor shows either way: VS Code reports a save as failed when
  // the document changed while it was written (the store has the bytes
  // then), so the store gets them directly when they are not there.
  if (doc.isDirty && !(await doc.save())) {
    const staged = deps.payloads.staged(p.id) ?? deps.payloads.originalIfLoaded(p.id);
    if (!staged || !sameBytes(staged, r.bytes)) deps.payloads.stage(p.id, r.bytes);
  }
  await deps.payloads.act(p.id, 'reinjectEdited', r.bytes);
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

async function act(
  deps: PayloadCommandDeps,
  action: PayloadAction,
  target: PayloadTarget,
  selection?: unknown[],
): Promise<void> {
  let ids = targetIds(target, selection);
  if (!ids.length) ids = [await pickPending(deps.model, 'NKE: choose a pending payload')];
  if (action === 'reinjectEdited' && target instanceof vscode.Uri) {
    return reinjectEditedDocument(deps, target);
  }
  if (action === 'reinjectEdited') {
    // From a row: the document shows the bytes the store would send; save it first.
    for (const kind of ['text', 'hex'] as const) {
      const doc = openDocument(payloadUri(deps.payloads, ids[0], kind));
      if (doc?.isDirty) return reinjectEditedDocument(deps, doc.uri);
    }
  }
  for (const id of ids) await deps.payloads.act(id, action);
}

/** Puts the store's bytes back into the document (the fix for a line that does not parse). */
async function revertDocument(deps: PayloadCommandDeps, uri: vscode.Uri): Promise<void> {
  const doc = openDocument(uri) ?? (await vscode.workspace.openTextDocument(uri));
  const text = await storedText(deps.payloads, uri);
  if (text === undefined) throw new Error(`${uri.toString()} is not a payload document`);
  const edit = new vscode.WorkspaceEdit();
  edit.replace(uri, new vscode.Range(doc.positionAt(0), doc.positionAt(doc.getText().length)), text);
  await vscode.workspace.applyEdit(edit);
  await doc.save();
}

export function payloadCommandHandlers(deps: PayloadCommandDeps): Record<string, CommandHandler> {
  return {
    'nke.openPayload': (target?: PayloadTarget) => openPayload(deps, 'text', target),
    // A Pending Payloads row's click: the row the click selected.
    'nke.openSelectedPayload': async () => {
      const selected = (await deps.selectedPayloads?.()) ?? [];
      if (selected.length !== 1) return;
      return openPayload(deps, 'text', selected[0]);
    },
    'nke.openPayloadHex': (target?: PayloadTarget) => openPayload(deps, 'hex', target),
    // A row, a payload document's title button, or the palette (a pick).
    'nke.openPayloadEditor': async (target?: PayloadTarget) => {
      const [id] = targetIds(target);
      await deps.payloadEditor.open(id ?? (await pickPending(deps.model, 'NKE: Open in Payload Editor')));
    },
    'nke.reinjectEdited': (target?: PayloadTarget, selection?: unknown[]) =>
      act(deps, 'reinjectEdited', target, selection),
    'nke.reinjectOriginal': (target?: PayloadTarget, selection?: unknown[]) =>
      act(deps, 'reinjectOriginal', target, selection),
    'nke.dropPayload': (target?: PayloadTarget, selection?: unknown[]) =>
      act(deps, 'drop', target, selection),
    'nke.revertPayload': (target?: PayloadTarget) => {
      const [id] = targetIds(target);
      if (!id) throw new Error('open a payload document first');
      deps.payloads.revert(id);
    },
    'nke.revertPayloadDocument': (uri: vscode.Uri) => revertDocument(deps, uri),
  };
}
