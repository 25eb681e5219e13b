// Starting and stopping the private code-server (installed by
// scripts/install-code-server.sh) and the headless Chromium that drives it.
// Used by the in-host launcher, the UI launcher and `npm start`.
'use strict';
const { spawn, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');

const root = path.resolve(__dirname, '..', '..');
const codeServerDir = process.env.NKE_CODE_SERVER_DIR || path.join(root, '.cache', 'code-server');
const codeServerBin = path.join(codeServerDir, 'bin', 'code-server');
const chromiumPath = process.env.NKE_CHROMIUM || '/usr/bin/chromium';

/** Installs code-server on first use; a no-op (a stamp check) afterwards. */
function ensureCodeServer() {
  const r = spawnSync('bash', [path.join(root, 'scripts', 'install-code-server.sh')], { stdio: 'inherit' });
  if (r.status !== 0)
    throw new Error(`installing code-server failed (exit ${r.status ?? r.signal}); see the output above`);
  return codeServerBin;
}

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/**
 * A fresh user-data dir (settings that keep the welcome page, telemetry, update
 * checks and workspace trust out of the way) and a config file, so nothing is
 * written to the user's home.
 */
function makeProfile(base, extraSettings = {}) {
  const userData = path.join(base, 'user-data');
  fs.mkdirSync(path.join(userData, 'User'), { recursive: true });
  const settings = {
    'workbench.startupEditor': 'none',
    // An explicit theme, or 1.96 offers "try the new default theme" in a toast.
    'workbench.colorTheme': 'Default Light Modern',
    'workbench.tips.enabled': false,
    'workbench.enableExperiments': false,
    'telemetry.telemetryLevel': 'off',
    'update.mode': 'none',
    'extensions.autoCheckUpdates': false,
    'extensions.autoUpdate': false,
    'security.workspace.trust.enabled': false,
    'git.enabled': false,
    ...extraSettings,
  };
  fs.writeFileSync(path.join(userData, 'User', 'settings.json'), JSON.stringify(settings, null, 2));
  const config = path.join(base, 'config.yaml');
  fs.writeFileSync(config, 'auth: none\ncert: false\n');
  return { userData, config };
}

function codeServerEnv(extra = {}) {
  // An empty gallery: the workbench must not try to reach a marketplace.
  return { ...process.env, EXTENSIONS_GALLERY: '{}', ...extra };
}

function commonArgs(profile, extensionsDir) {
  return [
    '--config',
    profile.config,
    '--user-data-dir',
    profile.userData,
    '--extensions-dir',
    extensionsDir,
    '--disable-telemetry',
    '--disable-update-check',
    '--disable-workspace-trust',
  ];
}

/** `code-server --install-extension VSIX` into the given extensions dir. */
function installExtension(vsix, profile, extensionsDir) {
  const r = spawnSync(
    codeServerBin,
    [...commonArgs(profile, extensionsDir), '--install-extension', vsix, '--force'],
    {
      env: codeServerEnv(),
      encoding: 'utf8',
    },
  );
  if (r.status !== 0)
    throw new Error(`code-server --install-extension ${vsix} failed:\n${r.stdout}${r.stderr}`);
  return r.stdout.trim();
}

async function waitHealthy(url, child, timeoutMs) {
  const t0 = Date.now();
  while (Date.now() - t0 < timeoutMs) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`code-server exited (${child.exitCode ?? child.signalCode}) before it was ready`);
    }
    try {
      const res = await fetch(`${url}/healthz`);
      if (res.ok) return;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`code-server did not answer ${url}/healthz within ${timeoutMs} ms`);
}

/**
 * Starts code-server on 127.0.0.1 in its own process group (so stop() also
 * ends its extension hosts and terminals) and waits until it answers.
 * Returns { url, port, child, stop() }.
 */
async function startCodeServer({
  folder,
  profile,
  extensionsDir,
  port,
  env = {},
  logFile,
  host = '127.0.0.1',
}) {
  port = port || (await freePort());
  const out = logFile ? fs.openSync(logFile, 'a') : 'ignore';
  const child = spawn(
    codeServerBin,
    [...commonArgs(profile, extensionsDir), '--auth', 'none', '--bind-addr', `${host}:${port}`, folder],
    {
      env: codeServerEnv(env),
      stdio: ['ignore', out, out],
      detached: true,
    },
  );
  if (typeof out === 'number') fs.closeSync(out);
  const url = `http://${host}:${port}`;
  const stop = () => stopGroup(child);
  try {
    await waitHealthy(url, child, 30000);
  } catch (e) {
    await stop();
    throw e;
  }
  return { url, port, child, stop };
}

