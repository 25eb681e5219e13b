// The protocol between two windows (or browser tabs) of the workbench that
// want the same filter: the filter serves one user client at a time, so the
// window whose helper holds it records itself in an owner file (in the
// filter's private directory, 0600) with the path of a private socket and a
// token; another window reads it to say who holds the filter, and asks over
// that socket to take over. Authentication as for the helper
// (tokenSocket.ts: `NKE-TOKEN <token>` first). Imports no runtime but
// vscode-jsonrpc's types.
import { RequestType } from 'vscode-jsonrpc';

/** What the owner file says (workbench-owner.json). */
export interface FilterOwnerRecord {
  /** the owning window's extension host pid (a dead pid: the file is stale) */
  pid: number;
  /** one line naming the window for people: workspace, pid, since when */
  window: string;
  /** wall clock ms when it connected the filter */
  since: number;
  /** its take-over socket and the token that socket accepts */
  socket: string;
  token: string;
}

/** Asks the owning window to let go of the filter; resolves once its helper has disconnected. */
export const TakeOver = new RequestType<{ by: string }, { released: boolean }, void>('nke/takeOver');
