// The helper process over its real transport (dist/helper.js started by
// HelperClient, token proof, JSON-RPC): malformed requests get error
// responses and the helper keeps serving; wrong tokens are refused; a killed
// helper is replaced without restarting the client. The filter is not
// connected here (--no-connect); tests with the emulator are in emu.test.ts.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { ErrorCodes, RequestType, ResponseError } from 'vscode-jsonrpc';
import { HelperClient } from '../../extension/src/helperClient/helperClient';
import * as P from '../../extension/src/shared/helperProtocol';
import {
  connectWithToken,
  makePrivateDir,
  newToken,
  RefusedError,
  TokenServer,
} from '../../extension/src/shared/tokenSocket';

const root = path.resolve(__dirname, '../../..');
const helperScript = path.join(root, 'dist/helper.js');

async function rejectsWith(p: Promise<unknown>, code: number, re?: RegExp): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof ResponseError, `expected a ResponseError, got ${String(e)}`);
    assert.equal(e.code, code, e.message);
    if (re) assert.match(e.message, re);
    return true;
  });
}

describe('helper protocol (real helper process)', function () {
  this.timeout(30000);
  let client: HelperClient;

  before(async () => {
    assert.ok(fs.existsSync(helperScript), 'dist/helper.js is built by npm test');
    client = new HelperClient({ helperScript, connectFilter: false });
    await client.start();
  });
  after(() => client.stop());

  it('answers hello and status', async () => {
    const hello = await client.connection!.sendRequest(P.Hello);
    assert.equal(hello.protocolVersion, P.HELPER_PROTOCOL_VERSION);
    assert.equal(hello.pid, client.pid);
    const st = await client.connection!.sendRequest(P.GetStatus);
    assert.equal(st.connected, false);
  });

  it('answers an unknown method with MethodNotFound and keeps serving', async () => {
    await rejectsWith(
      client.connection!.sendRequest(new RequestType<unknown, unknown, void>('nke/doesNotExist'), {}),
      ErrorCodes.MethodNotFound,
    );
    assert.equal((await client.connection!.sendRequest(P.Hello)).pid, client.pid);
  });

  it('answers wrong parameter types with InvalidParams naming the field', async () => {
    const c = client.connection!;
    const raw = new RequestType<unknown, unknown, void>('nke/verdict');
    await rejectsWith(c.sendRequest(raw, { id: 5, action: 'allow' }), ErrorCodes.InvalidParams, /id must be/);
    await rejectsWith(c.sendRequest(raw, { id: '5', action: 'maybe' }), ErrorCodes.InvalidParams, /action/);
    await rejectsWith(
      c.sendRequest(raw, { id: '5', action: 'replace', base64: '%%%' }),
      ErrorCodes.InvalidParams,
      /base64/,
    );
    await rejectsWith(c.sendRequest(raw, 'just a string'), ErrorCodes.InvalidParams);
    await rejectsWith(
      c.sendRequest(P.SetRules, { rules: { intercept: [{ action: 'hold', remotePort: -1 }] } }),
      ErrorCodes.InvalidParams,
      /intercept\[0\]\.remotePort/,
    );
    await rejectsWith(
      c.sendRequest(new RequestType<unknown, unknown, void>('nke/setPaused'), { paused: 'yes' }),
      ErrorCodes.InvalidParams,
    );
    await rejectsWith(c.sendRequest(P.GetHistory, { since: -3 }), ErrorCodes.InvalidParams);
  });

  it('answers an unknown payload id with UnknownPayload', async () => {
    await rejectsWith(
      client.connection!.sendRequest(P.Verdict, { id: '987654321', action: 'allow' }),
      P.HelperErrorCode.UnknownPayload,
      /987654321/,
    );
    await rejectsWith(
      client.connection!.sendRequest(P.GetPayload, { id: '987654321' }),
      P.HelperErrorCode.UnknownPayload,
    );
  });

  it('refuses a huge message without buffering it and keeps serving', async () => {
    const huge = 'x'.repeat(40 * 1024 * 1024);
    await rejectsWith(
      client.connection!.sendRequest(P.SetRules, { rules: { intercept: [{ action: 'hold', name: huge }] } }),
      P.HelperErrorCode.MessageTooLarge,
      /exceeds the limit/,
    );
    const st = await client.connection!.sendRequest(P.GetStatus);
    assert.equal(st.connected, false);
  });

  it('accepts valid rules and reports them in the snapshot', async () => {
    const rules: P.RulesConfig = {
      default: 'pass',
      intercept: [{ action: 'hold', remotePort: 8080 }],
      rewrite: [],
    };
    await client.connection!.sendRequest(P.SetRules, { rules });
    const snap = await client.connection!.sendRequest(P.GetSnapshot);
    assert.deepEqual(snap.rules.intercept, rules.intercept);
    assert.equal(snap.rules.default, 'pass');
  });

  it('refuses a second connection: the token is one-time', async () => {
    // The socket path is private to the client; reach it through its directory listing.
    const dir = (client as unknown as { dir: string }).dir;
    const sock = path.join(dir, 'helper.sock');
    await assert.rejects(connectWithToken(sock, newToken()), RefusedError);
  });

  it('replaces a killed helper without restarting the client', async () => {
    const oldPid = client.pid!;
    const gone = new Promise<void>((r) => client.once('disconnected', () => r()));
    process.kill(oldPid, 'SIGKILL');
    await gone;
    await client.restart();
    const hello = await client.connection!.sendRequest(P.Hello);
    assert.notEqual(hello.pid, oldPid);
    assert.equal(hello.pid, client.pid);
  });
});