/** SIGTERM to the child's process group, SIGKILL if it lingers. */
function stopGroup(child, graceMs = 3000) {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve();
    const kill = (sig) => {
      try {
        process.kill(-child.pid, sig);
      } catch {
        // already gone
      }
    };
    const timer = setTimeout(() => kill('SIGKILL'), graceMs);
    child.once('exit', () => {
      clearTimeout(timer);
      // The group may outlive its leader (extension host, pty children).
      kill('SIGKILL');
      resolve();
    });
    kill('SIGTERM');
  });
}

/** Headless Chromium with a fresh profile; the flags keep it off the network. */
async function launchChromium(profileDir) {
  const { chromium } = require('playwright-core');
  if (!fs.existsSync(chromiumPath)) {
    throw new Error(`${chromiumPath} not found: run bash scripts/setup-system.sh (or set NKE_CHROMIUM)`);
  }
  return chromium.launchPersistentContext(profileDir, {
    executablePath: chromiumPath,
    headless: true,
    viewport: { width: 1400, height: 900 },
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
}

/**
 * The workbench URL that opens `folder` and, through the `payload` query
 * parameter, loads a development extension and optionally a test runner.
 * code-server refuses --extensionDevelopmentPath on its command line but the
 * web workbench accepts both through the payload; paths are remote URIs whose
 * authority is the server's host:port.
 */
function workbenchUrl(base, folder, { devPath, testsPath } = {}) {
  const authority = new URL(base).host;
  const remote = (p) => `vscode-remote://${authority}${p}`;
  const payload = [];
  if (devPath) payload.push(['extensionDevelopmentPath', remote(devPath)]);
  if (testsPath) payload.push(['extensionTestsPath', remote(testsPath)]);
  let url = `${base}/?folder=${encodeURIComponent(folder)}`;
  if (payload.length) url += `&payload=${encodeURIComponent(JSON.stringify(payload))}`;
  return url;
}

function tempDir(prefix) {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

module.exports = {
  root,
  codeServerBin,
  ensureCodeServer,
  freePort,
  makeProfile,
  installExtension,
  startCodeServer,
  stopGroup,
  launchChromium,
  workbenchUrl,
  tempDir,
};

/**
 * The start sequence both test launchers share: a temp dir with a workspace,
 * a fresh profile and extensions dir, code-server on a free port, headless
 * Chromium on the workbench with this repository as the development
 * extension and `testsPath` as its extensionTestsPath; `extensions`: VSIX
 * files installed in that profile first. Returns the pieces
 * and close() (browser, server, then the temp dir unless keepTmp()).
 */
async function openDevWorkbench({ prefix, settings = {}, testsPath, env = {}, beforeGoto, extensions = [] }) {
  ensureCodeServer();
  const tmp = tempDir(prefix);
  const workspace = path.join(tmp, 'workspace');
  fs.mkdirSync(workspace);
  const profile = makeProfile(tmp, typeof settings === 'function' ? settings(tmp) : settings);
  const extensionsDir = path.join(tmp, 'extensions');
  fs.mkdirSync(extensionsDir);
  // VSIXs installed in this profile only (the webview bench's floor editor).
  for (const vsix of extensions) installExtension(vsix, profile, extensionsDir);
  const serverLog = path.join(tmp, 'code-server.log');
  let server;
  let browser;
  let keep = false;
  const close = async () => {
    if (browser) await browser.close().catch(() => {});
    if (server) await server.stop();
    if (!keep) fs.rmSync(tmp, { recursive: true, force: true });
  };
  try {
    // The helper's control socket (nke export, Wireshark) in this run's own
    // directory: tests running side by side never reach each other's helper.
    const runEnv = { NKE_CLI_DIR: path.join(tmp, 'nke-cli'), ...env };
    server = await startCodeServer({
      folder: workspace,
      profile,
      extensionsDir,
      logFile: serverLog,
      env: runEnv,
    });
    browser = await launchChromium(path.join(tmp, 'chromium'));
    const page = browser.pages()[0] ?? (await browser.newPage());
    if (beforeGoto) await beforeGoto(page);
    await page.goto(workbenchUrl(server.url, workspace, { devPath: root, testsPath }));
    return { tmp, workspace, serverLog, server, browser, page, close, keepTmp: () => (keep = true) };
  } catch (e) {
    await close();
    throw e;
  }
}

module.exports.openDevWorkbench = openDevWorkbench;
