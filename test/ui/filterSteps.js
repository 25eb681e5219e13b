// UI steps for Load Filter, the nke tasks and the walkthrough (issue #13),
// spliced into test/ui/run.js where the live part begins: Load Filter on
// Linux ends connected after one progress notification named its steps;
// Run Task lists the nke tasks; Unload stops the emulator; the walkthrough
// opens and its first step's button runs Load Filter and completes the step.
'use strict';
const path = require('node:path');
const wb = require('./workbench');

/** Starts recording the text of every notification toast shown from now on (progress ones vanish quickly). */
async function recordToasts(page) {
  await page.evaluate((sel) => {
    window.__nkeToasts = [];
    const seen = (el) => {
      const t = el.innerText?.trim();
      if (t && !window.__nkeToasts.includes(t)) window.__nkeToasts.push(t);
    };
    window.__nkeToastObserver?.disconnect();
    window.__nkeToastObserver = new MutationObserver(() => document.querySelectorAll(sel).forEach(seen));
    window.__nkeToastObserver.observe(document.body, { childList: true, subtree: true, characterData: true });
  }, wb.sel.toast);
  return () => page.evaluate(() => window.__nkeToasts);
}

/** Waits until a recorded toast matches `re` (the toast itself may be gone by then). */
async function sawToast(page, toasts, re, ms = 20000) {
  for (const t0 = Date.now(); ;) {
    const all = await toasts();
    if (all.some((t) => re.test(t))) return all;
    if (Date.now() - t0 > ms) throw new Error(`no notification matched ${re}; saw ${JSON.stringify(all)}`);
    await page.waitForTimeout(100);
  }
}

/**
 * Runs a palette command whose title is a prefix of others' ("Tasks: Run
 * Task" ranks below "Tasks: Restart Running Task"): moves the focus down to
 * the row whose label is exactly `title` before pressing Enter.
 */
async function runExactCommand(page, title) {
  await page.keyboard.press('F1');
  await page.locator(wb.sel.quickInputBox).fill(`>${title}`);
  await page.locator(wb.sel.quickInputRow, { hasText: title }).first().waitFor({ timeout: 5000 });
  for (let i = 0; i < 15; i++) {
    const focused = page.locator(`${wb.sel.quickInputRow}.focused .label-name`).first();
    if ((await focused.innerText().catch(() => '')).trim() === title) return page.keyboard.press('Enter');
    await page.keyboard.press('ArrowDown');
  }
  throw new Error(`command palette: no row is exactly "${title}"`);
}

const loadFilterSteps = [
  [
    'command palette: NKE: Load Filter starts the emulator and ends connected after one progress notification naming its steps',
    async (page) => {
      const toasts = await recordToasts(page);
      await wb.runCommand(page, 'NKE: Load Filter');
      await page.locator(wb.sel.statusBar, { hasText: 'NKE: connected' }).waitFor();
      await wb.treeRow(page, 'Filter', 'Transport').waitFor();
      const all = await sawToast(page, toasts, /NKE: Load Filter \(emulator\)/);
      const progress = all.filter((t) => /NKE: Load Filter \(emulator\)/.test(t));
      if (!progress.some((t) => /starting nke-emud|connecting/.test(t)))
        throw new Error(`the progress notification named no step: ${JSON.stringify(progress)}`);
    },
  ],
  [
    'Tasks: Run Task offers the nke tasks',
    async (page) => {
      await runExactCommand(page, 'Tasks: Run Task');
      // The first list groups tasks by provider; picking "nke" lists its tasks.
      const input = page.locator(wb.sel.quickInputBox);
      await page.locator(wb.sel.quickInputRow, { hasText: 'nke' }).first().waitFor();
      await input.fill('nke');
      await page.locator(`${wb.sel.quickInputRow}.focused`, { hasText: 'nke' }).waitFor({ timeout: 5000 });
      await page.keyboard.press('Enter');
      for (const t of [
        'kext build',
        'kext load',
        'kext unload',
        'kext diagnose',
        'kext log',
        'emulator build',
        'emulator start',
      ])
        await page.locator(wb.sel.quickInputRow, { hasText: t }).first().waitFor();
      if (process.env.NKE_SCREENSHOTS === '1') {
        // The README's picture of the list (the step's own screenshot comes after Escape).
        await page.screenshot({ path: path.join(__dirname, '../../test-results/ui-nke-tasks.png') });
      }
      await page.keyboard.press('Escape');
    },
  ],
  [
    'command palette: NKE: Unload Filter disconnects and stops the emulator this window started',
    async (page) => {
      await wb.runCommand(page, 'NKE: Unload Filter');
      await page.locator(wb.sel.statusBar, { hasText: 'NKE: disconnected' }).waitFor();
    },
  ],
  [
    "walkthrough: NKE: Open Walkthrough shows the steps; the first step's Load Filter button connects and completes it",
    async (page) => {
      const toasts = await recordToasts(page);
      await wb.runCommand(page, 'NKE: Open Walkthrough');
      const walkthrough = page.locator('.gettingStartedContainer');
      await walkthrough.locator('text=NKE Workbench: first steps').first().waitFor();
      for (const title of [
        'Load the filter on the emulator',
        'Run a program under the filter',
        'Hold data and decide',
      ])
        await walkthrough.locator('.getting-started-step', { hasText: title }).waitFor();
      const first = walkthrough.locator('.getting-started-step', {
        hasText: 'Load the filter on the emulator',
      });
      await first.click(); // expands it (the first step usually is already)
      await first
        .locator('.button-link, a.monaco-button, .monaco-button', { hasText: 'Load Filter' })
        .first()
        .click();
      await page.locator(wb.sel.statusBar, { hasText: 'NKE: connected' }).waitFor();
      await sawToast(page, toasts, /NKE: Load Filter \(emulator\)/);
      // A done step's checkbox codicon carries .complete.
      await first
        .locator('.codicon.complete')
        .waitFor()
        .catch(async (e) => {
          throw new Error(`${e.message}\n${(await first.evaluate((el) => el.outerHTML)).slice(0, 1500)}`);
        });
      // The page may take the focus back after a step completes (it once
      // closed the next step's quick pick): close the walkthrough.
      await wb.runCommand(page, 'View: Close Editor');
      await walkthrough.waitFor({ state: 'detached' });
    },
  ],
];

module.exports = { loadFilterSteps };
