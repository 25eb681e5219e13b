// What the last `nke watch` / `nke run` left behind when it exited: its pid,
// the chunks that were still pending and how the ones before them ended.
// Closing its filter client made the filter release the pending ones (the
// originals went on), so a verdict that comes later is answered with that,
// or with the verdict or release that ended its chunk, not with "nothing is
// running". A 0600 file in the private control directory, next to the
// control socket.
import fs from 'node:fs';
import path from 'node:path';
import type { EndedPending } from '../helper/model';
import { noLongerHeld } from '../shared/payloadReasons';

export interface OwnerExitRecord {
  pid: number;
  command: 'watch' | 'run';
  /** wall clock ms */
  exitedAt: number;
  /** ids of the chunks pending when it exited */
  pending: string[];
  /** the chunks that ended before (the latest ENDED_KEPT): id, how, when */
  ended?: [string, EndedPending][];
}

/** Ends kept in the record: enough for the chunks a person was looking at. */
export const ENDED_KEPT = 200;

const FILE = 'last-exit.json';

export function writeOwnerExit(dir: string, r: OwnerExitRecord): void {
  const file = path.join(dir, FILE);
  const tmp = `${file}.${process.pid}`;
  try {
    fs.writeFileSync(tmp, JSON.stringify(r), { mode: 0o600 });
    fs.renameSync(tmp, file);
  } catch {
    // Best effort: a later verdict then says only that nothing is running.
    fs.rmSync(tmp, { force: true });
  }
}

export function readOwnerExit(dir: string): OwnerExitRecord | undefined {
  try {
    const r = JSON.parse(fs.readFileSync(path.join(dir, FILE), 'utf8')) as OwnerExitRecord;
    return Number.isInteger(r.pid) && Array.isArray(r.pending) ? r : undefined;
  } catch {
    return undefined;
  }
}

/** "payload 17 was released when nke run (pid 4242) exited at 12:03:04: ..." or undefined when the record does not name it. */
export function releasedAtExit(r: OwnerExitRecord | undefined, id: string): string | undefined {
  if (!r) return undefined;
  const at = new Date(r.exitedAt).toTimeString().slice(0, 8);
  if (r.pending.includes(id)) {
    return `payload ${id} was released when nke ${r.command} (pid ${r.pid}) exited at ${at}: its filter client went away, so the filter sent the original bytes on; nothing can be decided for it any more`;
  }
  const ended = Array.isArray(r.ended) ? r.ended.find(([endedId]) => endedId === id) : undefined;
  if (!ended) return undefined;
  return `${noLongerHeld(id, ended[1].how, ended[1].at)}; nke ${r.command} (pid ${r.pid}) exited at ${at}`;
}
