// The webview payload editor: a custom editor on `nke-payload:/<id>/<title>.nkebytes`,
// one more view of the payload store. Its document holds the working bytes
// and VS Code's edit stack (each webview edit is one undo step); Save stages
// them in the store, as saving a text or hex document does, so every view
// shows the same edit; the actions go through the store, the only place
// that sends. While the editor is open the store keeps the chunk held.
//
// The webview runs payload bytes (hostile) through textContent only, under a
// Content Security Policy that admits our one script and style (nonce, both
// inline in the page with its first screen) and the font of dist/webview/,
// nothing else (see page()).
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as vscode from 'vscode';
import {
  applySplice,
  type ByteSplice,
  type EditorAction,
  type EditorChunkState,
  type EditorHeader,
  FIRST_SCREEN_BYTES,
  FIRST_SCREEN_ELEMENT_ID,
  type FirstScreen,
  firstScreenJson,
  type FromWebviewMessage,
  inverseSplice,
  MessageType,
  spliceError,
  type ToWebviewMessage,
} from '../shared/payloadEditorProtocol';
import { noLongerHeld } from '../shared/payloadReasons';
import type { PayloadEditorOpener } from './payloadCommands';
import { type PayloadAction, type PayloadStore, refusalFor } from './payloadStore';
import { PAYLOAD_SCHEME, payloadTitle } from './payloadUri';

export const PAYLOAD_EDITOR_VIEW_TYPE = 'nke.payloadEditor';
const EDITOR_EXTENSION = '.nkebytes';
/** The store's `by` for edits this editor staged (it skips their echo). */
const STAGED_BY = 'payload editor';

/** The editor's resource for a payload the store knows. */
export function payloadEditorUri(store: PayloadStore, id: string): vscode.Uri {
  const view = store.view(id);
  if (!view) throw new Error(noLongerHeld(id, undefined));
  return vscode.Uri.from({ scheme: PAYLOAD_SCHEME, path: `/${id}/${payloadTitle(view)}${EDITOR_EXTENSION}` });
}

export function parsePayloadEditorUri(uri: vscode.Uri): string | undefined {
  if (uri.scheme !== PAYLOAD_SCHEME) return undefined;
  return /^\/(\d+)\/[^/]*\.nkebytes$/.exec(uri.path)?.[1];
}

/**
 * `bytes` over a buffer of its own: webview messaging carries a typed array's
 * whole ArrayBuffer, so a view into a bigger one would carry all of that.
 */
function ownBuffer(bytes: Uint8Array): Uint8Array {
  return bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength ? bytes : bytes.slice();
}

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** One payload open in the editor: its working bytes; the store has the original and the staged edit. */
export class PayloadEditorDocument implements vscode.CustomDocument {
  /** What the store had when this document last loaded or saved (to tell its own saves from others'). */
  saved: Uint8Array;
  private readonly disposables: { dispose(): void }[] = [];

  constructor(
    readonly uri: vscode.Uri,
    readonly id: string,
    public bytes: Uint8Array,
    lease: { dispose(): void },
  ) {
    this.saved = bytes;
    this.disposables.push(lease);
  }

  get dirty(): boolean {
    return this.bytes !== this.saved && !equalBytes(this.bytes, this.saved);
  }

  dispose(): void {
    for (const d of this.disposables) d.dispose();
  }
}

/** Open → first paint, measured in the extension host (the bench reads these). */
export interface PayloadEditorTiming {
  id: string;
  size: number;
  /** ms from the Open command to the webview's report of its first painted rows */
  openToFirstPaintMs?: number;
  /** ms inside the webview: its script's start to the painted first screen */
  scriptToPaintMs?: number;
  /** ms from the key press that scrolled to the end to the painted last row (webview clock) */
  scrollToEndMs?: number;
  /** ms from the Open command to the report of the painted last row (that key pressed after the first paint) */
  openToEndMs?: number;
  /**
   * Where Open → first paint went: each step, ms after the Open command; the
   * extension host's steps and the webview's (their clocks agree on one machine).
   */
  steps?: { step: string; ms: number }[];
}

