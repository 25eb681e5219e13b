// The NKE views inside a real VS Code: the model fed with the helper
// protocol's batches (as the helper session feeds it; live.test.ts does it
// with the real helper and emulator), items read back through the registered
// tree providers.
import * as assert from 'node:assert/strict';
import * as vscode from 'vscode';
import type { NkeWorkbenchApi } from '../../extension/src/extension';
import { emptyCounters, emptyUpdate, type WorkbenchModel } from '../../extension/src/model/workbenchModel';
import type { ExecView, PendingView, SocketView } from '../../extension/src/shared/helperProtocol';

const extensionId = 'nkeworkbench.nke-workbench';

async function api(): Promise<NkeWorkbenchApi> {
  const ext = vscode.extensions.getExtension<NkeWorkbenchApi>(extensionId);
  assert.ok(ext, `${extensionId} is not loaded in this extension host`);
  return ext.activate();
}

function label(item: vscode.TreeItem): string {
  return typeof item.label === 'string' ? item.label : (item.label?.label ?? '');
}

const curlSocket: SocketView = {
  id: '3:7',
  pid: 4242,
  uid: 1000,
  process: 'curl',
  protocol: 'tcp',
  family: 'ipv4',
  local: { address: '127.0.0.1', port: 50312 },
  remote: { address: '127.0.0.1', port: 8080 },
  state: 'connected',
  bytesIn: 2048,
  bytesOut: 77,
  openedAt: Date.now(),
};

const upsertSocket = (m: WorkbenchModel, s: SocketView) => m.applyUpdate({ ...emptyUpdate(), sockets: [s] });
let nextExec = 1;
const addExec = (m: WorkbenchModel, e: Pick<ExecView, 'pid' | 'ppid' | 'uid' | 'path'>) =>
  m.applyUpdate({
    ...emptyUpdate(),
    execs: [
      {
        ...e,
        id: String(nextExec++),
        complete: true,
        truncated: false,
        // run under the filter: in Exec Events' default scope
        underShim: true,
        time: Date.now(),
      },
    ],
  });
const pendingOut = (id: string, size: number, ms: number): PendingView => ({
  id,
  socketId: curlSocket.id,
  pid: curlSocket.pid,
  process: 'curl',
  direction: 'out',
  size,
  streamOffset: 0,
  local: curlSocket.local,
  remote: curlSocket.remote,
  deadline: Date.now() + ms,
  heldAt: Date.now(),
});
const addPending = (m: WorkbenchModel, p: PendingView) =>
  m.applyUpdate({ ...emptyUpdate(), pendingAdded: [p] });

