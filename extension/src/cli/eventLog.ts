// What `nke watch` and `nke run` write about the filter: one line per event,
// as text or as JSON (one object a line), to stderr, stdout or a file
// (-o FILE), never mixed with the program's own output. Exec events can be
// scoped to a process tree (--execs tree), so the execs of the rest of the
// machine (the kernel's process connector reports them all, as root) do not
// bury the program's own.
import fs from 'node:fs';
import { releaseExplained } from '../shared/payloadReasons';
import type { Endpoint, HistoryEvent, PendingView } from '../shared/helperProtocol';
import type { ModelUpdate } from '../helper/model';

export type ExecScope = 'all' | 'tree' | 'none';
export const EXEC_SCOPES: readonly ExecScope[] = ['all', 'tree', 'none'];

/** Parent pid of `pid` from /proc (Linux), or undefined when it is gone or there is no /proc. */
export function procParent(pid: number): number | undefined {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'latin1');
    // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const ppid = Number(fields[1]);
    return Number.isInteger(ppid) ? ppid : undefined;
  } catch {
    return undefined;
  }
}

/**
 * A set of processes and their descendants, learnt from exec events (pid,
 * ppid). A process that forked without exec (a subshell) sends no exec
 * event, so a child of an unknown parent is traced up through /proc.
 */
export class ProcessTree {
  private readonly members = new Set<number>();

  constructor(
    roots: readonly number[] = [],
    private readonly parentOf: (pid: number) => number | undefined = procParent,
  ) {
    for (const r of roots) this.members.add(r);
  }

  add(pid: number): void {
    if (pid > 0) this.members.add(pid);
  }

  has(pid: number): boolean {
    return this.members.has(pid);
  }

  /** Whether the exec of `pid` (child of `ppid`) is in the tree; adds it when it is. */
  admitExec(pid: number, ppid: number): boolean {
    if (this.members.has(pid)) return true;
    if (this.members.has(ppid)) {
      this.members.add(pid);
      return true;
    }
    const chain = [pid];
    let p = ppid;
    for (let depth = 0; depth < 64 && p > 1; depth++) {
      if (this.members.has(p)) {
        for (const c of chain) this.members.add(c);
        return true;
      }
      chain.push(p);
      const up = this.parentOf(p);
      if (up === undefined || up === p) break;
      p = up;
    }
    return false;
  }
}

function fmtEndpoint(e?: Endpoint): string {
  return e ? `${e.address.includes(':') ? `[${e.address}]` : e.address}:${e.port}` : '-';
}

/** Seconds left until `deadline` (wall clock ms), for people: "59.2 s". */
export function timeLeft(deadline: number, now = Date.now()): string {
  const ms = deadline - now;
  return ms <= 0 ? 'due now' : `${(ms / 1000).toFixed(1)} s`;
}

/** Process names and paths come from the programs watched: control characters are shown escaped. */
export function printable(s: string): string {
  return s.replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g, (c) => {
    const n = c.codePointAt(0)!;
    return n < 0x100 ? `\\x${n.toString(16).padStart(2, '0')}` : `\\u${n.toString(16).padStart(4, '0')}`;
  });
}

export function fmtEvent(ev: HistoryEvent): string {
  switch (ev.kind) {
    case 'socket-open':
      return `socket ${ev.socketId} open ${ev.protocol} pid ${ev.pid} (${printable(ev.process)})`;
    case 'socket-state':
      return `socket ${ev.socketId} ${ev.state} ${fmtEndpoint(ev.local)} -> ${fmtEndpoint(ev.remote)}`;
    case 'socket-close':
      return `socket ${ev.socketId} closed, ${ev.bytesIn} bytes in, ${ev.bytesOut} out`;
    case 'data':
      return `data ${ev.chunkId} socket ${ev.socketId} ${ev.direction} ${ev.size} bytes${ev.held ? ' held' : ''}`;
    case 'verdict':
      return `verdict ${ev.chunkId} ${ev.action} ${ev.size} bytes`;
    case 'data-gap':
      return `gap socket ${ev.socketId} ${ev.direction} ${ev.size} bytes passed unreported (${ev.reason})`;
    case 'released':
      return `released ${ev.chunkId} by the filter: ${releaseExplained(ev.reason)}`;
    case 'exec':
      return `exec ${ev.pid} (parent ${ev.ppid}) ${printable(ev.path)}${ev.complete ? '' : ' [incomplete]'}${ev.truncated ? ' [truncated]' : ''}`;
  }
}

