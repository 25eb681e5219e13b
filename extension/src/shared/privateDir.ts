// Where the emulator's runtime directory is, and whether a directory holding
// one of our endpoints may be trusted: the TypeScript side of
// native/emu/include/nke_rundir.h, for what the extension and the CLI open
// themselves (the addon, nke-emud and the shim run the C code). Node only, no
// vscode.
//
// A directory is private to this user when it is a real directory (lstat:
// not a symbolic link), owned by this user or root, with no permission bits
// for group or others. A name like /tmp/nke-emu-<uid> can be taken by any
// local user first; what listens in a directory that is not private may be
// anyone's.
import fs from 'node:fs';
import path from 'node:path';
import { NKE_EMU_DIR_ENV } from './abi';
import type { NkeErrorCode } from './helperProtocol';

/**
 * The emulator's runtime directory, the one function that says where it is
 * on the TypeScript side (the extension, its helper's environment, the CLI;
 * in C nke_rundir_resolve, for nke-emud, the shim and the addon): `setting`
 * (nke.emulatorRuntimeDir) when given, else $NKE_EMU_DIR, else
 * $XDG_RUNTIME_DIR/nke-emu, else /tmp/nke-emu-<uid>.
 */
export function resolveEmulatorRuntimeDir(setting = '', env: NodeJS.ProcessEnv = process.env): string {
  if (setting) return setting;
  if (env[NKE_EMU_DIR_ENV]) return env[NKE_EMU_DIR_ENV];
  if (env.XDG_RUNTIME_DIR) return path.join(env.XDG_RUNTIME_DIR, 'nke-emu');
  return `/tmp/nke-emu-${process.getuid?.() ?? 0}`;
}

export class PrivateDirError extends Error {
  readonly code: NkeErrorCode = 'NKE_NOT_PRIVATE';
}

/** "uid 65534 (nobody)", or "uid 1234" when /etc/passwd does not name it. */
export function describeUid(uid: number): string {
  let name: string | undefined;
  try {
    for (const line of fs.readFileSync('/etc/passwd', 'utf8').split('\n')) {
      const f = line.split(':');
      if (f.length > 2 && f[2] === String(uid)) {
        name = f[0];
        break;
      }
    }
  } catch {
    // no passwd file: the number alone
  }
  return name ? `uid ${uid} (${name})` : `uid ${uid}`;
}

/**
 * Why `dir` is not private to this user, or undefined when it is (or does
 * not exist yet: the caller creates it, or finds nothing listening).
 * `what` names the directory in the message ("the emulator's runtime
 * directory"); `fix` says how to pick another one.
 */
export function privateDirProblem(dir: string, what: string, fix: string): string | undefined {
  let st: fs.Stats;
  try {
    st = fs.lstatSync(dir);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    return `cannot check ${what} ${dir}: ${(e as Error).message}`;
  }
  const uid = process.getuid?.() ?? 0;
  if (st.isSymbolicLink()) {
    return `${what} ${dir} is a symbolic link: refusing it (it must be a real directory of yours, mode 0700); remove it, or ${fix}`;
  }
  if (!st.isDirectory()) return `${what} ${dir} is not a directory: refusing it; remove it, or ${fix}`;
  if (st.uid !== uid && st.uid !== 0) {
    return `${what} ${dir} belongs to ${describeUid(st.uid)}, not to you (uid ${uid}) or root: another user may be posing as it, so nothing was sent there; remove it (as that user or root), or ${fix}`;
  }
  if (st.mode & 0o077) {
    const mode = (st.mode & 0o7777).toString(8).padStart(4, '0');
    return `${what} ${dir} is open to other users (mode ${mode}), so what listens there may not be ours: refusing it; chmod 700 ${dir}`;
  }
  return undefined;
}

/** Throws PrivateDirError when `dir` exists and is not private to this user (see privateDirProblem). */
export function assertPrivateDir(dir: string, what: string, fix: string): void {
  const problem = privateDirProblem(dir, what, fix);
  if (problem) throw new PrivateDirError(problem);
}
