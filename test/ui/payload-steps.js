// UI steps of editing held data (issue #12), run by test/ui/run.js after the
// emulator is loaded: a real python3 program under the shim sends a request
// to a real server here; the steps click, type and pick code actions in the
// workbench like a person, and check what the server received.
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const wb = require('./workbench');

const TAIL = '|tail-unchanged|';

// Connects, sends argv[2] (hex), waits for the file argv[3], then sends
// argv[4] on the same connection: the rest of the stream after the held chunk.
const SENDER =
  'import socket,sys,time,os\n' +
  's=socket.create_connection(("127.0.0.1",int(sys.argv[1])))\n' +
  's.sendall(bytes.fromhex(sys.argv[2]))\n' +
  'while not os.path.exists(sys.argv[3]): time.sleep(0.02)\n' +
  's.sendall(sys.argv[4].encode())\n' +
  // Open long past a slow step (a closed socket would release the chunk); stopped at the end.
  'time.sleep(600)';

async function serverGets(page, server, want, ms = 10000) {
  const wanted = Buffer.isBuffer(want) ? want : Buffer.from(want);
  for (const t0 = Date.now(); !server.received().equals(wanted);) {
    if (Date.now() - t0 > ms) {
      throw new Error(
        `server got ${JSON.stringify(server.received().toString('latin1'))}, want ${JSON.stringify(wanted.toString('latin1'))}`,
      );
    }
    await page.waitForTimeout(50);
  }
  // and nothing after it
  await page.waitForTimeout(200);
  if (!server.received().equals(wanted))
    throw new Error(`server got more: ${JSON.stringify(server.received().toString('latin1'))}`);
}

/**
 * A held chunk of `bytes` to a fresh server: capture "hold" until it is in
 * Pending Payloads, then "report" so the rest of the stream is not held (it
 * waits behind the held chunk). Returns its row, server and sendTail().
 */
async function holdChunk(page, ctx, bytes, tail = TAIL, { thenReport = true } = {}) {
  await ctx.setSettings({ 'nke.capture': 'hold' });
  await wb.treeRow(page, 'Filter', /Capture\s*hold/).waitFor();
  const server = await ctx.recordingServer();
  ctx.servers.push(server);
  const go = path.join(ctx.tmp, `go-${Date.now()}-${Math.random().toString(16).slice(2)}`);
  ctx.runUnderShim(SENDER, String(server.port), Buffer.from(bytes).toString('hex'), go, tail);
  const row = wb.treeRow(page, 'Pending Payloads', `127.0.0.1:${server.port}`);
  await row.waitFor();
  // The filter held it before the row showed: a bound on its hold time.
  const seenAt = Date.now();
  if (thenReport) await captureReport(page, ctx);
  return {
    row,
    server,
    seenAt,
    sendTail: async () => {
      fs.writeFileSync(go, '');
      await page.waitForTimeout(300); // written, and queued behind the held chunk
    },
  };
}

async function captureReport(page, ctx) {
  await ctx.setSettings({ 'nke.capture': 'report' });
  await wb.treeRow(page, 'Filter', /Capture\s*report/).waitFor();
}

/** Closes every editor, reverting a dirty one first (no save prompt). */
async function closeEditors(page) {
  await page.keyboard.press('Escape');
  for (let i = 0; i < 10 && (await page.locator(wb.sel.tab).count()) > 0; i++) {
    await wb.runCommand(page, 'View: Revert and Close Editor');
  }
  await page.locator(wb.sel.tab).first().waitFor({ state: 'detached', timeout: 5000 });
}

/** A row's context menu; right-clicked again if a loaded workbench missed the first. */
async function rowMenu(row) {
  try {
    return await wb.openContextMenu(row);
  } catch {
    await row.page().keyboard.press('Escape');
    return wb.openContextMenu(row);
  }
}

/** What the edit steps share (one held request at a time). */
const state = {};