export class PayloadEditorProvider
  implements vscode.CustomEditorProvider<PayloadEditorDocument>, PayloadEditorOpener
{
  private readonly changed = new vscode.EventEmitter<vscode.CustomDocumentEditEvent<PayloadEditorDocument>>();
  readonly onDidChangeCustomDocument = this.changed.event;
  private readonly panels = new Map<PayloadEditorDocument, vscode.WebviewPanel>();
  /** Since the Open command, per payload id: the extension host's steps (for the timing). */
  private readonly openTrace = new Map<string, { step: string; at: number }[]>();
  readonly timings: PayloadEditorTiming[] = [];
  /** When the Open command ran, per payload id (Open → scrolled to the end). */
  private readonly openedAt = new Map<string, number>();

  constructor(
    private readonly store: PayloadStore,
    private readonly bundleRoot: vscode.Uri,
    private readonly log: vscode.LogOutputChannel,
  ) {}

  /** Opens a payload in the editor (Open in Payload Editor). */
  async open(id: string): Promise<void> {
    const at = Date.now();
    this.openTrace.set(id, [{ step: 'Open', at }]);
    this.openedAt.set(id, at);
    // Fetched first: a payload released meanwhile says so here, not in an empty editor.
    await this.store.original(id);
    this.mark(id, 'original fetched');
    await vscode.commands.executeCommand(
      'vscode.openWith',
      payloadEditorUri(this.store, id),
      PAYLOAD_EDITOR_VIEW_TYPE,
      {
        preview: false,
      },
    );
  }

  async openCustomDocument(
    uri: vscode.Uri,
    context: vscode.CustomDocumentOpenContext,
  ): Promise<PayloadEditorDocument> {
    const id = parsePayloadEditorUri(uri);
    if (!id) throw new Error(`${uri.toString()} is not a payload editor resource`);
    await this.store.original(id);
    const bytes = context.backupId
      ? await vscode.workspace.fs.readFile(vscode.Uri.parse(context.backupId))
      : await this.store.current(id);
    const doc = new PayloadEditorDocument(uri, id, bytes, this.store.keepHeld(id, 'payload editor'));
    if (context.backupId) doc.saved = await this.store.current(id);
    this.mark(id, 'document opened');
    return doc;
  }

  resolveCustomEditor(doc: PayloadEditorDocument, panel: vscode.WebviewPanel): void {
    this.panels.set(doc, panel);
    this.mark(doc.id, 'webview panel given');
    panel.webview.options = { enableScripts: true, localResourceRoots: [this.bundleRoot] };
    panel.webview.html = this.page(panel.webview, doc);
    this.mark(doc.id, 'page made');
    const post = (m: ToWebviewMessage) => void panel.webview.postMessage(m);
    const subs: { dispose(): void }[] = [
      panel.webview.onDidReceiveMessage((m: FromWebviewMessage) =>
        this.onMessage(doc, m, post).catch((e: Error) =>
          this.log.error(`payload editor ${doc.id}: ${e.message}`),
        ),
      ),
      this.store.onDidChange((change) => {
        if (change.id !== doc.id) return;
        if (change.what !== 'staged') {
          post({ type: MessageType.State, state: this.chunkState(doc.id) });
          return;
        }
        // Saved from another view (the text or hex document): shown unless this one has unsaved edits.
        if (change.by === STAGED_BY) return;
        const current = change.staged ?? this.store.originalIfLoaded(doc.id);
        if (current && !doc.dirty && !equalBytes(current, doc.saved)) {
          doc.bytes = doc.saved = current;
          post({ type: MessageType.Reset, bytes: ownBuffer(current) });
        }
      }),
    ];
    // A hidden editor's webview is gone (no retained context) and is rebuilt from its page when
    // shown again: the page then carries the first screen of the bytes as they are by then.
    subs.push(
      panel.onDidChangeViewState(() => {
        if (!panel.visible) panel.webview.html = this.page(panel.webview, doc);
      }),
    );
    // The webview counts down to the deadline of the last State; a moved deadline comes as a new State.
    panel.onDidDispose(() => {
      for (const s of subs) s.dispose();
      this.panels.delete(doc);
      this.openedAt.delete(doc.id);
    });
  }

  /** A step of an Open under way (for the timing; nothing when the editor was not opened by open()). */
  private mark(id: string, step: string): void {
    this.openTrace.get(id)?.push({ step, at: Date.now() });
  }

  private header(id: string): EditorHeader {
    const v = this.store.view(id);
    if (!v) throw new Error(noLongerHeld(id, undefined));
    return {
      id,
      process: v.process,
      pid: v.pid,
      direction: v.direction,
      socketId: v.socketId,
      local: v.local,
      remote: v.remote,
    };
  }

  private chunkState(id: string): EditorChunkState {
    const s = this.store.state(id);
    const times = this.store.holdTimes(id);
    if (s.kind === 'held' && times) {
      // The store's times as instants of this clock, and this clock's now: the webview's clock may differ.
      const now = Date.now();
      const keptUntil = times.keptUntilMs === undefined ? undefined : now + times.keptUntilMs;
      return { kind: 'held', deadline: now + times.leftMs, keptUntil, now };
    }
    return { kind: 'gone', message: refusalFor(id, s) ?? noLongerHeld(id, undefined) };
  }

  private async onMessage(
    doc: PayloadEditorDocument,
    m: FromWebviewMessage,
    post: (m: ToWebviewMessage) => void,
  ): Promise<void> {
    switch (m.type) {
      case MessageType.Ready: {
        this.mark(doc.id, 'webview ready');
        const panel = this.panels.get(doc);
        if (!panel) return;
        const original = await this.store.original(doc.id);
        // Read after the wait: a Splice posted meanwhile was skipped by the webview (not whole yet).
        const bytes = doc.bytes;
        const init: ToWebviewMessage = {
          type: MessageType.Init,
          header: this.header(doc.id),
          bytes: ownBuffer(bytes),
          original: ownBuffer(original),
          state: this.chunkState(doc.id),
        };
        await panel.webview.postMessage(init);
        this.mark(doc.id, 'init handed to the workbench');
        return;
      }
      case MessageType.Edit:
        return this.edit(doc, m.splice, m.label, post);
      case MessageType.Act:
        try {
          await this.act(doc, m.action, post);
          post({ type: MessageType.ActionResult, action: m.action });
        } catch (e) {
          const message = (e as Error).message;
          this.log.error(`payload editor, ${m.action} of payload ${doc.id}: ${message}`);
          post({ type: MessageType.ActionResult, action: m.action, error: message });
          void vscode.window.showErrorMessage(`NKE: ${message}`);
        }
        return;
      case MessageType.Painted: {
        const size = doc.bytes.length;
        if (m.what === 'first') {
          const trace = this.openTrace.get(doc.id);
          this.openTrace.delete(doc.id);
          const now = Date.now();
          const asked = trace?.[0].at;
          const steps = trace && [...trace, ...m.marks, { step: 'painted, reported', at: now }];
          this.timings.push({
            id: doc.id,
            size,
            openToFirstPaintMs: asked !== undefined ? now - asked : undefined,
            scriptToPaintMs: m.ms,
            steps: steps
              ?.sort((a, b) => a.at - b.at)
              .map(({ step, at }) => ({ step, ms: at - (asked as number) })),
          });
        } else {
          const opened = this.openedAt.get(doc.id);
          this.timings.push({
            id: doc.id,
            size,
            scrollToEndMs: m.ms,
            openToEndMs: opened === undefined ? undefined : Date.now() - opened,
          });
        }
        this.log.debug(`payload editor ${doc.id}: ${m.what} paint, ${size} bytes, ${m.ms.toFixed(1)} ms`);
        return;
      }
    }
  }

  /** One webview edit: applied to the document, one step on VS Code's undo stack. */
  private edit(
    doc: PayloadEditorDocument,
    splice: ByteSplice,
    label: string,
    post: (m: ToWebviewMessage) => void,
  ): void {
    const bad = spliceError(doc.bytes.length, splice);
    if (bad) throw new Error(bad);
    const refusal = refusalFor(doc.id, this.store.state(doc.id));
    if (refusal) {
      // The webview is read-only once it knows; an edit already on its way is undone there.
      post({ type: MessageType.Reset, bytes: ownBuffer(doc.bytes) });
      return;
    }
    const inverse = inverseSplice(doc.bytes, splice);
    doc.bytes = applySplice(doc.bytes, splice);
    const apply = (s: ByteSplice) => {
      doc.bytes = applySplice(doc.bytes, s);
      post({ type: MessageType.Splice, splice: { ...s, insert: ownBuffer(s.insert) } });
    };
    this.changed.fire({ document: doc, label, undo: () => apply(inverse), redo: () => apply(splice) });
  }

  private async act(
    doc: PayloadEditorDocument,
    action: EditorAction,
    post: (m: ToWebviewMessage) => void,
  ): Promise<void> {
    if (action === 'revert') {
      // Back to the bytes the filter held, as one undoable edit.
      const original = await this.store.original(doc.id);
      const all = { offset: 0, deleteCount: doc.bytes.length, insert: original.slice() };
      this.edit(doc, all, 'Revert', post);
      // The webview made no edit of its own here: it is told, as of an undo.
      post({ type: MessageType.Splice, splice: all });
      return;
    }
    const refusal = refusalFor(doc.id, this.store.state(doc.id));
    if (refusal) throw new Error(refusal);
    if (action === 'reinjectEdited' && doc.dirty) {
      // Saved first, as the documents do: the store, the text and hex documents and the row show what was sent.
      // A save of the workbench's own under way (auto-save, a backup) cancels this one ("Canceled"):
      // the edit is then staged here, which is all a save of this editor does.
      const saved = await vscode.workspace.save(doc.uri).then(
        (uri) => uri !== undefined,
        (e: Error) => {
          this.log.warn(
            `payload editor ${doc.id}: saving before Reinject Edited: ${e.message}; staged directly`,
          );
          return false;
        },
      );
      if (!saved || doc.dirty) {
        this.store.stage(doc.id, doc.bytes, STAGED_BY);
        doc.saved = doc.bytes;
      }
    }
    const storeAction: PayloadAction = action;
    await this.store.act(doc.id, storeAction, action === 'reinjectEdited' ? doc.bytes : undefined);
  }

  async saveCustomDocument(doc: PayloadEditorDocument): Promise<void> {
    this.store.stage(doc.id, doc.bytes, STAGED_BY);
    doc.saved = doc.bytes;
  }

  async saveCustomDocumentAs(doc: PayloadEditorDocument, destination: vscode.Uri): Promise<void> {
    await vscode.workspace.fs.writeFile(destination, doc.bytes);
  }

  async revertCustomDocument(doc: PayloadEditorDocument): Promise<void> {
    doc.bytes = doc.saved = await this.store.current(doc.id);
    const panel = this.panels.get(doc);
    if (panel) {
      void panel.webview.postMessage({
        type: MessageType.Reset,
        bytes: ownBuffer(doc.bytes),
      } as ToWebviewMessage);
    }
  }

  async backupCustomDocument(
    doc: PayloadEditorDocument,
    context: vscode.CustomDocumentBackupContext,
  ): Promise<vscode.CustomDocumentBackup> {
    await vscode.workspace.fs.writeFile(context.destination, doc.bytes);
    return {
      id: context.destination.toString(),
      delete: () => void vscode.workspace.fs.delete(context.destination).then(undefined, () => undefined),
    };
  }

  /**
   * The page: its first screen (FirstScreen, as data), our script and style
   * inline under one nonce, the font from the bundle folder; nothing else may
   * load or run. Inline, the page paints without fetching a file first.
   */
  private page(webview: vscode.Webview, doc: PayloadEditorDocument): string {
    const nonce = crypto.randomBytes(18).toString('base64');
    const root = this.bundleRoot.fsPath;
    const read = (f: string) => fs.readFileSync(path.join(root, f), 'utf8');
    // An inline block ends at the first "</script" or "</style" in it, wherever that is.
    const script = read('webview.js').replace(/<\/(script)/gi, '<\\/$1');
    // The font is the bundle's file (a relative url() would resolve against the page, not the bundle).
    const style = read('webview.css')
      .replace(/url\((['"]?)([\w.-]+\.(?:ttf|woff2?))(?:\?[^'")]*)?\1\)/g, (_, q: string, f: string) => {
        const uri = webview.asWebviewUri(vscode.Uri.joinPath(this.bundleRoot, f)).toString();
        return `url(${q || '"'}${uri}${q || '"'})`;
      })
      .replace(/<\/(style)/gi, '<\\/$1');
    const bytes = doc.bytes;
    const whole = bytes.length <= FIRST_SCREEN_BYTES;
    const original = whole ? this.store.originalIfLoaded(doc.id) : undefined;
    const first: FirstScreen = {
      header: this.header(doc.id),
      state: this.chunkState(doc.id),
      length: bytes.length,
      head: Buffer.from(bytes.buffer, bytes.byteOffset, Math.min(bytes.length, FIRST_SCREEN_BYTES)).toString(
        'base64',
      ),
      original:
        original && Buffer.from(original.buffer, original.byteOffset, original.length).toString('base64'),
    };
    const csp = [
      "default-src 'none'",
      `style-src 'nonce-${nonce}'`,
      `font-src ${webview.cspSource}`,
      `script-src 'nonce-${nonce}'`,
    ].join('; ');
    return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="${csp}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<style nonce="${nonce}">${style}</style>
<title>Payload editor</title>
</head>
<body>
<div id="app" class="editor"></div>
<script type="application/json" id="${FIRST_SCREEN_ELEMENT_ID}">${firstScreenJson(first)}</script>
<script nonce="${nonce}">${script}</script>
</body>
</html>`;
  }

  dispose(): void {
    this.changed.dispose();
  }
}

/**
 * Registers the custom editor. Its command, Open in Payload Editor, is in the
 * command table (registerCommands.ts) with the other payload commands.
 */
export function registerPayloadEditor(deps: {
  store: PayloadStore;
  extensionUri: vscode.Uri;
  log: vscode.LogOutputChannel;
}): { provider: PayloadEditorProvider; registration: vscode.Disposable } {
  const provider = new PayloadEditorProvider(
    deps.store,
    vscode.Uri.joinPath(deps.extensionUri, 'dist', 'webview'),
    deps.log,
  );
  const registration = vscode.Disposable.from(
    provider,
    vscode.window.registerCustomEditorProvider(PAYLOAD_EDITOR_VIEW_TYPE, provider, {
      supportsMultipleEditorsPerDocument: false,
      webviewOptions: { retainContextWhenHidden: false },
    }),
  );
  return { provider, registration };
}
