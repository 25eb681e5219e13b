// Starts the helper process and accepts its connection back: the small,
// vscode-free module the extension uses (and the tests drive directly).
//
// 1. a fresh 0700 directory with a listening socket (TokenServer);
// 2. a one-time token in a 0600 file there, read and deleted by the helper;
// 3. the helper spawned with plain Node / Electron-as-Node, or on macOS as
//    root through an administrator prompt (osascript ... with administrator
//    privileges), detached from the prompt;
// 4. the helper connects back, proves the token; we get a JSON-RPC connection.
// restart() repeats 2-4 with a new token on the same socket: a crashed or
// killed helper is replaced without restarting VS Code. The helper exits on
// its own when the connection closes, which is how a root helper (which we
// may not signal) is stopped.
import { type ChildProcess, spawn } from 'node:child_process';
import { EventEmitter } from 'node:events';
import fs from 'node:fs';
import path from 'node:path';
import type net from 'node:net';
import type { MessageConnection } from 'vscode-jsonrpc';
import { Hello, type HelloResult, HELPER_PROTOCOL_VERSION } from '../shared/helperProtocol';
import { makePrivateDir, newToken, TokenServer } from '../shared/tokenSocket';

export interface HelperLaunchOptions {
  /** dist/helper.js */
  helperScript: string;
  /** Node or Electron binary; Electron runs as Node with ELECTRON_RUN_AS_NODE=1. Default process.execPath. */
  runtime?: string;
  /** macOS: run the helper as root through an administrator prompt. */
  asAdministrator?: boolean;
  /** MiB of payload the helper's capture history keeps (0: none) */
  captureHistoryMiB?: number;
  /** the helper also serves the control socket (nke export/verdict, Wireshark's extcap) */
  serveControl?: boolean;
  /** false: the helper does not open the filter until asked (nke/connect). */
  connectFilter?: boolean;
  /** ms to wait for the connection back (default 20 s; 120 s with the prompt). */
  timeoutMs?: number;
  env?: NodeJS.ProcessEnv;
  log?: (message: string) => void;
}

/** Quotes one word for /bin/sh. */
function shQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

/** Quotes a string as an AppleScript string literal. */
function appleScriptString(s: string): string {
  return `"${s.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`;
}

