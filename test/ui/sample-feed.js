// Loaded by the UI launcher as the workbench's extensionTestsPath: it runs in
// the real extension host next to the extension under development and feeds
// its model through the public API (exactly what the helper client will do),
// so the UI test sees real items in the views. run() stays pending until the
// browser closes: resolving would end the session (codeAutomationExit).
'use strict';
const vscode = require('vscode');

exports.run = async function run() {
  const ext = vscode.extensions.getExtension('nkeworkbench.nke-workbench');
  if (!ext) throw new Error('nkeworkbench.nke-workbench is not loaded in this extension host');
  const { model } = await ext.activate();
  const now = Date.now();
  model.upsertSocket({
    id: '3:7',
    pid: 4242,
    processName: 'curl',
    protocol: 'tcp',
    family: 4,
    local: '127.0.0.1:50312',
    remote: '127.0.0.1:8080',
    state: 'connected',
    bytesIn: 2048,
    bytesOut: 77,
  });
  model.upsertSocket({
    id: '5:1',
    pid: 4100,
    processName: 'node',
    protocol: 'tcp',
    family: 4,
    local: '127.0.0.1:8080',
    state: 'listening',
    bytesIn: 0,
    bytesOut: 0,
  });
  model.addExec({ pid: 4000, ppid: 1, uid: 1000, path: '/bin/sh', time: now });
  model.addExec({ pid: 4242, ppid: 4000, uid: 1000, path: '/usr/bin/curl', time: now });
  model.addExec({
    pid: 4243,
    ppid: 4000,
    uid: 1000,
    path: `/tmp/nke-demo/${'a-rather-long-directory-name/'.repeat(8)}long-path-tool`,
    time: now,
  });
  // Far deadline: the row must still be there when the test right-clicks it.
  model.addPending({
    id: 'p1',
    socketId: '3:7',
    direction: 'out',
    size: 77,
    heldAt: now,
    deadline: now + 3600000,
  });
  console.log('[nke-ui] sample data fed');
  await new Promise(() => {});
};
