// The line at the top of a payload document: the time the filter still holds
// the chunk (its real deadline, kept moving while the editor is open) and the
// three actions; once the chunk is gone, what happened to it instead.
import * as vscode from 'vscode';
import { noLongerHeld } from '../shared/payloadReasons';
import type { PayloadDiagnostics } from './payloadDiagnostics';
import { parsePayloadUri } from './payloadFileSystem';
import { payloadActionName, type PayloadStore } from './payloadStore';

/** "4.2 s", "1:52" */
export function formatTimeLeft(ms: number): string {
  const s = Math.max(0, ms) / 1000;
  if (s < 60) return `${s.toFixed(1)} s`;
  const whole = Math.floor(s);
  return `${Math.floor(whole / 60)}:${String(whole % 60).padStart(2, '0')}`;
}

export class PayloadCodeLensProvider implements vscode.CodeLensProvider, vscode.Disposable {
  private readonly changed = new vscode.EventEmitter<void>();
  readonly onDidChangeCodeLenses = this.changed.event;
  private readonly subscriptions: vscode.Disposable[];
  private ticker?: ReturnType<typeof setInterval>;

  constructor(
    private readonly store: PayloadStore,
    private readonly diagnostics: PayloadDiagnostics,
  ) {
    this.subscriptions = [
      new vscode.Disposable(store.onDidChange(() => this.changed.fire()).dispose),
      vscode.window.onDidChangeVisibleTextEditors(() => this.updateTicker()),
      vscode.workspace.onDidChangeTextDocument((e) => {
        if (parsePayloadUri(e.document.uri)) this.changed.fire();
      }),
    ];
    this.updateTicker();
  }

  /** The countdown ticks once a second while a held payload is visible. */
  private updateTicker(): void {
    const wanted = vscode.window.visibleTextEditors.some((e) => {
      const p = parsePayloadUri(e.document.uri);
      return p && this.store.state(p.id).kind === 'held';
    });
    if (wanted && !this.ticker) {
      this.ticker = setInterval(() => {
        this.changed.fire();
        this.updateTicker();
      }, 1000);
    } else if (!wanted && this.ticker) {
      clearInterval(this.ticker);
      this.ticker = undefined;
    }
  }

  provideCodeLenses(doc: vscode.TextDocument): vscode.CodeLens[] {
    const p = parsePayloadUri(doc.uri);
    if (!p) return [];
    const top = new vscode.Range(0, 0, 0, 0);
    const lens = (title: string, command = '', args: unknown[] = []) =>
      new vscode.CodeLens(top, { title, command, arguments: args });
    const s = this.store.state(p.id);
    if (s.kind === 'released') {
      return [
        lens(`$(circle-slash) ${noLongerHeld(p.id, s.reason)}. Nothing can be sent for it; read-only.`),
      ];
    }
    if (s.kind === 'sent') {
      const size = s.size !== undefined ? ` (${s.size} bytes)` : '';
      return [
        lens(`$(pass) Sent: ${payloadActionName(s.action)}${size}. Nothing more can be sent; read-only.`),
      ];
    }
    if (s.kind === 'unknown') return [lens(`$(question) ${noLongerHeld(p.id, undefined)}`)];
    const times = this.store.holdTimes(p.id);
    let time = `$(clock) ${formatTimeLeft(times?.leftMs ?? 0)} left`;
    if (times?.keptUntilMs !== undefined) {
      time += ` · kept held while open, released unchanged in ${formatTimeLeft(times.keptUntilMs)} at the latest`;
    }
    const parsed = this.diagnostics.decode(doc);
    const staged = this.store.staged(p.id);
    const edited = staged ? ` · edited: ${s.view.size} → ${staged.length} bytes` : '';
    return [
      lens(time + edited),
      lens(
        parsed && !parsed.ok
          ? '$(error) Reinject Edited Data (fix the error first)'
          : '$(send) Reinject Edited Data',
        'nke.reinjectEdited',
        [doc.uri],
      ),
      lens('$(check) Reinject Original', 'nke.reinjectOriginal', [doc.uri]),
      lens('$(trash) Drop', 'nke.dropPayload', [doc.uri]),
      p.kind === 'text'
        ? lens('$(file-binary) Open as Hex', 'nke.openPayloadHex', [doc.uri])
        : lens('$(file-text) Open as Text', 'nke.openPayload', [doc.uri]),
    ];
  }

  dispose(): void {
    if (this.ticker) clearInterval(this.ticker);
    for (const s of this.subscriptions) s.dispose();
    this.changed.dispose();
  }
}
