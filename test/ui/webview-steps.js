// UI steps of the webview payload editor (issue #14), run by test/ui/run.js
// after the payload document steps: a real python3 program under the shim
// sends to a real server; the steps reach into the editor's webview frame,
// click and type there like a person, and check what the server received.
'use strict';
const path = require('node:path');
const wb = require('./workbench');
const { holdChunk, serverGets, closeEditors, TAIL } = require('./payload-steps');

/** The active webview's document (the editor's frame inside VS Code's webview frame). */
function frame(page) {
  return page.frameLocator('iframe.webview.ready').frameLocator('iframe#active-frame');
}

/** A hex cell by byte offset. */
function hexCell(page, offset) {
  return frame(page).locator(`.hex-grid .b[data-i="${offset}"]`);
}

async function openFromRow(page, row) {
  const menu = await wb.openContextMenu(row);
  await wb.pickMenuItem(menu, 'Open in Payload Editor');
  await frame(page).locator('.hex-grid').waitFor();
}

async function textPaneValue(page) {
  return frame(page).locator('textarea.text-pane').inputValue();
}

async function waitFor(page, what, fn, ms = 10000) {
  let last;
  for (const t0 = Date.now(); Date.now() - t0 < ms;) {
    last = await fn();
    if (last === true) return;
    await page.waitForTimeout(100);
  }
  throw new Error(`${what}: ${JSON.stringify(last)}`);
}

