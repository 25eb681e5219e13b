// Lets the UI suite change user settings the way the Settings editor does
// (vscode.workspace.getConfiguration().update, target Global), without
// driving the Settings UI for every small timeout. Runs in the extension
// host (started by sample-feed.js). The suite writes NAME.json (an object of
// setting -> value) into $NKE_UI_SETTINGS_DIR; the relay applies it and
// renames it to NAME.done, or NAME.failed with the error.
'use strict';
const fs = require('node:fs');
const path = require('node:path');

function start(vscode) {
  const dir = process.env.NKE_UI_SETTINGS_DIR;
  if (!dir) return;
  let busy = false;
  const timer = setInterval(async () => {
    if (busy) return;
    busy = true;
    try {
      for (const f of fs
        .readdirSync(dir)
        .filter((n) => n.endsWith('.json'))
        .sort()) {
        const file = path.join(dir, f);
        try {
          const values = JSON.parse(fs.readFileSync(file, 'utf8'));
          for (const [key, value] of Object.entries(values)) {
            await vscode.workspace.getConfiguration().update(key, value, vscode.ConfigurationTarget.Global);
          }
          fs.renameSync(file, file.replace(/\.json$/, '.done'));
        } catch (e) {
          fs.writeFileSync(file.replace(/\.json$/, '.failed'), String(e && e.stack ? e.stack : e));
          fs.rmSync(file, { force: true });
        }
      }
    } finally {
      busy = false;
    }
  }, 50);
  timer.unref?.();
}

module.exports = { start };
