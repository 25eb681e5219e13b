// The `nke` tasks inside a real VS Code: fetchTasks lists them all; the
// emulator build task, run on a COPY of the emulator's sources with one
// deliberate compile error, puts that error in the Problems view at its file
// and line through the extension's $nke-clang problem matcher, and a run
// after the fix clears it; on Linux the macOS-only tasks say so and exit
// non-zero.
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as vscode from 'vscode';
import type { NkeWorkbenchApi } from '../../extension/src/extension';
import { nkeTaskLabels, nkeTaskNames, needsMacOs } from '../../extension/src/tasks/nkeTaskDefinition';
import { runTaskToEnd } from '../../extension/src/tasks/taskRunner';
import { extensionId, until as untilEvery } from './liveSession';

/** Polls every 100 ms, for 20 s by default (a task's build takes a while). */
const until = <T>(what: string, fn: () => T | undefined | false, ms = 20000) => untilEvery(what, fn, ms, 100);

async function nkeTask(name: string): Promise<vscode.Task> {
  const all = await vscode.tasks.fetchTasks({ type: 'nke' });
  const t = all.find((x) => (x.definition as { task?: string }).task === name);
  assert.ok(t, `no nke task ${name} in ${all.map((x) => x.name).join(', ')}`);
  return t;
}

describe('nke tasks', function () {
  this.timeout(120000);
  let root: string;
  let tmp: string;
  const config = () => vscode.workspace.getConfiguration('nke');

  before(async () => {
    const ext = vscode.extensions.getExtension<NkeWorkbenchApi>(extensionId);
    assert.ok(ext, `${extensionId} is not loaded in this extension host`);
    await ext.activate();
    root = ext.extensionPath;
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'nke-tasks-'));
  });

  after(async () => {
    await config().update('emulatorSourceDir', undefined, vscode.ConfigurationTarget.Global);
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  it('fetchTasks({type: "nke"}) lists every kext, emulator and addon task', async () => {
    const tasks = await vscode.tasks.fetchTasks({ type: 'nke' });
    const byName = new Map(tasks.map((t) => [String(t.definition.task), t]));
    assert.deepEqual([...byName.keys()].sort(), [...nkeTaskNames].sort());
    for (const name of nkeTaskNames) {
      const t = byName.get(name)!;
      assert.equal(t.source, 'nke');
      assert.equal(t.name, nkeTaskLabels[name]);
    }
    assert.deepEqual(byName.get('emulator-build')!.problemMatchers, ['$nke-clang']);
    assert.equal(byName.get('emulator-build')!.group?.id, vscode.TaskGroup.Build.id);
  });

  it('on Linux each macOS-only task says it needs macOS and exits non-zero', async () => {
    for (const name of nkeTaskNames.filter(needsMacOs)) {
      const task = await nkeTask(name);
      const line = (task.execution as vscode.ShellExecution).commandLine ?? '';
      assert.match(line, /runs on macOS only \(this is linux\)/, `${name}: ${line}`);
      assert.equal(await runTaskToEnd(task), 78, `${name} exit code`);
    }
  });

  it('a compile error in a copy of the emulator sources lands in the Problems view at its line, and the fix clears it', async () => {
    // The copy keeps the layout the emulator's Makefile expects (../../kext, ../../test/emu).
    const copy = path.join(tmp, 'src');
    const emu = path.join(copy, 'native', 'emu');
    fs.mkdirSync(emu, { recursive: true });
    for (const d of ['Makefile', 'src', 'include']) {
      fs.cpSync(path.join(root, 'native/emu', d), path.join(emu, d), { recursive: true });
    }
    for (const d of ['kext/include', 'kext/core', 'test/emu']) {
      fs.cpSync(path.join(root, d), path.join(copy, d), { recursive: true });
    }
    const file = path.join(emu, 'src', 'nke_emud.c');
    const original = fs.readFileSync(file, 'utf8');
    const lines = original.split('\n');
    const errorLine = 40; // 1-based, after the includes
    lines.splice(
      errorLine - 1,
      0,
      'static int nke_deliberate_error = nke_undeclared_for_the_problem_matcher_test;',
    );
    fs.writeFileSync(file, lines.join('\n'));
    await config().update('emulatorSourceDir', emu, vscode.ConfigurationTarget.Global);

    const uri = vscode.Uri.file(file);
    const ours = () => vscode.languages.getDiagnostics(uri).filter((d) => d.source === 'clang');
    const task = await nkeTask('emulator-build');
    assert.equal((task.execution as vscode.ShellExecution).options?.cwd, emu);
    const failed = await runTaskToEnd(task);
    assert.notEqual(failed, 0, 'make with a compile error exits non-zero');
    const diag = await until('the compile error in the Problems view', () =>
      ours().find((d) => /nke_undeclared_for_the_problem_matcher_test/.test(d.message)),
    ).catch((e: Error) => {
      const all = vscode.languages
        .getDiagnostics()
        .map(
          ([u, ds]) =>
            `${u.toString()}: ${ds.map((d) => `${d.source} ${d.range.start.line} ${d.message}`).join(' | ')}`,
        );
      throw new Error(`${e.message}; diagnostics: ${all.join('\n') || 'none'}`);
    });
    assert.equal(diag.range.start.line, errorLine - 1, `at line ${errorLine}`);
    assert.equal(diag.severity, vscode.DiagnosticSeverity.Error);

    fs.writeFileSync(file, original);
    const fixed = await runTaskToEnd(await nkeTask('emulator-build'));
    assert.equal(fixed, 0, 'make of the fixed copy succeeds');
    await until('the diagnostic cleared after the fix', () => ours().length === 0 || undefined);
    assert.ok(fs.existsSync(path.join(emu, 'build', 'nke-emud')), 'the copy was built');
  });
});