describe('NKE views in the extension host', () => {
  afterEach(async () => {
    await vscode.commands.executeCommand('nke.clear');
    (await api()).model.setLink({ status: 'disconnected', filter: undefined, staleReason: undefined });
  });

  it('contributes the NKE commands, all registered by activation', async () => {
    await api();
    const all = await vscode.commands.getCommands(true);
    for (const id of [
      'nke.loadFilter',
      'nke.unloadFilter',
      'nke.connect',
      'nke.disconnect',
      'nke.runUnderFilter',
      'nke.exportCapture',
      'nke.installWiresharkInterface',
      'nke.showKernelLog',
      'nke.pauseInterception',
      'nke.resumeInterception',
      'nke.clear',
    ]) {
      assert.ok(all.includes(id), `${id} is not registered`);
    }
  });

  it('shows sockets grouped by process with addresses, state and bytes', async () => {
    const { model, trees } = await api();
    upsertSocket(model, curlSocket);
    upsertSocket(model, {
      ...curlSocket,
      id: '4:1',
      protocol: 'udp',
      family: 'ipv6',
      local: { address: '::1', port: 5353 },
      remote: undefined,
      state: 'bound',
      bytesIn: 0,
      bytesOut: 0,
    });
    const roots = trees.sockets.getChildren();
    assert.deepEqual(
      roots.map((r) => label(trees.sockets.getTreeItem(r))),
      ['curl (4242)'],
    );
    const nodes = trees.sockets.getChildren(roots[0]);
    const items = nodes.map((n) => trees.sockets.resolveTreeItem(trees.sockets.getTreeItem(n), n));
    // Short enough for the default sidebar width; both addresses are in the tooltip.
    assert.deepEqual(items.map(label), ['→ 127.0.0.1:8080', 'UDP6 :5353']);
    assert.equal(items[0].description, 'connected');
    assert.match(String(items[0].tooltip), /^TCP 127\.0\.0\.1:50312 → 127\.0\.0\.1:8080: connected/);
    assert.match(String(items[0].tooltip), /↓2\.0 KiB ↑77 B; socket /); // the bytes moved to the tooltip
    assert.equal(items[0].contextValue, 'socket');
  });

  it('nests exec events under the process that started them, keeping a long path whole', async () => {
    const { model, trees } = await api();
    const longPath = `/opt/${'deep/'.repeat(60)}tool`;
    addExec(model, { pid: 100, ppid: 1, uid: 501, path: '/bin/sh' });
    addExec(model, { pid: 101, ppid: 100, uid: 501, path: longPath });
    const roots = trees.execEvents.getChildren();
    assert.deepEqual(
      roots.map((e) => e.path),
      ['/bin/sh'],
    );
    const [child] = trees.execEvents.getChildren(roots[0]);
    assert.equal(child.path, longPath);
    const item = trees.execEvents.getTreeItem(child);
    assert.equal(label(item), 'tool');
    assert.ok(String(item.tooltip).includes(longPath));
  });

  it('keeps only nke.historyLimit exec events, following the setting live', async () => {
    const { model, trees } = await api();
    const config = vscode.workspace.getConfiguration('nke');
    await config.update('historyLimit', 3, vscode.ConfigurationTarget.Global);
    try {
      for (let pid = 200; pid < 205; pid++) {
        addExec(model, { pid, ppid: 1, uid: 0, path: `/usr/bin/p${pid}` });
      }
      assert.deepEqual(
        trees.execEvents.getChildren().map((e) => e.pid),
        [202, 203, 204],
      );
    } finally {
      await config.update('historyLimit', undefined, vscode.ConfigurationTarget.Global);
    }
  });

  it('lists pending payloads with direction, size, peer and time left, for the context menu', async () => {
    const { model, trees } = await api();
    upsertSocket(model, curlSocket);
    addPending(model, pendingOut('11', 77, 60000));
    const [p] = trees.pendingPayloads.getChildren();
    const item = trees.pendingPayloads.getTreeItem(p);
    assert.equal(label(item), '↑ out 77 B 127.0.0.1:8080');
    assert.match(String(item.description), /^curl · \d+\.\d s left$/);
    assert.equal(item.contextValue, 'pendingPayload');
  });

  it('shows the filter counters once connected and nothing (welcome content) before', async () => {
    const { model, trees } = await api();
    assert.deepEqual(trees.filter.getChildren(), []);
    model.applyUpdate({
      ...emptyUpdate({ ...emptyCounters(), heldForPerson: 5, verdictsAllow: 4 }),
      filter: { connected: true, transport: 'emulator', sessionId: '77', paused: false },
    });
    const top = trees.filter.getChildren();
    const byLabel = Object.fromEntries(
      top.map((n) => trees.filter.getTreeItem(n)).map((i) => [label(i), i.description]),
    );
    assert.equal(byLabel['Status'], 'connected');
    assert.equal(byLabel['Transport'], 'emulator');
    assert.equal(byLabel['Session'], '77');
    // What is held now and what was counted since the helper started never share a label.
    assert.equal(byLabel['Held for you now'], '0 payloads');
    assert.equal(byLabel['Helper totals'], 'since the helper started');
    const totals = top.find((n) => n.label === 'Helper totals')!;
    // Totals start collapsed so what is held now stays in sight; the id keeps a group's state across refreshes.
    const totalsItem = trees.filter.getTreeItem(totals);
    assert.equal(totalsItem.collapsibleState, vscode.TreeItemCollapsibleState.Collapsed);
    assert.equal(totalsItem.id, 'filter.group.Helper totals');
    const totalByLabel = Object.fromEntries(
      trees.filter
        .getChildren(totals)
        .map((n) => trees.filter.getTreeItem(n))
        .map((i) => [label(i), i.description]),
    );
    assert.equal(totalByLabel['Held for you'], '5');
    assert.equal(totalByLabel['Allowed'], '4');
  });

  it("shows the filter's stale entries: verdicts that came after their chunk's deadline", async () => {
    const { model, trees } = await api();
    model.applyUpdate({
      ...emptyUpdate(emptyCounters()),
      filter: {
        connected: true,
        transport: 'emulator',
        sessionId: '78',
        paused: false,
        state: {
          captureMode: 'rules',
          now: { socketsLive: 1, chunksHeld: 0, buffersInUse: 0, bytesKept: 0 },
          sinceStart: {
            socketsAttached: 4,
            chunksHeld: 6,
            bytesHeld: 675,
            chunksReported: 9,
            chunksPassedPoolFull: 0,
            chunksAutoReleased: 3,
            chunksDropped: 0,
            chunksModified: 1,
            chunksQueued: 0,
            chunksPassedBudget: 0,
            responsesRejected: 0,
            notificationsLost: 0,
            socketsUntracked: 0,
            staleEntries: 3,
          },
        },
      },
    });
    const item = trees.filter
      .getChildren()
      .map((n) => trees.filter.getTreeItem(n))
      .find((i) => label(i) === 'Late answers skipped');
    assert.ok(item, 'a Late answers skipped node');
    assert.equal(item.description, '3');
    assert.match(String(item.tooltip), /already released at its deadline/);
    // Totals say so: 675 bytes held since the filter started, 0 kept now.
    const top = trees.filter.getChildren();
    const now = top.find((n) => n.label === 'Bytes kept by the filter now')!;
    assert.equal(now.value, '0');
    const totals = top.find((n) => n.label === 'Filter totals')!;
    assert.equal(totals.value, 'since the filter started');
    const bytesHeld = trees.filter.getChildren(totals).find((n) => n.label === 'Bytes held')!;
    assert.equal(bytesHeld.value, '675');
    assert.match(String(trees.filter.getTreeItem(bytesHeld).tooltip), /since the filter started/);
  });

  it('NKE: Clear empties every view', async () => {
    const { model, trees } = await api();
    upsertSocket(model, curlSocket);
    addExec(model, { pid: 1, ppid: 0, uid: 0, path: '/sbin/init' });
    addPending(model, pendingOut('12', 1, 1000));
    await vscode.commands.executeCommand('nke.clear');
    assert.equal(trees.sockets.getChildren().length, 0);
    assert.equal(trees.execEvents.getChildren().length, 0);
    assert.equal(trees.pendingPayloads.getChildren().length, 0);
  });

  it('a verdict without a helper fails with a clear error that offers Connect', async () => {
    const { session } = await api();
    assert.equal(session.isConnected, false);
    await assert.rejects(session.verdict('1', 'allow'), (e: Error & { action?: { command: string } }) => {
      assert.match(e.message, /^not connected: run NKE: Connect/);
      assert.equal(e.action?.command, 'nke.connect');
      return true;
    });
  });
});
