#!/usr/bin/env node
// UI end-to-end suite: the extension under development in code-server, driven
// through headless Chromium like a user would. Sample data comes from
// test/ui/sample-feed.js, which feeds the extension's model in the real
// extension host. Every step is screenshotted; the pictures are written to
// test-results/ui/ when a step fails, or always with NKE_SCREENSHOTS=1.
// Ends with `N passed, N failed`; exits non-zero on any failure.
'use strict';
const { spawn, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const cs = require('../../scripts/lib/codeServer');
const { recordingServer } = require('../support/recordingServer');
const { loadFilterSteps } = require('./filterSteps');
const { explorerSteps } = require('./explorerSteps');
const wb = require('./workbench');
const payloadSteps = require('./payload-steps');
const webviewSteps = require('./webview-steps');
const webviewControlsSteps = require('./webview-controls-steps');

const shotsDir = path.join(cs.root, 'test-results', 'ui');
const alwaysShots = process.env.NKE_SCREENSHOTS === '1';
const stepTimeout = 20000;

/** The checks, in order; each gets the page and the workspace folder. */
const steps = [
  [
    'the workbench loads with the NKE status bar item',
    async (page) => wb.waitForWorkbench(page, 'NKE: disconnected'),
  ],
  [
    'command palette: NKE: Connect with no emulator running says so and offers Load Filter',
    async (page) => {
      // The profile points nke.emulatorRuntimeDir at an empty folder: the
      // helper starts, finds no emulator there, and the error says what to do.
      await wb.runCommand(page, 'NKE: Connect');
      const toast = wb.notification(page, 'Load Filter starts the emulator');
      await toast.waitFor();
      for (const action of ['Load Filter', 'Show Log'])
        await toast.locator('.monaco-button', { hasText: action }).waitFor();
      await wb.dismissNotifications(page);
    },
  ],
  [
    'activity bar: the NKE Workbench container shows its four views',
    async (page) => {
      await wb.openViewContainer(page, 'NKE Workbench');
      for (const v of ['Filter', 'Sockets', 'Exec Events', 'Pending Payloads'])
        await wb.viewPane(page, v).waitFor();
    },
  ],
  [
    'Filter view: welcome content says how to connect',
    async (page) => {
      const w = wb.welcome(page, 'Filter');
      await w.locator('text=Not connected to a filter').waitFor();
      await w.locator('.monaco-button', { hasText: 'Load Filter' }).waitFor();
      await w.locator('.monaco-button', { hasText: 'Connect' }).waitFor();
    },
  ],
  [
    'Sockets view: sockets grouped by process',
    async (page) => {
      await wb.treeRow(page, 'Sockets', 'curl (4242)').waitFor();
      const row = wb.treeRow(page, 'Sockets', '→ 127.0.0.1:8080');
      await row.waitFor();
      const text = await row.innerText();
      if (!text.includes('connected')) throw new Error(`socket row lacks its state: ${JSON.stringify(text)}`);
      await wb.treeRow(page, 'Sockets', 'node (4100)').waitFor();
    },
  ],
  [
    'Exec Events view: children under their parent, long path item present',
    async (page) => {
      await wb.treeRow(page, 'Exec Events', 'sh').first().waitFor();
      await wb.treeRow(page, 'Exec Events', 'curl').waitFor();
      const long = wb.treeRow(page, 'Exec Events', 'long-path-tool');
      await long.waitFor();
      // A child row is indented deeper than its root.
      const indent = async (row) =>
        row.locator('.monaco-tl-indent').evaluate((e) => e.getBoundingClientRect().width);
      const root = wb.treeRow(page, 'Exec Events', 'pid 4000');
      if (!((await indent(long)) > (await indent(root))))
        throw new Error('long-path-tool is not nested under sh');
    },
  ],
  [
    'Pending Payloads view: the time left before auto-release counts down',
    async (page) => {
      const row = wb.treeRow(page, 'Pending Payloads', '↑ out 77 B 127.0.0.1:8080');
      const left = async () => Number(/([\d.]+) s left/.exec(await row.innerText())?.[1]);
      const first = await left();
      await page.waitForTimeout(2100);
      const later = await left();
      if (!(first > 3000 && later < first))
        throw new Error(`time left did not count down: ${first} then ${later}`);
    },
  ],
  [
    'Pending Payloads view: context menu offers the verdicts; Drop says the filter is not connected',
    async (page) => {
      const row = wb.treeRow(page, 'Pending Payloads', '↑ out 77 B 127.0.0.1:8080');
      await row.waitFor();
      const menu = await wb.openContextMenu(row);
      await wb.menuItem(menu, 'Allow (Reinject Original)').waitFor();
      await wb.pickMenuItem(menu, 'Drop Payload');
      await wb.notification(page, 'not connected').waitFor();
      await wb.dismissNotifications(page);
    },
  ],
  [
    'command palette: NKE: Clear empties the views, which fall back to their welcome content',
    async (page) => {
      await wb.runCommand(page, 'NKE: Clear');
      await wb.welcome(page, 'Sockets').locator('text=No sockets yet').waitFor();
      await wb.welcome(page, 'Pending Payloads').locator('text=No payloads are held').waitFor();
    },
  ],
  // From here on the real thing: the emulator (started by Load Filter in the
  // profile's runtime directory), the helper process, a real program.
  ...loadFilterSteps,
  [
    'a real program under the shim: its held chunk is allowed from the Pending Payloads menu',
    async (page, workspace, ctx) => {
      await wb.runCommand(page, 'NKE: Set Capture Mode');
      await wb.pickQuickItem(page, 'Hold everything');
      // Shown once the helper has accepted the new rules.
      await wb.treeRow(page, 'Filter', /Capture\s*hold/).waitFor();
      const server = await ctx.recordingServer();
      try {
        ctx.runUnderShim(
          'import socket,sys,time\ns=socket.create_connection(("127.0.0.1",int(sys.argv[1])))\ns.sendall(b"ui-allow!")\ntime.sleep(30)',
          String(server.port),
        );
        const row = wb.treeRow(page, 'Pending Payloads', `↑ out 9 B 127.0.0.1:${server.port}`);
        await row.waitFor();
        await wb.treeRow(page, 'Sockets', `→ 127.0.0.1:${server.port}`).waitFor();
        if (server.received().length) throw new Error('held bytes reached the server before Allow');
        await wb.pickMenuItem(await wb.openContextMenu(row), 'Allow (Reinject Original)');
        await row.waitFor({ state: 'detached' });
        for (const t0 = Date.now(); server.received().toString() !== 'ui-allow!';) {
          if (Date.now() - t0 > 10000)
            throw new Error(`server got ${JSON.stringify(server.received().toString())}`);
          await page.waitForTimeout(50);
        }
      } finally {
        server.close();
      }
      await wb.runCommand(page, 'NKE: Set Capture Mode');
      await wb.pickQuickItem(page, 'Report');
    },
  ],
  [
    'NKE: Export Capture writes pcapng of what the filter saw; tshark reads the held chunk as allowed',
    async (page, workspace) => {
      const target = path.join(workspace, 'nke-capture.pcapng');
      await wb.runCommand(page, 'NKE: Export Capture');
      // code-server's save dialog is a quick input prefilled with the
      // command's default (workspace/nke-capture.pcapng): accept it.
      const input = page.locator(wb.sel.quickInputBox);
      await input.waitFor();
      await page.waitForFunction(
        (sel) => document.querySelector(sel)?.value.endsWith('nke-capture.pcapng'),
        wb.sel.quickInputBox,
      );
      await page.keyboard.press('Enter');
      await wb.notification(page, 'NKE: exported').waitFor();
      const r = spawnSync(
        'tshark',
        ['-r', target, '-q', '-z', 'follow,tcp,ascii,0', '-T', 'fields', '-e', 'frame.comment'],
        {
          encoding: 'utf8',
        },
      );
      if (r.status !== 0) throw new Error(`tshark cannot read ${target}: ${r.stderr}`);
      if (!/python3 \(pid \d+\) socket \d+:\d+ out: held, allowed \(original\)/.test(r.stdout))
        throw new Error(`no comment names the allowed chunk: ${r.stdout.slice(0, 500)}`);
      if (!r.stdout.includes('ui-allow!')) throw new Error('the allowed bytes are not in the TCP stream');
      // The toast stays for the screenshot; the next step dismisses it.
    },
  ],
  // Editing held data: payload documents, code actions, time to edit.
  ...payloadSteps.steps,
  // The webview payload editor: one more view of the same held data.
  ...webviewSteps.steps,
  ...webviewControlsSteps.steps,
  // The event explorer; its last step takes the filter to a second tab and
  // back, which starts a new helper (the capture history above is gone then).
  ...explorerSteps,
  [
    'a killed helper: an error with Restart, the status bar says failed, nothing shown held; Restart reconnects',
    async (page, workspace, ctx) => {
      await wb.dismissNotifications(page);
      // Something held when the helper dies: the filter releases it (fail-open).
      await ctx.setSettings({ 'nke.capture': 'hold' });
      const server = await ctx.recordingServer();
      ctx.servers.push(server);
      ctx.runUnderShim(
        'import socket,sys,time\ns=socket.create_connection(("127.0.0.1",int(sys.argv[1])))\ns.sendall(b"held-at-death")\ntime.sleep(30)',
        String(server.port),
      );
      await wb.treeRow(page, 'Pending Payloads', `127.0.0.1:${server.port}`).waitFor();
      await page.locator(wb.sel.statusBar, { hasText: '1 held' }).waitFor();
      const pid = ctx.helperPid();
      process.kill(pid, 'SIGKILL');
      const toast = wb.notification(page, 'the helper process ended');
      await toast.waitFor();
      await page.locator(wb.sel.statusBar, { hasText: 'NKE: failed' }).waitFor();
      await wb.treeRow(page, 'Filter', 'Stale').waitFor();
      // No rows frozen at "0.0 s left", no "held" in the status bar: the filter let them go.
      await wb.welcome(page, 'Pending Payloads').locator('text=No payloads are held').waitFor();
      // The status bar is redrawn at most every 250 ms: give it one second.
      let bar = '';
      for (const t0 = Date.now(); Date.now() - t0 < 1000; await page.waitForTimeout(100)) {
        bar = await page.locator(wb.sel.statusBar).innerText();
        if (!/held/.test(bar)) break;
      }
      if (/held/.test(bar)) throw new Error(`status bar still counts held payloads: ${bar}`);
      for (const t0 = Date.now(); server.received().toString() !== 'held-at-death';) {
        if (Date.now() - t0 > 10000)
          throw new Error(`server got ${JSON.stringify(server.received().toString())}`);
        await page.waitForTimeout(50);
      }
      await ctx.setSettings({ 'nke.capture': 'report' });
      await toast.locator('.monaco-button', { hasText: 'Restart' }).click();
      await page.locator(wb.sel.statusBar, { hasText: 'NKE: connected' }).waitFor();
      if (ctx.helperPid() === pid) throw new Error('the helper was not replaced');
    },
  ],
];

/**
 * What the live steps need from this process: programs under the shim,
 * servers, the helper's pid, a scratch dir, and user settings changed
 * through the extension host's configuration API (test/ui/settings-relay.js).
 */
function liveContext(runtimeDir, codeServerGroup, tmp, settingsDir) {
  const launcher = path.join(cs.root, 'native/emu/build/nke-emu');
  // The system's python3 itself: a python3 found in PATH may be a version
  // manager's shim (pyenv: bash scripts that exec the real one), whose
  // wrapper processes would show in Exec Events and in Find Process.
  const python = fs.existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3';
  const programs = [];
  let settingsSeq = 0;
  return {
    tmp,
    servers: [],
    /** Resolves once the settings are in force in the workbench. */
    async setSettings(values) {
      const name = String(++settingsSeq).padStart(4, '0');
      // Written whole, then renamed: the relay polls and must never read half a file.
      fs.writeFileSync(path.join(settingsDir, `${name}.json.tmp`), JSON.stringify(values));
      fs.renameSync(path.join(settingsDir, `${name}.json.tmp`), path.join(settingsDir, `${name}.json`));
      for (const t0 = Date.now(); !fs.existsSync(path.join(settingsDir, `${name}.done`));) {
        const failed = path.join(settingsDir, `${name}.failed`);
        if (fs.existsSync(failed))
          throw new Error(`setting ${JSON.stringify(values)} failed: ${fs.readFileSync(failed, 'utf8')}`);
        // One configuration update per setting in the extension host: seconds on a loaded machine.
        if (Date.now() - t0 > 30000)
          throw new Error(`the settings relay did not apply ${JSON.stringify(values)}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    },
    python,
    runUnderShim(code, ...args) {
      const p = spawn(launcher, ['run', '--', python, '-c', code, ...args], {
        env: { ...process.env, NKE_EMU_DIR: runtimeDir },
        stdio: 'ignore',
      });
      programs.push(p);
      return p;
    },
    /** Any program under the shim (argv[0] looked up in PATH). */
    runUnderShimArgv(argv) {
      const p = spawn(launcher, ['run', '--', ...argv], {
        env: { ...process.env, NKE_EMU_DIR: runtimeDir },
        stdio: 'ignore',
      });
      programs.push(p);
      return p;
    },
    /** A program outside the filter: one of the machine's other execs. */
    runPlain(argv) {
      const p = spawn(argv[0], argv.slice(1), { stdio: 'ignore' });
      programs.push(p);
      return p;
    },
    recordingServer,
    /** The helper runs in code-server's process group (started by its extension host). */
    helperPid() {
      const r = spawnSync('ps', ['-o', 'pid=,args=', '-g', String(codeServerGroup)], { encoding: 'utf8' });
      const line = r.stdout.split('\n').find((l) => /dist\/helper\.js --socket/.test(l));
      if (!line) throw new Error('no helper process in the code-server process group');
      return Number(line.trim().split(/\s+/)[0]);
    },
    stopPrograms() {
      for (const p of programs.splice(0)) p.kill('SIGKILL');
      for (const s of this.servers) s.close();
    },
  };
}

async function main() {
  for (const f of ['dist/extension.js']) {
    if (!fs.existsSync(path.join(cs.root, f))) {
      console.error(`[ui] ${f} not found: run npm run build first`);
      console.log('0 passed, 1 failed');
      process.exit(1);
    }
  }
  const t0 = Date.now();
  const shots = [];
  const hostErrors = [];
  let passed = 0;
  let failed = 0;
  let session;
  let ctx;
  const settingsDir = cs.tempDir('nke-ui-settings-');
  try {
    session = await cs.openDevWorkbench({
      prefix: 'nke-ui-',
      env: { NKE_UI_SETTINGS_DIR: settingsDir },
      // No emulator answers here: Connect must fail with its clear error.
      settings: (tmp) => ({
        'nke.emulatorRuntimeDir': path.join(tmp, 'no-emulator'),
        // The servers and programs the steps start listen on many ports: code-server would
        // forward each and toast about it over the views under test.
        'remote.autoForwardPorts': false,
      }),
      testsPath: path.join(__dirname, 'sample-feed.js'),
      beforeGoto: (page) => {
        page.setDefaultTimeout(stepTimeout);
        page.on('console', (m) => {
          if (m.type() === 'error' && /nke/i.test(m.text())) hostErrors.push(m.text());
        });
      },
    });
    const { page, workspace } = session;
    ctx = liveContext(
      path.join(session.tmp, 'no-emulator'),
      session.server.child.pid,
      session.tmp,
      settingsDir,
    );
    for (const [i, [name, fn]] of steps.entries()) {
      const s0 = Date.now();
      let error;
      try {
        await fn(page, workspace, ctx);
      } catch (e) {
        error = e;
      }
      const file = `${String(i + 1).padStart(2, '0')}-${name.replace(/[^a-z0-9]+/gi, '-').slice(0, 60)}.png`;
      shots.push({ file, png: await page.screenshot().catch(() => undefined) });
      const ms = Date.now() - s0;
      if (!error) {
        passed++;
        console.log(`  ✓ ${name} (${ms} ms)`);
      } else {
        failed++;
        console.log(`  ✗ ${name} (${ms} ms)\n      ${String(error.message).split('\n').join('\n      ')}`);
        // Later steps may depend on this one's state; put the UI back to a
        // known place (no open menu, palette or toast) and go on.
        await page.keyboard.press('Escape').catch(() => {});
        await wb.dismissNotifications(page).catch(() => {});
      }
    }
    // Expected errors (the steps that check error toasts) appear here too;
    // they are only worth reading when something failed.
    if (failed && hostErrors.length)
      console.log(`[ui] NKE errors in the browser console:\n  ${hostErrors.join('\n  ')}`);
  } catch (e) {
    failed++;
    console.log(`  ✗ launching code-server and Chromium\n      ${e.stack ?? e}`);
  }
  if (failed || alwaysShots) {
    fs.rmSync(shotsDir, { recursive: true, force: true });
    fs.mkdirSync(shotsDir, { recursive: true });
    for (const s of shots) if (s.png) fs.writeFileSync(path.join(shotsDir, s.file), s.png);
    if (failed && session) fs.copyFileSync(session.serverLog, path.join(shotsDir, 'code-server.log'));
    console.log(`[ui] ${shots.length} screenshot(s) in ${path.relative(cs.root, shotsDir)}/`);
  }
  ctx?.stopPrograms();
  if (session && failed && process.env.NKE_UI_KEEP === '1') {
    session.keepTmp(); // the profile with the extension host's logs
    console.log(`[ui] profile and logs kept in ${session.tmp}`);
  }
  if (session) await session.close();
  fs.rmSync(settingsDir, { recursive: true, force: true });
  console.log(`[ui] ${steps.length} steps in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  console.log(`${passed} passed, ${failed} failed`);
  process.exit(failed ? 1 : 0);
}

main();
