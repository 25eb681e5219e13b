// The editor's state in the webview: the working bytes (kept in step with the
// extension's document: each local edit is posted as a splice, undo/redo come
// back as splices), the original, cursor and selection, insert or overwrite,
// the diff and the search match. Views subscribe to `changed`.
import { diffBytes, type ByteDiff } from './byteDiff';
import { applySplice, type ByteSplice } from '../../extension/src/shared/payloadEditorProtocol';

export type Pane = 'hex' | 'ascii';

/** What changed, so a view redraws only what it must. */
export interface Change {
  bytes: boolean;
  /** The text pane made this edit (it does not re-encode its own text). */
  fromText?: boolean;
}

export class EditorState {
  bytes: Uint8Array = new Uint8Array(0);
  original: Uint8Array = new Uint8Array(0);
  /** The byte the caret is on; bytes.length is the append position. */
  cursor = 0;
  /** The other end of the selection (inclusive), or undefined: only the caret. */
  anchor: number | undefined;
  pane: Pane = 'hex';
  insertMode = false;
  readOnly = false;
  /**
   * The document's whole length; more than bytes.length while only its head
   * is here (a big payload's Init, until its Load): nothing is editable then.
   */
  length = 0;
  /** The high nibble was typed at the cursor; the next digit completes the byte. */
  private halfByte = false;
  /** Edits made here since the last load (an Init does not undo them: the extension has them). */
  localEdits = 0;
  diff: ByteDiff | undefined;
  /** The bytes `diff` was computed for (a big payload's diff lags its edits by a frame). */
  private diffOf: Uint8Array | undefined;
  match: { start: number; end: number } | undefined;
  private readonly listeners: ((c: Change) => void)[] = [];
  private diffQueued = false;

  constructor(private readonly post: (splice: ByteSplice, label: string) => void) {}

  onChange(l: (c: Change) => void): void {
    this.listeners.push(l);
  }

  private fire(c: Change): void {
    for (const l of this.listeners) l(c);
  }

  /** Every byte is here and the chunk is held: edits are possible. */
  get editable(): boolean {
    return !this.readOnly && this.complete;
  }

  /** All of the document is here (not only the head of a big payload). */
  get complete(): boolean {
    return this.bytes.length === this.length;
  }

  /** True when the working bytes differ from the original (false while only the first screen is here). */
  get edited(): boolean {
    if (!this.complete || this.bytes.length !== this.original.length) return this.complete;
    const d = this.diffOf === this.bytes ? this.diff : undefined;
    if (d) return d.changed + d.inserted + d.deleted > 0;
    for (let i = 0; i < this.bytes.length; i++) if (this.bytes[i] !== this.original[i]) return true;
    return false;
  }

  /** The original (and header facts) came again with bytes this one already edited past: only the original is taken. */
  loadOriginal(original: Uint8Array): void {
    this.original = original;
    this.diffOf = undefined;
    this.updateDiff(false);
    this.fire({ bytes: true });
  }

  /** A new document (Init, Reset): bytes replaced, caret kept in range; `length` more: only its head. */
  load(bytes: Uint8Array, original?: Uint8Array, length = bytes.length): void {
    this.bytes = bytes;
    this.length = length;
    this.localEdits = 0;
    if (original) this.original = original;
    this.diffOf = undefined;
    this.cursor = Math.min(this.cursor, bytes.length);
    this.anchor = undefined;
    this.halfByte = false;
    this.updateDiff(false);
    this.fire({ bytes: true });
  }

  /** A splice from the extension (undo, redo). */
  applyRemote(s: ByteSplice): void {
    this.bytes = applySplice(this.bytes, s);
    this.length = this.bytes.length;
    this.cursor = Math.min(s.offset + s.insert.length, this.bytes.length);
    this.anchor = undefined;
    this.halfByte = false;
    this.updateDiff(false);
    this.fire({ bytes: true });
  }

  /** A local edit: applied here, posted as one undo step. */
  edit(s: ByteSplice, label: string, fromText = false): boolean {
    if (!this.editable) return false;
    this.bytes = applySplice(this.bytes, s);
    this.length = this.bytes.length;
    this.localEdits++;
    this.post(s, label);
    this.updateDiff(false);
    this.fire({ bytes: true, fromText });
    return true;
  }

  /** The diff now for small payloads; after the frame for big ones (the rows redraw when it is ready). */
  private updateDiff(now: boolean): void {
    if (!this.complete) {
      this.diff = undefined; // against the whole bytes only, once the Load is here
      return;
    }
    // (now: callers that need the marks at once; big payloads get them after the frame anyway)
    if (now || this.bytes.length + this.original.length < 256 * 1024) {
      this.diff = diffBytes(this.original, this.bytes);
      this.diffOf = this.bytes;
      return;
    }
    if (this.diffQueued) return;
    this.diffQueued = true;
    // After the next painted frame: the rows show first, their marks a moment later.
    requestAnimationFrame(() =>
      setTimeout(() => {
        this.diffQueued = false;
        this.diff = diffBytes(this.original, this.bytes);
        this.diffOf = this.bytes;
        this.fire({ bytes: false });
      }),
    );
  }

