// Syntax errors of payload documents as diagnostics, at the exact line and
// column the codec names. The code actions link their fix to these by
// PAYLOAD_SYNTAX_CODE, and disable Reinject Edited while any is present.
import * as vscode from 'vscode';
import { codecFor, type PayloadDecodeResult } from '../shared/payloadCodecs';
import { parsePayloadUri } from './payloadFileSystem';

/** Diagnostic code of a payload line that does not parse. */
export const PAYLOAD_SYNTAX_CODE = 'nke.payloadSyntax';

export class PayloadDiagnostics implements vscode.Disposable {
  private readonly collection = vscode.languages.createDiagnosticCollection('nke-payload');
  private readonly cache = new Map<string, { version: number; result: PayloadDecodeResult }>();
  private readonly subscriptions: vscode.Disposable[];

  constructor() {
    this.subscriptions = [
      vscode.workspace.onDidOpenTextDocument((d) => this.update(d)),
      vscode.workspace.onDidChangeTextDocument((e) => this.update(e.document)),
      vscode.workspace.onDidCloseTextDocument((d) => {
        this.collection.delete(d.uri);
        this.cache.delete(d.uri.toString());
      }),
    ];
    for (const d of vscode.workspace.textDocuments) this.update(d);
  }

  /** The document's bytes, or its errors (decoded once per document version). */
  decode(doc: vscode.TextDocument): PayloadDecodeResult | undefined {
    const p = parsePayloadUri(doc.uri);
    if (!p) return undefined;
    const key = doc.uri.toString();
    const hit = this.cache.get(key);
    if (hit && hit.version === doc.version) return hit.result;
    const result = codecFor(p.kind).decode(doc.getText());
    this.cache.set(key, { version: doc.version, result });
    return result;
  }

  private update(doc: vscode.TextDocument): void {
    const r = this.decode(doc);
    if (!r) return;
    if (r.ok) {
      this.collection.delete(doc.uri);
      return;
    }
    this.collection.set(
      doc.uri,
      r.errors.map((e) => {
        const d = new vscode.Diagnostic(
          new vscode.Range(e.line, e.column, e.line, e.column + Math.max(1, e.length)),
          `${e.message}. Nothing is sent while the payload has an error.`,
          vscode.DiagnosticSeverity.Error,
        );
        d.source = 'NKE';
        d.code = PAYLOAD_SYNTAX_CODE;
        return d;
      }),
    );
  }

  dispose(): void {
    for (const s of this.subscriptions) s.dispose();
    this.collection.dispose();
  }
}
