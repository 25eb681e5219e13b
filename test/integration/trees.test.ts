// The NKE views inside a real VS Code: the model fed the way the helper client
// will feed it, and the items read back through the registered tree providers.
import * as assert from 'node:assert/strict';
import * as vscode from 'vscode';
import type { NkeWorkbenchApi } from '../../extension/src/extension';

const extensionId = 'nkeworkbench.nke-workbench';

async function api(): Promise<NkeWorkbenchApi> {
  const ext = vscode.extensions.getExtension<NkeWorkbenchApi>(extensionId);
  assert.ok(ext, `${extensionId} is not loaded in this extension host`);
  return ext.activate();
}

function label(item: vscode.TreeItem): string {
  return typeof item.label === 'string' ? item.label : (item.label?.label ?? '');
}

const curlSocket = {
  id: '3:7',
  pid: 4242,
  processName: 'curl',
  protocol: 'tcp' as const,
  family: 4 as const,
  local: '127.0.0.1:50312',
  remote: '127.0.0.1:8080',
  state: 'connected',
  bytesIn: 2048,
  bytesOut: 77,
};

describe('NKE views in the extension host', () => {
  afterEach(async () => {
    await vscode.commands.executeCommand('nke.clear');
    (await api()).model.setFilterState({ status: 'disconnected' });
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
    model.upsertSocket(curlSocket);
    model.upsertSocket({
      ...curlSocket,
      id: '4:1',
      protocol: 'udp',
      family: 6,
      local: '[::1]:5353',
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
    const items = trees.sockets.getChildren(roots[0]).map((n) => trees.sockets.getTreeItem(n));
    assert.deepEqual(items.map(label), ['TCP 127.0.0.1:50312 → 127.0.0.1:8080', 'UDP6 [::1]:5353']);
    assert.equal(items[0].description, 'connected · ↓2.0 KiB ↑77 B');
    assert.equal(items[0].contextValue, 'socket');
  });

  it('nests exec events under the process that started them, keeping a long path whole', async () => {
    const { model, trees } = await api();
    const longPath = `/opt/${'deep/'.repeat(60)}tool`;
    model.addExec({ pid: 100, ppid: 1, uid: 501, path: '/bin/sh', time: Date.now() });
    model.addExec({ pid: 101, ppid: 100, uid: 501, path: longPath, time: Date.now() });
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
        model.addExec({ pid, ppid: 1, uid: 0, path: `/usr/bin/p${pid}`, time: Date.now() });
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
    model.upsertSocket(curlSocket);
    model.addPending({
      id: 'p1',
      socketId: curlSocket.id,
      direction: 'out',
      size: 77,
      heldAt: Date.now(),
      deadline: Date.now() + 60000,
    });
    const [p] = trees.pendingPayloads.getChildren();
    const item = trees.pendingPayloads.getTreeItem(p);
    assert.equal(label(item), '↑ out 77 B 127.0.0.1:8080');
    assert.match(String(item.description), /^curl · \d+\.\d s left$/);
    assert.equal(item.contextValue, 'pendingPayload');
    assert.throws(() => model.addPending({ ...p, id: 'p2', socketId: '9:9' }), /unknown socket 9:9/);
  });

  it('shows the filter counters once connected and nothing (welcome content) before', async () => {
    const { model, trees } = await api();
    assert.deepEqual(trees.filter.getChildren(), []);
    model.setFilterState({
      status: 'connected',
      abiVersion: 1,
      counters: { deferred: 5, passed: 10, dropped: 0, injected: 5, expired: 0, poolExhausted: 0 },
    });
    const items = trees.filter.getChildren().map((n) => trees.filter.getTreeItem(n));
    const byLabel = Object.fromEntries(items.map((i) => [label(i), i.description]));
    assert.equal(byLabel['Status'], 'connected');
    assert.equal(byLabel['ABI version'], '1');
    assert.equal(byLabel['Deferred'], '5');
  });

  it('NKE: Clear empties every view', async () => {
    const { model, trees } = await api();
    model.upsertSocket(curlSocket);
    model.addExec({ pid: 1, ppid: 0, uid: 0, path: '/sbin/init', time: Date.now() });
    model.addPending({
      id: 'p1',
      socketId: curlSocket.id,
      direction: 'in',
      size: 1,
      heldAt: Date.now(),
      deadline: Date.now() + 1000,
    });
    await vscode.commands.executeCommand('nke.clear');
    assert.equal(trees.sockets.getChildren().length, 0);
    assert.equal(trees.execEvents.getChildren().length, 0);
    assert.equal(trees.pendingPayloads.getChildren().length, 0);
  });

  it('commands that need the helper fail with a clear error, not silently', async () => {
    const { helper } = await api();
    assert.equal(helper.current, undefined);
    assert.throws(() => helper.require(), /^HelperUnavailableError: helper process not available: /);
  });
});
