// The messages between the payload editor webview (webview/src) and its
// custom editor provider in the extension host
// (extension/src/payload/payloadEditorProvider.ts): the one definition of
// that boundary, imported by both sides. No runtime imports: the webview
// bundle and plain mocha load it.
//
// Bytes travel as Uint8Array (VS Code's webview messaging carries typed
// arrays without a JSON detour). Edits are splices, so a keystroke in a
// 1 MiB payload moves a few bytes, not the payload. The page itself carries
// its first screen (FirstScreen: the header, the state and the first
// FIRST_SCREEN_BYTES, in the HTML with the script and the style), so the
// rows are painted before any message went either way; the whole bytes come
// in the Init the webview asks for (Ready) once that frame was painted:
// moving 1 MiB from the extension host into the webview takes longer than
// drawing the rows in view.

export const enum MessageType {
  // extension -> webview
  Init = 'init',
  Splice = 'splice',
  Reset = 'reset',
  State = 'state',
  ActionResult = 'actionResult',
  // webview -> extension
  Ready = 'ready',
  Edit = 'edit',
  Act = 'act',
  Painted = 'painted',
}

/** One replacement of the working bytes: `deleteCount` bytes at `offset` give way to `insert`. */
export interface ByteSplice {
  offset: number;
  deleteCount: number;
  insert: Uint8Array;
}

/** An address as the header shows it. */
export interface EditorEndpoint {
  address: string;
  port: number;
}

/** What the header names: the chunk, its socket and its process (hostile strings: shown as text). */
export interface EditorHeader {
  id: string;
  process: string;
  pid: number;
  direction: 'in' | 'out';
  socketId: string;
  local?: EditorEndpoint;
  remote?: EditorEndpoint;
}

/**
 * Where the chunk stands: held, or not any more (and why). While held, the
 * store's deadlines as instants of the extension's clock, with that clock's
 * `now` when the message was made: the webview counts down against
 * `now` + its own elapsed time, so a webview clock that differs from the
 * extension's (another machine, a remote window) shows the same time left.
 */
export type EditorChunkState =
  | {
      kind: 'held';
      /** the filter releases the chunk unchanged at this instant (extension clock, ms since the epoch) */
      deadline: number;
      /** while an editor keeps it held: the latest it is released unchanged (extension clock) */
      keptUntil?: number;
      /** the extension's clock when this state was made */
      now: number;
    }
  | { kind: 'gone'; message: string };

export type EditorAction = 'reinjectEdited' | 'reinjectOriginal' | 'drop' | 'revert';

/**
 * The page carries this many of the first working bytes (256 rows: a screen
 * however tall), and all of them with the original when the payload is no
 * longer: editable from the first frame.
 */
export const FIRST_SCREEN_BYTES = 4096;

/** Id of the page's data block (`<script type="application/json">`, never run) holding the FirstScreen. */
export const FIRST_SCREEN_ELEMENT_ID = 'nke-first-screen';

/**
 * What the page carries to paint its first screen without a message: JSON,
 * bytes as base64 (so no payload byte is ever markup in the page).
 */
export interface FirstScreen {
  header: EditorHeader;
  state: EditorChunkState;
  /** the working bytes' whole length */
  length: number;
  /** base64 of the first FIRST_SCREEN_BYTES working bytes (all of them when `length` is no more) */
  head: string;
  /** base64 of the original when the head is all of the working bytes, else undefined (it comes in the Init) */
  original?: string;
}

/** The whole document, as it opens (after the first screen) or reopens after the webview was rebuilt. */
export interface InitMessage {
  type: MessageType.Init;
  header: EditorHeader;
  /** all the working bytes */
  bytes: Uint8Array;
  /** the bytes the filter held */
  original: Uint8Array;
  state: EditorChunkState;
}

/** Undo or redo changed the working bytes by this splice. */
export interface SpliceMessage {
  type: MessageType.Splice;
  splice: ByteSplice;
}

/** The working bytes were replaced (reverted to the saved state, or saved from another view). */
export interface ResetMessage {
  type: MessageType.Reset;
  bytes: Uint8Array;
}

/** The chunk's state or deadline changed. */
export interface StateMessage {
  type: MessageType.State;
  state: EditorChunkState;
}

/** An action the webview asked for finished: `error` says why it was refused. */
export interface ActionResultMessage {
  type: MessageType.ActionResult;
  action: EditorAction;
  error?: string;
}

/** The webview painted its first screen and wants the whole document (an Init). */
export interface ReadyMessage {
  type: MessageType.Ready;
}

/** The person edited the bytes (one undo step). */
export interface EditMessage {
  type: MessageType.Edit;
  splice: ByteSplice;
  label: string;
}

/** The person chose an action (Reinject Edited sends the working bytes). */
export interface ActMessage {
  type: MessageType.Act;
  action: EditorAction;
}

/** The rows were painted: the page's first screen ('first') or after scrolling to the last row ('end'). */
export interface PaintedMessage {
  type: MessageType.Painted;
  what: 'first' | 'end';
  /** ms from what caused it (the script's start, or the key press) to the painted frame. */
  ms: number;
  /** The webview's steps on the way, as instants of its clock (ms since the epoch): where the time went. */
  marks: PaintMark[];
}

/** One step of the webview on the way to a paint (script started, rows drawn, frame painted...). */
export interface PaintMark {
  step: string;
  at: number;
}

export type ToWebviewMessage =
  InitMessage | SpliceMessage | ResetMessage | StateMessage | ActionResultMessage;
export type FromWebviewMessage = ReadyMessage | EditMessage | ActMessage | PaintedMessage;

/** Applies a splice to a copy of `bytes` (both sides use it; offsets are checked by the caller). */
export function applySplice(bytes: Uint8Array, s: ByteSplice): Uint8Array {
  const out = new Uint8Array(bytes.length - s.deleteCount + s.insert.length);
  out.set(bytes.subarray(0, s.offset), 0);
  out.set(s.insert, s.offset);
  out.set(bytes.subarray(s.offset + s.deleteCount), s.offset + s.insert.length);
  return out;
}

/** The splice that undoes `s` once it was applied to `before`. */
export function inverseSplice(before: Uint8Array, s: ByteSplice): ByteSplice {
  return {
    offset: s.offset,
    deleteCount: s.insert.length,
    insert: before.slice(s.offset, s.offset + s.deleteCount),
  };
}

/** Why a splice does not fit `length` bytes, or undefined when it does. */
export function spliceError(length: number, s: ByteSplice): string | undefined {
  const ok =
    Number.isInteger(s.offset) &&
    Number.isInteger(s.deleteCount) &&
    s.offset >= 0 &&
    s.deleteCount >= 0 &&
    s.offset + s.deleteCount <= length &&
    s.insert instanceof Uint8Array;
  return ok ? undefined : `edit at ${s.offset} (${s.deleteCount} deleted) does not fit ${length} bytes`;
}

/**
 * The FirstScreen as the text of the page's data block: JSON with `<`, `>`
 * and `&` as \u escapes, so no string in it (a process name is hostile) can
 * close the block or open markup; JSON.parse gives the same value back.
 */
export function firstScreenJson(first: FirstScreen): string {
  return JSON.stringify(first).replace(
    /[<>&\u2028\u2029]/g,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`,
  );
}
