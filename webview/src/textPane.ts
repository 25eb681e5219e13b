// The text pane: the payload in the lossless text form the text documents
// use (payloadCodecs: UTF-8, escapes for every other byte), editable. Typing
// is decoded and sent as one splice of the bytes that differ, so the hex pane
// and the diff follow; a text that does not decode (a bad escape) is shown as
// an error and changes nothing. A payload over WHOLE_TEXT_MAX is shown as
// the text of a window of bytes around the hex pane's rows in view (a
// textarea laying out 1 MiB of text stalls the page for seconds); edits
// there splice into that window.
import { decodeText, encodeText, formatSyntaxError } from '../../extension/src/shared/payloadCodecs';
import { el } from './dom';
import type { EditorState } from './editorState';

/** The splice that turns `from` into `to`: what lies between their common prefix and suffix. */
export function spliceBetween(from: Uint8Array, to: Uint8Array) {
  let p = 0;
  while (p < from.length && p < to.length && from[p] === to[p]) p++;
  let s = 0;
  while (s < from.length - p && s < to.length - p && from[from.length - 1 - s] === to[to.length - 1 - s]) s++;
  return { offset: p, deleteCount: from.length - p - s, insert: to.slice(p, to.length - s) };
}

/**
 * Puts `text` in the textarea by replacing only the part that differs (a hex
 * keystroke changes a few characters of the text, not 256 KiB of it); the
 * caret and selection move with the text around them.
 */
export function replaceChangedText(ta: HTMLTextAreaElement, text: string): void {
  const old = ta.value;
  if (old === text) return;
  const { start, deleteCount, insert } = changedRange(old, text);
  ta.setRangeText(insert, start, start + deleteCount, 'preserve');
}

/** Where `to` differs from `from`: the characters between their common prefix and suffix. */
export function changedRange(
  from: string,
  to: string,
): { start: number; deleteCount: number; insert: string } {
  let p = 0;
  const n = Math.min(from.length, to.length);
  while (p < n && from.charCodeAt(p) === to.charCodeAt(p)) p++;
  let q = 0;
  while (q < n - p && from.charCodeAt(from.length - 1 - q) === to.charCodeAt(to.length - 1 - q)) q++;
  return { start: p, deleteCount: from.length - p - q, insert: to.slice(p, to.length - q) };
}

const WHOLE_TEXT_MAX = 256 * 1024;
const WINDOW_BYTES = 8 * 1024;

export class TextPane {
  /** The bytes [start, end) the text shows (all of them up to WHOLE_TEXT_MAX). */
  private window = { start: 0, end: 0 };
  private readonly note: HTMLDivElement;
  /** The first byte the hex pane shows (the window follows it for big payloads). */
  viewStart = 0;
  readonly element: HTMLDivElement;
  readonly textarea: HTMLTextAreaElement;
  private readonly error: HTMLDivElement;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private stale = true;
  /** Shown after the first paint only (start()): laying out even 32 KiB of text costs a frame. */
  private started = false;

  constructor(private readonly state: EditorState) {
    this.textarea = el('textarea', {
      cls: 'text-pane',
      attrs: {
        spellcheck: 'false',
        'aria-label': 'Text pane: the payload as text, other bytes as \\xHH escapes',
        wrap: 'soft',
      },
    });
    this.error = el('div', { cls: 'text-error', attrs: { role: 'alert' } });
    this.note = el('div', { cls: 'text-note' });
    this.element = el('div', { cls: 'text-box' }, this.note, this.textarea, this.error);
    this.textarea.addEventListener('input', () => {
      if (this.timer) clearTimeout(this.timer);
      // Decoding a big text on every key would lag: wait for a pause in typing.
      this.timer = setTimeout(() => this.commit(), this.state.bytes.length > 64 * 1024 ? 300 : 60);
    });
    this.textarea.addEventListener('blur', () => this.commit());
    state.onChange((c) => {
      if (c.bytes && !c.fromText) this.markStale();
    });
  }

  /** The text is re-encoded on the next frame (after a hex edit, undo, reset). */
  markStale(): void {
    this.stale = true;
    // After the next painted frame: the hex rows show first, the text (its layout is slower) a moment later.
    if (this.started) requestAnimationFrame(() => setTimeout(() => this.refresh()));
  }

  /** After the hex pane's first paint: the text shows, and follows every change from now on. */
  start(): void {
    this.started = true;
    this.refresh();
  }

  refresh(): void {
    if (!this.stale) return;
    this.stale = false;
    // The whole length decides (only the head of a big payload may be here yet).
    const n = this.state.length;
    if (n <= WHOLE_TEXT_MAX) {
      this.window = { start: 0, end: n };
      this.note.textContent = '';
    } else {
      // Start at a line break near the hex pane's view, so the text starts with a whole character.
      const here = this.state.bytes.length;
      const start = Math.max(0, Math.min(this.viewStart, here - WINDOW_BYTES));
      this.window = { start, end: Math.min(here, start + WINDOW_BYTES) };
      this.note.textContent = `Text of bytes 0x${start.toString(16).toUpperCase()}–0x${this.window.end.toString(16).toUpperCase()} of ${n} (the payload is too big to show whole; the window follows the hex pane).`;
    }
    replaceChangedText(
      this.textarea,
      encodeText(this.state.bytes.subarray(this.window.start, this.window.end)),
    );
    this.textarea.readOnly = !this.state.editable;
    if (this.error.textContent) this.error.textContent = '';
  }

  /** Typing becomes an edit of the bytes (one undo step per pause). */
  commit(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    if (this.stale || !this.state.editable) return;
    const r = decodeText(this.textarea.value);
    if (!r.ok) {
      this.error.textContent = `Not applied: ${formatSyntaxError(r.errors[0])}`;
      return;
    }
    this.error.textContent = '';
    const { start, end } = this.window;
    const s = spliceBetween(this.state.bytes.subarray(start, end), r.bytes);
    if (s.deleteCount || s.insert.length) {
      this.window = { start, end: end - s.deleteCount + s.insert.length };
      this.state.edit({ ...s, offset: s.offset + start }, 'Typing in text', true);
    }
  }

  /** The hex pane scrolled: a windowed text follows it (not while the person types in it). */
  followView(firstByte: number): void {
    this.viewStart = firstByte;
    if (this.state.length <= WHOLE_TEXT_MAX || document.activeElement === this.textarea) return;
    if (firstByte >= this.window.start && firstByte + 1024 <= this.window.end) return;
    this.viewStart = Math.max(0, firstByte - 1024);
    this.markStale();
  }

  setReadOnly(readOnly: boolean): void {
    this.textarea.readOnly = readOnly;
  }
}
