// UI steps for the event explorer (issue #17), spliced into test/ui/run.js
// while the workbench is connected to the real emulator: Exec Events scoped
// to the programs under the filter, a socket's states to "closed (N)", Hold
// This Socket's Data from the Sockets menu, and a second browser tab told
// who holds the filter, taking it over.
'use strict';
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const wb = require('./workbench');

const shots = process.env.NKE_SCREENSHOTS === '1';
/** A README picture: the pointer moved off the views first, so no hover covers a row. */
async function readmeShot(page, name) {
  if (!shots) return;
  await page.mouse.move(900, 200);
  await page.waitForTimeout(500);
  await page.screenshot({ path: path.join(__dirname, '../../test-results', name) });
}

/** The aria-level (tree depth) of a row. */
const level = async (row) => Number(await row.getAttribute('aria-level'));

async function until(page, what, fn, ms = 20000) {
  for (const t0 = Date.now(); ;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() - t0 > ms) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await page.waitForTimeout(100);
  }
}

/** A python3 client: connects, sends `first`, then every `everyMs` a tick, closes after `closeAfterS`, lives on. */
function client(port, { first, everyMs = 0, closeAfterS = 3600 }) {
  return [
    'import socket,sys,time',
    `s=socket.create_connection(("127.0.0.1",${port}))`,
    `s.sendall(${JSON.stringify(first)}.encode())`,
    't0=time.time()',
    `while time.time()-t0<${closeAfterS}:`,
    `  time.sleep(${everyMs ? everyMs / 1000 : 0.2})`,
    ...(everyMs ? ['  s.sendall(b"tick")'] : []),
    's.close()',
    'time.sleep(120)',
  ].join('\n');
}

/**
 * Scrolls a view to its first rows: processes with live sockets come
 * first, and a reveal from Exec Events (selecting a process) may have
 * scrolled Sockets down to that process.
 */
async function scrollToTop(page, viewName) {
  // Home in a focused tree focuses its first row and scrolls to it.
  await wb.viewPane(page, viewName).locator('.monaco-list').first().focus();
  await page.keyboard.press('Home');
}

/** A quick pick shown by the command just run (it came without its row), within a moment. */
async function pickerShown(page) {
  return page
    .locator(wb.sel.quickInput)
    .waitFor({ state: 'visible', timeout: 1500 })
    .then(
      () => true,
      () => false,
    );
}

