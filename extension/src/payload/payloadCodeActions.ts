// Code actions on payload documents (light bulb, Ctrl+., context menu's
// Quick Fix): Reinject Edited Data, Reinject Original, Drop, and for a line
// that does not parse a fix that reverts the document to the last good bytes.
// An action that cannot run is shown disabled with the reason
// (CodeAction.disabled): an invalid hex dump disables Reinject Edited, a
// payload that is no longer held disables all three.
import * as vscode from 'vscode';
import { codecFor, formatSyntaxError } from '../shared/payloadCodecs';
import { PAYLOAD_SYNTAX_CODE, type PayloadDiagnostics } from './payloadDiagnostics';
import { parsePayloadUri } from './payloadFileSystem';
import { type PayloadAction, payloadActionName, type PayloadStore, refusalFor } from './payloadStore';

const COMMAND: Record<PayloadAction, string> = {
  reinjectEdited: 'nke.reinjectEdited',
  reinjectOriginal: 'nke.reinjectOriginal',
  drop: 'nke.dropPayload',
};

export class PayloadCodeActionProvider implements vscode.CodeActionProvider {
  /** The actions on a held payload: what to do with the chunk. */
  static readonly payloadKind = vscode.CodeActionKind.QuickFix.append('nke');
  static readonly providedCodeActionKinds = [
    PayloadCodeActionProvider.payloadKind,
    vscode.CodeActionKind.QuickFix,
  ];

  constructor(
    private readonly store: PayloadStore,
    private readonly diagnostics: PayloadDiagnostics,
  ) {}

  provideCodeActions(
    doc: vscode.TextDocument,
    _range: vscode.Range | vscode.Selection,
    context: vscode.CodeActionContext,
  ): vscode.CodeAction[] {
    const p = parsePayloadUri(doc.uri);
    if (!p) return [];
    if (context.only && !PayloadCodeActionProvider.payloadKind.intersects(context.only)) return [];
    const refusal = refusalFor(p.id, this.store.state(p.id));
    const parsed = this.diagnostics.decode(doc);
    const syntax =
      parsed && !parsed.ok
        ? `the ${p.kind === 'hex' ? 'hex dump' : 'text'} has an error at ${formatSyntaxError(parsed.errors[0])}; fix it or revert it (nothing is sent)`
        : undefined;
    const actions: vscode.CodeAction[] = [];
    for (const a of ['reinjectEdited', 'reinjectOriginal', 'drop'] as const) {
      const action = new vscode.CodeAction(payloadActionName(a), PayloadCodeActionProvider.payloadKind);
      action.command = { title: payloadActionName(a), command: COMMAND[a], arguments: [doc.uri] };
      const why = refusal ?? (a === 'reinjectEdited' ? syntax : undefined);
      if (why) action.disabled = { reason: why };
      if (a === 'reinjectEdited' && !why) action.isPreferred = true;
      actions.push(action);
    }
    // The fix for a line that does not parse: back to the bytes the store has.
    const ours = context.diagnostics.filter((d) => d.code === PAYLOAD_SYNTAX_CODE);
    if (ours.length && !refusal) {
      const fix = new vscode.CodeAction(
        `Revert payload ${p.id} to its last valid bytes`,
        vscode.CodeActionKind.QuickFix,
      );
      fix.diagnostics = ours;
      fix.command = { title: fix.title, command: 'nke.revertPayloadDocument', arguments: [doc.uri] };
      actions.push(fix);
    }
    return actions;
  }
}

/** The document text for the bytes the store has now (staged, else original). */
export async function storedText(store: PayloadStore, uri: vscode.Uri): Promise<string | undefined> {
  const p = parsePayloadUri(uri);
  if (!p) return undefined;
  return codecFor(p.kind).encode(await store.current(p.id));
}
