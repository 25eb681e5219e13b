// The payload editor webview: header, actions, hex and text panes, data
// inspector, diff summary and search, over one EditorState. Talks to the
// extension only through the messages of payloadEditorProtocol.ts. Every
// string from the payload or the traced process is set as textContent.
import './codicons.css';
import './style.css';
import {
  type EditorAction,
  type EditorChunkState,
  type EditorEndpoint,
  type EditorHeader,
  FIRST_SCREEN_ELEMENT_ID,
  type FirstScreen,
  type FromWebviewMessage,
  MessageType,
  type PaintMark,
  type ToWebviewMessage,
} from '../../extension/src/shared/payloadEditorProtocol';
import { countMatches, findMatch, parsePattern, type SearchMode } from './byteSearch';
import { type Countdown, countdownFrom, countdownText } from './countdown';
import { button, el, setText } from './dom';
import { EditorState } from './editorState';
import { bytesFromPaste, HexGrid } from './hexGrid';
import { inspect } from './inspector';
import { TextPane } from './textPane';

/** The steps to the first paint, on this clock (the extension's bench shows where the time went). */
const scriptStart = performance.now();
const marks: PaintMark[] = [
  { step: 'webview page started', at: performance.timeOrigin },
  { step: 'webview script started', at: Date.now() },
];
const mark = (step: string) => marks.push({ step, at: Date.now() });

declare function acquireVsCodeApi(): { postMessage(m: FromWebviewMessage): void };
const vscode = acquireVsCodeApi();
const post = (m: FromWebviewMessage) => vscode.postMessage(m);

const state = new EditorState((splice, label) => post({ type: MessageType.Edit, splice, label }));
const grid = new HexGrid(state);
const text = new TextPane(state);

function endpoint(e: EditorEndpoint | undefined): string {
  if (!e) return '—';
  return e.address.includes(':') ? `[${e.address}]:${e.port}` : `${e.address}:${e.port}`;
}

function sizeText(n: number): string {
  return n >= 1024 * 1024
    ? `${(n / 1024 / 1024).toFixed(2)} MiB (${n} B)`
    : n >= 10240
      ? `${(n / 1024).toFixed(1)} KiB (${n} B)`
      : `${n} B`;
}

// ---- header ----------------------------------------------------------------
const title = el('span', { cls: 'title' });
const facts = el('span', { cls: 'facts' });
const size = el('span', { cls: 'size', attrs: { 'data-testid': 'size' } });
const timeLeft = el('span', { cls: 'time-left', attrs: { 'data-testid': 'time-left' } });
const header = el('header', {}, title, facts, size, timeLeft);
const banner = el('div', { cls: 'banner', attrs: { role: 'alert', 'data-testid': 'banner' } });
banner.hidden = true;

/** The store's deadlines (extension clock) while held. */
let deadline: Countdown | undefined;
let chunk: EditorChunkState = { kind: 'gone', message: 'loading' };

function showHeader(h: EditorHeader): void {
  title.textContent = `#${h.id} ${h.process} (${h.pid})`;
  facts.textContent = `${h.direction === 'in' ? '↓ in' : '↑ out'} · ${endpoint(h.local)} → ${endpoint(h.remote)} · socket ${h.socketId}`;
}

function tick(): void {
  if (deadline) setText(timeLeft, countdownText(deadline, Date.now()));
}
setInterval(tick, 100);

function showChunkState(s: EditorChunkState): void {
  chunk = s;
  const gone = s.kind === 'gone';
  state.readOnly = gone;
  text.setReadOnly(gone);
  banner.hidden = !gone;
  banner.textContent = gone ? `${s.message}. Nothing will be sent from this editor.` : '';
  if (s.kind === 'held') {
    deadline = countdownFrom(s, Date.now());
    tick();
  } else {
    deadline = undefined;
    timeLeft.textContent = 'not held';
  }
  updateControls();
  grid.render();
}

/**
 * What can be done now, on the controls: nothing that sends or edits once the
 * chunk is gone (read-only); Reinject Edited and Revert only with an edit to
 * send or undo. Disabled controls are disabled, not only greyed (a click or
 * Ctrl+Enter on them does nothing).
 */
function updateControls(): void {
  const gone = chunk.kind === 'gone';
  const edited = state.edited;
  const set = (c: HTMLButtonElement | HTMLInputElement, disabled: boolean) => {
    if (c.disabled !== disabled) c.disabled = disabled;
  };
  set(reinjectEditedButton, gone || !edited);
  reinjectEditedButton.title = gone
    ? 'Nothing can be sent: the chunk is no longer held'
    : edited
      ? REINJECT_EDITED_TITLE
      : 'Nothing edited yet: Reinject Original sends the bytes unchanged';
  set(reinjectOriginalButton, gone);
  set(dropButton, gone);
  set(revertButton, gone || !edited);
  for (const c of [modeButton, replaceButton, replaceInput, replaceAsHex]) set(c, !state.editable);
}

