#!/usr/bin/env node
// Runs every test/bench/*-bench.js in turn (npm run bench).
'use strict';
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

let failed = 0;
for (const f of fs
  .readdirSync(__dirname)
  .filter((n) => n.endsWith('-bench.js'))
  .sort()) {
  console.log(`=== ${f}`);
  const r = spawnSync(process.execPath, [path.join(__dirname, f)], { stdio: 'inherit' });
  if (r.status !== 0) failed++;
}
process.exit(failed ? 1 : 0);
