// The event explorer bench's half that runs INSIDE the real extension host
// (loaded as extensionTestsPath by test/bench/explorer-bench.js): Load
// Filter starts nke-emud and the real helper; test/bench/explorergen feeds
// nke-emud 10 000 live sockets and 50 000 execs; this module measures, in
// the extension host itself, its CPU share, the time of each view's
// refresh (every getChildren/getTreeItem VS Code asks for, timed around the
// registered providers), and how long a batch of 1 000 updates takes to
// reach the Sockets tree. Results go to $NKE_EXPLORER_BENCH_RESULT (JSON).
'use strict';
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const readline = require('node:readline');
const vscode = require('vscode');

const SOCKETS = Number(process.env.NKE_BENCH_SOCKETS || 10000);
const EXECS = Number(process.env.NKE_BENCH_EXECS || 50000);
const PROCS = 100;

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
async function until(what, fn, ms) {
  for (const t0 = Date.now(); !fn();) {
    if (Date.now() - t0 > ms) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(5);
  }
}
const median = (a) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)];
const max = (a) => Math.max(0, ...a);

/** Times every call VS Code makes into a provider, grouped by refresh (calls closer than 30 ms apart). */
function timeProvider(name, p) {
  const refreshes = [];
  let current;
  let last = 0;
  for (const m of ['getChildren', 'getTreeItem']) {
    const orig = p[m].bind(p);
    p[m] = (...a) => {
      const t0 = performance.now();
      try {
        return orig(...a);
      } finally {
        const t1 = performance.now();
        if (!current || t0 - last > 30) refreshes.push((current = { ms: 0, calls: 0, at: t0 }));
        current.ms += t1 - t0;
        current.calls++;
        last = t1;
      }
    };
  }
  return {
    name,
    refreshes,
    since: (t) => refreshes.filter((r) => r.at >= t),
    lastCallAt: () => last,
  };
}

/** The whole visible part as VS Code asks for it: every expanded node's children and their items. */
function walk(p, node, depth = 0) {
  let items = 0;
  for (const c of p.getChildren(node)) {
    const item = p.getTreeItem(c);
    items++;
    if (depth < 3 && item.collapsibleState === vscode.TreeItemCollapsibleState.Expanded) {
      items += walk(p, c, depth + 1);
    }
  }
  return items;
}

