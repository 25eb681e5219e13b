// The `nke-payload:` file system: a text and a hex document per held chunk,
// both views of the payload store. Reading encodes what the store has (the
// staged edit, else the original); saving decodes and stages, and sends
// nothing. A chunk that is no longer held reads as before but is read-only
// (FileStat.permissions), and saving it is refused with the reason.
import * as vscode from 'vscode';
import { codecFor, formatSyntaxError } from '../shared/payloadCodecs';
import { noLongerHeld } from '../shared/payloadReasons';
import { type PayloadStore, refusalFor } from './payloadStore';
import { parsePayloadPath, PAYLOAD_SCHEME, type PayloadDocKind, payloadPath } from './payloadUri';

/** The store's `by` for an edit saved from a payload document of `kind`. */
function savedBy(kind: PayloadDocKind): string {
  return `${kind} document`;
}

function savedKind(by: string | undefined): PayloadDocKind | undefined {
  return by === savedBy('text') ? 'text' : by === savedBy('hex') ? 'hex' : undefined;
}

/** The document of a payload in one form. */
export function payloadUri(store: PayloadStore, id: string, kind: PayloadDocKind): vscode.Uri {
  const view = store.view(id);
  if (!view) throw new Error(noLongerHeld(id, undefined));
  return vscode.Uri.from({ scheme: PAYLOAD_SCHEME, path: payloadPath(view, kind) });
}

export function parsePayloadUri(uri: vscode.Uri): { id: string; kind: PayloadDocKind } | undefined {
  return uri.scheme === PAYLOAD_SCHEME ? parsePayloadPath(uri.path) : undefined;
}

export class PayloadFileSystem implements vscode.FileSystemProvider, vscode.Disposable {
  private readonly changed = new vscode.EventEmitter<vscode.FileChangeEvent[]>();
  readonly onDidChangeFile = this.changed.event;
  /** Bumped on every change of a payload: the documents' mtime, so editors reload. */
  private readonly versions = new Map<string, number>();
  private readonly created = Date.now();
  private readonly subscription: { dispose(): void };

  constructor(private readonly store: PayloadStore) {
    // Bytes and read-only state only: a moved deadline changes no byte, and
    // an announced change makes a clean editor reload (and lose its light bulb).
    // An edit saved from one document is announced for the other one only:
    // the saved one has those bytes already, and a change event for a file
    // VS Code is saving races its save.
    this.subscription = store.onDidChange((c) => {
      if (c.what === 'deadline') return;
      const savedFrom = c.what === 'staged' ? savedKind(c.by) : undefined;
      this.touch(
        c.id,
        (['text', 'hex'] as const).filter((k) => k !== savedFrom),
      );
    });
  }

  /** The documents of `id` changed (an edit staged in one, or the chunk's state). */
  private touch(id: string, kinds: readonly PayloadDocKind[]): void {
    this.versions.set(id, (this.versions.get(id) ?? 0) + 1);
    if (!this.store.view(id) || !kinds.length) return;
    this.changed.fire(
      kinds.map((kind) => ({ type: vscode.FileChangeType.Changed, uri: payloadUri(this.store, id, kind) })),
    );
  }

  private parse(uri: vscode.Uri): { id: string; kind: PayloadDocKind } {
    const p = parsePayloadUri(uri);
    if (!p) throw vscode.FileSystemError.FileNotFound(uri);
    return p;
  }

  watch(): vscode.Disposable {
    // Changes come from the store, for every payload document alike.
    return new vscode.Disposable(() => {});
  }

  stat(uri: vscode.Uri): vscode.FileStat {
    // "/" and "/<id>": the folders a payload document sits in (a save checks its parent).
    if (/^\/(\d+\/?)?$/.test(uri.path)) {
      return { type: vscode.FileType.Directory, ctime: this.created, mtime: this.created, size: 0 };
    }
    const { id, kind } = this.parse(uri);
    const state = this.store.state(id);
    if (state.kind === 'unknown' && !this.store.originalIfLoaded(id)) {
      throw vscode.FileSystemError.FileNotFound(noLongerHeld(id, undefined));
    }
    const bytes = this.store.staged(id) ?? this.store.originalIfLoaded(id);
    return {
      type: vscode.FileType.File,
      ctime: this.created,
      mtime: this.created + (this.versions.get(id) ?? 0),
      // The encoded size once the bytes are here; an estimate before.
      size: bytes
        ? new TextEncoder().encode(codecFor(kind).encode(bytes)).length
        : state.kind === 'held'
          ? state.view.size
          : 0,
      permissions: state.kind === 'held' ? undefined : vscode.FilePermission.Readonly,
    };
  }

  async readFile(uri: vscode.Uri): Promise<Uint8Array> {
    const { id, kind } = this.parse(uri);
    const state = this.store.state(id);
    if (state.kind !== 'held' && !this.store.originalIfLoaded(id)) {
      throw vscode.FileSystemError.FileNotFound(refusalFor(id, state) ?? noLongerHeld(id, undefined));
    }
    const bytes = await this.store.current(id);
    return new TextEncoder().encode(codecFor(kind).encode(bytes));
  }

  writeFile(uri: vscode.Uri, content: Uint8Array): void {
    const { id, kind } = this.parse(uri);
    const refusal = refusalFor(id, this.store.state(id));
    if (refusal) throw vscode.FileSystemError.NoPermissions(`${refusal}; nothing was saved`);
    const r = codecFor(kind).decode(new TextDecoder('utf-8', { fatal: false }).decode(content));
    if (!r.ok) {
      // Nothing is staged from a dump with an error: a bad line is never a guess.
      throw new Error(
        `payload ${id}: the ${kind === 'hex' ? 'hex dump' : 'text'} has ${r.errors.length === 1 ? 'an error' : `${r.errors.length} errors`}, ${formatSyntaxError(r.errors[0])}; nothing was staged`,
      );
    }
    this.store.stage(id, r.bytes, savedBy(kind));
    // The store fires only when the bytes changed; the saved document gets a
    // new mtime either way.
    this.versions.set(id, (this.versions.get(id) ?? 0) + 1);
  }

  readDirectory(): [string, vscode.FileType][] {
    return [];
  }

  createDirectory(): void {
    throw vscode.FileSystemError.NoPermissions('payload documents are created by the filter, not by hand');
  }

  delete(): void {
    throw vscode.FileSystemError.NoPermissions('a payload is dropped with NKE: Drop Payload, not deleted');
  }

  rename(): void {
    throw vscode.FileSystemError.NoPermissions('payload documents cannot be renamed');
  }

  dispose(): void {
    this.subscription.dispose();
    this.changed.dispose();
  }
}
