// Follows nke-emud's log file (NKE_EMU_LOG_FILE in its runtime directory) for
// an emulator this window did not start: its stderr went to whatever console
// started it, but every message is also in that file. Node only, no vscode.
//
// The file is trusted only as the directory is: a regular file (lstat: no
// symbolic link), owned by this user, no permission bits for group or others.
// Each nke-emud starts the file afresh (same inode, truncated) and restarts it
// at NKE_EMU_LOG_MAX; a shorter file or another inode means "from the start".
import fs from 'node:fs';
import path from 'node:path';
import { NKE_EMU_LOG_FILE } from '../shared/abi';

/** At most this much of what was logged before the tail started is shown. */
export const LOG_TAIL_BACKLOG = 64 * 1024;
const POLL_MS = 500;
const READ_MAX = 256 * 1024;

export interface EmulatorLogTailOptions {
  runtimeDir: string;
  /** One complete line of the log (no newline). */
  line: (text: string) => void;
  pollMs?: number;
}

/** Why `file` may not be shown as this user's nke-emud log, or undefined. */
export function logFileProblem(file: string, st: fs.Stats): string | undefined {
  const uid = process.getuid?.() ?? 0;
  if (!st.isFile()) return `${file} is not a regular file: not showing it`;
  if (st.uid !== uid) return `${file} belongs to uid ${st.uid}, not to you: not showing it`;
  if (st.mode & 0o077) return `${file} has mode ${(st.mode & 0o777).toString(8)} (not 600): not showing it`;
  return undefined;
}

export class EmulatorLogTail {
  readonly file: string;
  private timer?: ReturnType<typeof setInterval>;
  private ino = -1;
  private offset = 0;
  private partial = '';
  private lastProblem?: string;

  constructor(private readonly o: EmulatorLogTailOptions) {
    this.file = path.join(o.runtimeDir, NKE_EMU_LOG_FILE);
  }

  get runtimeDir(): string {
    return this.o.runtimeDir;
  }

  get running(): boolean {
    return this.timer !== undefined;
  }

  /** Shows the last LOG_TAIL_BACKLOG bytes, then every line as it is written. */
  start(): void {
    if (this.timer) return;
    this.poll(true);
    this.timer = setInterval(() => this.poll(false), this.o.pollMs ?? POLL_MS);
    this.timer.unref?.();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  private say(problem: string | undefined): void {
    if (problem && problem !== this.lastProblem) this.o.line(`[NKE Workbench] ${problem}`);
    this.lastProblem = problem;
  }

  private poll(first: boolean): void {
    let st: fs.Stats;
    try {
      st = fs.lstatSync(this.file);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      this.say(
        code === 'ENOENT'
          ? `no emulator log in ${this.o.runtimeDir} yet (nke-emud writes ${NKE_EMU_LOG_FILE} when it starts)`
          : `cannot read ${this.file}: ${(e as Error).message}`,
      );
      return;
    }
    const problem = logFileProblem(this.file, st);
    this.say(problem);
    if (problem) return;
    if (st.ino !== this.ino || st.size < this.offset) {
      if (this.ino !== -1) {
        this.o.line('[NKE Workbench] the emulator log started over (a new nke-emud, or its size limit)');
      }
      this.ino = st.ino;
      this.partial = '';
      this.offset = first ? Math.max(0, st.size - LOG_TAIL_BACKLOG) : 0;
    }
    if (st.size === this.offset) return;
    let fd: number;
    try {
      fd = fs.openSync(this.file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK);
    } catch (e) {
      this.say(`cannot open ${this.file}: ${(e as Error).message}`);
      return;
    }
    try {
      // The file opened is the file checked: same inode, still private.
      const ost = fs.fstatSync(fd);
      if (ost.ino !== this.ino || logFileProblem(this.file, ost)) return;
      const buf = Buffer.alloc(Math.min(READ_MAX, ost.size - this.offset));
      const n = buf.length > 0 ? fs.readSync(fd, buf, 0, buf.length, this.offset) : 0;
      this.offset += n;
      const text = this.partial + buf.subarray(0, n).toString('utf8');
      const lines = text.split('\n');
      this.partial = lines.pop() ?? '';
      // The first backlog line may start mid-line: skip it unless it is whole.
      if (first && this.offset - n > 0) lines.shift();
      for (const l of lines) this.o.line(l);
    } finally {
      fs.closeSync(fd);
    }
  }
}
