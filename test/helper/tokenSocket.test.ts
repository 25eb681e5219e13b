// The helper socket's token proof says why it refuses: a wrong token, a
// reused one, or none at all (real TokenServer, real Unix sockets).
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';

import {
  connectWithToken,
  makePrivateDir,
  newToken,
  RefusedError,
  TokenServer,
} from '../../extension/src/shared/tokenSocket';

/** Connects, sends `line` raw, resolves with everything the server answered before closing. */
function rawExchange(sock: string, line: string | undefined): Promise<string> {
  return new Promise((resolve) => {
    const s = net.connect(sock, () => {
      if (line === undefined) s.end();
      else s.write(line);
    });
    let got = '';
    s.on('data', (d) => (got += d));
    s.on('close', () => resolve(got));
    s.on('error', () => resolve(got));
  });
}

describe('token socket refusals say which', function () {
  this.timeout(20000);
  let dir: string;
  let server: TokenServer;
  let token: string;
  let refused: string[];

  beforeEach(async () => {
    dir = makePrivateDir();
    token = newToken();
    server = new TokenServer(path.join(dir, 's.sock'), token);
    await server.listen();
    refused = [];
    server.on('refused', (why) => refused.push(why));
  });
  afterEach(() => {
    server.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('wrong: a token that is not the one handed out', async () => {
    await assert.rejects(connectWithToken(server.socketPath, newToken()), (e: unknown) => {
      assert.ok(e instanceof RefusedError);
      assert.match(e.message, /: wrong token$/);
      return true;
    });
    assert.deepEqual(refused, ['wrong token']);
  });

  it('reused: the right token a second time; a wrong one after it is still "wrong"', async () => {
    const first = await connectWithToken(server.socketPath, token);
    await assert.rejects(connectWithToken(server.socketPath, token), /: token already used$/);
    await assert.rejects(connectWithToken(server.socketPath, newToken()), /: wrong token$/);
    assert.deepEqual(refused, ['token already used', 'wrong token']);
    first.connection.dispose();
    first.socket.destroy();
  });

  it('missing: a first line that is no NKE-TOKEN line, or no line at all', async () => {
    assert.equal(await rawExchange(server.socketPath, 'GET / HTTP/1.0\n'), 'NKE-REFUSED missing token\n');
    assert.equal(await rawExchange(server.socketPath, 'NKE-TOKEN \n'), 'NKE-REFUSED missing token\n');
    assert.equal(await rawExchange(server.socketPath, undefined), '');
    for (let i = 0; i < 50 && refused.length < 3; i++) await new Promise((r) => setTimeout(r, 20));
    assert.deepEqual(refused.slice(0, 2), ['missing token', 'missing token']);
    assert.match(refused[2], /^missing token \(connection closed before authentication\)$/);
  });
});