  /** [start, end) of the selection; the caret's byte alone when nothing is selected. */
  selection(): [number, number] {
    if (this.anchor === undefined) return [this.cursor, this.cursor];
    const start = Math.min(this.anchor, this.cursor);
    return [start, Math.min(this.bytes.length, Math.max(this.anchor, this.cursor) + 1)];
  }

  selectedBytes(): Uint8Array {
    const [a, b] = this.selection();
    return this.bytes.subarray(a, b);
  }

  moveTo(at: number, extend: boolean): void {
    const to = Math.max(0, Math.min(this.bytes.length, at));
    if (extend) this.anchor ??= this.cursor;
    else this.anchor = undefined;
    this.cursor = to;
    this.halfByte = false;
    this.fire({ bytes: false });
  }

  selectRange(start: number, end: number): void {
    if (end <= start) return this.moveTo(start, false);
    this.anchor = start;
    this.cursor = Math.min(end - 1, this.bytes.length);
    this.halfByte = false;
    this.fire({ bytes: false });
  }

  /** Typing goes to the hex digits or to the ASCII column from now on (the caret and selection stay). */
  switchPane(pane: Pane): void {
    this.pane = pane;
    this.halfByte = false;
    this.fire({ bytes: false });
  }

  toggleInsertMode(): void {
    if (!this.editable) return; // read-only: there is no typing to insert or overwrite
    this.insertMode = !this.insertMode;
    this.halfByte = false;
    this.fire({ bytes: false });
  }

  /** The selection (or, with none, nothing at the caret) replaced by `insert`; the caret after it. */
  replaceSelection(insert: Uint8Array, label: string): void {
    const [a, b] = this.selection();
    if (!this.edit({ offset: a, deleteCount: b - a, insert }, label)) return;
    this.anchor = undefined;
    this.cursor = Math.min(a + insert.length, this.bytes.length);
    this.fire({ bytes: false });
  }

  /** A hex digit typed in the hex pane: high nibble, then low; inserts a byte first in insert mode. */
  typeNibble(d: number): void {
    if (!this.editable) return;
    const [a, b] = this.selection();
    if (b > a) {
      // Typing over a selection replaces it, as in any editor.
      this.edit({ offset: a, deleteCount: b - a, insert: Uint8Array.of(d << 4) }, 'Typing');
      this.anchor = undefined;
      this.cursor = a;
      this.halfByte = true;
    } else if (this.halfByte) {
      const v = (this.bytes[this.cursor] & 0xf0) | d;
      this.edit({ offset: this.cursor, deleteCount: 1, insert: Uint8Array.of(v) }, 'Typing');
      this.halfByte = false;
      this.cursor = Math.min(this.cursor + 1, this.bytes.length);
    } else {
      const appending = this.cursor >= this.bytes.length;
      const insert = this.insertMode || appending;
      const old = insert ? 0 : this.bytes[this.cursor];
      this.edit(
        { offset: this.cursor, deleteCount: insert ? 0 : 1, insert: Uint8Array.of((d << 4) | (old & 0x0f)) },
        insert ? 'Insert byte' : 'Typing',
      );
      this.halfByte = true;
    }
    this.fire({ bytes: false });
  }

  /** A character typed in the ASCII column: one byte, overwritten or inserted. */
  typeByte(v: number): void {
    if (!this.editable) return;
    const [a, b] = this.selection();
    const insert = this.insertMode || a >= this.bytes.length;
    const deleteCount = b > a ? b - a : insert ? 0 : 1;
    if (!this.edit({ offset: a, deleteCount, insert: Uint8Array.of(v) }, 'Typing')) return;
    this.anchor = undefined;
    this.cursor = Math.min(a + 1, this.bytes.length);
    this.halfByte = false;
    this.fire({ bytes: false });
  }

  /** Delete: the selection, else the byte at the caret; Backspace: the selection, else the byte before. */
  deleteKey(backwards: boolean): void {
    const [a, b] = this.selection();
    let start = a;
    let count = b - a;
    if (!count) {
      if (backwards) {
        if (this.cursor === 0) return;
        start = this.cursor - 1;
      } else if (this.cursor >= this.bytes.length) return;
      count = 1;
    }
    if (!this.edit({ offset: start, deleteCount: count, insert: new Uint8Array(0) }, 'Delete')) return;
    this.anchor = undefined;
    this.cursor = Math.min(start, this.bytes.length);
    this.halfByte = false;
    this.fire({ bytes: false });
  }
}
