// The hex pane: offset, 16 bytes and their ASCII per row, virtualized (only
// the rows in view exist in the DOM, so 1 MiB opens and scrolls like 1 KiB).
// It draws what the editor state says (bytes, diff marks, cursor, selection,
// search match) and turns keys, clicks and pastes into edits.
import { Mark } from './byteDiff';
import { el } from './dom';
import type { EditorState } from './editorState';

export const BYTES_PER_ROW = 16;
const ROW_HEIGHT = 20;
const OVERSCAN = 6;

function hex2(b: number): string {
  return b.toString(16).padStart(2, '0').toUpperCase();
}

function printable(b: number): string {
  return b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : '.';
}

/**
 * One cell as last drawn. A draw compares with it and writes only what
 * differs: a keystroke or a scroll by a row touches the cells that changed,
 * not the 16 x (rows in view) x 4 properties of a full redraw.
 */
interface Cell {
  el: HTMLSpanElement;
  text: string;
  cls: string;
  title: string;
  at: number;
}

interface RowElements {
  row: HTMLDivElement;
  offset: HTMLSpanElement;
  offsetText: string;
  hidden: boolean;
  hex: Cell[];
  ascii: Cell[];
}

function draw(c: Cell, text: string, cls: string, title: string, at: number): void {
  if (c.text !== text) c.el.textContent = c.text = text;
  if (c.cls !== cls) c.el.className = c.cls = cls;
  if (c.title !== title) c.el.title = c.title = title;
  if (c.at !== at) c.el.dataset.i = String((c.at = at));
}

/** Bytes from pasted text: hex pairs ("47 45 54", "474554") when it is only that, else its UTF-8. */
export function bytesFromPaste(text: string, preferHex: boolean): Uint8Array {
  const compact = text.replace(/\s+/g, '');
  if (preferHex && compact.length && compact.length % 2 === 0 && /^[0-9a-fA-F]+$/.test(compact)) {
    return Uint8Array.from(compact.match(/../g)!.map((h) => parseInt(h, 16)));
  }
  return new TextEncoder().encode(text);
}

export class HexGrid {
  readonly element: HTMLDivElement;
  private readonly spacer: HTMLDivElement;
  private readonly window: HTMLDivElement;
  private readonly pool: RowElements[] = [];
  private renderQueued = false;
  private spacerHeight = '';
  private windowShift = '';
  private dragging = false;
  /** Called after a frame was painted that showed the last row, with the time since `endRequestedAt`. */
  onEndPainted?: (ms: number) => void;
  /** The first byte in view changed (the text pane follows it for big payloads). */
  onScrolled?: (firstByte: number) => void;
  private endRequestedAt?: number;
  /** Ctrl+End came while only the head was here: to the real end once all of it is. */
  private endWhenComplete = false;

  constructor(private readonly state: EditorState) {
    this.spacer = el('div', { cls: 'spacer' });
    this.window = el('div', { cls: 'window' });
    this.element = el(
      'div',
      {
        cls: 'hex-grid',
        attrs: {
          tabindex: '0',
          role: 'grid',
          'aria-label':
            'Hex pane: arrows move, hex digits edit, Tab moves to the ASCII column and Shift+Tab back, Insert toggles insert mode, Delete and Backspace delete',
        },
      },
      this.spacer,
      this.window,
    );
    this.element.addEventListener('scroll', () => this.queueRender());
    this.element.addEventListener('keydown', (e) => {
      if (!this.onKey(e)) return;
      // Handled here, so not VS Code's too: the webview forwards every key that reaches its
      // window to the workbench's keybindings (Insert would toggle the text editors' overtype).
      e.preventDefault();
      e.stopPropagation();
    });
    this.element.addEventListener('mousedown', (e) => this.onMouse(e, 'down'));
    this.element.addEventListener('mousemove', (e) => this.onMouse(e, 'move'));
    window.addEventListener('mouseup', () => (this.dragging = false));
    this.element.addEventListener('paste', (e) => {
      e.preventDefault();
      const text = e.clipboardData?.getData('text/plain') ?? '';
      if (text) this.state.replaceSelection(bytesFromPaste(text, this.state.pane === 'hex'), 'Paste');
    });
    this.element.addEventListener('copy', (e) => {
      e.preventDefault();
      const sel = this.state.selectedBytes();
      const text =
        this.state.pane === 'hex'
          ? Array.from(sel, hex2).join(' ')
          : new TextDecoder('utf-8', { fatal: false }).decode(sel);
      e.clipboardData?.setData('text/plain', text);
    });
    new ResizeObserver(() => this.queueRender()).observe(this.element);
    state.onChange((c) => {
      if (!c.bytes || !this.endWhenComplete || !state.complete) return;
      this.endWhenComplete = false;
      state.moveTo(state.bytes.length, false);
      this.reveal();
    });
  }