const steps = [
  [
    'payload editor: Open in Payload Editor from a row; header, hex and text panes; bytes edited in hex (Tab to the ASCII column and back), a word in text; Ctrl+Enter: the server gets exactly those bytes',
    async (page, workspace, ctx) => {
      await closeEditors(page);
      await ctx.setSettings({ 'nke.holdTimeoutMs': 20000 });
      const h = await holdChunk(page, ctx, Buffer.from('GET /original HTTP/1.0\r\n\r\n'));
      await openFromRow(page, h.row);
      const f = frame(page);
      await f.locator('header .title', { hasText: 'python3' }).waitFor();
      await f.locator('header .facts', { hasText: `127.0.0.1:${h.server.port}` }).waitFor();
      await f.locator('header .time-left', { hasText: /\d+\.\d s left/ }).waitFor();
      await f.locator('header .size', { hasText: '26 B' }).waitFor();
      await waitFor(
        page,
        'text pane',
        async () => (await textPaneValue(page)) === 'GET /original HTTP/1.0\\r\n\\r\n',
      );
      // Hex pane: "GET" -> "PUT", typed over the first three bytes.
      await hexCell(page, 0).click();
      await page.keyboard.type('505554');
      await hexCell(page, 2).locator('text=54').waitFor();
      // Tab: to the ASCII column, where a key is a byte; Shift+Tab: back to the hex digits.
      await page.keyboard.press('Tab');
      await page.keyboard.type('_');
      await hexCell(page, 3).locator('text=5F').waitFor();
      await page.keyboard.press('Shift+Tab');
      await page.keyboard.press('ArrowLeft');
      await page.keyboard.type('20');
      await hexCell(page, 3).locator('text=20').waitFor();
      // Text pane: the word "original" -> "edited".
      const ta = f.locator('textarea.text-pane');
      await waitFor(page, 'text pane after the hex edit', async () =>
        (await ta.inputValue()).startsWith('PUT /original'),
      );
      await ta.click();
      await page.keyboard.press('Control+Home');
      for (let i = 0; i < 5; i++) await page.keyboard.press('ArrowRight');
      for (let i = 0; i < 8; i++) await page.keyboard.press('Shift+ArrowRight');
      await page.keyboard.type('edited');
      await f.locator('.diff-summary', { hasText: '26 B → 24 B (-2)' }).waitFor();
      await f.locator('.diff-summary', { hasText: 'fewer than the sender wrote' }).waitFor();
      await hexCell(page, 5).locator('text=65').waitFor(); // 'e' of "edited" in the hex pane
      if (h.server.received().length) throw new Error('bytes reached the server before any action');
      await h.sendTail();
      await page.keyboard.press('Control+Enter');
      await serverGets(page, h.server, 'PUT /edited HTTP/1.0\r\n\r\n' + TAIL);
      await f.locator('.banner', { hasText: 'already answered (Reinject Edited Data, 24 bytes)' }).waitFor();
      if (!(await f.locator('button', { hasText: 'Reinject Edited' }).isDisabled()))
        throw new Error('Reinject Edited is still enabled after the payload was sent');
    },
  ],
  [
    'payload editor: from the text document title button; insert 10 (Insert key, no OVR) and delete 3: diff marks and size change; undo/redo; Save stages it in the text document; the server gets the new length',
    async (page, workspace, ctx) => {
      await closeEditors(page);
      const original = 'abcdefghijklmnopqrstuvwxyz';
      const edited = 'ab0123456789cdefghijklmnostuvwxyz';
      const h = await holdChunk(page, ctx, Buffer.from(original));
      await wb.clickRow(h.row);
      await wb.activeEditorText(page).locator(`text=${original}`).waitFor();
      await wb.editorTitleAction(page, 'Open in Payload Editor').click();
      const f = frame(page);
      await hexCell(page, 2).waitFor();
      // Insert mode, ten bytes before "c".
      await hexCell(page, 2).click();
      await page.keyboard.press('Insert');
      await f.locator('button[aria-pressed="true"]', { hasText: 'Insert' }).waitFor();
      // The key was the editor's alone: VS Code's overtype mode (OVR in the status bar) stays off.
      await page.waitForTimeout(300);
      if (await page.locator('[id="status.editor.inputMode"]').count())
        throw new Error('Insert in the payload editor also toggled VS Code overtype mode (OVR)');
      await page.keyboard.type('30313233343536373839');
      // "pqr" (now at 25..27) selected and deleted.
      await hexCell(page, 25).click();
      await page.keyboard.press('Shift+ArrowRight');
      await page.keyboard.press('Shift+ArrowRight');
      await f.locator('.inspector td', { hasText: '3 bytes' }).waitFor();
      await page.keyboard.press('Delete');
      const summary = f.locator('.diff-summary');
      await summary.locator('text=10 inserted, 3 deleted').waitFor();
      await summary.locator('text=Size 26 B → 33 B (+7)').waitFor();
      await summary.locator('text=7 bytes more than the sender wrote').waitFor();
      const inserted = await f.locator('.hex-grid .b.inserted').count();
      if (inserted !== 10) throw new Error(`${inserted} hex cells marked inserted, want 10`);
      await f.locator('.hex-grid .b.deleted-before[data-i="25"]').waitFor();
      await waitFor(page, 'text pane', async () => (await textPaneValue(page)) === edited);
      // Undo and redo through VS Code's edit stack.
      await page.keyboard.press('Control+z');
      await summary.locator('text=Size 26 B → 36 B (+10)').waitFor();
      await page.keyboard.press('Control+Shift+z');
      await summary.locator('text=Size 26 B → 33 B (+7)').waitFor();
      // The README's picture of the editor with a diff (docs/screenshots/payload-editor.png).
      await page.screenshot({ path: path.join(__dirname, '../../test-results/ui-payload-editor.png') });
      // Save stages the edit: the text document shows it.
      await page.keyboard.press('Control+s');
      await wb.editorTab(page, '.nkebytes').first().waitFor();
      await page.locator(`${wb.sel.tab}.dirty`).first().waitFor({ state: 'detached' });
      await wb.editorTab(page, '.nkepayload').click();
      await wb.activeEditorText(page).locator(`text=${edited}`).waitFor();
      await wb.editorTab(page, '.nkebytes').click();
      await hexCell(page, 2).waitFor();
      await h.sendTail();
      await f.locator('.toolbar button', { hasText: 'Reinject Edited' }).click();
      await serverGets(page, h.server, edited + TAIL);
      if (h.server.received().length !== 33 + TAIL.length)
        throw new Error('the server did not get the new length');
    },
  ],
  [
    'payload editor: a payload of HTML and script is shown literally; nothing of it ran, and the CSP refuses it even if put in as HTML',
    async (page, workspace, ctx) => {
      await closeEditors(page);
      const hostile =
        `<img src=x onerror="document.body.dataset.pwned='img'">` +
        `<script>document.body.dataset.pwned='script'</script>`;
      const h = await holdChunk(page, ctx, Buffer.from(hostile));
      await wb.runCommand(page, 'NKE: Open in Payload Editor');
      await wb.pickQuickItem(page, `#${/#(\d+)/.exec(await h.row.innerText())?.[1] ?? ''}`);
      const f = frame(page);
      await waitFor(
        page,
        'text pane shows the payload literally',
        async () => (await textPaneValue(page)) === hostile,
      );
      await f.locator('.hex-grid .c[data-i="0"]', { hasText: '<' }).waitFor();
      const body = f.locator('body');
      const found = await body.evaluate((b) => ({
        pwned: b.dataset.pwned ?? null,
        imgs: document.querySelectorAll('img').length,
        // Ours (inline, by nonce), our first-screen data (JSON, never run) and VS Code's own
        // (acquireVsCodeApi, inline): none loaded from elsewhere, none with the payload's text.
        scripts: Array.from(document.scripts)
          .filter((s) => s.src || /pwned|onerror/.test(s.textContent))
          .map((s) => s.src || s.textContent.slice(0, 80)),
        ours: Array.from(document.scripts).filter((s) => s.nonce && /acquireVsCodeApi/.test(s.textContent))
          .length,
        csp:
          document.querySelector('meta[http-equiv="Content-Security-Policy"]')?.getAttribute('content') ?? '',
      }));
      if (found.pwned !== null || found.imgs !== 0 || found.scripts.length || found.ours < 1)
        throw new Error(`the payload became page content: ${JSON.stringify(found)}`);
      if (!/script-src 'nonce-[^']+'/.test(found.csp) || /unsafe/.test(found.csp))
        throw new Error(`no strict CSP: ${found.csp}`);
      // Defence in depth: the same markup put in as HTML runs nothing either (CSP).
      const injected = await body.evaluate(async (b, html) => {
        const violations = [];
        document.addEventListener('securitypolicyviolation', (e) => violations.push(e.violatedDirective));
        const box = document.createElement('div');
        box.innerHTML = html;
        b.appendChild(box);
        await new Promise((r) => setTimeout(r, 500));
        box.remove();
        return { pwned: b.dataset.pwned ?? null, violations };
      }, hostile);
      if (injected.pwned !== null) throw new Error(`markup put in as HTML ran: ${JSON.stringify(injected)}`);
      if (!injected.violations.length)
        throw new Error('the CSP reported nothing for an inline handler and an image from elsewhere');
      await h.sendTail();
      await f.locator('.toolbar button', { hasText: 'Drop' }).click();
      await serverGets(page, h.server, TAIL);
    },
  ],
  [
    'payload editor: released while open (Disconnect), it says so and disables sending; the filter sent the original',
    async (page, workspace, ctx) => {
      await closeEditors(page);
      const h = await holdChunk(page, ctx, Buffer.from('released-under-the-editor'), '');
      await openFromRow(page, h.row);
      const f = frame(page);
      await hexCell(page, 0).click();
      await page.keyboard.type('58');
      await wb.runCommand(page, 'NKE: Disconnect');
      await f.locator('.banner', { hasText: "the filter's client went away" }).waitFor();
      await f.locator('header .time-left', { hasText: 'not held' }).waitFor();
      for (const b of ['Reinject Edited', 'Reinject Original', 'Drop', 'Revert', 'Overwrite'])
        if (!(await f.locator('.toolbar button', { hasText: b }).isDisabled()))
          throw new Error(`${b} is enabled`);
      // Read-only: nothing to replace with, nor a mode to type in.
      for (const c of ['.replace-bar button', '.replace-bar input[type="text"]', '#replace-hex'])
        if (!(await f.locator(c).isDisabled())) throw new Error(`${c} is enabled in a read-only editor`);
      await serverGets(page, h.server, 'released-under-the-editor');
      await closeEditors(page);
      await wb.dismissNotifications(page);
      await wb.runCommand(page, 'NKE: Connect');
      await page.locator(wb.sel.statusBar, { hasText: 'NKE: connected' }).waitFor();
      await ctx.setSettings({ 'nke.holdTimeoutMs': 5000 });
    },
  ],
];

module.exports = { steps, frame, hexCell, openFromRow, waitFor };