const steps = [
  [
    'payload: clicking a held row opens its text document, named after process, direction and socket, with a CodeLens',
    async (page, workspace, ctx) => {
      // The step before set "report" through the command: its settings write
      // must have landed before this suite writes settings.json itself.
      await wb.treeRow(page, 'Filter', /Capture\s*report/).waitFor();
      // Time for a loaded machine to click, type and read before a held chunk's deadline.
      await ctx.setSettings({ 'nke.holdTimeoutMs': 20000 });
      state.a = await holdChunk(page, ctx, Buffer.from('GET /original HTTP/1.0\r\n\r\n'));
      await wb.clickRow(state.a.row);
      await wb.editorTab(page, `python3 ↑ out 127.0.0.1:${state.a.server.port} · socket`).waitFor();
      await wb.activeEditorText(page).locator('text=/original').waitFor();
      await wb.codeLens(page, /\d+\.\d s left/).waitFor();
      for (const t of ['Reinject Edited Data', 'Reinject Original', 'Drop', 'Open as Hex'])
        await wb.codeLens(page, t).waitFor();
      for (const t of ['Reinject Edited Data', 'Allow (Reinject Original)', 'Drop Payload'])
        await wb.editorTitleAction(page, t).waitFor();
      if (state.a.server.received().length) throw new Error('bytes reached the server before any action');
    },
  ],
  [
    'payload: the edited text (longer), the light bulb offers Reinject Edited Data, Reinject Original and Drop',
    async (page) => {
      await wb.typeInActiveEditor(page, 'GET /edited/and/much/longer HTTP/1.0\\r\nX-Edited: yes\\r\n\\r\n');
      await state.a.sendTail();
      const menu = await wb.openLightBulb(page);
      for (const t of ['Reinject Edited Data', 'Reinject Original', 'Drop'])
        await wb.codeActionItem(menu, t).waitFor();
      state.menu = menu;
    },
  ],
  [
    'payload: Reinject Edited Data from the light bulb: the server gets exactly the edit, then the rest of the stream unchanged',
    async (page) => {
      await wb.pickCodeAction(state.menu, 'Reinject Edited Data');
      await serverGets(
        page,
        state.a.server,
        'GET /edited/and/much/longer HTTP/1.0\r\nX-Edited: yes\r\n\r\n' + TAIL,
      );
      await wb.codeLens(page, 'Sent: Reinject Edited Data').waitFor();
      await wb
        .treeRow(page, 'Pending Payloads', `127.0.0.1:${state.a.server.port}`)
        .waitFor({ state: 'detached' });
    },
  ],
  [
    'payload: a shorter edit through the hex document (inline Open as Hex), Reinject Edited Data from the code actions',
    async (page, workspace, ctx) => {
      await closeEditors(page);
      const h = await holdChunk(page, ctx, Buffer.from('a rather long original request'));
      await wb.clickRowAction(h.row, 'Open Payload as Hex');
      await wb.activeEditorText(page).locator('text=|a').waitFor();
      await wb.typeInActiveEditor(page, '00000000: 73 68 6f 72 74');
      // the hex CodeLens shows the edit once saved; Reinject Edited saves first
      await h.sendTail();
      await wb.pickCodeAction(await wb.openCodeActions(page), 'Reinject Edited Data');
      await serverGets(page, h.server, 'short' + TAIL);
    },
  ],
  [
    'payload: Reinject Original and Drop from the code actions (light bulb, or Quick Fix), checked at the server',
    async (page, workspace, ctx) => {
      await closeEditors(page);
      const a = await holdChunk(page, ctx, Buffer.from('keep-me'));
      await wb.clickRow(a.row);
      await wb.activeEditorText(page).locator('text=keep-me').waitFor();
      await wb.typeInActiveEditor(page, 'an edit Reinject Original does not send');
      await a.sendTail();
      await wb.pickCodeAction(await wb.openCodeActions(page), 'Reinject Original');
      await serverGets(page, a.server, 'keep-me' + TAIL);
      await closeEditors(page);
      const b = await holdChunk(page, ctx, Buffer.from('drop-me'));
      await wb.clickRow(b.row);
      await wb.activeEditorText(page).locator('text=drop-me').waitFor();
      await b.sendTail();
      await wb.pickCodeAction(await wb.openCodeActions(page), 'Drop');
      await serverGets(page, b.server, TAIL);
      await wb.codeLens(page, 'Sent: Drop').waitFor();
    },
  ],
  [
    'payload: an invalid hex line is a diagnostic there; Reinject Edited is refused with the line, nothing is sent, the chunk stays held',
    async (page, workspace, ctx) => {
      await closeEditors(page);
      const h = await holdChunk(page, ctx, Buffer.from('0123456789abcdefXYZ'));
      await wb.pickMenuItem(await rowMenu(h.row), 'Open Payload as Hex');
      await wb.activeEditorText(page).locator('text=|XYZ|').waitFor();
      // Line 2, after "00000010: 58 59 5a": a byte that is not one.
      await wb.activeEditorText(page).click();
      await page.keyboard.press('Control+End');
      await page.keyboard.press('Home');
      await page.keyboard.type('00000010: 58 5g 5a ');
      await page.keyboard.press('Shift+End');
      await page.keyboard.press('Delete');
      await page.locator('.editor-group-container.active .squiggly-error').first().waitFor();
      await wb.codeLens(page, 'Reinject Edited Data (fix the error first)').waitFor();
      // The light bulb still offers what can be done; Reinject Edited is not among the enabled ones.
      const menu = await wb.openCodeActions(page);
      await wb.codeActionItem(menu, 'Drop').waitFor();
      const enabled = await menu
        .locator('.monaco-list-row.action:not(.option-disabled)', { hasText: 'Reinject Edited Data' })
        .count();
      if (enabled) throw new Error('Reinject Edited Data is offered enabled for an invalid dump');
      await page.keyboard.press('Escape');
      await wb.editorTitleAction(page, 'Reinject Edited Data').click();
      await wb.notification(page, 'was not sent: its hex dump has an error at line 2, column 14').waitFor();
      await page.waitForTimeout(500);
      if (h.server.received().length) throw new Error(`the server got ${h.server.received()}`);
      await h.row.waitFor(); // still pending
      state.bad = h;
    },
  ],
  [
    'payload: the chunk of the invalid dump is still held: Drop from its row, the server gets only the rest of the stream',
    async (page) => {
      const h = state.bad;
      await wb.dismissNotifications(page);
      await h.sendTail();
      await wb.pickMenuItem(await rowMenu(h.row), 'Drop Payload');
      await serverGets(page, h.server, TAIL);
      await wb.codeLens(page, 'Sent: Drop').waitFor();
    },
  ],
  [
    'payload: all 256 byte values, unedited text and then unedited hex documents, reinject byte-exact',
    async (page, workspace, ctx) => {
      await closeEditors(page);
      const all = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
      for (const kind of ['text', 'hex']) {
        const h = await holdChunk(page, ctx, all);
        if (kind === 'text') await wb.clickRow(h.row);
        else await wb.clickRowAction(h.row, 'Open Payload as Hex');
        await wb.codeLens(page, 'Reinject Edited Data').waitFor();
        await h.sendTail();
        await wb
          .codeLens(page, 'Reinject Edited Data')
          .locator('a', { hasText: 'Reinject Edited Data' })
          .click();
        await serverGets(page, h.server, Buffer.concat([all, Buffer.from(TAIL)]));
        await closeEditors(page);
      }
    },
  ],
  [
    'payload: open in an editor it is held past 3x nke.holdTimeoutMs and released unchanged at nke.editHoldMaxMs; the editor says so and refuses',
    async (page, workspace, ctx) => {
      // Small values (held for 5 s, kept for 20 s in all while open), still
      // time for a loaded machine to open the document before 5 s.
      await closeEditors(page);
      await ctx.setSettings({ 'nke.holdTimeoutMs': 5000, 'nke.editHoldMaxMs': 20000 });
      try {
        const h = await holdChunk(page, ctx, Buffer.from('released-unchanged'), '', { thenReport: false });
        await wb.clickRow(h.row);
        await wb
          .codeLens(page, /kept held while open, released unchanged in \d+\.\d s at the latest/)
          .waitFor();
        await captureReport(page, ctx);
        await wb.typeInActiveEditor(page, 'an edit that is never sent');
        // 3x the hold timeout after the hold at least (it was held before the row showed).
        await page.waitForTimeout(Math.max(0, 15100 - (Date.now() - h.seenAt)));
        await h.row.waitFor({ timeout: 1000 }); // still held after 3x the hold timeout
        if (h.server.received().length) throw new Error('released before editHoldMaxMs');
        await wb.notification(page, 'was already released (its deadline passed)').waitFor({ timeout: 15000 });
        await serverGets(page, h.server, 'released-unchanged');
        await wb.codeLens(page, 'was already released (its deadline passed)').waitFor();
        await h.row.waitFor({ state: 'detached' });
        await wb.dismissNotifications(page);
        await wb.editorTitleAction(page, 'Reinject Edited Data').click();
        await wb.notification(page, 'was already released (its deadline passed)').waitFor();
        await page.waitForTimeout(300);
        await serverGets(page, h.server, 'released-unchanged');
        await wb.dismissNotifications(page);
      } finally {
        await ctx.setSettings({
          'nke.holdTimeoutMs': 5000,
          'nke.editHoldMaxMs': 120000,
          'nke.capture': 'report',
        });
      }
    },
  ],
];

module.exports = { steps, holdChunk, serverGets, closeEditors, TAIL };
