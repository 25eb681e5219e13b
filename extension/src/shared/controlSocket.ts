// The control socket: how a second `nke` process (status, verdict, export,
// Wireshark's extcap) reaches the helper that owns the filter, whether that
// is `nke watch`/`nke run` or the extension's helper process. One socket
// and one token file in a private per-user directory:
//   $NKE_CLI_DIR, else $XDG_RUNTIME_DIR/nke-cli, else $TMPDIR/nke-cli-<uid>
// The directory must be this user's and 0700 (checked by both sides); the
// token file 0600. Node only, no vscode.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { MessageConnection } from 'vscode-jsonrpc';
import type { NkeErrorCode } from './helperProtocol';
import { privateDirProblem } from './privateDir';
import { connectWithToken } from './tokenSocket';

export class ControlDirError extends Error {}

/**
 * The private directory of the control socket; refuses one that is not a
 * real directory of this user (or root) closed to others (privateDir.ts):
 * `status`, `verdict`, `export` and `extcap` send its token to whatever
 * listens there.
 */
export function controlDir(create: boolean): string {
  const dir =
    process.env.NKE_CLI_DIR ??
    (process.env.XDG_RUNTIME_DIR
      ? path.join(process.env.XDG_RUNTIME_DIR, 'nke-cli')
      : path.join(os.tmpdir(), `nke-cli-${process.getuid?.() ?? 0}`));
  if (create) fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const problem = privateDirProblem(
    dir,
    'the nke control directory',
    'set NKE_CLI_DIR to a directory of your own',
  );
  if (problem) throw new ControlDirError(problem);
  return dir;
}

export function controlPaths(dir: string): { socket: string; token: string } {
  return { socket: path.join(dir, 'control.sock'), token: path.join(dir, 'token') };
}

/** The running helper's control connection (listening), or undefined when none answers. */
export async function connectControl(): Promise<MessageConnection | undefined> {
  const { socket, token } = controlPaths(controlDir(false));
  if (!fs.existsSync(socket) || !fs.existsSync(token)) return undefined;
  try {
    const { connection } = await connectWithToken(socket, fs.readFileSync(token, 'utf8').trim());
    connection.listen();
    return connection;
  } catch (e) {
    if ((e as { code?: NkeErrorCode }).code === 'NKE_NO_HELPER') return undefined; // stale socket of a dead helper
    throw e;
  }
}
