// Unix-socket transport of the helper protocol, shared by the extension, the
// helper and the CLI (Node only, no vscode).
//
// The listening side creates the socket in a fresh 0700 directory (so no
// other user can even reach it) and hands a one-time token to the side it
// expects. The connecting side proves it with one line `NKE-TOKEN <hex>\n`;
// the listener answers `NKE-OK\n` or `NKE-REFUSED <why>\n` and closes, <why>
// saying which: `missing token` (no NKE-TOKEN line), `wrong token`, or
// `token already used` (the right one, spent by an earlier connection). Only
// after NKE-OK do JSON-RPC messages flow (Content-Length framing). Messages
// larger than MAX_MESSAGE_BYTES are never buffered: they are skipped and
// answered with an error (id recovered from the start of the body).
import crypto from 'node:crypto';
import { EventEmitter } from 'node:events';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { Transform, type TransformCallback } from 'node:stream';
import type { NkeErrorCode } from './helperProtocol';
import {
  createMessageConnection,
  type MessageConnection,
  SocketMessageWriter,
  StreamMessageReader,
} from 'vscode-jsonrpc/node';

export const MAX_MESSAGE_BYTES = 32 * 1024 * 1024;
const TOKEN_LINE_MAX = 256;
const AUTH_TIMEOUT_MS = 5000;
const MESSAGE_TOO_LARGE = -32004; // HelperErrorCode.MessageTooLarge

export function newToken(): string {
  return crypto.randomBytes(32).toString('hex');
}

/** A fresh private directory (mkdtemp creates it 0700) for a listening socket. */
export function makePrivateDir(prefix = 'nke-'): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  fs.chmodSync(dir, 0o700);
  return dir;
}

function tokensEqual(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && crypto.timingSafeEqual(x, y);
}

/** Passes framed messages through; skips bodies over the limit and reports them. */
class SizeGuard extends Transform {
  private buf: Buffer = Buffer.alloc(0);
  private remaining = 0;
  private mode: 'header' | 'body' | 'skip' = 'header';
  private probe: Buffer = Buffer.alloc(0);
  private skipLen = 0;

  constructor(
    private readonly max: number,
    private readonly onTooLarge: (id: string | number | null, size: number) => void,
  ) {
    super();
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    this.buf = this.buf.length ? Buffer.concat([this.buf, chunk]) : chunk;
    for (;;) {
      if (this.mode === 'header') {
        const end = this.buf.indexOf('\r\n\r\n');
        if (end < 0) {
          if (this.buf.length > 8192) return done(new Error('JSON-RPC header longer than 8 KiB'));
          break;
        }
        const header = this.buf.subarray(0, end + 4);
        const m = /content-length:\s*(\d+)/i.exec(header.toString('ascii'));
        const len = m ? Number(m[1]) : -1;
        this.buf = this.buf.subarray(end + 4);
        if (len > this.max) {
          this.mode = 'skip';
          this.remaining = this.skipLen = len;
          this.probe = Buffer.alloc(0);
        } else {
          // Let the reader report a missing or bad Content-Length itself.
          this.push(header);
          this.mode = 'body';
          this.remaining = Math.max(len, 0);
        }
        continue;
      }
      const take = Math.min(this.remaining, this.buf.length);
      if (this.mode === 'body') {
        if (take) this.push(this.buf.subarray(0, take));
      } else if (this.probe.length < 256) {
        this.probe = Buffer.concat([
          this.probe,
          this.buf.subarray(0, Math.min(take, 256 - this.probe.length)),
        ]);
      }
      this.buf = this.buf.subarray(take);
      this.remaining -= take;
      if (this.remaining > 0) break;
      if (this.mode === 'skip') {
        const m = /"id"\s*:\s*("(?:[^"\\]|\\.)*"|-?\d+)/.exec(this.probe.toString('utf8'));
        this.onTooLarge(m ? (JSON.parse(m[1]) as string | number) : null, this.skipLen);
      }
      this.mode = 'header';
      if (!this.buf.length) break;
    }
    done();
  }
}

/** JSON-RPC over an authenticated socket, with the size guard in front of the reader. */
export function connectionOver(socket: net.Socket, maxMessageBytes = MAX_MESSAGE_BYTES): MessageConnection {
  const writer = new SocketMessageWriter(socket);
  const guard = new SizeGuard(maxMessageBytes, (id, size) => {
    void writer.write({
      jsonrpc: '2.0',
      id,
      error: {
        code: MESSAGE_TOO_LARGE,
        message: `message of ${size} bytes exceeds the limit of ${maxMessageBytes}`,
      },
    } as never);
  });
  guard.on('error', () => socket.destroy());
  socket.pipe(guard);
  return createMessageConnection(new StreamMessageReader(guard), writer);
}

