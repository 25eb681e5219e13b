#!/usr/bin/env node
// `npm test`: builds, runs every suite of test/suites.js, and prints each
// suite's summary line, its time, and the total over all suites.
'use strict';
const { spawn, spawnSync } = require('node:child_process');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
const suites = require('./suites');

const argv = process.argv.slice(2);
const pick = argv.includes('--suite') ? argv[argv.indexOf('--suite') + 1].split(',') : null;
const selected = pick ? suites.filter((s) => pick.includes(s.name)) : suites;
if (pick && selected.length !== pick.length) {
  console.error(`unknown suite in ${pick.join(',')}; known: ${suites.map((s) => s.name).join(', ')}`);
  process.exit(2);
}

function fmt(ms) {
  return ms >= 60000
    ? `${Math.floor(ms / 60000)}m${((ms % 60000) / 1000).toFixed(0)}s`
    : `${(ms / 1000).toFixed(1)}s`;
}

function runSuite(s) {
  return new Promise((resolve) => {
    console.log(`\n=== suite ${s.name}: ${s.what}`);
    const t0 = Date.now();
    const child = spawn(s.cmd[0], s.cmd.slice(1), {
      cwd: root,
      env: { ...process.env, ...(s.env ?? {}) },
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true, // own process group, so a hung suite is stopped with all it started
    });
    // A suite that hangs must fail, not stall CI: stop its whole group.
    const limitMs = (s.limitMin ?? 15) * 60000;
    let timedOut = false;
    const stopGroup = () => {
      try {
        process.kill(-child.pid, 'SIGKILL');
      } catch {
        child.kill('SIGKILL');
      }
    };
    const timer = setTimeout(() => {
      timedOut = true;
      console.error(`[run] suite ${s.name} exceeded ${limitMs / 60000} min: stopping it`);
      stopGroup();
    }, limitMs);
    let tail = '';
    // Failed tests' titles, so the summary at the end of a long log names them:
    // every suite marks a failed test with a line "✗ title".
    const failures = [];
    let partial = '';
    const keep = (chunk, out) => {
      out.write(chunk);
      const text = chunk.toString();
      tail = (tail + text).slice(-4096);
      const lines = (partial + text).split('\n');
      partial = lines.pop();
      for (const line of lines) {
        if (/^\s*✗ /.test(line)) {
          if (failures.length < 20) failures.push(line.trim());
        }
      }
    };
    child.stdout.on('data', (c) => keep(c, process.stdout));
    child.stderr.on('data', (c) => keep(c, process.stderr));
    // The suite's own process is done, but a process it started may still hold
    // its output pipe open: stop the group after a grace period and count it.
    let leftBehind = false;
    let grace = null;
    child.on('exit', () => {
      grace = setTimeout(() => {
        leftBehind = true;
        console.error(`[run] suite ${s.name} exited but left processes running: stopping them`);
        stopGroup();
      }, 10000);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      clearTimeout(grace);
      const lines = [...tail.matchAll(/^(\d+) passed, (\d+) failed\s*$/gm)];
      const last = lines[lines.length - 1];
      const passed = last ? Number(last[1]) : 0;
      let failed = last ? Number(last[2]) : 0;
      let note = '';
      if (timedOut) {
        note = ' (time limit exceeded)';
        failed += 1;
      } else if (leftBehind) {
        note = ' (left processes running)';
        failed += 1;
      } else if (!last) {
        note = ' (no summary line)';
        failed += 1;
      } else if (code !== 0 && failed === 0) {
        note = ` (exit ${code ?? signal})`;
        failed += 1;
      }
      resolve({ name: s.name, passed, failed, ms: Date.now() - t0, note, failures });
    });
  });
}

(async () => {
  const t0 = Date.now();
  for (const step of [
    ['node', ['scripts/build-native.js']],
    ['node', ['scripts/build.mjs']],
  ]) {
    const r = spawnSync(step[0], step[1], { cwd: root, stdio: 'inherit' });
    if (r.status !== 0) {
      console.error(`build step failed: ${step[1].join(' ')}`);
      console.log('0 passed, 1 failed');
      process.exit(1);
    }
  }
  const results = [];
  for (const s of selected) results.push(await runSuite(s));
  console.log('\n=== summary');
  for (const r of results) {
    console.log(
      `  ${r.name.padEnd(10)} ${String(r.passed).padStart(5)} passed ${String(r.failed).padStart(4)} failed  ${fmt(r.ms).padStart(7)}${r.note}`,
    );
    for (const f of r.failures) console.log(`      ${f}`);
  }
  const passed = results.reduce((a, r) => a + r.passed, 0);
  const failed = results.reduce((a, r) => a + r.failed, 0);
  console.log(`  total time ${fmt(Date.now() - t0)}`);
  console.log(`${passed} passed, ${failed} failed`);
  process.exit(failed ? 1 : 0);
})();
