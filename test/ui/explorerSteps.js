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
const readmeShot = (page, name) =>
  shots ? page.screenshot({ path: path.join(__dirname, '../../test-results', name) }) : undefined;

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
      try {
        ctx.runPlain([noise]);
        // sh stays the parent of python3 (the trailing `true` keeps sh from exec'ing it).
        const p = ctx.runUnderShimArgv([
          'sh',
          '-c',
          `python3 -c "$0"; true`,
          client(server.port, { first: 'exec-scope' }),
        ]);
        // python3 may be a pyenv shim (bash scripts) on a loaded machine: give it time.
        await server.whenBytes(10, 60000);
        await wb.runCommand(page, 'NKE: Find Process');
        await page.locator(wb.sel.quickInputBox).fill(`ppid ${p.pid}`);
        // Every image of the child has ppid P (python3 may be pyenv's script that
        // becomes bash ... python3.11): take the row whose name is exactly python3.
        await page.locator(`${wb.sel.quickInputRow}.focused`).waitFor();
        for (let i = 0; ; i++) {
          const name = await page.locator(`${wb.sel.quickInputRow}.focused .label-name`).first().innerText();
          if (name.trim() === 'python3') break;
          if (i > 40) throw new Error(`Find Process lists no python3 with ppid ${p.pid}`);
          await page.keyboard.press('ArrowDown');
        }
        await page.keyboard.press('Enter');
        const pane = wb.viewPane(page, 'Exec Events');
        const child = pane.locator('.monaco-list-row.selected', { hasText: /^\s*python3\s*pid/ });
        await child.waitFor();
        const childLevel = await level(child);
        // Left moves to the parent (after collapsing the row if it has children: pyenv's python3 has).
        const focused = pane.locator('.monaco-list-row.focused');
        for (let i = 0; i < 2 && (await level(focused)) === childLevel; i++)
          await page.keyboard.press('ArrowLeft');
        const parentText = await focused.innerText();
        if (
          !new RegExp(`^\\s*(sh|dash|bash)\\s*pid ${p.pid} `).test(parentText) ||
          (await level(focused)) !== childLevel - 1
        )
          throw new Error(`python3's parent row is ${JSON.stringify(parentText)}, not sh (pid ${p.pid})`);
        const header = wb.viewPane(page, 'Exec Events').locator('.pane-header');
        await header.locator('text=/ hidden/').waitFor();
        if (await wb.treeRow(page, 'Exec Events', 'nke-ui-machine-noise').count())
          throw new Error("the machine's other exec shows in the default scope");
        await readmeShot(page, 'ui-explorer-execs.png');
        await wb.runCommand(page, 'NKE: Show Every Exec on the Machine');
        await header.locator('text=/machine-wide/').waitFor();
        if (root) await wb.treeRow(page, 'Exec Events', 'nke-ui-machine-noise').first().waitFor();
        else console.log('      (not root: no process connector, so no machine-wide execs to show)');
        await wb.runCommand(page, 'NKE: Show Only Execs Under the Filter');
        await header.locator('text=/ hidden/').waitFor();
      } finally {
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
        const row = wb.treeRow(page, 'Sockets', `→ 127.0.0.1:${server.port}`);
        await row.filter({ hasText: 'connected' }).waitFor();
        await server.whenBytes(6);
        await row.filter({ hasText: 'closed' }).waitFor({ timeout: 15000 });
        // Its process row gets a "closed (1)" group once it has been closed a few seconds.
        const proc = wb.treeRow(page, 'Sockets', `python3 (${p.pid})`);
        await proc.waitFor();
        const group = wb.treeRow(page, 'Sockets', 'closed (1)');
        await until(page, 'the closed group under the process', async () => {
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
        const row = wb.treeRow(page, 'Sockets', `→ 127.0.0.1:${mine.port}`);
        await row.filter({ hasText: 'connected' }).waitFor();
        await wb.pickMenuItem(await wb.openContextMenu(row), "Hold This Socket's Data");
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
        if (
          await page
            .locator(wb.sel.quickInput)
            .isVisible()
            .catch(() => false)
        )
          await wb.pickQuickItem(page, `127.0.0.1:${mine.port}`);
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
        mine.close();
        demo.close();
      }
    },
  ],
  [
    'a second tab is told which window holds the filter; Take Over moves the live views to it, and back',
    async (page, workspace, ctx) => {
      ctx.stopPrograms();
      const second = await page.context().newPage();
      second.setDefaultTimeout(20000);
      const server = await ctx.recordingServer();
      try {
        await second.goto(page.url());
        await wb.waitForWorkbench(second, 'NKE: disconnected', 90000);
        await wb.runCommand(second, 'NKE: Connect');
        const toast = wb.notification(second, 'in use by another window');
        await toast.waitFor();
        await toast.locator('.monaco-button', { hasText: 'Take Over' }).click();
        await second.locator(wb.sel.statusBar, { hasText: 'NKE: connected' }).waitFor();
        await page.locator(wb.sel.statusBar, { hasText: 'NKE: disconnected' }).waitFor();
        await wb.notification(page, 'took over the filter').waitFor();
        await wb.openViewContainer(second, 'NKE Workbench');
        ctx.runUnderShim(client(server.port, { first: 'second-tab', everyMs: 500 }));
        await server.whenBytes(10, 60000);
        await wb.treeRow(second, 'Sockets', `→ 127.0.0.1:${server.port}`).waitFor();
        // And back: the first tab takes it over again (the suite goes on there).
        await wb
          .notification(page, 'took over the filter')
          .locator('.monaco-button', { hasText: 'Take Over' })
          .click();
        await page.locator(wb.sel.statusBar, { hasText: 'NKE: connected' }).waitFor();
        await second.locator(wb.sel.statusBar, { hasText: 'NKE: disconnected' }).waitFor();
        await wb.treeRow(page, 'Sockets', `→ 127.0.0.1:${server.port}`).waitFor();
        await wb.dismissNotifications(page);
      } finally {
        server.close();
        await second.close();
      }
    },
  ],
];

module.exports = { explorerSteps };
