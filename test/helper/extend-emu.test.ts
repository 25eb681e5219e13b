// Time to edit, end to end below the UI: the real helper process (JSON-RPC,
// nke/extendHold) -> engine -> addon -> nke-emud -> kext/core, with a real
// program under the shim and a real server. An extended chunk stays held past
// its first deadline and is released unchanged at the new one; the filter's
// cap is refused up front; a chunk that is gone is answered with why.
import assert from 'node:assert/strict';
import path from 'node:path';
import { ResponseError } from 'vscode-jsonrpc';
import { HelperClient } from '../../extension/src/helperClient/helperClient';
import { NKE_HOLD_TOTAL_MAX_MS } from '../../extension/src/shared/abi';
import * as P from '../../extension/src/shared/helperProtocol';
import {
  closeRecordingServers,
  recordingServer,
  root,
  runUnder,
  sender,
  useEmulator,
  waitFor,
} from './emu-support';

// Sends its argument, then keeps the connection open for 20 s.
const SENDER = sender(20);

describe('helper: extending a held chunk (real helper process and emulator)', function () {
  this.timeout(60000);
  const emu = useEmulator();
  let client: HelperClient;
  const programs: ReturnType<typeof runUnder>[] = [];
  beforeEach(async () => {
    client = new HelperClient({ helperScript: path.join(root, 'dist/helper.js'), env: emu.env });
    await client.start();
  });
  afterEach(() => {
    for (const p of programs.splice(0)) p.proc.kill('SIGKILL');
    client.stop();
    closeRecordingServers();
  });

  /** Holds everything sent to `port` for holdTimeoutMs; resolves with the first pending view. */
  async function holdFirst(port: number, holdTimeoutMs: number, bytes: string) {
    const conn = client.connection!;
    await conn.sendRequest(P.SetRules, {
      rules: { default: 'pass', intercept: [{ action: 'hold', remotePort: port }], holdTimeoutMs },
    });
    const pending = new Promise<P.PendingView>((r) =>
      conn.onNotification(P.Update, (b) => {
        if (b.pendingAdded.length) r(b.pendingAdded[0]);
      }),
    );
    programs.push(runUnder(emu, [...SENDER, String(port), bytes]));
    return pending;
  }

  it('an extended chunk is still held past its first deadline and released unchanged at the new one', async () => {
    const server = await recordingServer();
    const view = await holdFirst(server.port, 400, 'extend-me');
    const conn = client.connection!;
    assert.ok(view.deadline - view.heldAt >= 399 && view.deadline - view.heldAt <= 401);
    const updated = new Promise<P.PendingView>((r) =>
      conn.onNotification(P.Update, (b) => {
        const u = b.pendingUpdated?.find((p) => p.id === view.id);
        if (u) r(u);
      }),
    );
    const extended = await conn.sendRequest(P.ExtendHold, { id: view.id, holdMs: 2000 });
    assert.equal(extended.deadline, view.heldAt + 2000);
    assert.equal((await updated).deadline, view.heldAt + 2000, 'the update batch carries the new deadline');
    // Three first deadlines later: still held, nothing at the server.
    await new Promise((r) => setTimeout(r, Math.max(0, view.heldAt + 1200 - Date.now())));
    assert.equal(server.received().length, 0, 'held past 3x its hold timeout');
    const snap = await conn.sendRequest(P.GetSnapshot);
    assert.ok(snap.pending.some((p) => p.id === view.id));
    // Asking for less never shortens the hold.
    assert.equal(
      (await conn.sendRequest(P.ExtendHold, { id: view.id, holdMs: 500 })).deadline,
      view.heldAt + 2000,
    );
    await server.whenBytes(9, 10000);
    const releasedAfter = Date.now() - view.heldAt;
    assert.equal(server.received().toString(), 'extend-me');
    assert.ok(
      releasedAfter >= 1900,
      `released ${releasedAfter} ms after it was held, before its new deadline`,
    );
    assert.ok(releasedAfter < 6000, `released only ${releasedAfter} ms after it was held`);
    // Gone: the answer says why.
    await waitFor(() => server.received().length > 0, 1000, 'release');
    await new Promise((r) => setTimeout(r, 100));
    await assert.rejects(conn.sendRequest(P.ExtendHold, { id: view.id, holdMs: 5000 }), (e: unknown) => {
      assert.ok(e instanceof ResponseError);
      assert.equal(e.code, P.HelperErrorCode.UnknownPayload);
      assert.match(
        e.message,
        new RegExp(`^payload ${view.id} was already released \\(its deadline passed\\)`),
      );
      assert.deepEqual(e.data, { code: 'NKE_UNKNOWN_PAYLOAD', reason: 'timeout' });
      return true;
    });
    await assert.rejects(conn.sendRequest(P.Verdict, { id: view.id, action: 'drop' }), /its deadline passed/);
  });

  it('an extended chunk takes its edit as usual; the cap and 0 are refused with the range', async () => {
    const server = await recordingServer();
    const view = await holdFirst(server.port, 5000, 'original');
    const conn = client.connection!;
    for (const holdMs of [0, NKE_HOLD_TOTAL_MAX_MS + 1]) {
      await assert.rejects(
        conn.sendRequest(P.ExtendHold, { id: view.id, holdMs }),
        new RegExp(`holdMs must be an integer 1\\.\\.${NKE_HOLD_TOTAL_MAX_MS}`),
      );
    }
    const v = await conn.sendRequest(P.ExtendHold, { id: view.id, holdMs: NKE_HOLD_TOTAL_MAX_MS });
    assert.equal(v.deadline, view.heldAt + NKE_HOLD_TOTAL_MAX_MS);
    await conn.sendRequest(P.Verdict, {
      id: view.id,
      action: 'replace',
      base64: Buffer.from('edited, and longer').toString('base64'),
    });
    assert.equal((await server.whenBytes(18)).toString(), 'edited, and longer');
    await assert.rejects(
      conn.sendRequest(P.ExtendHold, { id: view.id, holdMs: 1000 }),
      new RegExp(`payload ${view.id} was already answered \\(Reinject Edited\\)`),
    );
  });
});
