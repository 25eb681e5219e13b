// Loaded by the UI launcher as the workbench's extensionTestsPath: it runs in
// the real extension host next to the extension under development and feeds
// its model one update batch of the helper protocol (what the helper session
// does with the live helper; the in-host suite's live.test.ts runs that path
// against the real emulator), so the UI test sees known items in the views.
// run() stays pending until the browser closes: resolving would end the
// session (codeAutomationExit).
'use strict';
const vscode = require('vscode');

exports.run = async function run() {
  const ext = vscode.extensions.getExtension('nkeworkbench.nke-workbench');
  if (!ext) throw new Error('nkeworkbench.nke-workbench is not loaded in this extension host');
  const { model } = await ext.activate();
  require('./settings-relay').start(vscode);
  const now = Date.now();
  const ep = (address, port) => ({ address, port });
  const socket = (id, pid, process, state, local, remote, bytesIn, bytesOut) => ({
    id,
    pid,
    uid: 1000,
    process,
    family: 'ipv4',
    protocol: 'tcp',
    state,
    local,
    remote,
    bytesIn,
    bytesOut,
    openedAt: now,
  });
  const exec = (id, pid, ppid, path) => ({
    id,
    pid,
    ppid,
    uid: 1000,
    path,
    complete: true,
    // run under the filter: in Exec Events' default scope
    underShim: true,
    time: now,
  });
  const counters = Object.fromEntries(
    [
      'malformedRecords',
      'dataChunks',
      'bytesIn',
      'bytesOut',
      'heldForPerson',
      'autoPassed',
      'rewritten',
      'verdictsAllow',
      'verdictsReplace',
      'verdictsDrop',
      'releasedByFilter',
      'execs',
      'execsIncomplete',
      'socketsAdopted',
    ].map((k) => [k, 0]),
  );
  model.applyUpdate({
    sockets: [
      socket('3:7', 4242, 'curl', 'connected', ep('127.0.0.1', 50312), ep('127.0.0.1', 8080), 2048, 77),
      socket('5:1', 4100, 'node', 'listening', ep('127.0.0.1', 8080), undefined, 0, 0),
    ],
    socketsRemoved: [],
    execs: [
      exec('1', 4000, 1, '/bin/sh'),
      exec('2', 4242, 4000, '/usr/bin/curl'),
      exec('3', 4243, 4000, `/tmp/nke-demo/${'a-rather-long-directory-name/'.repeat(8)}long-path-tool`),
    ],
    // Far deadline: the row must still be there when the test right-clicks it.
    pendingAdded: [
      {
        id: '101',
        socketId: '3:7',
        pid: 4242,
        process: 'curl',
        direction: 'out',
        size: 77,
        streamOffset: 0,
        local: ep('127.0.0.1', 50312),
        remote: ep('127.0.0.1', 8080),
        deadline: now + 3600000,
        heldAt: now,
      },
    ],
    pendingRemoved: [],
    counters,
  });
  console.log('[nke-ui] sample data fed');
  await new Promise(() => {});
};