  private visibleRows(): number {
    return Math.max(1, Math.floor(this.element.clientHeight / ROW_HEIGHT));
  }

  /** Draws now (the first paint, and after each change). */
  render(): void {
    this.renderQueued = false;
    const s = this.state;
    // The whole document's rows (+1: the append position), even while only its head is here.
    const total = Math.floor(s.length / BYTES_PER_ROW) + 1;
    const height = `${total * ROW_HEIGHT}px`;
    if (this.spacerHeight !== height) this.spacer.style.height = this.spacerHeight = height;
    // The first draw (the page's first screen) asks nothing of the layout, which would lay
    // the page out once more before its first frame: not scrolled yet, and no taller than the
    // window; no rows above or below the view to spare yet.
    const firstDraw = this.pool.length === 0;
    const scrollTop = firstDraw ? 0 : this.element.scrollTop;
    const first = Math.max(0, Math.floor(scrollTop / ROW_HEIGHT) - (firstDraw ? 0 : OVERSCAN));
    const count = Math.min(
      total - first,
      firstDraw ? Math.ceil(window.innerHeight / ROW_HEIGHT) : this.visibleRows() + 2 * OVERSCAN,
    );
    const shift = `translateY(${first * ROW_HEIGHT}px)`;
    if (this.windowShift !== shift) this.window.style.transform = this.windowShift = shift;
    this.onScrolled?.(Math.floor(scrollTop / ROW_HEIGHT) * BYTES_PER_ROW);
    while (this.pool.length < count) this.pool.push(this.makeRow());
    // Rows are recycled by position: scrolled by one row, each shows its neighbour's bytes,
    // and a cell is written only where its text or marks differ from what it showed.
    for (let i = 0; i < this.pool.length; i++) {
      const r = this.pool[i];
      const hidden = i >= count;
      if (r.hidden !== hidden) r.row.hidden = r.hidden = hidden;
      if (!hidden) this.fillRow(r, first + i);
    }
    if (this.endRequestedAt !== undefined && s.complete && first + count >= total) {
      const t0 = this.endRequestedAt;
      this.endRequestedAt = undefined;
      requestAnimationFrame(() => setTimeout(() => this.onEndPainted?.(performance.now() - t0)));
    }
  }

  queueRender(): void {
    if (this.renderQueued) return;
    this.renderQueued = true;
    requestAnimationFrame(() => {
      // Drawn since (render() called directly, as for the first screen): nothing left to draw.
      if (!this.renderQueued) return;
      this.render();
    });
  }

  private makeRow(): RowElements {
    const offset = el('span', { cls: 'off' });
    const hexBox = el('span', { cls: 'hex' });
    const asciiBox = el('span', { cls: 'ascii' });
    const hex: Cell[] = [];
    const ascii: Cell[] = [];
    const cell = (box: HTMLSpanElement, cls: string): Cell => ({
      el: box.appendChild(el('span', { cls })),
      text: '',
      cls,
      title: '',
      at: -1,
    });
    for (let i = 0; i < BYTES_PER_ROW; i++) {
      hex.push(cell(hexBox, 'b'));
      ascii.push(cell(asciiBox, 'c'));
    }
    const row = el('div', { cls: 'row', attrs: { role: 'row' } }, offset, hexBox, asciiBox);
    this.window.appendChild(row);
    return { row, offset, offsetText: '', hidden: false, hex, ascii };
  }

  private fillRow(r: RowElements, rowIndex: number): void {
    const s = this.state;
    const base = rowIndex * BYTES_PER_ROW;
    const offsetText = base.toString(16).padStart(8, '0').toUpperCase();
    if (r.offsetText !== offsetText) r.offset.textContent = r.offsetText = offsetText;
    const [selStart, selEnd] = s.selection();
    const match = s.match;
    for (let i = 0; i < BYTES_PER_ROW; i++) {
      const at = base + i;
      if (at > s.bytes.length || (at === s.bytes.length && !s.complete)) {
        // Past the end, or not here yet (a big payload's rows past its first screen, for a moment).
        draw(r.hex[i], '', 'b void', '', at);
        draw(r.ascii[i], '', 'c void', '', at);
        continue;
      }
      let cls = '';
      let hexText = '__';
      let asciiText = ' ';
      if (at === s.bytes.length) {
        cls = ' end';
      } else {
        const b = s.bytes[at];
        hexText = hex2(b);
        asciiText = printable(b);
        const mark = s.diff?.marks[at];
        if (mark === Mark.Changed) cls += ' changed';
        else if (mark === Mark.Inserted) cls += ' inserted';
      }
      const deleted = s.diff?.deletions.get(at);
      if (deleted) cls += ' deleted-before';
      const title = deleted
        ? `${deleted} original byte${deleted === 1 ? '' : 's'} deleted before this one`
        : '';
      if (at >= selStart && at < selEnd) cls += ' selected';
      if (match && at >= match.start && at < match.end) cls += ' match';
      if (at === s.cursor) cls += s.pane === 'hex' ? ' cursor focus-pane' : ' cursor';
      draw(r.hex[i], hexText, 'b' + cls + (at === s.cursor && s.pane !== 'hex' ? ' other' : ''), title, at);
      draw(
        r.ascii[i],
        asciiText,
        'c' + cls.replace(' focus-pane', '') + (at === s.cursor && s.pane === 'ascii' ? ' focus-pane' : ''),
        title,
        at,
      );
    }
  }