function cpuOf(pid) {
  const f = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = f.slice(f.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100; // utime + stime, seconds (USER_HZ 100)
}

async function bench() {
  const ext = vscode.extensions.getExtension('nkeworkbench.nke-workbench');
  const api = await ext.activate();
  const dir = process.env.NKE_EXPLORER_BENCH_DIR;
  const cfg = vscode.workspace.getConfiguration('nke');
  await cfg.update('emulatorRuntimeDir', dir, vscode.ConfigurationTarget.Global);
  await vscode.commands.executeCommand('workbench.view.extension.nke');
  await vscode.commands.executeCommand('nke.loadFilter');
  if (api.model.link.status !== 'connected')
    throw new Error(`not connected: ${JSON.stringify(api.model.link)}`);
  const timed = {
    sockets: timeProvider('Sockets', api.trees.sockets),
    execEvents: timeProvider('Exec Events', api.trees.execEvents),
    filter: timeProvider('Filter', api.trees.filter),
  };
  const gen = spawn(path.join(ext.extensionPath, 'native/emu/build/explorergen'), ['--dir', dir], {
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  const lines = readline.createInterface({ input: gen.stdout });
  const answers = [];
  lines.on('line', (l) => answers.push(l));
  const cmd = async (line, ms = 120000) => {
    const n = answers.length;
    gen.stdin.write(`${line}\n`);
    await until(`explorergen: ${line}`, () => answers.length > n, ms);
    if (!answers[n].startsWith('ok')) throw new Error(`explorergen: ${line}: ${answers[n]}`);
  };
  const r = {};
  try {
    const live = () => api.model.sockets().filter((s) => s.state !== 'closed').length;
    let t = performance.now();
    await cmd(`attach ${SOCKETS} ${PROCS}`);
    await until(`${SOCKETS} live sockets in the model`, () => live() >= SOCKETS, 60000);
    r.socketsIn = { sockets: live(), ms: performance.now() - t };

    t = performance.now();
    const execs0 = api.model.counters.execs;
    await cmd(`exec ${EXECS} 5000`);
    await until(`${EXECS} exec events`, () => api.model.counters.execs - execs0 >= EXECS * 0.99, 60000).catch(
      () => {},
    );
    r.execsIn = {
      execs: api.model.counters.execs - execs0,
      ms: performance.now() - t,
      kept: api.model.execs().length,
    };

    // Each view's refresh, the visible part as VS Code walks it (all expanded nodes).
    await sleep(500);
    r.walk = {};
    for (const [k, p] of Object.entries({
      sockets: api.trees.sockets,
      execEvents: api.trees.execEvents,
      filter: api.trees.filter,
    })) {
      const ms = [];
      const cpuMs = [];
      let items = 0;
      for (let i = 0; i < 5; i++) {
        const c0 = process.cpuUsage();
        const t0 = performance.now();
        items = walk(p);
        ms.push(performance.now() - t0);
        const c = process.cpuUsage(c0);
        cpuMs.push((c.user + c.system) / 1000);
      }
      // Wall time is what a person waits; CPU time says how much of it was
      // this host's own work (on a loaded machine the rest is waiting for a core).
      r.walk[k] = { items, medianMs: median(ms), maxMs: max(ms), cpuMedianMs: median(cpuMs) };
    }

    // A batch of 1 000 updates: from the generator's send to the Sockets tree
    // asked for its rows with all of them in the model. Every chunk is an
    // update: reported (a data record), or passed by the filter with no
    // buffer free and announced by a gap record (a busy machine: the
    // helper's reader gives the filter's 64 buffers back late); both move
    // the socket's bytes. A chunk that is neither is a lost notification.
    const lat = [];
    const got = [];
    const counts = () => api.model.counters.dataChunks + (api.model.counters.dataGaps ?? 0);
    for (let i = 0; i < 7; i++) {
      const chunks0 = api.model.counters.dataChunks;
      const gaps0 = api.model.counters.dataGaps ?? 0;
      const n0 = counts();
      const t0 = performance.now();
      await cmd('burst 1000');
      await until('1 000 updates in the model', () => counts() - n0 >= 1000, 20000).catch((e) => {
        throw new Error(
          `${e.message} (reported ${api.model.counters.dataChunks - chunks0}, gaps ${(api.model.counters.dataGaps ?? 0) - gaps0}; filter: ${JSON.stringify(api.model.link.filter?.state)})`,
        );
      });
      const inModel = performance.now();
      await until('the Sockets view asked for its rows', () => timed.sockets.lastCallAt() >= inModel, 20000);
      lat.push(performance.now() - t0);
      got.push({
        reported: api.model.counters.dataChunks - chunks0,
        gaps: (api.model.counters.dataGaps ?? 0) - gaps0,
      });
      await sleep(300);
    }
    r.batch1000 = {
      medianMs: median(lat),
      maxMs: max(lat),
      runs: lat.map((x) => Math.round(x)),
      reported: got.map((g) => g.reported),
      gaps: got.map((g) => g.gaps),
    };

    // 1 000 updates a second for 10 s: the host's and the helper's CPU, and VS Code's refreshes meanwhile.
    const helperPid = api.session.helperPid;
    const cpu0 = process.cpuUsage();
    const helper0 = cpuOf(helperPid);
    const w0 = performance.now();
    await cmd('rate 1000 10', 60000);
    const wall = (performance.now() - w0) / 1000;
    const cpu = process.cpuUsage(cpu0);
    r.steady = {
      seconds: wall,
      hostCpuPercent: ((cpu.user + cpu.system) / 1e6 / wall) * 100,
      helperCpuPercent: ((cpuOf(helperPid) - helper0) / wall) * 100,
      refreshes: Object.fromEntries(
        Object.entries(timed).map(([k, v]) => {
          const rs = v.since(w0);
          return [
            k,
            {
              count: rs.length,
              medianMs: rs.length ? median(rs.map((x) => x.ms)) : 0,
              maxMs: max(rs.map((x) => x.ms)),
            },
          ];
        }),
      ),
    };
    r.counters = { ...api.model.counters };
    r.filterState = api.model.link.filter?.state;
  } finally {
    gen.stdin.end();
    gen.kill('SIGTERM');
    await vscode.commands.executeCommand('nke.unloadFilter').then(undefined, () => {});
  }
  return r;
}

exports.run = async function run() {
  const out = process.env.NKE_EXPLORER_BENCH_RESULT;
  try {
    fs.writeFileSync(out, JSON.stringify({ ok: true, results: await bench() }, null, 2));
  } catch (e) {
    fs.writeFileSync(out, JSON.stringify({ ok: false, error: e.stack ?? String(e) }));
  }
};
