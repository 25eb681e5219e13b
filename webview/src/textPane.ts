// The text pane: the payload in the lossless text form the text documents
// use (payloadCodecs: UTF-8, escapes for every other byte), editable. Typing
// is decoded and sent as one splice of the bytes that differ, so the hex pane
// and the diff follow; a text that does not decode (a bad escape) is shown as
// an error and changes nothing.
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

export class TextPane {
  readonly element: HTMLDivElement;
  readonly textarea: HTMLTextAreaElement;
  private readonly error: HTMLDivElement;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private stale = true;

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
    this.element = el('div', { cls: 'text-box' }, this.textarea, this.error);
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
    requestAnimationFrame(() => this.refresh());
  }

  refresh(): void {
    if (!this.stale) return;
    this.stale = false;
    const { selectionStart, selectionEnd } = this.textarea;
    this.textarea.value = encodeText(this.state.bytes);
    this.textarea.readOnly = this.state.readOnly;
    this.error.textContent = '';
    if (document.activeElement === this.textarea) {
      this.textarea.setSelectionRange(selectionStart, selectionEnd);
    }
  }

  /** Typing becomes an edit of the bytes (one undo step per pause). */
  commit(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    if (this.stale || this.state.readOnly) return;
    const r = decodeText(this.textarea.value);
    if (!r.ok) {
      this.error.textContent = `Not applied: ${formatSyntaxError(r.errors[0])}`;
      return;
    }
    this.error.textContent = '';
    const s = spliceBetween(this.state.bytes, r.bytes);
    if (s.deleteCount || s.insert.length) this.state.edit(s, 'Typing in text', true);
  }

  setReadOnly(readOnly: boolean): void {
    this.textarea.readOnly = readOnly;
  }
}
