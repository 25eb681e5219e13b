// Playwright helpers for the VS Code 1.96 workbench DOM (code-server 4.96.4).
// Every selector the UI suite depends on lives here, so a workbench upgrade
// is fixed in one file.
'use strict';

const sel = {
  workbench: '.monaco-workbench',
  quickInput: '.quick-input-widget',
  quickInputBox: '.quick-input-widget .quick-input-box input.input',
  quickInputRow: '.quick-input-widget .quick-input-list .monaco-list-row',
  toast: '.notifications-toasts .notification-toast',
  activityItem: (title) => `.activitybar .action-item a[aria-label^="${title}"]`,
  sidebar: '.part.sidebar',
  contextMenu: '.context-view .monaco-menu',
  statusBar: '.part.statusbar',
  tab: '.tabs-container .tab',
  editorLines: '.editor-instance .view-lines',
};

/** Waits for the workbench and for the status bar item an extension shows. */
async function waitForWorkbench(page, statusText, timeout = 60000) {
  await page.locator(sel.workbench).waitFor({ timeout });
  await page.locator(sel.statusBar, { hasText: statusText }).waitFor({ timeout });
}

/**
 * Runs a command by its palette title. Retries because something (a welcome
 * page, a notification) can steal focus right after the workbench loads.
 */
async function runCommand(page, title) {
  for (let attempt = 1; ; attempt++) {
    try {
      await page.keyboard.press('F1');
      const input = page.locator(sel.quickInputBox);
      await input.waitFor({ state: 'visible', timeout: 5000 });
      await input.fill(`>${title}`);
      await page.locator(sel.quickInputRow, { hasText: title }).first().waitFor({ timeout: 5000 });
      await page.keyboard.press('Enter');
      return;
    } catch (e) {
      if (attempt >= 4) throw new Error(`command palette: could not run "${title}": ${e.message}`);
      await page.keyboard.press('Escape');
    }
  }
}

/** Picks an entry of an open quick pick (e.g. one a command showed) by its label. */
async function pickQuickItem(page, label) {
  const row = page.locator(sel.quickInputRow, { hasText: label }).first();
  await row.waitFor({ timeout: 5000 });
  await page.locator(sel.quickInputBox).fill(label);
  await page.locator(`${sel.quickInputRow}.focused`, { hasText: label }).waitFor({ timeout: 5000 });
  await page.keyboard.press('Enter');
  await page.locator(sel.quickInput).waitFor({ state: 'hidden', timeout: 5000 });
}

function notification(page, text) {
  return page.locator(sel.toast, { hasText: text });
}

/**
 * Clears every notification, so a later identical message shows a new toast
 * (the workbench folds a repeat into a toast that is still there). The toast
 * close buttons only appear on hover; the command is reliable.
 */
async function dismissNotifications(page) {
  if ((await page.locator(sel.toast).count()) === 0) return;
  await runCommand(page, 'Notifications: Clear All Notifications');
  await page.locator(sel.toast).first().waitFor({ state: 'detached', timeout: 5000 });
}

async function openViewContainer(page, title) {
  const item = page.locator(sel.activityItem(title));
  await item.waitFor({ timeout: 15000 });
  // Clicking an already open container closes the sidebar; open only if closed.
  const checked = await item.evaluate((a) => a.closest('.action-item')?.classList.contains('checked'));
  if (!checked) await item.click();
  await page.locator(`${sel.sidebar} .composite.title`, { hasText: title }).waitFor({ timeout: 10000 });
}

/** The pane of one view in the sidebar, found by its header title. */
function viewPane(page, viewName) {
  return page.locator(`${sel.sidebar} .pane`, {
    has: page.locator('.pane-header', { hasText: new RegExp(`^\\s*${viewName}`, 'i') }),
  });
}

function treeRow(page, viewName, text) {
  return viewPane(page, viewName).locator('.monaco-list-row', { hasText: text });
}

function welcome(page, viewName) {
  return viewPane(page, viewName).locator('.welcome-view-content');
}

async function openContextMenu(locator) {
  await locator.click({ button: 'right' });
  const menu = locator.page().locator(sel.contextMenu);
  await menu.waitFor({ timeout: 5000 });
  return menu;
}

function menuItem(menu, label) {
  return menu.locator('.action-item .action-label', { hasText: label });
}

/**
 * Picks a context menu entry. A click right after the menu opens can be
 * swallowed (the workbench ignores an early mouse-up so the right-click that
 * opened the menu does not also pick from it); hovering focuses the entry
 * and Enter runs it, which does not depend on that timing.
 */
async function pickMenuItem(menu, label) {
  const item = menuItem(menu, label);
  await item.hover();
  await menu.locator('.action-item.focused', { hasText: label }).waitFor({ timeout: 5000 });
  await menu.page().keyboard.press('Enter');
  await menu.waitFor({ state: 'detached', timeout: 5000 });
}

function editorTab(page, name) {
  return page.locator(sel.tab, { hasText: name });
}

/** The visible text of the active editor (what Monaco rendered). */
function activeEditorText(page) {
  return page.locator(`.editor-group-container.active ${sel.editorLines}`);
}

/** A CodeLens of the active editor, by its text. */
function codeLens(page, text) {
  return page.locator('.editor-group-container.active .codelens-decoration', { hasText: text });
}

/** Replaces the active editor's whole text by typing, as a person would. */
async function typeInActiveEditor(page, text) {
  await page.locator(`.editor-group-container.active ${sel.editorLines}`).click();
  await page.keyboard.press('Control+A');
  await page.keyboard.type(text);
}

