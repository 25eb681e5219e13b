#!/usr/bin/env node
// `npm start`: builds everything, packages the extension, installs the .vsix
// into the private code-server, starts the Linux emulator and the demo
// workload (when the emulator is built), starts code-server on 127.0.0.1 and
// prints the URL. Ctrl-C stops everything it started.
//   PORT=8080 npm start      fixed port (default: a free one)
//   NKE_NO_DEMO=1 npm start  emulator without the demo workload
//
// Every long-lived child runs in its own process group (detached), so Ctrl-C
// reaches only this script, which then stops each group in reverse order of
// start: code-server's extension hosts, terminals and the shim's children go
// with their group.
'use strict';
const { spawn, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const cs = require('./lib/codeServer');

const root = cs.root;
const state = path.join(root, '.nke');
const emuBuild = path.join(root, 'native', 'emu', 'build');
const t0 = Date.now();
const started = []; // { name, child }, in start order
let stopping = false;

const secs = (t) => `${((Date.now() - t) / 1000).toFixed(1)} s`;
function say(msg) {
  console.log(`[start] ${msg}`);
}

function step(name, fn) {
  const t = Date.now();
  const r = fn();
  say(`${name}: ${secs(t)}`);
  return r;
}

function run(cmd, args) {
  // stdin ignored: vsce and npm must never wait for an answer.
  const r = spawnSync(cmd, args, { cwd: root, stdio: ['ignore', 'inherit', 'inherit'] });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (exit ${r.status ?? r.signal})`);
}

function checkVsix(vsix) {
  const r = spawnSync('unzip', ['-Z1', vsix], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`cannot list ${vsix}: ${r.stderr}`);
  const files = new Set(r.stdout.split('\n'));
  for (const f of ['extension/package.json', 'extension/dist/extension.js', 'extension/media/nke.svg']) {
    if (!files.has(f)) throw new Error(`${vsix} lacks ${f}; check .vscodeignore`);
  }
  return files.size - 1;
}

function startGroup(name, cmd, args, opts = {}) {
  const child = spawn(cmd, args, {
    cwd: root,
    detached: true,
    stdio: ['ignore', 'inherit', 'inherit'],
    ...opts,
  });
  started.push({ name, child });
  child.on('exit', (code, sig) => {
    if (stopping) return;
    say(`${name} exited (${code ?? sig}); stopping everything`);
    void stopAll(1);
  });
  return child;
}

async function stopAll(code) {
  if (stopping) return;
  stopping = true;
  for (const { name, child } of [...started].reverse()) {
    await cs.stopGroup(child);
    say(`stopped ${name}`);
  }
  process.exit(code);
}

/**
 * Waits for a socket file created after `since`: a stale ctl.sock left by an
 * earlier nke-emud must not pass for the new one being ready.
 */
async function waitForFile(file, since, ms) {
  for (const end = Date.now() + ms; Date.now() < end;) {
    const st = fs.statSync(file, { throwIfNoEntry: false });
    if (st && st.mtimeMs >= since - 1000) return true;
    await new Promise((r) => setTimeout(r, 100));
  }
  return false;
}

async function startEmulator(env) {
  const daemon = path.join(emuBuild, 'nke-emud');
  if (!fs.existsSync(daemon)) {
    say(`emulator not built (${path.relative(root, daemon)} missing): the views stay empty until it is`);
    return;
  }
  // The runtime directory holds the user-client sockets: 0700, ours only.
  fs.mkdirSync(env.NKE_EMU_DIR, { recursive: true, mode: 0o700 });
  fs.chmodSync(env.NKE_EMU_DIR, 0o700);
  const t = Date.now();
  startGroup('nke-emud', daemon, [], { env: { ...process.env, ...env } });
  const ctl = path.join(env.NKE_EMU_DIR, 'ctl.sock');
  if (!(await waitForFile(ctl, t, 10000))) throw new Error(`nke-emud did not create ${ctl} within 10 s`);
  say(`emulator nke-emud ready (${ctl}): ${secs(t)}`);
  if (process.env.NKE_NO_DEMO) return;
  const runner = path.join(emuBuild, 'nke-emu');
  if (!fs.existsSync(runner)) {
    say(`no demo workload: ${path.relative(root, runner)} missing`);
    return;
  }
  startGroup(
    'demo workload',
    process.execPath,
    [path.join(root, 'scripts', 'demo-workload.js'), '--runner', runner, '--port', String(demoPort)],
    {
      env: { ...process.env, ...env },
    },
  );
}

/** The demo's server port: chosen here, so the settings can name it. */
let demoPort = 0;
const demoRuleName = 'npm start demo workload';

/**
 * The demo's traffic is reported, never held, unless a rule before these
 * names it (rules made from the views go first): "Hold everything" then
 * holds a person's own programs, not ten demo requests at any time.
 */
function demoRules(port) {
  return [
    { action: 'report', localPort: port, name: `${demoRuleName}: its server (report only)` },
    { action: 'report', remotePort: port, name: `${demoRuleName}: its clients (report only)` },
  ];
}

/** The rules a person made in an earlier run (the profile's settings are rewritten at each start). */
function ownInterceptRules() {
  try {
    const file = path.join(state, 'code-server', 'user-data', 'User', 'settings.json');
    const rules = JSON.parse(fs.readFileSync(file, 'utf8'))['nke.interceptRules'];
    return Array.isArray(rules) ? rules.filter((r) => !String(r?.name ?? '').startsWith(demoRuleName)) : [];
  } catch {
    return [];
  }
}

async function main() {
  process.on('SIGINT', () => void stopAll(130));
  process.on('SIGTERM', () => void stopAll(143));

  step('build (npm run build)', () => run('npm', ['run', '--silent', 'build']));
  const vsix = path.join(root, 'dist', 'nke-workbench.vsix');
  step('package (npm run package)', () => run('npm', ['run', '--silent', 'package']));
  say(
    `${path.relative(root, vsix)}: ${checkVsix(vsix)} entries, ${(fs.statSync(vsix).size / 1024).toFixed(1)} KiB`,
  );
  step('code-server (install on first run)', () => cs.ensureCodeServer());
  demoPort = await cs.freePort();

  // Persistent profile: settings and UI state survive restarts of npm start.
  // The extension connects to the emulator started below as the window
  // opens (through its helper process), so the demo's sockets show live.
  const profile = cs.makeProfile(path.join(state, 'code-server'), {
    'nke.connectOnStartup': true,
    'nke.interceptRules': [...ownInterceptRules(), ...demoRules(demoPort)],
  });
  const extensionsDir = path.join(state, 'code-server', 'extensions');
  fs.mkdirSync(extensionsDir, { recursive: true });
  step('install the .vsix into code-server', () => cs.installExtension(vsix, profile, extensionsDir));

  const env = { NKE_EMU_DIR: path.join(state, 'emu') };
  await startEmulator(env);

  const t = Date.now();
  const port = Number(process.env.PORT) || undefined;
  const server = await cs.startCodeServer({
    folder: root,
    profile,
    extensionsDir,
    port,
    env,
    logFile: path.join(state, 'code-server', 'code-server.log'),
  });
  started.push({ name: 'code-server', child: server.child });
  server.child.on('exit', (code, sig) => {
    if (!stopping) {
      say(`code-server exited (${code ?? sig}); see .nke/code-server/code-server.log`);
      void stopAll(1);
    }
  });
  say(`code-server listening: ${secs(t)} (log: .nke/code-server/code-server.log)`);
  say(`ready in ${secs(t0)}`);
  console.log(`\n  NKE Workbench: ${server.url}/?folder=${encodeURIComponent(root)}\n`);
  say('Ctrl-C stops code-server, the emulator and the demo workload');
}

main().catch((e) => {
  console.error(`[start] ${e.message}`);
  void stopAll(1).then(() => process.exit(1));
  if (!started.length) process.exit(1);
});