// ---- actions -----------------------------------------------------------------
const status = el('div', { cls: 'status', attrs: { role: 'status', 'aria-live': 'polite' } });
function act(action: EditorAction): void {
  if (chunk.kind === 'gone') return;
  if (action === 'reinjectEdited') text.commit();
  // Ctrl+Enter comes here whatever the button says: a disabled action is not taken.
  const b = {
    reinjectEdited: reinjectEditedButton,
    reinjectOriginal: reinjectOriginalButton,
    drop: dropButton,
    revert: revertButton,
  }[action];
  updateControls();
  if (b.disabled) {
    status.textContent = b.title;
    return;
  }
  status.textContent = `${action === 'revert' ? 'Reverting' : action === 'drop' ? 'Dropping' : 'Sending'}…`;
  post({ type: MessageType.Act, action });
}
/** What the status line says once an action went through (a Drop sends nothing). */
const ACTION_DONE: Record<EditorAction, string> = {
  reinjectEdited: 'Sent the edited bytes.',
  reinjectOriginal: 'Sent the original bytes, unchanged.',
  drop: 'Dropped: nothing was sent, the peer never sees these bytes.',
  revert: 'Reverted to the original bytes.',
};
const isMac = navigator.platform.toUpperCase().includes('MAC');
const REINJECT_EDITED_TITLE = `Send the edited bytes (${isMac ? '⌘' : 'Ctrl'}+Enter)`;
const reinjectEditedButton = button('send', 'Reinject Edited', REINJECT_EDITED_TITLE, () =>
  act('reinjectEdited'),
);
reinjectEditedButton.classList.add('primary');
const reinjectOriginalButton = button(
  'check',
  'Reinject Original',
  'Send the bytes the filter held, unchanged',
  () => act('reinjectOriginal'),
);
const dropButton = button('trash', 'Drop', 'Send nothing: the peer never sees these bytes', () =>
  act('drop'),
);
const revertButton = button('discard', 'Revert', 'Back to the original bytes (undoable)', () =>
  act('revert'),
);
const sendButtons = [reinjectEditedButton, reinjectOriginalButton, dropButton, revertButton];
const modeButton = button('edit', 'Overwrite', 'Insert or overwrite hex digits (Insert key)', () => {
  state.toggleInsertMode();
  grid.element.focus();
});
const toolbar = el('div', { cls: 'toolbar', attrs: { role: 'toolbar' } }, ...sendButtons, modeButton);

// ---- replace bar -----------------------------------------------------------
const replaceInput = el('input', {
  attrs: {
    type: 'text',
    placeholder: 'hex (47 45 54) or text',
    'aria-label': 'Bytes to put in place of the selection',
  },
});
const replaceAsHex = el('input', { attrs: { type: 'checkbox', id: 'replace-hex', checked: '' } });
const replaceLabel = el('label', { text: 'hex', attrs: { for: 'replace-hex' } });
const replaceWhat = el('span', { cls: 'replace-what' });
const replaceButton = button('replace', 'Replace', 'Replace the selection (or insert at the caret)', () =>
  doReplace(),
);
const replaceError = el('span', { cls: 'error', attrs: { role: 'alert' } });
function doReplace(): void {
  const v = replaceInput.value;
  if (replaceAsHex.checked && !/^[\s0-9a-fA-F]*$/.test(v)) {
    replaceError.textContent = 'not hex: use pairs of 0-9 a-f, or untick hex';
    return;
  }
  const bytes = replaceAsHex.checked ? bytesFromPaste(v, true) : new TextEncoder().encode(v);
  if (replaceAsHex.checked && v.replace(/\s+/g, '').length % 2) {
    replaceError.textContent = 'an odd number of hex digits';
    return;
  }
  replaceError.textContent = '';
  state.replaceSelection(bytes, 'Replace');
  grid.reveal();
}
replaceInput.addEventListener('keydown', (e) => {
  if (e.key === 'Enter' && !(e.ctrlKey || e.metaKey)) {
    e.preventDefault();
    doReplace();
  }
});
const replaceBar = el(
  'div',
  { cls: 'bar replace-bar' },
  replaceWhat,
  replaceInput,
  replaceAsHex,
  replaceLabel,
  replaceButton,
  replaceError,
);

