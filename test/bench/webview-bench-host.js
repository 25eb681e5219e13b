// Runs in the real extension host for test/bench/webview-bench.js (as the
// workbench's extensionTestsPath): loads the filter on the emulator, holds a
// real chunk of python3 under the shim, stages an edit of the size under test
// (the filter holds at most a buffer's worth; a 1 MiB payload is an edit),
// opens it in the payload editor and reports the editor's own timings
// (PayloadEditorProvider.timings); then opens a one-line file as many times in
// the bench's floor editor (test/bench/floor-editor, installed in this profile
// only) the same way (vscode.openWith): VS Code's own cost of a custom editor.
// Through files in $NKE_BENCH_DIR:
//   run-N.opening    written just before the Open (the driver then waits for
//                    the editor's rows and presses Ctrl+End at once)
//   run-N.json       the timings of run N; done.json / failed.txt at the end.
'use strict';
const vscode = require('vscode');
const fs = require('node:fs');
const net = require('node:net');
const path = require('node:path');
const { spawn } = require('node:child_process');

const dir = process.env.NKE_BENCH_DIR;
/** Written whole, then renamed: the bench polls for the name and must never read half a file. */
const write = (name, v) => {
  const tmp = path.join(dir, `.${name}.tmp`);
  fs.writeFileSync(tmp, JSON.stringify(v));
  fs.renameSync(tmp, path.join(dir, name));
};

async function until(what, fn, ms = 60000) {
  for (const t0 = Date.now(); Date.now() - t0 < ms;) {
    const v = await fn();
    if (v) return v;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`timed out waiting for ${what}`);
}

exports.run = async function run() {
  try {
    const api = await vscode.extensions.getExtension('nkeworkbench.nke-workbench').activate();
    const floor = await vscode.extensions.getExtension('nkebench.nke-bench-floor-editor').activate();
    const config = vscode.workspace.getConfiguration();
    await config.update('nke.holdTimeoutMs', 60000, vscode.ConfigurationTarget.Global);
    await vscode.commands.executeCommand('nke.loadFilter');
    await until('connected', () => api.model.link.status === 'connected');
    await config.update('nke.capture', 'hold', vscode.ConfigurationTarget.Global);
    const sizes = JSON.parse(process.env.NKE_BENCH_SIZES);
    const runs = Number(process.env.NKE_BENCH_RUNS_EDITOR);
    const server = net.createServer((s) => s.resume()).listen(0, '127.0.0.1');
    await new Promise((r) => server.once('listening', r));
    const launcher = path.join(process.env.NKE_ROOT, 'native/emu/build/nke-emu');
    let n = 0;
    for (const size of sizes) {
      for (let r = 0; r < runs; r++) {
        const before = new Set(api.model.pending().map((p) => p.id));
        const child = spawn(
          launcher,
          [
            'run',
            '--',
            'python3',
            '-c',
            'import socket,sys,time\ns=socket.create_connection(("127.0.0.1",int(sys.argv[1])))\ns.sendall(b"x"*4096)\ntime.sleep(120)',
            String(server.address().port),
          ],
          { env: { ...process.env, NKE_EMU_DIR: config.get('nke.emulatorRuntimeDir') }, stdio: 'ignore' },
        );
        const view = await until('a held chunk', () => api.model.pending().find((p) => !before.has(p.id)));
        await api.payloads.original(view.id);
        const bytes = new Uint8Array(size).map((_, i) => 0x20 + (i % 95));
        api.payloads.stage(view.id, bytes);
        const seen = api.payloadEditor.timings.length;
        n++;
        write(`run-${n}.opening`, { kind: 'payload', size });
        await vscode.commands.executeCommand('nke.openPayloadEditor', view);
        const first = await until('the first paint', () =>
          api.payloadEditor.timings
            .slice(seen)
            .find((t) => t.id === view.id && t.openToFirstPaintMs !== undefined),
        );
        const end = await until('the paint after Ctrl+End', () =>
          api.payloadEditor.timings
            .slice(seen)
            .find((t) => t.id === view.id && t.scrollToEndMs !== undefined),
        );
        write(`run-${n}.json`, {
          kind: 'payload',
          size,
          ...first,
          scrollToEndMs: end.scrollToEndMs,
          openToEndMs: end.openToEndMs,
        });
        await api.payloads.act(view.id, 'drop');
        await vscode.commands.executeCommand('workbench.action.closeAllEditors');
        child.kill('SIGKILL');
      }
    }
    server.close();
    await config.update('nke.capture', 'report', vscode.ConfigurationTarget.Global);
    // The floor: the same Open, of an editor that paints one line and does nothing else.
    for (let r = 0; r < runs; r++) {
      const file = vscode.Uri.file(path.join(dir, `floor-${r}.nkefloor`));
      fs.writeFileSync(file.fsPath, 'floor\n');
      const seen = floor.timings.length;
      n++;
      write(`run-${n}.opening`, { kind: 'floor' });
      await floor.open(file);
      const t = await until('the floor editor paint', () => floor.timings[seen]);
      write(`run-${n}.json`, { kind: 'floor', ...t });
      await vscode.commands.executeCommand('workbench.action.closeAllEditors');
    }
    write('done.json', { runs: n });
  } catch (e) {
    fs.writeFileSync(path.join(dir, 'failed.txt'), String(e && e.stack ? e.stack : e));
  }
  await new Promise(() => {});
};
