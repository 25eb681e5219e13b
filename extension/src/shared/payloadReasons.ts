// Why a payload is no longer held, in the words every view uses: the helper's
// errors, the payload store's refusals, the CodeLens of a released payload.
// One table, so a row that expired under the menu and an editor whose chunk
// went away say the same thing. Imports no runtime (helper, extension host,
// webview and plain mocha load it).
import type { PendingRemovalReason } from './helperProtocol';

/** What happened to the bytes, per reason (the tail of every message). */
const CAUSE: Readonly<Record<PendingRemovalReason, string>> = {
  timeout: 'was already released (its deadline passed): the filter sent the original bytes',
  'client-gone':
    "was already released (the filter's client went away: helper stopped, disconnected or died): the filter sent the original bytes",
  'socket-gone': 'was already released (its socket closed): nothing was sent',
  'inject-failed': 'was already released (re-injecting it failed in the network stack)',
  budget:
    "was already released (the filter's byte budget for held data ran out while later data waited behind it): the filter sent the original bytes",
  'socket-closing':
    'was already released (its socket was closing: outbound data was sent as it was, inbound data discarded)',
  'filter-gone':
    'was already released (the connection to the filter was lost; the filter fails open and sends the original bytes)',
  released: 'was already released by the filter',
  allow: 'was already answered (Reinject Original)',
  drop: 'was already answered (Drop)',
  replace: 'was already answered (Reinject Edited)',
};

/** True when the filter let the chunk go on its own (not a client's answer). */
export function releasedByFilter(reason: PendingRemovalReason): boolean {
  return reason !== 'allow' && reason !== 'drop' && reason !== 'replace';
}

/** "payload 17 was already released (its deadline passed): ..." */
export function noLongerHeld(id: string, reason: PendingRemovalReason | undefined): string {
  if (reason === undefined) {
    return `payload ${id} is not held (the helper does not know it: answered or released long ago, or from an earlier session)`;
  }
  return `payload ${id} ${CAUSE[reason] ?? CAUSE.released}`;
}
