// Status bar item: the link's state at a glance, live counters, and how many
// payloads wait and when the filter releases the next one (its real
// deadline). A failed link (dead helper, lost filter) shows as an error and
// clicking it restarts the helper.
import * as vscode from 'vscode';
import type { WorkbenchModel } from './model/workbenchModel';
import { plural } from './shared/plural';

/** The status bar is redrawn at most 4 times a second. */
export const redrawMs = 250;

export function registerStatusBar(model: WorkbenchModel): vscode.Disposable {
  const item = vscode.window.createStatusBarItem('nke.status', vscode.StatusBarAlignment.Left, 50);
  item.name = 'NKE Workbench';
  let shownStatus: string | undefined;
  const update = () => {
    const link = model.link;
    if (link.status !== shownStatus) {
      shownStatus = link.status;
      // Welcome contents and menus follow the link (package.json `when`).
      void vscode.commands.executeCommand('setContext', 'nke.linkStatus', link.status);
    }
    const held = model.pending();
    const pending = held.length;
    const next = pending ? Math.max(0, Math.min(...held.map((p) => p.deadline)) - Date.now()) : 0;
    const live = link.status === 'connected' || link.status === 'paused';
    const icon = {
      connected: '$(plug)',
      paused: '$(debug-pause)',
      connecting: '$(sync~spin)',
      disconnected: '$(debug-disconnect)',
      failed: '$(error)',
    }[link.status];
    const sockets = model.sockets().filter((s) => s.state !== 'closed').length;
    const counts = live
      ? ` · ${plural(sockets, 'open socket')} · ${plural(model.counters.dataChunks, 'chunk')} seen`
      : '';
    const heldText = pending ? ` · ${pending} held (next released in ${(next / 1000).toFixed(1)} s)` : '';
    // Another window took the filter over: this one stays off it until asked (Take Back).
    const takenOverBy =
      link.status === 'disconnected' && link.filter?.error?.code === 'NKE_TAKEN_OVER'
        ? link.filter.error.message
        : undefined;
    item.text = takenOverBy
      ? `${icon} NKE: taken over by another window`
      : `${icon} NKE: ${link.status}${counts}${heldText}`;
    item.tooltip =
      `NKE Workbench (${link.mode}): ${link.status}` +
      (link.staleReason
        ? `\n${link.staleReason}\nThe views show the last state. Click to ${link.recoverWith === 'nke.loadFilter' ? 'load the filter again' : 'restart the helper'}.`
        : '') +
      (live ? `\n${model.counters.bytesIn} bytes in, ${model.counters.bytesOut} bytes out` : '') +
      (takenOverBy ? `\n${takenOverBy}; the views show the last state. Click to take it back.` : '');
    item.command =
      link.status === 'failed'
        ? (link.recoverWith ?? 'nke.restartHelper')
        : takenOverBy
          ? 'nke.takeOver'
          : 'workbench.view.extension.nke';
    item.backgroundColor =
      link.status === 'failed' ? new vscode.ThemeColor('statusBarItem.errorBackground') : undefined;
  };
  // The countdown ticks once a second, only while something is held.
  let ticker: ReturnType<typeof setInterval> | undefined;
  const tick = () => {
    if (model.pending().length && !ticker) ticker = setInterval(update, 1000);
    else if (!model.pending().length && ticker) {
      clearInterval(ticker);
      ticker = undefined;
    }
  };
  update();
  tick();
  item.show();
  // Counters change with every batch (up to 30 a second, several parts
  // each): the item is redrawn at most every redrawMs, and always with the
  // last state (a change inside the interval redraws at its end).
  let lastDrawn = 0;
  let redraw: ReturnType<typeof setTimeout> | undefined;
  const draw = () => {
    redraw = undefined;
    lastDrawn = Date.now();
    update();
    tick();
  };
  const sub = model.onDidChange(() => {
    // A new link status shows at once (menus and welcome views follow it).
    if (model.link.status !== shownStatus) {
      if (redraw) clearTimeout(redraw);
      draw();
      return;
    }
    if (redraw) return;
    const wait = lastDrawn + redrawMs - Date.now();
    if (wait <= 0) draw();
    else redraw = setTimeout(draw, wait);
  });
  return vscode.Disposable.from(
    item,
    sub,
    new vscode.Disposable(() => {
      if (ticker) clearInterval(ticker);
      if (redraw) clearTimeout(redraw);
    }),
  );
}
