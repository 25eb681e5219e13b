// The views after the helper's model changed under them, against the REAL
// emulator and helper inside a real VS Code: NKE: Clear forgets history
// only (live sockets come back from the helper), and a new helper (Restart
// Helper Process; Take Back works the same way) shows the live sockets with
// their process and peer at once, from the filter's attach replay, and none
// of the old helper's closed ones.
import * as assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import * as vscode from 'vscode';
import { recordingServer } from '../support/recordingServer';
import { label, until, useLiveSession } from './liveSession';

describe('resync: Clear and a new helper show the live sockets, not the old state', function () {
  this.timeout(60000);
  const live = useLiveSession('nke-resync-', { capture: 'report' }, { loadFilter: true });

  /** python3 under the shim: connects to port, sends, then sleeps `seconds` (0: closes at once). */
  function client(port: number, seconds: number): ChildProcess {
    const p = spawn(
      live.launcher,
      [
        'run',
        '--',
        'python3',
        '-c',
        'import socket,sys,time\ns=socket.create_connection(("127.0.0.1",int(sys.argv[1])))\ns.sendall(b"hi")\ntime.sleep(float(sys.argv[2]))\ns.close()',
        String(port),
        String(seconds),
      ],
      { env: { ...process.env, NKE_EMU_DIR: live.runtimeDir }, stdio: 'ignore' },
    );
    live.programs.push(p);
    return p;
  }

  /** The Sockets view's rows as VS Code asks for them: process label -> socket labels with state. */
  function rows(): Map<string, string[]> {
    const t = live.api.trees.sockets;
    const out = new Map<string, string[]>();
    for (const proc of t.getChildren()) {
      out.set(
        label(t.getTreeItem(proc)),
        t.getChildren(proc).map((n) => `${label(t.getTreeItem(n))} ${t.getTreeItem(n).description ?? ''}`),
      );
    }
    return out;
  }
  const rowsTo = (port: number) =>
    [...rows()].flatMap(([proc, socks]) =>
      socks.filter((s) => s.includes(`127.0.0.1:${port}`)).map((s) => `${proc}: ${s}`),
    );

  it('NKE: Clear: the live socket stays in the Sockets view, the closed one goes', async () => {
    const liveServer = await recordingServer();
    const closedServer = await recordingServer();
    client(liveServer.port, 40);
    client(closedServer.port, 0);
    await until('both sockets in the model, one closed', () => {
      const socks = live.api.model.sockets();
      return (
        socks.some((s) => s.remote?.port === liveServer.port && s.state !== 'closed') &&
        socks.some((s) => s.remote?.port === closedServer.port && s.state === 'closed')
      );
    });
    await vscode.commands.executeCommand('nke.clear');
    assert.ok(
      live.api.model.sockets().some((s) => s.remote?.port === liveServer.port && s.state !== 'closed'),
      `the live socket is in the model after Clear: ${JSON.stringify(live.api.model.sockets())}`,
    );
    assert.equal(live.api.model.sockets().filter((s) => s.remote?.port === closedServer.port).length, 0);
    const shown = await until('the live socket in the Sockets view after Clear', () => {
      const r = rowsTo(liveServer.port);
      return r.length ? r : undefined;
    });
    assert.match(shown[0], /^python3 \(\d+\): → 127\.0\.0\.1:\d+ connected$/);
    assert.deepEqual(rowsTo(closedServer.port), []);
  });

  it("Restart Helper Process: the live socket with its process and peer at once, the old helper's closed one gone", async () => {
    const liveServer = await recordingServer();
    const closedServer = await recordingServer();
    // Quiet after its first write: only the replay can tell a new helper about it.
    client(liveServer.port, 40);
    client(closedServer.port, 0);
    await until('both sockets in the model, one closed', () => {
      const socks = live.api.model.sockets();
      return (
        socks.some((s) => s.remote?.port === liveServer.port && s.state === 'connected') &&
        socks.some((s) => s.remote?.port === closedServer.port && s.state === 'closed')
      );
    });
    const id = live.api.model.sockets().find((s) => s.remote?.port === liveServer.port)!.id;
    const oldHelper = live.api.session.helperPid;
    await vscode.commands.executeCommand('nke.restartHelper');
    assert.notEqual(live.api.session.helperPid, oldHelper);
    assert.equal(
      live.api.model.sockets().filter((s) => s.remote?.port === closedServer.port).length,
      0,
      "the old helper's closed socket is gone",
    );
    const shown = await until(
      'the live socket, replayed, in the Sockets view',
      () => {
        const r = rowsTo(liveServer.port);
        return r.length ? r : undefined;
      },
      10000,
    );
    assert.match(shown[0], /^python3 \(\d+\): → 127\.0\.0\.1:\d+ connected$/);
    const s = live.api.model.socket(id);
    assert.ok(s, 'the same filter socket id');
    assert.equal(s.process, 'python3');
    assert.equal(s.attachedEarlier, undefined, 'known from the replay, not adopted from traffic');
  });
});