describe('helper token proof', function () {
  this.timeout(20000);

  it('a helper with the wrong token is refused and exits non-zero', async () => {
    const dir = makePrivateDir();
    const server = new TokenServer(path.join(dir, 's.sock'), newToken());
    await server.listen();
    const refused: string[] = [];
    let accepted = false;
    server.on('refused', (why) => refused.push(why));
    server.on('connection', () => (accepted = true));
    const tokenFile = path.join(dir, 'token');
    fs.writeFileSync(tokenFile, newToken(), { mode: 0o600 });
    // Asynchronous: the server answering the helper runs in this process.
    const child = spawn(process.execPath, [
      helperScript,
      '--socket',
      server.socketPath,
      '--token-file',
      tokenFile,
      '--no-connect',
    ]);
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    const status = await new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    const r = { status, stderr };
    server.close();
    fs.rmSync(dir, { recursive: true, force: true });
    assert.equal(r.status, 1);
    assert.match(r.stderr, /refused.*wrong token/);
    assert.deepEqual(refused, ['wrong token']);
    assert.equal(accepted, false);
  });

  it('the listening socket lives in a directory only its owner can enter', async () => {
    const dir = makePrivateDir();
    assert.equal(fs.statSync(dir).mode & 0o777, 0o700);
    fs.rmSync(dir, { recursive: true });
  });

  it('a connection that never proves a token gets no JSON-RPC', async () => {
    const dir = makePrivateDir();
    const server = new TokenServer(path.join(dir, 's.sock'), newToken());
    await server.listen();
    let accepted = false;
    server.on('connection', () => (accepted = true));
    const net = await import('node:net');
    const reply = await new Promise<string>((resolve) => {
      const s = net.connect(server.socketPath, () => {
        const body = JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'nke/hello' });
        s.write(`Content-Length: ${body.length}\r\n\r\n${body}\n`);
      });
      let got = '';
      s.on('data', (d) => (got += d));
      s.on('close', () => resolve(got));
    });
    server.close();
    fs.rmSync(dir, { recursive: true, force: true });
    assert.match(reply, /^NKE-REFUSED/);
    assert.equal(accepted, false);
  });
});