const explorerSteps = [
  [
    "Exec Events: a program run under the filter shows with its parent; the machine's other execs only with Show Every Exec",
    async (page, workspace, ctx) => {
      const server = await ctx.recordingServer();
      // Not under the shim: one of "the machine's other execs" (the
      // process connector reports it when nke-emud runs as root).
      const noise = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'nke-ui-')), 'nke-ui-machine-noise');
      fs.copyFileSync('/bin/true', noise);
      fs.chmodSync(noise, 0o755);
      const root = process.getuid?.() === 0;
      let childPid = 0;
      try {
        ctx.runPlain([noise]);
        // sh stays the parent of python3 (the trailing `true` keeps sh from exec'ing it).
        const p = ctx.runUnderShimArgv([
          'sh',
          '-c',
          `${ctx.python} -c "$0"; true`,
          client(server.port, { first: 'exec-scope' }),
        ]);
        await server.whenBytes(10, 60000);
        await wb.runCommand(page, 'NKE: Find Process');
        await page.locator(wb.sel.quickInputBox).fill(`ppid ${p.pid}`);
        await page.locator(`${wb.sel.quickInputRow}.focused`).waitFor();
        await page.keyboard.press('Enter');
        const pane = wb.viewPane(page, 'Exec Events');
        const selected = pane.locator('.monaco-list-row.selected').first();
        await selected.waitFor();
        const picked = await selected.innerText();
        childPid = Number(/pid (\d+) /.exec(picked)?.[1]);
        if (!/^\s*python3(\.\d+)?\s*pid \d+/.test(picked) || !childPid || childPid === p.pid)
          throw new Error(`Find Process revealed ${JSON.stringify(picked)}, not sh's python3`);
        // The real parent: Left walks up the tree (a collapse first on a
        // row with children); rows of the same pid are its earlier images
        // (a re-exec chain), the first row of another pid is the parent.
        const focused = pane.locator('.monaco-list-row.focused');
        const childLevel = await level(focused);
        let parentText = '';
        for (let i = 0; i < 40; i++) {
          await page.keyboard.press('ArrowLeft');
          const t = await focused.innerText();
          if (!new RegExp(`pid ${childPid} `).test(t)) {
            parentText = t;
            break;
          }
        }
        if (
          !new RegExp(`^\\s*(sh|dash|bash)\\s*pid ${p.pid} `).test(parentText) ||
          (await level(focused)) >= childLevel
        )
          throw new Error(`python3's parent row is ${JSON.stringify(parentText)}, not sh (pid ${p.pid})`);
        const header = wb.viewPane(page, 'Exec Events').locator('.pane-header');
        await header.locator('text=/ hidden/').waitFor();
        if (await wb.treeRow(page, 'Exec Events', 'nke-ui-machine-noise').count())
          throw new Error("the machine's other exec shows in the default scope");
        await readmeShot(page, 'ui-explorer-execs.png');
        await wb.runCommand(page, 'NKE: Show Every Exec on the Machine');
        try {
          await header.locator('text=/machine-wide/').waitFor();
          if (root) {
            // Machine-wide, a busy machine has thousands of rows: Find Process finds it.
            await wb.runCommand(page, 'NKE: Find Process');
            await page.locator(wb.sel.quickInputBox).fill('nke-ui-machine-noise');
            await page.locator(wb.sel.quickInputRow, { hasText: 'nke-ui-machine-noise' }).first().waitFor();
            await page.keyboard.press('Enter');
            await wb
              .viewPane(page, 'Exec Events')
              .locator('.monaco-list-row.selected', { hasText: 'nke-ui-machine-noise' })
              .waitFor();
          } else console.log('      (not root: no process connector, so no machine-wide execs to show)');
        } finally {
          await wb.runCommand(page, 'NKE: Show Only Execs Under the Filter');
        }
        await header.locator('text=/ hidden/').waitFor();
      } finally {
        // python3 is sh's child: killing the program (sh) would leave it running.
        if (childPid) {
          try {
            process.kill(childPid, 'SIGKILL');
          } catch {
            // gone already
          }
        }
        server.close();
        fs.rmSync(path.dirname(noise), { recursive: true, force: true });
      }
    },
  ],
  [
    'Sockets: a socket that exchanged data shows connected, then closed, then moves into "closed (1)"',
    async (page, workspace, ctx) => {
      ctx.stopPrograms(); // the earlier steps' programs: their rows go below the live ones
      const server = await ctx.recordingServer();
      try {
        const p = ctx.runUnderShim(client(server.port, { first: 'states', closeAfterS: 3 }));
        await scrollToTop(page, 'Sockets');
        const row = wb.treeRow(page, 'Sockets', `→ 127.0.0.1:${server.port}`);
        await row.filter({ hasText: 'connected' }).waitFor();
        await server.whenBytes(6);
        await row.filter({ hasText: 'closed' }).waitFor({ timeout: 15000 });
        // Its process row gets a "closed (1)" group once it has been closed a few seconds.
        const proc = wb.treeRow(page, 'Sockets', `python3 (${p.pid})`);
        await proc.waitFor();
        const group = wb.treeRow(page, 'Sockets', 'closed (1)');
        await until(page, 'the closed group under the process', async () => {
          await scrollToTop(page, 'Sockets');
          const rows = wb.viewPane(page, 'Sockets').locator('.monaco-list-row');
          const texts = await rows.allInnerTexts();
          const at = texts.findIndex((t) => t.includes(`python3 (${p.pid})`));
          return at >= 0 && texts[at + 1]?.includes('closed (1)');
        });
        await group.first().waitFor();
        if (await row.count())
          throw new Error('the closed socket still shows in place after moving into its group');
      } finally {
        server.close();
      }
    },
  ],
  [
    "Sockets menu: Hold This Socket's Data holds its next chunk, not the other program's; the rule shows in Filter and is removed there",
    async (page, workspace, ctx) => {
      ctx.stopPrograms();
      const mine = await ctx.recordingServer();
      const demo = await ctx.recordingServer();
      try {
        ctx.runUnderShim(client(mine.port, { first: 'mine', everyMs: 1000 }));
        ctx.runUnderShim(client(demo.port, { first: 'demo', everyMs: 200 }));
        await scrollToTop(page, 'Sockets');
        const row = wb.treeRow(page, 'Sockets', `→ 127.0.0.1:${mine.port}`);
        await row.filter({ hasText: 'connected' }).waitFor();
        await wb.pickMenuItem(await wb.openContextMenu(row), "Hold This Socket's Data");
        // A redraw of the busy Sockets view between the right-click and the
        // pick drops the row's handle in VS Code: the command then asks
        // which socket (it never guesses).
        if (await pickerShown(page)) await wb.pickQuickItem(page, `127.0.0.1:${mine.port}`);
        const held = wb.treeRow(page, 'Pending Payloads', `↑ out 4 B 127.0.0.1:${mine.port}`);
        await held.first().waitFor();
        const rule = wb.treeRow(page, 'Filter', `127.0.0.1:${mine.port}`);
        await rule.waitFor();
        const before = demo.received().length;
        await page.waitForTimeout(1500);
        if (!(demo.received().length > before)) throw new Error("the other program's bytes stopped");
        if (await wb.treeRow(page, 'Pending Payloads', `127.0.0.1:${demo.port}`).count())
          throw new Error("the other program's data was held");
        await readmeShot(page, 'ui-explorer-hold.png');
        await wb.pickMenuItem(await wb.openContextMenu(rule), 'Remove Intercept Rule');
        // A refresh of the Filter view between the right-click and the pick
        // can leave the command without its row: it then asks which rule.
        if (await pickerShown(page)) await wb.pickQuickItem(page, `127.0.0.1:${mine.port}`);
        await rule.waitFor({ state: 'detached' });
        await held
          .first()
          .waitFor({ state: 'detached', timeout: 30000 })
          .catch(async () => {
            // Released on its deadline otherwise; Allow what is still held.
            while (await held.count()) {
              await wb.pickMenuItem(await wb.openContextMenu(held.first()), 'Allow (Reinject Original)');
            }
          });
      } finally {
        ctx.stopPrograms();
        mine.close();
        demo.close();
      }
    },
  ],
  [
    'a second tab is told which window holds the filter; Take Over moves the live views to it; the first stays off until Take Back',
    async (page, workspace, ctx) => {
      ctx.stopPrograms();
      await wb.dismissNotifications(page);
      const second = await page.context().newPage();
      second.setDefaultTimeout(20000);
      const server = await ctx.recordingServer();
      const later = await ctx.recordingServer();
      const takenOver = (p) => p.locator(wb.sel.statusBar, { hasText: 'NKE: taken over by another window' });
      try {
        await second.goto(page.url());
        await wb.waitForWorkbench(second, 'NKE: disconnected', 90000);
        await wb.runCommand(second, 'NKE: Connect');
        const toast = wb.notification(second, 'in use by another window');
        await toast.waitFor();
        await toast.locator('.monaco-button', { hasText: 'Take Over' }).click();
        await second.locator(wb.sel.statusBar, { hasText: 'NKE: connected' }).waitFor();
        // The first tab says who took the filter and offers it back; it does not reconnect.
        await takenOver(page).waitFor();
        const notice = wb.notification(page, 'took over the filter');
        await notice.waitFor();
        await wb.treeRow(page, 'Filter', 'Taken over').waitFor();
        await wb.openViewContainer(second, 'NKE Workbench');
        const meanwhile = ctx.runUnderShim(client(server.port, { first: 'second-tab', everyMs: 500 }));
        await server.whenBytes(10, 60000);
        await wb.treeRow(second, 'Sockets', `→ 127.0.0.1:${server.port}`).waitFor();
        // While the second tab works, the first stays off the filter (no fight back).
        const ticks = server.received().length;
        await second.waitForTimeout(3000);
        if (!(server.received().length > ticks)) throw new Error("the program's bytes stopped");
        if (!(await takenOver(page).count()))
          throw new Error('the first tab left its taken-over state by itself');
        await second.locator(wb.sel.statusBar, { hasText: 'NKE: connected' }).waitFor({ timeout: 1000 });
        // Take Back: the first tab holds the filter again, the second says so.
        await notice.locator('.monaco-button', { hasText: 'Take Back' }).click();
        await page.locator(wb.sel.statusBar, { hasText: 'NKE: connected' }).waitFor();
        await takenOver(second).waitFor();
        await wb.notification(second, 'took over the filter').waitFor();
        // The socket opened while the second tab held the filter: the filter's
        // attach replay names its process here (not "process not known").
        await wb.treeRow(page, 'Sockets', `python3 (${meanwhile.pid})`).waitFor();
        // The program kept its socket across both take-overs; a new one shows with its process.
        const p = ctx.runUnderShim(client(later.port, { first: 'after-take-back', everyMs: 500 }));
        await wb.treeRow(page, 'Sockets', `→ 127.0.0.1:${later.port}`).waitFor();
        await wb.treeRow(page, 'Sockets', `python3 (${p.pid})`).waitFor();
        await readmeShot(page, 'ui-explorer-take-back.png');
        await wb.dismissNotifications(page);
      } finally {
        ctx.stopPrograms(); // the steps after this one count what is held: nothing of ours
        server.close();
        later.close();
        await second.close();
      }
    },
  ],
];

module.exports = { explorerSteps };
