// Why a payload is no longer held, in the words every view uses: the helper's
// errors, the payload store's refusals, the CodeLens of a released payload,
// the `nke` event lines and a late verdict after `nke run` exited. One table,
// so a row that expired under the menu, an editor whose chunk went away and a
// terminal say the same thing. Imports no runtime (helper, extension host,
// webview and plain mocha load it).
import type { PendingRemovalReason } from './helperProtocol';

interface Ending {
  /** a client's answer, or the filter let it go on its own */
  how: 'answered' | 'released';
  /** why, in parentheses after "was already released" */
  why: string;
  /** what became of the bytes */
  bytes?: string;
}

const ORIGINAL_SENT = 'the filter sent the original bytes';

/** Per reason: who ended it, why, and what became of its bytes. */
const ENDING: Readonly<Record<PendingRemovalReason, Ending>> = {
  timeout: { how: 'released', why: 'its deadline passed', bytes: ORIGINAL_SENT },
  'client-gone': {
    how: 'released',
    why: "the filter's client went away: helper stopped, disconnected or died",
    bytes: ORIGINAL_SENT,
  },
  'socket-gone': { how: 'released', why: 'its socket closed', bytes: 'nothing was sent' },
  'inject-failed': { how: 'released', why: 're-injecting it failed in the network stack' },
  budget: {
    how: 'released',
    why: "the filter's byte budget for held data ran out while later data waited behind it",
    bytes: ORIGINAL_SENT,
  },
  'socket-closing': {
    how: 'released',
    why: 'its socket was closing',
    bytes: 'outbound data was sent as it was, inbound data discarded',
  },
  'filter-gone': {
    how: 'released',
    why: 'the connection to the filter was lost',
    bytes: 'the filter fails open and sends the original bytes',
  },
  released: { how: 'released', why: 'by the filter, for a reason this version does not know' },
  allow: { how: 'answered', why: 'Reinject Original' },
  drop: { how: 'answered', why: 'Drop' },
  replace: { how: 'answered', why: 'Reinject Edited' },
};

function ending(reason: PendingRemovalReason): Ending {
  return ENDING[reason] ?? ENDING.released;
}

/** True when the filter let the chunk go on its own (not a client's answer). */
export function releasedByFilter(reason: PendingRemovalReason): boolean {
  return ending(reason).how === 'released';
}

/**
 * "payload 17 was already released (its deadline passed) at 12:03:04: the
 * filter sent the original bytes"; `at` (wall clock ms) when it is known.
 */
export function noLongerHeld(id: string, reason: PendingRemovalReason | undefined, at?: number): string {
  if (reason === undefined) {
    return `payload ${id} is not held (the helper does not know it: answered or released long ago, or from an earlier session)`;
  }
  const e = ending(reason);
  const when = at === undefined ? '' : ` at ${new Date(at).toTimeString().slice(0, 8)}`;
  return `payload ${id} was already ${e.how} (${e.why})${when}${e.bytes ? `: ${e.bytes}` : ''}`;
}

/** What the filter did with a chunk it released itself: "its deadline passed, the filter sent the original bytes". */
export function releaseExplained(reason: PendingRemovalReason): string {
  const e = ending(reason);
  return e.bytes ? `${e.why}, ${e.bytes}` : e.why;
}