  /** Scrolls so the cursor's row is in view. */
  reveal(offset = this.state.cursor): void {
    const row = Math.floor(offset / BYTES_PER_ROW);
    const top = row * ROW_HEIGHT;
    if (top < this.element.scrollTop) this.element.scrollTop = top;
    else if (top + ROW_HEIGHT > this.element.scrollTop + this.element.clientHeight) {
      this.element.scrollTop = top + ROW_HEIGHT - this.element.clientHeight;
    }
  }

  private onMouse(e: MouseEvent, kind: 'down' | 'move'): void {
    const cell = (e.target as HTMLElement).closest<HTMLElement>('.b, .c');
    if (!cell || cell.classList.contains('void') || cell.dataset.i === undefined) return;
    if (kind === 'move' && !this.dragging) return;
    const at = Number(cell.dataset.i);
    if (kind === 'down') {
      this.dragging = true;
      this.state.pane = cell.classList.contains('b') ? 'hex' : 'ascii';
      this.state.moveTo(at, e.shiftKey);
      this.element.focus();
      e.preventDefault();
    } else {
      this.state.moveTo(at, true);
    }
  }

  /** One key in the pane; true when it was the editor's (the caller stops it there). */
  private onKey(e: KeyboardEvent): boolean {
    const s = this.state;
    const mod = e.ctrlKey || e.metaKey;
    const page = this.visibleRows() * BYTES_PER_ROW;
    const moves: Record<string, () => number> = {
      ArrowLeft: () => s.cursor - 1,
      ArrowRight: () => s.cursor + 1,
      ArrowUp: () => s.cursor - BYTES_PER_ROW,
      ArrowDown: () => s.cursor + BYTES_PER_ROW,
      PageUp: () => s.cursor - page,
      PageDown: () => s.cursor + page,
      Home: () => (mod ? 0 : s.cursor - (s.cursor % BYTES_PER_ROW)),
      End: () =>
        mod ? s.bytes.length : Math.min(s.bytes.length, s.cursor - (s.cursor % BYTES_PER_ROW) + 15),
    };
    const move = moves[e.key];
    if (move && !e.altKey) {
      if (e.key === 'End' && mod) {
        this.endRequestedAt = performance.now();
        this.endWhenComplete = !s.complete;
      }
      s.moveTo(move(), e.shiftKey);
      this.reveal();
      return true;
    }
    if (mod && !e.altKey && e.key.toLowerCase() === 'a') {
      s.selectRange(0, s.bytes.length);
      return true;
    }
    if (mod || e.altKey) return false; // undo/redo, save, Ctrl+Enter...: the editor's keybindings
    if (e.key === 'Tab') {
      // The hex digits and the ASCII column are two stops: Tab from the digits to the
      // column, Shift+Tab back; past them, focus moves on as usual (no keyboard trap).
      const to = e.shiftKey ? 'hex' : 'ascii';
      if (s.pane === to) return false;
      s.switchPane(to);
      return true;
    }
    if (e.key === 'Insert') {
      s.toggleInsertMode();
      return true;
    }
    if (e.key === 'Escape' && s.anchor !== undefined) {
      s.moveTo(s.cursor, false);
      return true;
    }
    if (e.key === 'Backspace' || e.key === 'Delete') {
      s.deleteKey(e.key === 'Backspace');
      this.reveal();
      return true;
    }
    if (e.key.length !== 1) return false;
    if (s.pane === 'hex') {
      if (!/^[0-9a-fA-F]$/.test(e.key)) return false;
      s.typeNibble(parseInt(e.key, 16));
    } else if (e.key.charCodeAt(0) > 0x7e) {
      s.replaceSelection(new TextEncoder().encode(e.key), 'Typing');
    } else {
      s.typeByte(e.key.charCodeAt(0));
    }
    this.reveal();
    return true;
  }
}