export function fmtPending(p: PendingView, now = Date.now()): string {
  return (
    `pending ${p.id}: ${p.direction} ${p.size} bytes, socket ${p.socketId}, pid ${p.pid} (${printable(p.process)}) ` +
    `${fmtEndpoint(p.local)} -> ${fmtEndpoint(p.remote)}; released unchanged in ${timeLeft(p.deadline, now)} ` +
    `unless answered: nke show ${p.id}, nke verdict ${p.id} allow|drop|replace FILE`
  );
}

/** Where the lines go: a stream we do not own (stderr, stdout) or a file we opened. */
export interface EventOutput {
  /** One line, or several joined with newlines; the output ends it with one. */
  write(line: string): void;
  close(): Promise<void>;
}

export function streamOutput(stream: NodeJS.WritableStream): EventOutput {
  return { write: (l) => void stream.write(`${l}\n`), close: async () => {} };
}

/** -o FILE: created (or truncated) now, so a bad path fails before the program starts. */
export function fileOutput(file: string): EventOutput {
  const fd = fs.openSync(file, 'w');
  const stream = fs.createWriteStream('', { fd });
  return {
    write: (l) => void stream.write(`${l}\n`),
    close: () => new Promise<void>((resolve) => stream.end(() => resolve())),
  };
}

/** Writes update batches as event lines, with execs scoped. */
export class EventLog {
  private readonly tree: ProcessTree;

  constructor(
    private readonly out: EventOutput,
    private readonly json: boolean,
    private readonly execs: ExecScope,
    /** roots of the tree (--execs tree): the program's pid, or none (watch: the processes whose sockets are seen) */
    roots: readonly number[] = [],
    private readonly socketOwnersAreRoots = false,
    parentOf?: (pid: number) => number | undefined,
  ) {
    this.tree = new ProcessTree(roots, parentOf);
  }

  addRoot(pid: number): void {
    this.tree.add(pid);
  }

  private wants(ev: HistoryEvent): boolean {
    if (ev.kind !== 'exec') return true;
    if (this.execs === 'none') return false;
    if (this.execs === 'all') return true;
    return this.tree.admitExec(ev.pid, ev.ppid);
  }

  onUpdate(b: ModelUpdate): void {
    if (this.socketOwnersAreRoots) for (const s of b.sockets) this.tree.add(s.pid);
    // One write for the batch: stdout to a pipe or file is a write system
    // call per call, and a busy filter has thousands of lines a second (in
    // report mode one a chunk); a call a line took a CPU from the programs
    // being watched.
    const lines: string[] = [];
    for (const ev of b.events) {
      if (!this.wants(ev)) continue;
      lines.push(this.json ? JSON.stringify(ev) : fmtEvent(ev));
    }
    for (const p of b.pendingAdded) {
      lines.push(this.json ? JSON.stringify({ kind: 'pending', ...p }) : fmtPending(p));
    }
    if (lines.length) this.out.write(lines.join('\n'));
  }

  /** A line of this tool's own (the program's exit, the filter going away), in the log's format. */
  note(kind: string, fields: Record<string, unknown>, text: string): void {
    this.out.write(this.json ? JSON.stringify({ kind, time: Date.now(), ...fields }) : text);
  }

  close(): Promise<void> {
    return this.out.close();
  }
}
