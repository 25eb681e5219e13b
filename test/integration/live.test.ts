// The extension live against the REAL emulator, inside a real VS Code: NKE:
// Load Filter starts nke-emud in a private runtime directory and connects
// through the helper process; real python3 programs run under the shim
// (nke-emu run --) and talk TCP to a server in this extension host. What the
// tests read are the items of the registered tree providers and the bytes
// the server received.
import * as assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as vscode from 'vscode';
import type { PendingView } from '../../extension/src/shared/helperProtocol';
import type { SocketNode } from '../../extension/src/tree/socketTreeProvider';
import { recordingServer } from '../support/recordingServer';
import { label, until, useLiveSession } from './liveSession';

/** A TCP server that records every byte per connection. */
describe('live: extension + helper + real emulator', function () {
  this.timeout(60000);
  const live = useLiveSession(
    'nke-live-',
    { holdTimeoutMs: 30000, capture: 'report' },
    { loadFilter: false },
  );
  const config = () => vscode.workspace.getConfiguration('nke');

  /** Runs python3 code under the emulator's shim: its sockets go through the filter. */
  function runUnderShim(code: string, ...args: string[]): ChildProcess {
    const p = spawn(live.launcher, ['run', '--', 'python3', '-c', code, ...args], {
      env: { ...process.env, NKE_EMU_DIR: live.runtimeDir },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    live.programs.push(p);
    return p;
  }

  /** The socket items under the process rows, as the Sockets view shows them. */
  function socketItems(): { node: SocketNode; label: string }[] {
    const t = live.api.trees.sockets;
    return t
      .getChildren()
      .flatMap((proc) => t.getChildren(proc))
      .map((node) => ({ node, label: label(t.getTreeItem(node)) }));
  }

  function pendingItems(): PendingView[] {
    return live.api.trees.pendingPayloads.getChildren();
  }

  it('NKE: Load Filter starts nke-emud in the runtime dir and connects the helper to it', async () => {
    assert.ok(!fs.existsSync(path.join(live.runtimeDir, 'ctl.sock')), 'no emulator before Load Filter');
    await vscode.commands.executeCommand('nke.loadFilter');
    assert.equal(live.api.model.link.status, 'connected', `link: ${JSON.stringify(live.api.model.link)}`);
    assert.ok(live.api.filter.emulatorPid, 'the extension started nke-emud');
    assert.ok(fs.existsSync(path.join(live.runtimeDir, 'ctl.sock')));
    assert.ok(live.api.session.helperPid, 'a helper process runs');
    const t = live.api.trees.filter;
    const rows = Object.fromEntries(t.getChildren().map((n) => [n.label, n.value]));
    assert.equal(rows['Status'], 'connected');
    assert.equal(rows['Transport'], 'emulator');
  });

  it('a real program under the shim appears in the Sockets tree with its connection', async () => {
    const server = await recordingServer();
    try {
      runUnderShim(
        'import socket,sys,time\ns=socket.create_connection(("127.0.0.1",int(sys.argv[1])))\ns.sendall(b"hello")\ntime.sleep(20)',
        String(server.port),
      );
      const row = await until('the python socket in the Sockets tree', () =>
        socketItems().find((i) => i.label.endsWith(`→ 127.0.0.1:${server.port}`)),
      );
      assert.equal(row.label, `→ 127.0.0.1:${server.port}`);
      const procRow = live.api.trees.sockets
        .getChildren()
        .map((n) => label(live.api.trees.sockets.getTreeItem(n)))
        .find((l) => l.startsWith('python3'));
      assert.ok(procRow, 'the process row names python3');
      await until(
        'the 5 bytes at the server (report mode holds nothing)',
        () => server.received().length === 5,
      );
    } finally {
      server.close();
    }
  });

  it('capture "hold": a chunk waits in Pending Payloads; Allow delivers exactly those bytes', async () => {
    await vscode.commands.executeCommand('nke.setCaptureMode', 'hold');
    const server = await recordingServer();
    try {
      runUnderShim(
        'import socket,sys,time\ns=socket.create_connection(("127.0.0.1",int(sys.argv[1])))\ns.sendall(b"allow-me-1234")\ntime.sleep(20)',
        String(server.port),
      );
      const p = await until('the held chunk in Pending Payloads', () =>
        pendingItems().find((x) => x.remote?.port === server.port),
      );
      assert.equal(p.size, 13);
      assert.equal(p.direction, 'out');
      const item = live.api.trees.pendingPayloads.getTreeItem(p);
      assert.equal(label(item), `↑ out 13 B 127.0.0.1:${server.port}`);
      await new Promise((r) => setTimeout(r, 300));
      assert.equal(server.received().length, 0, 'held bytes must not reach the server before Allow');
      await vscode.commands.executeCommand('nke.reinjectOriginal', p);
      await until('the allowed bytes at the server', () => server.received().length >= 13);
      assert.equal(server.received().toString(), 'allow-me-1234');
      await until('the chunk to leave Pending Payloads', () => !pendingItems().some((x) => x.id === p.id));
    } finally {
      server.close();
    }
  });

  it('Drop discards the held chunk: the server gets only the bytes sent after it', async () => {
    await vscode.commands.executeCommand('nke.setCaptureMode', 'hold');
    const server = await recordingServer();
    try {
      runUnderShim(
        'import socket,sys,time\ns=socket.create_connection(("127.0.0.1",int(sys.argv[1])))\ns.sendall(b"drop-me")\ntime.sleep(1.5)\ns.sendall(b"next")\ntime.sleep(20)',
        String(server.port),
      );
      const dropped = await until('the first chunk in Pending Payloads', () =>
        pendingItems().find((x) => x.remote?.port === server.port && x.size === 7),
      );
      await vscode.commands.executeCommand('nke.dropPayload', dropped);
      const next = await until('the second chunk in Pending Payloads', () =>
        pendingItems().find((x) => x.remote?.port === server.port && x.size === 4),
      );
      await vscode.commands.executeCommand('nke.reinjectOriginal', next);
      await until('the second chunk at the server', () => server.received().length >= 4);
      await new Promise((r) => setTimeout(r, 300));
      assert.equal(server.received().toString(), 'next');
    } finally {
      server.close();
      await vscode.commands.executeCommand('nke.setCaptureMode', 'report');
    }
  });

  it('nke.interceptRules: a hold rule holds only the matching connection', async () => {
    const held = await recordingServer();
    const free = await recordingServer();
    try {
      const rule = { action: 'hold', remotePort: held.port, name: 'hold the test port' };
      await config().update('interceptRules', [rule], vscode.ConfigurationTarget.Global);
      // The settings listener sends the rules; wait until the helper has them.
      const t0 = Date.now();
      while (!(await live.api.session.rules()).intercept?.some((r) => r.remotePort === held.port)) {
        if (Date.now() - t0 > 10000) throw new Error('the helper never got the rule from the settings');
        await new Promise((r) => setTimeout(r, 50));
      }
      const code =
        'import socket,sys,time\nfor p in sys.argv[1:]:\n  s=socket.create_connection(("127.0.0.1",int(p)))\n  s.sendall(b"rule-"+p.encode())\ntime.sleep(20)';
      runUnderShim(code, String(held.port), String(free.port));
      const p = await until('the held chunk of the matching connection', () =>
        pendingItems().find((x) => x.remote?.port === held.port),
      );
      await until("the other connection's bytes at its server, unheld", () => free.received().length > 0);
      assert.equal(free.received().toString(), `rule-${free.port}`);
      assert.ok(!pendingItems().some((x) => x.remote?.port === free.port));
      assert.equal(held.received().length, 0);
      await vscode.commands.executeCommand('nke.reinjectOriginal', p);
      await until('the held bytes after Allow', () => held.received().length > 0);
      assert.equal(held.received().toString(), `rule-${held.port}`);
    } finally {
      held.close();
      free.close();
      await config().update('interceptRules', undefined, vscode.ConfigurationTarget.Global);
    }
  });

  it('Pause Interception releases what is held and holds nothing; Resume holds again', async () => {
    await vscode.commands.executeCommand('nke.setCaptureMode', 'hold');
    const server = await recordingServer();
    try {
      runUnderShim(
        'import socket,sys,time\ns=socket.create_connection(("127.0.0.1",int(sys.argv[1])))\ns.sendall(b"one")\ntime.sleep(2)\ns.sendall(b"two")\ntime.sleep(20)',
        String(server.port),
      );
      await until('the first chunk held', () => pendingItems().find((x) => x.remote?.port === server.port));
      await vscode.commands.executeCommand('nke.pauseInterception');
      assert.equal(live.api.model.link.status, 'paused');
      await until('the held chunk released by the pause', () => server.received().toString() === 'one');
      await until('the second chunk through, not held', () => server.received().toString() === 'onetwo');
      assert.ok(!pendingItems().some((x) => x.remote?.port === server.port));
      await vscode.commands.executeCommand('nke.resumeInterception');
      assert.equal(live.api.model.link.status, 'connected');
    } finally {
      server.close();
      await vscode.commands.executeCommand('nke.setCaptureMode', 'report');
    }
  });

  it('the emulator dying marks the views stale; Load Filter starts a new one and reconnects', async () => {
    const old = live.api.filter.emulatorPid;
    assert.ok(old);
    process.kill(old, 'SIGKILL');
    await until('the failed state', () => live.api.model.link.status === 'failed');
    assert.match(live.api.model.link.staleReason ?? '', /filter connection closed/);
    assert.equal(live.api.model.link.recoverWith, 'nke.loadFilter');
    await vscode.commands.executeCommand('nke.loadFilter');
    assert.equal(live.api.model.link.status, 'connected', `link: ${JSON.stringify(live.api.model.link)}`);
    assert.ok(live.api.filter.emulatorPid && live.api.filter.emulatorPid !== old, 'a new nke-emud');
    assert.equal(live.api.model.stale, false);
  });

  it('a killed helper shows the failed state with the last data; Restart reconnects and rebuilds', async () => {
    const server = await recordingServer();
    try {
      // Sends a little every 200 ms, so the new helper sees the socket again.
      runUnderShim(
        'import socket,sys,time\ns=socket.create_connection(("127.0.0.1",int(sys.argv[1])))\nfor i in range(150):\n  s.sendall(b"t")\n  time.sleep(0.2)',
        String(server.port),
      );
      const mine = () => socketItems().find((i) => i.label.endsWith(`→ 127.0.0.1:${server.port}`));
      const first = await until('the ticking socket in the Sockets tree', mine);
      const socketId = first.node.kind === 'socket' ? first.node.socket.id : '';
      const pid = live.api.session.helperPid;
      assert.ok(pid);
      process.kill(pid, 'SIGKILL');
      await until('the failed state', () => live.api.model.link.status === 'failed');
      assert.match(live.api.model.link.staleReason ?? '', /helper process ended/);
      assert.equal(live.api.model.link.recoverWith, 'nke.restartHelper');
      assert.ok(mine(), 'the stale model keeps its last sockets');
      const rows = Object.fromEntries(live.api.trees.filter.getChildren().map((n) => [n.label, n.value]));
      assert.equal(rows['Status'], 'failed');
      assert.match(rows['Stale'], /helper process ended/);

      await vscode.commands.executeCommand('nke.restartHelper');
      assert.equal(live.api.model.link.status, 'connected', `link: ${JSON.stringify(live.api.model.link)}`);
      assert.equal(live.api.model.stale, false);
      assert.notEqual(live.api.session.helperPid, pid, 'a new helper process');
      const before = server.received().length;
      // The new helper adopts the socket from its traffic: same filter
      // socket id (process and addresses are known only from the socket's
      // attach/connect, which happened before this helper).
      await until('the socket rebuilt from the new helper', () =>
        socketItems().find((i) => i.node.kind === 'socket' && i.node.socket.id === socketId),
      );
      await until('bytes still flowing after the restart', () => server.received().length > before + 2);
    } finally {
      server.close();
    }
  });

  it('NKE: Disconnect stops the helper; the views fall back to disconnected', async () => {
    const pid = live.api.session.helperPid;
    assert.ok(pid);
    await vscode.commands.executeCommand('nke.disconnect');
    assert.equal(live.api.model.link.status, 'disconnected');
    assert.equal(live.api.session.isConnected, false);
    await until('the helper process to exit', () => {
      try {
        process.kill(pid, 0);
        return false;
      } catch {
        return true;
      }
    });
    assert.deepEqual(live.api.trees.filter.getChildren(), []);
  });
});