export class HelperClient extends EventEmitter<{
  connected: [MessageConnection, HelloResult];
  disconnected: [string];
}> {
  private readonly dir = makePrivateDir('nke-helper-');
  private readonly socketPath = path.join(this.dir, 'helper.sock');
  private server?: TokenServer;
  private child?: ChildProcess;
  private conn?: MessageConnection;
  private socket?: net.Socket; // of conn: destroying it is what ends the helper
  private stopped = false;

  constructor(private readonly opts: HelperLaunchOptions) {
    super();
  }

  get connection(): MessageConnection | undefined {
    return this.conn;
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  /** Starts the helper and resolves with its authenticated connection. */
  async start(): Promise<MessageConnection> {
    if (this.stopped) throw new Error('the helper client was stopped');
    this.dropConnection();
    this.server?.close();
    const token = newToken();
    const server = new TokenServer(this.socketPath, token);
    await server.listen();
    this.server = server;
    const tokenFile = path.join(this.dir, `token-${process.pid}-${Date.now()}`);
    fs.writeFileSync(tokenFile, token, { mode: 0o600 });
    server.on('refused', (why) => this.opts.log?.(`refused a connection to the helper socket: ${why}`));

    const connected = new Promise<[MessageConnection, net.Socket]>((resolve, reject) => {
      const timeout = this.opts.timeoutMs ?? (this.opts.asAdministrator ? 120_000 : 20_000);
      const timer = setTimeout(
        () => reject(new Error(`the helper did not connect back within ${timeout} ms`)),
        timeout,
      );
      server.once('connection', (c: MessageConnection, sock: net.Socket) => {
        clearTimeout(timer);
        resolve([c, sock]);
      });
      this.launch(tokenFile, (err) => {
        clearTimeout(timer);
        reject(err);
      });
    });
    let conn: MessageConnection;
    let sock: net.Socket;
    try {
      [conn, sock] = await connected;
    } catch (e) {
      // A helper that never proved itself must not linger (ours to kill;
      // a root helper exits by itself once its connection is refused).
      this.child?.kill('SIGKILL');
      server.close();
      throw e;
    } finally {
      fs.rmSync(tokenFile, { force: true });
    }
    this.conn = conn;
    this.socket = sock;
    sock.on('close', () => {
      if (this.socket !== sock) return;
      this.conn = undefined;
      this.socket = undefined;
      this.emit('disconnected', 'the helper connection closed');
    });
    conn.listen();
    const hello = await conn.sendRequest(Hello);
    if (hello.protocolVersion !== HELPER_PROTOCOL_VERSION) {
      this.dropConnection();
      throw new Error(
        `helper protocol ${hello.protocolVersion} differs from the extension's ${HELPER_PROTOCOL_VERSION}: rebuild`,
      );
    }
    this.emit('connected', conn, hello);
    return conn;
  }

  private launch(tokenFile: string, onFail: (e: Error) => void): void {
    const runtime = this.opts.runtime ?? process.execPath;
    const args = [this.opts.helperScript, '--socket', this.socketPath, '--token-file', tokenFile];
    if (this.opts.captureHistoryMiB) args.push('--capture-mib', String(this.opts.captureHistoryMiB));
    if (this.opts.serveControl) args.push('--control');
    if (this.opts.connectFilter === false) args.push('--no-connect');
    const env = { ...process.env, ...this.opts.env, ELECTRON_RUN_AS_NODE: '1' };

    if (this.opts.asAdministrator) {
      if (process.platform !== 'darwin') return onFail(new Error('an administrator prompt is macOS only'));
      // Backgrounded with its output closed so `do shell script` returns at
      // once; the helper lives on as root until its connection closes.
      // `do shell script` starts from a bare environment: what the helper
      // needs (NKE_ADDON: the addon built on this Mac) goes on the line.
      const vars = Object.entries(this.opts.env ?? {})
        .filter(([k, v]) => /^NKE_[A-Z0-9_]+$/.test(k) && v !== undefined)
        .map(([k, v]) => `${k}=${shQuote(String(v))} `)
        .join('');
      const cmd = `${vars}ELECTRON_RUN_AS_NODE=1 ${[runtime, ...args].map(shQuote).join(' ')} >/dev/null 2>&1 &`;
      const script = `do shell script ${appleScriptString(cmd)} with administrator privileges`;
      const osa = spawn('/usr/bin/osascript', ['-e', script], { stdio: ['ignore', 'ignore', 'pipe'] });
      let err = '';
      osa.stderr!.on('data', (d) => (err += d));
      osa.on('exit', (code) => {
        if (code !== 0) {
          onFail(
            new Error(
              /-128/.test(err) ? 'the administrator prompt was cancelled' : `osascript failed: ${err.trim()}`,
            ),
          );
        }
      });
      return;
    }
    const child = spawn(runtime, args, { env, stdio: ['ignore', 'ignore', 'pipe'] });
    this.child = child;
    let stderr = '';
    child.stderr!.on('data', (d) => {
      stderr = (stderr + d).slice(-4096);
      this.opts.log?.(`helper: ${String(d).trimEnd()}`);
    });
    child.on('error', (e) => onFail(new Error(`cannot start the helper with ${runtime}: ${e.message}`)));
    child.on('exit', (code, signal) => {
      if (this.child === child) this.child = undefined;
      const why = `the helper exited (${signal ?? `code ${code}`})${stderr ? `: ${stderr.trim()}` : ''}`;
      onFail(new Error(why)); // no-op once connected
      this.opts.log?.(why);
    });
  }

  /** Replaces the helper (e.g. after it crashed): the extension keeps running. */
  async restart(): Promise<MessageConnection> {
    this.dropConnection();
    this.child?.kill('SIGTERM');
    return this.start();
  }

  private dropConnection(): void {
    const sock = this.socket;
    this.socket = undefined;
    this.conn?.dispose();
    this.conn = undefined;
    sock?.destroy();
  }

  stop(): void {
    this.stopped = true;
    this.dropConnection(); // the helper exits when its connection closes
    this.server?.close();
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}