// ---- search ------------------------------------------------------------------
const searchInput = el('input', {
  attrs: { type: 'search', placeholder: 'find text, or hex: FF ?? 0A', 'aria-label': 'Find' },
});
const searchMode = el('select', { attrs: { 'aria-label': 'Find as' } });
for (const m of ['text', 'hex'] as const) {
  searchMode.appendChild(el('option', { text: m, attrs: { value: m } }));
}
const searchInfo = el('span', { cls: 'search-info', attrs: { 'aria-live': 'polite' } });
/** A search asked for before the whole payload was here (its direction), run once it is. */
let findWhenWhole: boolean | undefined;
/** Finds in all of the working bytes (not the rows drawn: those are only the ones in view). */
function find(backwards: boolean): void {
  const p = parsePattern(searchInput.value, searchMode.value as SearchMode);
  if (!p.ok) {
    searchInfo.textContent = p.error;
    return;
  }
  if (!state.complete) {
    // Only the first screen is here: the search runs on the whole payload once the Init brought it.
    findWhenWhole = backwards;
    searchInfo.textContent = 'searching the whole payload…';
    return;
  }
  const [a] = state.selection();
  const from = state.match && state.match.start === a ? a + (backwards ? 0 : 1) : a;
  const at = findMatch(state.bytes, p.pattern, from, backwards);
  if (at < 0) {
    state.match = undefined;
    searchInfo.textContent = 'no match';
    grid.render();
    return;
  }
  state.match = { start: at, end: at + p.pattern.length };
  state.selectRange(at, at + p.pattern.length);
  grid.reveal(at);
  searchInfo.textContent = `at 0x${at.toString(16).toUpperCase()} · ${countMatches(state.bytes, p.pattern)} match(es)`;
}
searchInput.addEventListener('keydown', (e) => {
  if (e.key === 'Enter') {
    e.preventDefault();
    find(e.shiftKey);
  }
});
const searchBar = el(
  'div',
  { cls: 'bar search-bar' },
  searchInput,
  searchMode,
  button('arrow-up', '', 'Previous match (Shift+Enter, Shift+F3)', () => find(true)),
  button('arrow-down', '', 'Next match (Enter, F3)', () => find(false)),
  searchInfo,
);

// ---- diff summary and inspector ----------------------------------------------
const diffSummary = el('div', {
  cls: 'diff-summary',
  attrs: { 'data-testid': 'diff-summary', 'aria-live': 'polite' },
});
const inspectorBody = el('tbody');
const inspectorRows: { tr: HTMLTableRowElement; th: HTMLTableCellElement; td: HTMLTableCellElement }[] = [];
const inspector = el(
  'aside',
  { cls: 'inspector', attrs: { 'aria-label': 'Data inspector' } },
  el('h2', { text: 'Data inspector' }),
  el('table', {}, inspectorBody),
);

function showDiff(): void {
  const d = state.diff;
  const before = state.original.length;
  const after = state.length;
  // (the original comes with the whole bytes: until then, the size only)
  setText(
    size,
    before === after || !state.complete ? sizeText(after) : `${sizeText(before)} → ${sizeText(after)}`,
  );
  if (!d) {
    // Only the head is here yet, or a big payload's diff is computed after the first frame.
    setText(diffSummary, 'Comparing with the original…');
    diffSummary.className = 'diff-summary';
    return;
  }
  if (!d || (!d.changed && !d.inserted && !d.deleted)) {
    setText(diffSummary, 'No changes against the original.');
    diffSummary.className = 'diff-summary';
    return;
  }
  const delta = after - before;
  let t = `Against the original: ${d.changed} changed, ${d.inserted} inserted, ${d.deleted} deleted.`;
  if (delta) {
    t += ` Size ${before} B → ${after} B (${delta > 0 ? '+' : ''}${delta}). On TCP the peer receives ${Math.abs(delta)} byte${Math.abs(delta) === 1 ? '' : 's'} ${delta > 0 ? 'more' : 'fewer'} than the sender wrote: a length the protocol announced (Content-Length, a length prefix) must change with it.`;
  }
  setText(diffSummary, t);
  diffSummary.className = delta ? 'diff-summary resized' : 'diff-summary';
}

function showInspector(): void {
  const [a, b] = state.selection();
  // Rows kept and rewritten where their text changed (moving the caret changes a few values).
  const rows = inspect(state.bytes, a, b - a);
  while (inspectorRows.length < rows.length) {
    const th = el('th', { attrs: { scope: 'row' } });
    const td = el('td');
    inspectorRows.push({ tr: inspectorBody.appendChild(el('tr', {}, th, td)), th, td });
  }
  inspectorRows.forEach((r, i) => {
    const row = rows[i];
    if (r.tr.hidden !== !row) r.tr.hidden = !row;
    if (!row) return;
    if (r.th.textContent !== row.label) r.th.textContent = row.label;
    if (r.td.textContent !== row.value) r.td.textContent = row.value;
  });
  setText(
    replaceWhat,
    b > a
      ? `Replace ${b - a} B at 0x${a.toString(16).toUpperCase()} with`
      : `Insert at 0x${a.toString(16).toUpperCase()}`,
  );
  setText(modeButton.querySelector('.label')!, state.insertMode ? 'Insert' : 'Overwrite');
  modeButton.setAttribute('aria-pressed', String(state.insertMode));
}

