// The header's time left, counted down against the extension's clock: the
// store's deadlines come as instants of that clock with its `now` at sending
// (EditorChunkState), and the webview adds only the time elapsed on its own
// clock since. A webview whose clock is off (another machine, a remote
// window) shows the same time left as the CodeLens.
import type { EditorChunkState } from '../../extension/src/shared/payloadEditorProtocol';

type Held = Extract<EditorChunkState, { kind: 'held' }>;

export interface Countdown {
  /** the deadline, extension clock */
  at: number;
  /** kept held while open, at the latest until (extension clock) */
  keptUntil?: number;
  /** how far the extension's clock is ahead of this one (ms; negative: behind) */
  extensionAhead: number;
}

/** From a held state, received when this clock read `webviewNow`. */
export function countdownFrom(s: Held, webviewNow: number): Countdown {
  return { at: s.deadline, keptUntil: s.keptUntil, extensionAhead: s.now - webviewNow };
}

/** "4.2 s left", and "· kept held while open, up to 71 s" while an editor keeps it held past the deadline. */
export function countdownText(c: Countdown, webviewNow: number): string {
  const now = webviewNow + c.extensionAhead;
  const left = Math.max(0, c.at - now);
  const kept = c.keptUntil === undefined ? 0 : Math.max(0, c.keptUntil - now);
  return (
    `${(left / 1000).toFixed(1)} s left` +
    (kept > left ? ` · kept held while open, up to ${(kept / 1000).toFixed(0)} s` : '')
  );
}
