// Which window holds the filter, and handing it over (shared/ownerProtocol.ts).
// The window whose helper connected the filter claims it: it writes the owner
// file and listens on a private socket for a take-over request; it releases
// the claim when its helper lets go. Another window reads the file to tell a
// person who holds the filter and asks that window to let go. No `vscode`
// import.
import fs from 'node:fs';
import path from 'node:path';
import { type FilterOwnerRecord, TakeOver } from '../shared/ownerProtocol';
import { assertPrivateDir } from '../shared/privateDir';
import { connectWithToken, makePrivateDir, newToken, TokenServer } from '../shared/tokenSocket';

export const OWNER_FILE = 'workbench-owner.json';

export interface FilterOwnershipOptions {
  /** The filter's private directory (the emulator's runtime directory; a per-user one for the kext). */
  dir: () => string;
  /** One line naming this window ("workspace nke-demo, extension host pid 4242"). */
  describeWindow: () => string;
  log: (message: string) => void;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export class FilterOwnership {
  private server?: TokenServer;
  private serverDir?: string;
  private claimedFile?: string;

  constructor(private readonly o: FilterOwnershipOptions) {}

  private file(): string {
    return path.join(this.o.dir(), OWNER_FILE);
  }

  /** The other window that holds the filter, if the owner file names a live one. */
  currentOwner(): FilterOwnerRecord | undefined {
    let rec: FilterOwnerRecord;
    try {
      assertPrivateDir(this.o.dir(), "the filter's directory", 'pick a directory of your own');
      rec = JSON.parse(fs.readFileSync(this.file(), 'utf8')) as FilterOwnerRecord;
    } catch {
      return undefined;
    }
    if (!Number.isInteger(rec.pid) || rec.pid === process.pid || !alive(rec.pid)) return undefined;
    return rec;
  }

  /** This window holds the filter now: record it and answer take-over requests with `yieldFilter`. */
  async claim(yieldFilter: (by: string) => Promise<void>): Promise<void> {
    this.release();
    const token = newToken();
    const dir = makePrivateDir('nke-owner-');
    const server = new TokenServer(path.join(dir, 'owner.sock'), token, true);
    server.on('connection', (conn, socket) => {
      conn.onRequest(TakeOver, async (p: unknown) => {
        const by =
          typeof (p as { by?: unknown })?.by === 'string' ? (p as { by: string }).by : 'another window';
        this.o.log(`${by} asked to take over the filter: disconnecting this window's helper`);
        await yieldFilter(by);
        return { released: true };
      });
      socket.on('close', () => conn.dispose());
      conn.listen();
    });
    await server.listen();
    this.server = server;
    this.serverDir = dir;
    const rec: FilterOwnerRecord = {
      pid: process.pid,
      window: this.o.describeWindow(),
      since: Date.now(),
      socket: server.socketPath,
      token,
    };
    const file = this.file();
    const tmp = `${file}.${process.pid}.tmp`;
    fs.writeFileSync(tmp, JSON.stringify(rec), { mode: 0o600 });
    fs.renameSync(tmp, file);
    this.claimedFile = file;
  }

  /** This window no longer holds the filter. */
  release(): void {
    if (this.claimedFile) {
      try {
        const rec = JSON.parse(fs.readFileSync(this.claimedFile, 'utf8')) as FilterOwnerRecord;
        if (rec.pid === process.pid) fs.rmSync(this.claimedFile, { force: true });
      } catch {
        // gone already, or another window's by now
      }
      this.claimedFile = undefined;
    }
    this.server?.close();
    this.server = undefined;
    if (this.serverDir) fs.rmSync(this.serverDir, { recursive: true, force: true });
    this.serverDir = undefined;
  }

  /** Asks the owner to let go; resolves once it has. */
  async requestTakeOver(owner: FilterOwnerRecord): Promise<void> {
    const { connection, socket } = await connectWithToken(owner.socket, owner.token);
    try {
      connection.listen();
      const r = await connection.sendRequest(TakeOver, { by: this.o.describeWindow() });
      if (!r.released) throw new Error(`${owner.window} did not let go of the filter`);
    } finally {
      connection.dispose();
      socket.destroy();
    }
  }
}

/** "workspace X (extension host pid N, connected 10:02:11)" for the owner's message. */
export function describeOwner(o: FilterOwnerRecord): string {
  return `${o.window}, connected at ${new Date(o.since).toLocaleTimeString()}`;
}