let sideQueued = false;
state.onChange(() => {
  grid.queueRender();
  if (sideQueued) return;
  sideQueued = true;
  requestAnimationFrame(() => {
    sideQueued = false;
    showDiff();
    showInspector();
    updateControls();
  });
});

// ---- keys for the whole editor ------------------------------------------------
window.addEventListener('keydown', (e) => {
  const mod = e.ctrlKey || e.metaKey;
  if (mod && e.key === 'Enter') {
    e.preventDefault();
    act('reinjectEdited');
  } else if (mod && e.key.toLowerCase() === 'f') {
    e.preventDefault();
    searchInput.focus();
    searchInput.select();
  } else if (e.key === 'F3') {
    e.preventDefault();
    find(e.shiftKey);
  }
});

// Insert belongs to this editor (the hex pane's insert/overwrite): in no part of it is it also
// VS Code's overtype toggle, which the webview would otherwise get the key forwarded to.
document.addEventListener('keydown', (e) => {
  if (e.key === 'Insert') e.stopPropagation();
});

// ---- layout and messages ------------------------------------------------------
const app = document.getElementById('app')!;
const panes = el(
  'main',
  { cls: 'panes' },
  el('section', { cls: 'pane hex-pane', attrs: { 'aria-label': 'Hex' } }, grid.element),
  el(
    'div',
    { cls: 'side' },
    el('section', { cls: 'pane text-pane-box', attrs: { 'aria-label': 'Text' } }, text.element),
    inspector,
  ),
);
app.className = 'editor';
app.replaceChildren(header, banner, toolbar, searchBar, replaceBar, diffSummary, panes, status);

grid.onScrolled = (firstByte) => text.followView(firstByte);
grid.onEndPainted = (ms) => {
  const at = Date.now();
  post({
    type: MessageType.Painted,
    what: 'end',
    ms,
    marks: [
      { step: 'end key', at: at - ms },
      { step: 'last row painted', at },
    ],
  });
};

/** The bytes of base64 text (the page's first screen). */
function fromBase64(b64: string): Uint8Array {
  const bin = atob(b64);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

/** The header, state and bytes of a document (the page's first screen, an Init). */
function show(
  h: EditorHeader,
  s: EditorChunkState,
  bytes: Uint8Array,
  original: Uint8Array | undefined,
  length: number,
): void {
  showHeader(h);
  state.load(bytes, original, length);
  showChunkState(s);
  showDiff();
  showInspector();
}

// The first screen comes with the page (JSON, never run): drawn now, before the first frame,
// with no message either way; the whole document is asked for once that frame is painted.
const firstData = document.getElementById(FIRST_SCREEN_ELEMENT_ID)?.textContent;
if (firstData) {
  const first = JSON.parse(firstData) as FirstScreen;
  const head = fromBase64(first.head);
  show(
    first.header,
    first.state,
    head,
    first.original ? fromBase64(first.original) : undefined,
    first.length,
  );
  mark('rows drawn');
}
grid.element.focus();
requestAnimationFrame(() =>
  setTimeout(() => {
    mark('frame painted');
    post({ type: MessageType.Painted, what: 'first', ms: performance.now() - scriptStart, marks });
    post({ type: MessageType.Ready });
    // The text pane after the first paint: encoding and laying out text takes longer than rows.
    text.start();
  }),
);

window.addEventListener('message', (ev: MessageEvent<ToWebviewMessage>) => {
  const m = ev.data;
  switch (m.type) {
    case MessageType.Init:
      // The whole document: editable now (a big one's diff follows after a frame). Edits made
      // since a whole first screen are the extension's already, after the bytes of this Init.
      if (state.complete && state.localEdits) {
        showHeader(m.header);
        showChunkState(m.state);
        state.loadOriginal(m.original);
      } else show(m.header, m.state, m.bytes, m.original, m.bytes.length);
      mark('whole bytes loaded');
      if (findWhenWhole !== undefined) {
        const backwards = findWhenWhole;
        findWhenWhole = undefined;
        find(backwards);
      }
      return;
    case MessageType.Splice:
      // Only the first screen here: the Init on its way was made after this splice and has it.
      if (!state.complete) return;
      state.applyRemote(m.splice);
      grid.reveal();
      return;
    case MessageType.Reset:
      state.load(m.bytes);
      return;
    case MessageType.State:
      showChunkState(m.state);
      return;
    case MessageType.ActionResult:
      status.textContent = m.error ? `Refused: ${m.error}` : ACTION_DONE[m.action];
      return;
  }
});