/** Reads one '\n'-terminated line (bounded), leaving the rest unshifted in the socket. */
function readLine(socket: net.Socket, timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    let got: Buffer = Buffer.alloc(0);
    const timer = setTimeout(() => finish(new Error('no authentication line in time')), timeoutMs);
    const finish = (err?: Error, line?: string, rest?: Buffer) => {
      clearTimeout(timer);
      socket.off('data', onData);
      socket.off('close', onClose);
      socket.pause();
      if (rest && rest.length) socket.unshift(rest);
      if (err) reject(err);
      else resolve(line!);
    };
    const onData = (c: Buffer) => {
      got = Buffer.concat([got, c]);
      const nl = got.indexOf(10);
      if (nl >= 0) finish(undefined, got.subarray(0, nl).toString('utf8'), got.subarray(nl + 1));
      else if (got.length > TOKEN_LINE_MAX) finish(new Error('authentication line too long'));
    };
    const onClose = () => finish(new Error('connection closed before authentication'));
    socket.on('data', onData);
    socket.on('close', onClose);
  });
}

/** Listens on socketPath and accepts only connections proving `token`. */
export class TokenServer extends EventEmitter<{
  connection: [MessageConnection, net.Socket];
  refused: [string];
}> {
  private server?: net.Server;
  /** One-time: once a connection is accepted, the token is spent unless reusable. */
  private spent = false;

  constructor(
    readonly socketPath: string,
    private readonly token: string,
    private readonly reusable = false,
  ) {
    super();
  }

  listen(): Promise<void> {
    return new Promise((resolve, reject) => {
      const server = net.createServer((s) => void this.accept(s));
      server.once('error', reject);
      server.listen(this.socketPath, () => {
        fs.chmodSync(this.socketPath, 0o600);
        server.off('error', reject);
        resolve();
      });
      this.server = server;
    });
  }

  private async accept(socket: net.Socket): Promise<void> {
    socket.on('error', () => socket.destroy());
    let line: string;
    try {
      line = await readLine(socket, AUTH_TIMEOUT_MS);
    } catch (e) {
      this.emit('refused', `missing token (${(e as Error).message})`);
      socket.destroy();
      return;
    }
    const why = this.refusal(line);
    if (why) {
      this.emit('refused', why);
      socket.end(`NKE-REFUSED ${why}\n`);
      return;
    }
    if (!this.reusable) this.spent = true;
    socket.write('NKE-OK\n');
    const conn = connectionOver(socket);
    socket.resume();
    this.emit('connection', conn, socket);
  }

  /** Why the authentication line is refused, or undefined when it proves the token. */
  private refusal(line: string): string | undefined {
    const m = /^NKE-TOKEN (\S+)$/.exec(line);
    if (!m) return 'missing token';
    if (!tokensEqual(m[1], this.token)) return 'wrong token';
    if (this.spent) return 'token already used';
    return undefined;
  }

  /** Accepts the token again (a restarted helper reconnecting). */
  rearm(): void {
    this.spent = false;
  }

  close(): void {
    this.server?.close();
    try {
      fs.unlinkSync(this.socketPath);
    } catch {
      // already gone
    }
  }
}

export class RefusedError extends Error {
  readonly code: NkeErrorCode = 'NKE_REFUSED';
}

/** Connects, proves the token, and returns the JSON-RPC connection (not yet listening). */
export async function connectWithToken(
  socketPath: string,
  token: string,
): Promise<{ connection: MessageConnection; socket: net.Socket }> {
  const socket = await new Promise<net.Socket>((resolve, reject) => {
    const s = net.connect(socketPath, () => resolve(s));
    s.once('error', (e: NodeJS.ErrnoException) =>
      reject(
        e.code === 'ENOENT' || e.code === 'ECONNREFUSED'
          ? Object.assign(new Error(`nothing listens on ${socketPath}`), {
              code: 'NKE_NO_HELPER' satisfies NkeErrorCode,
            })
          : e,
      ),
    );
  });
  socket.write(`NKE-TOKEN ${token}\n`);
  let answer: string;
  try {
    answer = await readLine(socket, AUTH_TIMEOUT_MS);
  } catch (e) {
    socket.destroy();
    throw new RefusedError(`authentication failed: ${(e as Error).message}`);
  }
  if (answer !== 'NKE-OK') {
    socket.destroy();
    throw new RefusedError(`refused by ${socketPath}: ${answer.replace(/^NKE-REFUSED /, '')}`);
  }
  const connection = connectionOver(socket);
  socket.resume();
  return { connection, socket };
}
