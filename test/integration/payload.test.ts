// Editing held data in the real VS Code, against the REAL emulator: a real
// python3 program under the shim, a real server here in the extension host.
// The payload documents are the registered nke-payload: file system; edits
// go through real TextDocuments and saves; the code actions, CodeLens and
// diagnostics are what VS Code's own commands return for those documents.
import * as assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as vscode from 'vscode';
import type { PendingView } from '../../extension/src/shared/helperProtocol';
import { encodeHex, encodeText } from '../../extension/src/shared/payloadCodecs';
import { recordingServer } from '../support/recordingServer';
import { until, useLiveSession } from './liveSession';

const TAIL = '|tail-unchanged|';

// Connects, sends argv[2] (hex), waits until the file argv[3] exists, then
// sends the tail on the same connection: the rest of the stream after the
// held chunk.
const SENDER =
  'import socket,sys,time,os\n' +
  's=socket.create_connection(("127.0.0.1",int(sys.argv[1])))\n' +
  's.sendall(bytes.fromhex(sys.argv[2]))\n' +
  'while not os.path.exists(sys.argv[3]): time.sleep(0.02)\n' +
  's.sendall(sys.argv[4].encode())\n' +
  'time.sleep(30)';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Closes every editor without a save prompt: dirty payload documents are reverted first. */
async function closeAllEditors(): Promise<void> {
  for (const doc of vscode.workspace.textDocuments.filter((d) => d.isDirty)) {
    await vscode.window.showTextDocument(doc);
    await vscode.commands.executeCommand('workbench.action.files.revert');
  }
  await vscode.commands.executeCommand('workbench.action.closeAllEditors');
}

