// VS Code's floor for a custom editor, for test/bench/webview-bench.js: a
// read-only custom editor whose page is one line and a script that reports
// its first painted frame the way the payload editor does (a timeout after
// the next animation frame). Opened with vscode.openWith like the payload
// editor, it measures what VS Code itself takes (editor input, webview
// frame, service worker, page) before any editor's own code runs.
// Installed only in the bench's profile, never part of the extension.
'use strict';
const crypto = require('node:crypto');
const vscode = require('vscode');

/** { uri, openToPaintMs, scriptToPaintMs } per opened editor. */
const timings = [];
/** When each resource was asked to open (set by the bench before vscode.openWith). */
const openedAt = new Map();

exports.activate = (context) => {
  const provider = {
    openCustomDocument: (uri) => ({ uri, dispose() {} }),
    resolveCustomEditor(doc, panel) {
      const nonce = crypto.randomBytes(18).toString('base64');
      panel.webview.options = { enableScripts: true };
      panel.webview.onDidReceiveMessage((m) => {
        const at = openedAt.get(doc.uri.toString());
        timings.push({
          uri: doc.uri.toString(),
          openToPaintMs: at === undefined ? undefined : Date.now() - at,
          scriptToPaintMs: m.ms,
        });
      });
      panel.webview.html =
        `<!DOCTYPE html><html><head><meta http-equiv="Content-Security-Policy" content="default-src 'none'; script-src 'nonce-${nonce}'"></head>` +
        `<body><p>floor</p><script nonce="${nonce}">const t0=performance.now();const api=acquireVsCodeApi();` +
        `requestAnimationFrame(()=>setTimeout(()=>api.postMessage({ms:performance.now()-t0})))</script></body></html>`;
    },
  };
  context.subscriptions.push(vscode.window.registerCustomEditorProvider('nkeBench.floor', provider));
  return {
    timings,
    /** Opens `uri` in the floor editor as the payload editor is opened (vscode.openWith). */
    async open(uri) {
      openedAt.set(uri.toString(), Date.now());
      await vscode.commands.executeCommand('vscode.openWith', uri, 'nkeBench.floor', { preview: false });
    },
  };
};