/**
 * Puts the cursor on the first line of the active editor, clicks the light
 * bulb there (a content widget, or in the gutter when the line leaves no
 * room) and waits for its action menu; returns the menu.
 */
async function openLightBulb(page, timeout) {
  await page.locator(`.editor-group-container.active ${sel.editorLines}`).click();
  // Moving the cursor asks for the code actions at its new place.
  await page.keyboard.press('Control+End');
  await page.keyboard.press('Control+Home');
  const bulb = page
    .locator(
      '.editor-group-container.active .lightBulbWidget:visible, .editor-group-container.active [class*="codicon-gutter-lightbulb"]',
    )
    .first();
  await bulb.waitFor({ timeout });
  await bulb.click();
  const menu = page.locator('.action-widget');
  await menu.waitFor({ timeout: 10000 });
  return menu;
}

/**
 * The code action menu of the active editor's first line: its light bulb,
 * or, when a loaded workbench shows none within a few seconds, the same menu
 * through the palette's Quick Fix... (Ctrl+.'s command).
 */
async function openCodeActions(page) {
  // Three rounds: on a loaded 2-CPU machine the workbench sometimes drops the
  // answer to its code action request (no bulb, no menu); asking again works.
  // A menu that shows late is taken as it is: keys pressed for the next try
  // (the palette's Enter) would land in it and run its first action.
  const menu = page.locator('.action-widget');
  const lateMenu = async () => (await menu.isVisible()) && menu;
  for (let round = 1; ; round++) {
    try {
      return await openLightBulb(page, 10000);
    } catch {
      if (await lateMenu()) return menu;
      await page.keyboard.press('Escape');
    }
    try {
      if (await lateMenu()) return menu;
      await runCommand(page, 'Quick Fix...');
      await menu.waitFor({ timeout: 15000 });
      return menu;
    } catch (e) {
      if (await lateMenu()) return menu;
      if (round >= 3)
        throw new Error(
          `no code action menu after ${round} rounds of light bulb and Quick Fix: ${e.message}; ${await editorState(page)}`,
        );
      await page.keyboard.press('Escape');
    }
  }
}

/** What a failed code action step needs to know: focus, read-only, the editor's own message. */
async function editorState(page) {
  return page.evaluate(() => {
    const ed = document.querySelector('.editor-group-container.active .monaco-editor');
    const ta = ed?.querySelector('textarea');
    const active = document.activeElement;
    const msg = document.querySelector('.monaco-editor-overlaymessage')?.textContent;
    return [
      `focus: ${active?.tagName}.${String(active?.className).slice(0, 80)}`,
      `editor focused: ${!!ed?.contains(active)}`,
      `textarea readonly: ${ta?.readOnly}`,
      `editor message: ${msg ?? 'none'}`,
    ].join(', ');
  });
}

/** Clicks a tree row on its label (not on the inline actions that show on hover). */
async function clickRow(row) {
  await row.locator('.label-name, .monaco-icon-label').first().click();
}

/** The row of an open code action menu (light bulb or Ctrl+.). */
function codeActionItem(menu, label) {
  return menu.locator('.monaco-list-row.action', { hasText: label });
}

/**
 * Picks a code action from an open menu with the keyboard (the menu's pointer
 * block swallows a hover right after it opens): down until it is focused,
 * then Enter.
 */
async function pickCodeAction(menu, label) {
  await codeActionItem(menu, label).waitFor({ timeout: 5000 });
  const focused = menu.locator('.monaco-list-row.action.focused');
  for (let i = 0; i < 20; i++) {
    if ((await focused.count()) && (await focused.first().innerText()).includes(label)) {
      await menu.page().keyboard.press('Enter');
      await menu.waitFor({ state: 'hidden', timeout: 5000 });
      return;
    }
    await menu.page().keyboard.press('ArrowDown');
  }
  throw new Error(`code action "${label}" could not be focused in the menu`);
}

/** A button of the active editor's title bar, by its tooltip (the command title). */
function editorTitleAction(page, title) {
  return page.locator(`.editor-group-container.active .editor-actions .action-label[aria-label^="${title}"]`);
}

/** An inline action of a tree row, shown on hover (hovered again if it does not show). */
async function clickRowAction(row, title) {
  const action = row.locator(`.actions .action-label[aria-label^="${title}"]`);
  for (let attempt = 1; ; attempt++) {
    await row.hover();
    try {
      await action.waitFor({ timeout: 3000 });
      break;
    } catch (e) {
      if (attempt >= 3) throw e;
      await row.page().mouse.move(0, 0);
    }
  }
  await action.click();
}

/** The element inside a webview's inner frame (two nested iframes). */
function webviewLocator(page, selector) {
  return page.frameLocator('iframe.webview.ready').frameLocator('iframe#active-frame').locator(selector);
}

module.exports = {
  sel,
  waitForWorkbench,
  runCommand,
  pickQuickItem,
  notification,
  dismissNotifications,
  openViewContainer,
  viewPane,
  treeRow,
  welcome,
  openContextMenu,
  menuItem,
  pickMenuItem,
  editorTab,
  activeEditorText,
  codeLens,
  typeInActiveEditor,
  openLightBulb,
  openCodeActions,
  clickRow,
  codeActionItem,
  pickCodeAction,
  editorTitleAction,
  clickRowAction,
  webviewLocator,
};