describe('payload documents: edit held data in the editor (real emulator)', function () {
  this.timeout(90000);
  // Registered first, so it runs before the session's clean-up kills the programs.
  afterEach(() => closeAllEditors());
  const live = useLiveSession(
    'nke-payload-',
    { holdTimeoutMs: 5000, editHoldMaxMs: 60000, capture: undefined },
    { loadFilter: true },
  );
  let n = 0;
  const config = () => vscode.workspace.getConfiguration('nke');

  /** A held chunk of `bytes` to a fresh server; the tail follows once release() is called. */
  async function heldChunk(bytes: Buffer, tail = TAIL) {
    const server = await recordingServer();
    const go = path.join(live.tmp, `go-${++n}`);
    await vscode.commands.executeCommand('nke.setCaptureMode', 'hold');
    const p = spawn(
      live.launcher,
      ['run', '--', 'python3', '-c', SENDER, String(server.port), bytes.toString('hex'), go, tail],
      { env: { ...process.env, NKE_EMU_DIR: live.runtimeDir }, stdio: 'ignore' },
    );
    live.programs.push(p);
    const view = await until('the held chunk in Pending Payloads', () =>
      live.api.trees.pendingPayloads.getChildren().find((x) => x.remote?.port === server.port),
    );
    // The tail is not held: it waits behind the held chunk in the stream.
    await vscode.commands.executeCommand('nke.setCaptureMode', 'report');
    return {
      server,
      view,
      sendTail: async () => {
        fs.writeFileSync(go, '');
        await sleep(300); // written by the program, queued behind the held chunk
      },
    };
  }

  function docOf(kind: 'text' | 'hex'): vscode.TextDocument {
    const d = vscode.window.activeTextEditor?.document;
    assert.ok(d && d.uri.scheme === 'nke-payload', `active editor is ${d?.uri.toString()}`);
    assert.equal(d.languageId, kind === 'text' ? 'nke-payload-text' : 'nke-payload-hex');
    return d;
  }

  async function open(view: PendingView, kind: 'text' | 'hex'): Promise<vscode.TextDocument> {
    await vscode.commands.executeCommand(kind === 'text' ? 'nke.openPayload' : 'nke.openPayloadHex', view);
    return docOf(kind);
  }

  async function replaceAll(doc: vscode.TextDocument, text: string): Promise<void> {
    const edit = new vscode.WorkspaceEdit();
    edit.replace(doc.uri, new vscode.Range(doc.positionAt(0), doc.positionAt(doc.getText().length)), text);
    assert.ok(await vscode.workspace.applyEdit(edit));
  }

  /** What VS Code offers (enabled actions only: its API command leaves disabled ones out). */
  async function codeActions(doc: vscode.TextDocument, line = 0): Promise<vscode.CodeAction[]> {
    return vscode.commands.executeCommand<vscode.CodeAction[]>(
      'vscode.executeCodeActionProvider',
      doc.uri,
      new vscode.Range(line, 0, line, 0),
    );
  }

  /** Every action the registered provider gives the editor, disabled ones with their reason. */
  function allCodeActions(doc: vscode.TextDocument, line = 0): vscode.CodeAction[] {
    const range = new vscode.Range(line, 0, line, 0);
    const diagnostics = vscode.languages.getDiagnostics(doc.uri).filter((d) => d.range.start.line === line);
    return live.api.payloadProviders.codeActions.provideCodeActions(doc, range, {
      diagnostics,
      only: undefined,
      triggerKind: vscode.CodeActionTriggerKind.Invoke,
    });
  }

  async function runCodeAction(doc: vscode.TextDocument, title: string): Promise<void> {
    const a = (await codeActions(doc)).find((x) => x.title === title);
    assert.ok(a?.command, `code action ${title}`);
    assert.equal(a.disabled, undefined, `${title} is enabled`);
    await vscode.commands.executeCommand(a.command.command, ...(a.command.arguments ?? []));
  }

  it('the text document names the chunk in its tab and shows the bytes losslessly; hex shows the dump', async () => {
    const bytes = Buffer.from('GET /a HTTP/1.0\r\n\r\n\x00\xff');
    const { server, view } = await heldChunk(bytes);
    const doc = await open(view, 'text');
    assert.equal(doc.getText(), encodeText(bytes));
    const tab = vscode.window.tabGroups.activeTabGroup.activeTab!;
    assert.match(
      tab.label,
      new RegExp(`^python3 ↑ out 127\\.0\\.0\\.1:${server.port} · socket \\d+:\\d+ · #${view.id}`),
    );
    const hex = await open(view, 'hex');
    assert.equal(hex.getText(), encodeHex(bytes));
    assert.equal(server.received().length, 0);
  });

  it('an edit saved in the text document is staged, shown in the hex document and the row; Reinject Edited sends it and the tail after it', async () => {
    const { server, view, sendTail } = await heldChunk(Buffer.from('GET /original HTTP/1.0\r\n\r\n'));
    const hex = await open(view, 'hex');
    const text = await open(view, 'text');
    const edited = 'GET /edited/and/much/longer HTTP/1.0\r\nX-Edited: yes\r\n\r\n';
    await replaceAll(text, encodeText(Buffer.from(edited)));
    assert.ok(await text.save());
    assert.equal(Buffer.from(live.api.payloads.staged(view.id)!).toString(), edited);
    await until(
      'the hex document to show the staged edit',
      () => hex.getText() === encodeHex(Buffer.from(edited)),
    );
    const item = live.api.trees.pendingPayloads.getTreeItem(live.api.model.pendingPayload(view.id)!);
    assert.match(
      String(item.description),
      new RegExp(`edited 26 B → ${edited.length} B \\(\\+${edited.length - 26}\\)`),
    );
    await sendTail();
    assert.equal(server.received().length, 0, 'nothing is sent by saving');
    await runCodeAction(text, 'Reinject Edited Data');
    const want = edited + TAIL;
    assert.equal((await server.whenBytes(want.length)).toString(), want);
    await sleep(200);
    assert.equal(server.received().toString(), want);
    assert.equal(live.api.payloads.state(view.id).kind, 'sent');
  });

  it('a shorter edit through the hex document, unsaved: Reinject Edited saves it first and sends it', async () => {
    const { server, view, sendTail } = await heldChunk(Buffer.from('a rather long original request'));
    const hex = await open(view, 'hex');
    await replaceAll(hex, encodeHex(Buffer.from('short')));
    assert.ok(hex.isDirty);
    await sendTail();
    await vscode.commands.executeCommand('nke.reinjectEdited', hex.uri);
    assert.equal((await server.whenBytes(5 + TAIL.length)).toString(), 'short' + TAIL);
    assert.ok(!hex.isDirty, 'saved before sending');
    assert.equal(Buffer.from(live.api.payloads.staged(view.id)!).toString(), 'short');
  });

  it('a hex line typed without its ASCII gutter: saved, staged and sent; the document keeps what was typed', async () => {
    const { server, view, sendTail } = await heldChunk(Buffer.from('a rather long original request'));
    const hex = await open(view, 'hex');
    const typed = '00000000: 73 68 6f 72 74';
    await replaceAll(hex, typed);
    await sendTail();
    await vscode.commands.executeCommand('nke.reinjectEdited', hex.uri);
    assert.equal((await server.whenBytes(5 + TAIL.length)).toString(), 'short' + TAIL);
    assert.ok(!hex.isDirty, 'saved before sending');
    assert.equal(hex.getText(), typed);
  });

  it('an invalid hex line: a diagnostic at that line, Reinject Edited disabled with the reason, nothing sent, still held', async () => {
    const { server, view } = await heldChunk(Buffer.from('0123456789abcdefXYZ'));
    const hex = await open(view, 'hex');
    const lines = hex.getText().split('\n');
    lines[1] = '00000010: 58 5g 5a';
    await replaceAll(hex, lines.join('\n'));
    const diags = await until('the diagnostic', () => {
      const d = vscode.languages.getDiagnostics(hex.uri);
      return d.length ? d : undefined;
    });
    assert.equal(diags.length, 1);
    assert.equal(diags[0].range.start.line, 1);
    assert.equal(diags[0].range.start.character, 13);
    assert.equal(diags[0].code, 'nke.payloadSyntax');
    assert.match(diags[0].message, /"5g" is not a byte/);
    const actions = allCodeActions(hex, 1);
    const titles = actions.map((a) => `${a.title}: ${a.disabled?.reason}`).join('; ');
    const reinject = actions.find((a) => a.title === 'Reinject Edited Data');
    assert.match(
      reinject?.disabled?.reason ?? '',
      /hex dump has an error at line 2, column 14: "5g" is not a byte/,
      titles,
    );
    assert.equal(actions.find((a) => a.title === 'Reinject Original')?.disabled, undefined, titles);
    const fix = actions.find((a) => a.title === `Revert payload ${view.id} to its last valid bytes`);
    assert.deepEqual(
      fix?.diagnostics?.map((d) => d.range.start.character),
      [13],
      'the fix names the diagnostic',
    );
    // VS Code offers the enabled ones (the light bulb), not the disabled Reinject Edited.
    const offered = (await codeActions(hex, 1)).map((a) => a.title);
    assert.ok(
      offered.includes('Reinject Original') && !offered.includes('Reinject Edited Data'),
      String(offered),
    );
    await vscode.commands.executeCommand('nke.reinjectEdited', hex.uri);
    // Saving an invalid dump is refused too: nothing is staged from it.
    const saved = await Promise.resolve(vscode.workspace.save(hex.uri)).catch(() => undefined);
    assert.equal(saved, undefined, 'the save of an invalid dump is refused');
    await sleep(500);
    assert.equal(server.received().length, 0, 'nothing sent for an invalid dump');
    assert.ok(live.api.model.pendingPayload(view.id), 'still pending');
    assert.equal(live.api.payloads.state(view.id).kind, 'held');
    assert.equal(live.api.payloads.staged(view.id), undefined, 'nothing staged from an invalid dump');
  });

  it('Reinject Original and Drop from the code actions, checked at the server', async () => {
    const a = await heldChunk(Buffer.from('keep-me'));
    const doc = await open(a.view, 'text');
    await replaceAll(doc, 'an edit that Reinject Original ignores');
    await a.sendTail();
    await runCodeAction(doc, 'Reinject Original');
    assert.equal((await a.server.whenBytes(7 + TAIL.length)).toString(), 'keep-me' + TAIL);
    await vscode.commands.executeCommand('workbench.action.revertAndCloseActiveEditor');

    const b = await heldChunk(Buffer.from('drop-me'));
    const doc2 = await open(b.view, 'hex');
    await b.sendTail();
    await runCodeAction(doc2, 'Drop');
    assert.equal((await b.server.whenBytes(TAIL.length)).toString(), TAIL);
    await sleep(200);
    assert.equal(b.server.received().toString(), TAIL);
    // Answered: every action now refuses, naming the chunk.
    const after = allCodeActions(doc2);
    assert.deepEqual(await codeActions(doc2), [], 'nothing enabled is offered');
    for (const t of ['Reinject Edited Data', 'Reinject Original', 'Drop']) {
      assert.match(
        after.find((x) => x.title === t)?.disabled?.reason ?? '',
        new RegExp(`^payload ${b.view.id} was already answered \\(Drop`),
      );
    }
  });

  it('all 256 byte values: unedited text and unedited hex documents reinject byte-exact', async () => {
    const all = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
    for (const kind of ['text', 'hex'] as const) {
      const { server, view, sendTail } = await heldChunk(all);
      const doc = await open(view, kind);
      assert.ok(!doc.isDirty);
      await sendTail();
      await vscode.commands.executeCommand('nke.reinjectEdited', doc.uri);
      const got = await server.whenBytes(256 + TAIL.length);
      assert.deepEqual(got.subarray(0, 256), all, `${kind}: the 256 bytes`);
      assert.equal(got.subarray(256).toString(), TAIL);
      await closeAllEditors();
    }
  });

  it('open in an editor: held past 3x nke.holdTimeoutMs, released unchanged at nke.editHoldMaxMs; then read-only and refusing', async function () {
    // Held 2 s: time for a loaded machine to open the document before the
    // plain deadline (with 800 ms the open itself lost the race at load 7).
    this.timeout(45000);
    await config().update('holdTimeoutMs', 2000, vscode.ConfigurationTarget.Global);
    await config().update('editHoldMaxMs', 9000, vscode.ConfigurationTarget.Global);
    try {
      await until(
        'the helper to hold for 2000 ms',
        () => live.api.model.link.rules?.holdTimeoutMs === 2000,
        10000,
      );
      const { server, view } = await heldChunk(Buffer.from('released-unchanged'), '');
      const doc = await open(view, 'text');
      await replaceAll(doc, 'an edit never sent');
      await sleep(Math.max(0, view.heldAt + 3 * 2000 + 300 - Date.now()));
      assert.ok(
        live.api.model.pendingPayload(view.id),
        `still held after 3x the hold timeout (kept: ${live.api.payloads.keptHeld()}, view ${JSON.stringify(view)}, now ${Date.now()}, state ${JSON.stringify(live.api.payloads.state(view.id))})`,
      );
      assert.equal(server.received().length, 0);
      const kept = live.api.model.pendingPayload(view.id)!;
      assert.ok(kept.deadline > view.deadline, 'the deadline moved');
      assert.ok(kept.deadline - kept.heldAt <= 9000, 'never past editHoldMaxMs');
      const lenses = await vscode.commands.executeCommand<vscode.CodeLens[]>(
        'vscode.executeCodeLensProvider',
        doc.uri,
      );
      assert.match(lenses[0].command!.title, /\d\.\d s left · kept held while open/);
      await server.whenBytes(18, 12000);
      const at = Date.now() - view.heldAt;
      assert.equal(server.received().toString(), 'released-unchanged');
      assert.ok(at >= 8900 && at < 13000, `released ${at} ms after it was held`);
      await until('the store to say released', () => live.api.payloads.state(view.id).kind === 'released');
      const stat = await vscode.workspace.fs.stat(doc.uri);
      assert.equal(stat.permissions, vscode.FilePermission.Readonly);
      const lens = await vscode.commands.executeCommand<vscode.CodeLens[]>(
        'vscode.executeCodeLensProvider',
        doc.uri,
      );
      assert.match(
        lens[0].command!.title,
        new RegExp(`payload ${view.id} was already released \\(its deadline passed\\)`),
      );
      const refused = allCodeActions(doc);
      assert.equal(refused.length, 3);
      for (const a of refused) {
        assert.match(a.disabled?.reason ?? '', /was already released \(its deadline passed\)/, a.title);
      }
      await assert.rejects(
        live.api.payloads.act(view.id, 'reinjectEdited'),
        new RegExp(`payload ${view.id} was already released \\(its deadline passed\\)`),
      );
      await vscode.commands.executeCommand('nke.reinjectEdited', doc.uri);
      await sleep(300);
      assert.equal(server.received().toString(), 'released-unchanged', 'nothing more sent');
    } finally {
      await config().update('holdTimeoutMs', 5000, vscode.ConfigurationTarget.Global);
      await config().update('editHoldMaxMs', 60000, vscode.ConfigurationTarget.Global);
    }
  });

  it('a payload not open in an editor is released at its plain deadline (nothing keeps it)', async () => {
    await config().update('holdTimeoutMs', 600, vscode.ConfigurationTarget.Global);
    try {
      await until(
        'the helper to hold for 600 ms',
        () => live.api.model.link.rules?.holdTimeoutMs === 600,
        10000,
      );
      const { server, view } = await heldChunk(Buffer.from('not-open'), '');
      await server.whenBytes(8, 5000);
      assert.ok(Date.now() - view.heldAt < 2500);
      await until('the row to go', () => !live.api.model.pendingPayload(view.id));
    } finally {
      await config().update('holdTimeoutMs', 5000, vscode.ConfigurationTarget.Global);
    }
  });

  it('Disconnect: the Pending view and the status bar drop what the filter released at once', async () => {
    const { view } = await heldChunk(Buffer.from('held-at-disconnect'), '');
    assert.ok(live.api.model.pendingPayload(view.id));
    await vscode.commands.executeCommand('nke.disconnect');
    assert.deepEqual(live.api.trees.pendingPayloads.getChildren(), []);
    const s = live.api.payloads.state(view.id);
    assert.ok(s.kind === 'released' || s.kind === 'unknown');
    await vscode.commands.executeCommand('nke.connect');
  });

  it('Drop from the payload editor (webview) while the text document is open: its CodeLens says so at once, no tick later', async () => {
    const { server, view, sendTail } = await heldChunk(Buffer.from('lens-follows-the-editor'));
    const doc = await open(view, 'text');
    await vscode.commands.executeCommand('nke.openPayloadEditor', view);
    await until('the payload editor painted', () =>
      live.api.payloadEditor.timings.find((t) => t.id === view.id && t.openToFirstPaintMs !== undefined),
    );
    let changes = 0;
    const sub = live.api.payloadProviders.codeLenses.onDidChangeCodeLenses(() => changes++);
    try {
      await sendTail();
      // What the editor's Drop button runs: the store's action, the only place that sends.
      await live.api.payloads.act(view.id, 'drop');
      // No wait: the change was announced as the action completed, and the lens reads the new state.
      assert.ok(changes > 0, 'no CodeLens change announced by the Drop');
      const lens = await vscode.commands.executeCommand<vscode.CodeLens[]>(
        'vscode.executeCodeLensProvider',
        doc.uri,
      );
      assert.match(lens[0].command!.title, /Sent: Drop/);
      await server.whenBytes(TAIL.length);
      assert.equal(server.received().toString(), TAIL);
    } finally {
      sub.dispose();
      await closeAllEditors();
    }
  });
});
