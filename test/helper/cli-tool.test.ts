// The `nke` command line without the emulator: every subcommand's --help,
// the exit codes and the rules file documented in the README as the CLI has
// them, JSONC rules files and their errors, the decisions of how the filter
// is reached (the macOS kext path runs here against a stand-in addon that
// speaks IOKit: the program runs as it is, no shim), the process tree that
// scopes exec events, and `nke status`'s labels.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { CliError, EXIT_CODES_HELP, ExitCode } from '../../extension/src/cli/cliArgs';
import { EventLog, type EventOutput, fmtEvent, ProcessTree } from '../../extension/src/cli/eventLog';
import { nextStepAfterFailure, programArgv, unavailableMessage } from '../../extension/src/cli/filterAccess';
import { statusText, type StatusReport } from '../../extension/src/cli/askOwner';
import { runProgram } from '../../extension/src/cli/ownFilter';
import { readOwnerExit } from '../../extension/src/cli/ownerRecord';
import { decodeHexDump, encodeHexDump, HexDumpError } from '../../extension/src/cli/payloadForms';
import { RULES_EXAMPLE, rulesFromText } from '../../extension/src/cli/rulesFile';
import type { NativeAddon, NativeFilterClient } from '../../extension/src/helper/native';
import { compileRules } from '../../extension/src/helper/rules';
import { RELEASE_REASONS } from '../../extension/src/helper/model';
import { JsoncError, parseJsonc } from '../../extension/src/shared/jsonc';
import { NKE_ABI_VERSION } from '../../extension/src/shared/abi';
import { makePrivateDir } from '../../extension/src/shared/tokenSocket';

const root = path.resolve(__dirname, '../../..');
const nke = path.join(root, 'dist/nke.js');
const readme = fs.readFileSync(path.join(root, 'README.md'), 'utf8');

describe('nke command line: help, exit codes, documentation', function () {
  this.timeout(60000);
  const run = (...args: string[]) => spawnSync(process.execPath, [nke, ...args], { encoding: 'utf8' });

  it('nke --help lists every command and the exit codes; every command has its own --help', () => {
    const main = run('--help');
    assert.equal(main.status, 0);
    const names = [...main.stdout.matchAll(/^ {2}([a-z]+) {2,}/gm)].map((m) => m[1]);
    for (const n of ['run', 'watch', 'status', 'show', 'verdict', 'stage', 'rules']) {
      assert.ok(names.includes(n), n);
    }
    assert.ok(main.stdout.includes(EXIT_CODES_HELP));
    for (const n of names) {
      for (const flag of ['--help', '-h']) {
        const r = run(n, flag);
        assert.equal(r.status, 0, `nke ${n} ${flag}: ${r.stderr}`);
        assert.match(r.stdout, new RegExp(`^usage: nke ${n}\\b`), `nke ${n} ${flag}`);
        assert.match(r.stdout, /\noptions:\n/);
      }
      assert.equal(run('help', n).stdout, run(n, '--help').stdout);
    }
  });

  it('the README lists the same exit codes as nke --help', () => {
    for (const [, code, meaning] of EXIT_CODES_HELP.matchAll(/^ {2}(\d+) +(.*)$/gm)) {
      const row = new RegExp(`^\\| ${code} \\| (.*) \\|$`, 'm').exec(readme);
      assert.ok(row, `README has a row for exit status ${code}`);
      // Same first words: the README's row says what --help says.
      const words = (s: string) => s.replace(/[`()]/g, '').split(/\s+/).slice(0, 3).join(' ');
      assert.equal(words(row[1]), words(meaning), `exit status ${code}`);
    }
    const named = Object.values(ExitCode) as number[];
    for (const code of named) assert.match(EXIT_CODES_HELP, new RegExp(`^ {2}${code} `, 'm'));
  });

  it('nke rules --example prints the rules file the README documents, and it compiles', () => {
    const r = run('rules', '--example');
    assert.equal(r.status, 0);
    assert.equal(r.stdout, RULES_EXAMPLE);
    assert.ok(
      readme.includes('```jsonc\n' + RULES_EXAMPLE + '```\n'),
      'README shows nke rules --example verbatim',
    );
    const rules = rulesFromText(RULES_EXAMPLE, 'example');
    const c = compileRules(rules);
    assert.equal(c.config.intercept!.length, 2);
    assert.equal(c.rewrites.length, 2);
    assert.equal(c.rewrites[1].carryMs, 2000);
    const dir = makePrivateDir('nke-rules-');
    try {
      const f = path.join(dir, 'rules.jsonc');
      fs.writeFileSync(f, r.stdout);
      const check = run('rules', '--check', f);
      assert.equal(check.status, 0, check.stderr);
      assert.match(check.stdout, /2 intercept rules, 2 rewrite rules, default report, hold 30000 ms/);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('rules files: JSON with comments, the array form, errors that name field and shape', () => {
  it('parses comments and trailing commas, and keeps strings with // and /* inside', () => {
    assert.deepEqual(
      parseJsonc('// head\n{ "a": "x // not a comment /* nor this */", /* c */ "b": [1, 2,], }\n'),
      { a: 'x // not a comment /* nor this */', b: [1, 2] },
    );
    assert.deepEqual(parseJsonc('[{"k": -1.5e3, "t": true, "n": null}]'), [{ k: -1500, t: true, n: null }]);
  });

  it('a syntax error names its line, column and what was expected', () => {
    const err = (text: string): JsoncError => {
      try {
        parseJsonc(text);
      } catch (e) {
        if (e instanceof JsoncError) return e;
        throw e;
      }
      throw new Error(`no error for ${text}`);
    };
    let e = err('{\n  "default": "hold"\n  "intercept": []\n}');
    assert.equal(e.message, 'line 3, column 3: expected "," or "}" after the value of "default", found """');
    e = err('{ default: "x" }');
    assert.match(e.message, /^line 1, column 3: a property name needs double quotes: "default"/);
    e = err('{ "a": hold }');
    assert.match(e.message, /hold is not a JSON value \(strings need double quotes: "hold"\)/);
    e = err('{ "a": 1, "a": 2 }');
    assert.match(e.message, /property "a" is given twice/);
    e = err('{ "a": 1 /* open');
    assert.match(e.message, /comment is not closed/);
    e = err('[1, 2');
    assert.match(e.message, /expected "," or "\]" after item 1 of the array, found the end of the file/);
  });

  it('the nke.interceptRules array form is the intercept list', () => {
    const r = rulesFromText(
      '[ { "action": "hold", "remotePort": 8080 } ] // as in settings.json',
      'arr.json',
    );
    assert.deepEqual(r, { intercept: [{ action: 'hold', remotePort: 8080 }] });
  });

  it('errors name the file, the field and the shape it needs', () => {
    const bad = (text: string, re: RegExp) =>
      assert.throws(
        () => rulesFromText(text, 'f.jsonc'),
        (e: CliError) => {
          assert.equal(e.exitCode, ExitCode.usage);
          assert.match(e.message, re);
          return true;
        },
      );
    bad(
      '[{"action": "hold", "port": 80}]',
      /f\.jsonc: rules\.intercept\[0\]: unknown field "port" \(a rule here has action, name, pid, process, direction, protocol, localPort, remotePort/,
    );
    bad(
      '[{"remotePort": 80}]',
      /rules\.intercept\[0\]\.action: is "hold", "report" or "pass" \(required\); got nothing .*the file is an array/,
    );
    bad(
      '{"intercept": {"action": "hold"}}',
      /rules\.intercept: is an array of rules like \[\{"action": "hold", "remotePort": 8080\}\]; got an object/,
    );
    bad(
      '{"rewrite": [{"find": "a"}]}',
      /rules\.rewrite\[0\]\.replace: is a string \(required\); got nothing/,
    );
    bad(
      '{"rewrite": [{"find": "a", "replace": "b", "carryMs": -1}]}',
      /rules\.rewrite\[0\]\.carryMs: is an integer 0\.\.600000 \(ms\); got a number \(-1\)/,
    );
    bad('{"default": "drop"}', /rules\.default: is "hold", "report" or "pass"; got a string \("drop"\)/);
    bad('"hold"', /rules: expected an object \{"default": "report", .*got a string \("hold"\)/);
    bad(
      '{"intercept": [{"action": "hold", "direction": "up"}]}',
      /rules\.intercept\[0\]\.direction: is "in", "out" or "both"; got a string \("up"\)/,
    );
    bad('{ "holdTimeoutMs": 1e9 }', /rules\.holdTimeoutMs: is an integer 0\.\.600000/);
  });
});

describe('hex dumps: what nke show --hex prints, verdict --hex reads back', () => {
  it('round-trips any bytes; offsets and gutters are ignored; a bad token names its line', () => {
    const bytes = Buffer.from(Array.from({ length: 300 }, (_, i) => (i * 7) & 0xff));
    assert.deepEqual(decodeHexDump(encodeHexDump(bytes)), bytes);
    assert.deepEqual(decodeHexDump('00000000: 41 42  |AB|\nffff: 43 |zz|\n\n44'), Buffer.from('ABCD'));
    assert.throws(
      () => decodeHexDump('00000000: 41 4\n'),
      (e: HexDumpError) => /^line 1: "4" is not a byte/.test(e.message),
    );
    assert.match(
      encodeHexDump(Buffer.from('\x1b[2Jhi')),
      /\|\.\[2Jhi\|$/,
      'no escape character reaches the terminal',
    );
  });
});

describe('how nke reaches the filter', () => {
  it('starts nke-emud only where no emulator answers, and never with --no-start or for the kext', () => {
    assert.equal(nextStepAfterFailure('emulator', 'NKE_EMU_NOT_RUNNING', false), 'start-emulator');
    assert.equal(nextStepAfterFailure('emulator', 'NKE_EMU_NOT_RUNNING', true), 'give-up');
    assert.equal(nextStepAfterFailure('emulator', 'NKE_NOT_PRIVATE', false), 'give-up');
    assert.equal(nextStepAfterFailure('emulator', 'NKE_BUSY', false), 'give-up');
    assert.equal(nextStepAfterFailure('iokit', 'NKE_NOT_LOADED', false), 'give-up');
    assert.match(
      unavailableMessage('iokit', 'NKE_NOT_LOADED', 'the NKE kext is not loaded', '', false),
      /does not load it itself .* load it first \(NKE: Load Filter in VS Code, or sudo make -C kext load\)/,
    );
    assert.match(unavailableMessage('emulator', 'NKE_BUSY', 'busy', '/r', false), /one client at a time/);
    assert.deepEqual(
      programArgv('iokit', ['curl', '-s'], () => assert.fail('no launcher for the kext')),
      ['curl', '-s'],
    );
    assert.deepEqual(
      programArgv('emulator', ['curl'], () => '/x/nke-emu'),
      ['/x/nke-emu', 'run', '--', 'curl'],
    );
  });

  /** A stand-in addon that speaks IOKit: the kext's path, which cannot run on Linux. */
  function iokitAddon(open: () => void, setCapture: () => void = () => {}): NativeAddon {
    let isOpen = false;
    const client = {
      get isOpen() {
        return isOpen;
      },
      open() {
        open();
        isOpen = true;
        return { sessionId: 9n };
      },
      respond() {},
      putData() {},
      setCapture,
      getState: () => Buffer.alloc(0),
      readChunk: () => Buffer.alloc(0),
      close() {
        isOpen = false;
      },
    } as unknown as NativeFilterClient;
    return {
      FilterClient: function () {
        return client;
      },
      KevSocket: function () {
        return { open: () => ({ vendorCode: 1, msgLimit: 224 }), close() {}, stats: () => ({}) };
      },
      abiVersion: NKE_ABI_VERSION,
      kevVendor: 'com.nkeworkbench',
      platform: 'iokit',
    } as unknown as NativeAddon;
  }

  function memoryLog(): { log: EventLog; lines: string[] } {
    const lines: string[] = [];
    const out: EventOutput = { write: (l) => void lines.push(...l.split('\n')), close: async () => {} };
    return { log: new EventLog(out, true, 'tree'), lines };
  }

  it('on macOS with the kext loaded, nke run uses it and runs the program as it is, exiting with its status', async () => {
    const dir = makePrivateDir('nke-kext-path-');
    const saved = { cli: process.env.NKE_CLI_DIR, bin: process.env.NKE_EMU_BIN_DIR };
    process.env.NKE_CLI_DIR = path.join(dir, 'cli');
    process.env.NKE_EMU_BIN_DIR = path.join(dir, 'no-emulator-here'); // any use of the emulator would fail
    try {
      const said: string[] = [];
      const { log, lines } = memoryLog();
      const marker = path.join(dir, 'preload');
      const status = await runProgram({
        command: 'run',
        cmd: ['sh', '-c', `printf '%s' "\${LD_PRELOAD-unset}" > ${marker}; exit 7`],
        noStart: false,
        log,
        say: (l) => said.push(l),
        addon: iokitAddon(() => {}),
      });
      assert.equal(status, 7, said.join('\n'));
      assert.equal(fs.readFileSync(marker, 'utf8'), process.env.LD_PRELOAD ?? 'unset', 'no shim preloaded');
      assert.ok(!said.some((l) => /nke-emud/.test(l)), said.join('\n'));
      const exit = JSON.parse(lines[lines.length - 1]) as { kind: string; status: number };
      assert.deepEqual([exit.kind, exit.status], ['program-exit', 7]);
      assert.equal(readOwnerExit(path.join(dir, 'cli'))!.command, 'run');
    } finally {
      process.env.NKE_CLI_DIR = saved.cli;
      process.env.NKE_EMU_BIN_DIR = saved.bin;
      if (saved.cli === undefined) delete process.env.NKE_CLI_DIR;
      if (saved.bin === undefined) delete process.env.NKE_EMU_BIN_DIR;
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  /** `nke run -- touch MARKER` against `addon`: it exits 3 with a message matching `why`, and the program never ran. */
  async function assertRunRefused(
    dir: string,
    addon: NativeAddon,
    why: RegExp,
    noStart: boolean,
  ): Promise<void> {
    const marker = path.join(dir, 'ran');
    await assert.rejects(
      runProgram({
        command: 'run',
        cmd: ['touch', marker],
        noStart,
        log: memoryLog().log,
        say: () => {},
        addon,
      }),
      (e: CliError) => {
        assert.equal(e.exitCode, ExitCode.filterUnavailable);
        assert.match(e.message, why);
        return true;
      },
    );
    assert.equal(fs.existsSync(marker), false, 'the program was not started');
  }

  it('on macOS without the kext, nke run exits 3 saying how to load it, and runs nothing', async () => {
    const dir = makePrivateDir('nke-kext-path-');
    const addon = iokitAddon(() => {
      throw Object.assign(new Error('the NKE kext is not loaded (no com_nkeworkbench_Filter service)'), {
        code: 'NKE_NOT_LOADED',
      });
    });
    await assertRunRefused(
      dir,
      addon,
      /cannot connect to the filter: the NKE kext is not loaded .*load it first/,
      false,
    );
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('when the filter refuses the rules, nke run exits 3 with its reason, closes the filter and runs nothing', async () => {
    const dir = makePrivateDir('nke-kext-path-');
    const saved = process.env.NKE_CLI_DIR;
    process.env.NKE_CLI_DIR = path.join(dir, 'cli');
    const addon = iokitAddon(
      () => {},
      () => {
        throw Object.assign(new Error('setCapture refused by the filter: ABI version differs'), {
          code: 'NKE_ERR_VERSION',
        });
      },
    );
    try {
      await assertRunRefused(
        dir,
        addon,
        /the filter refused the rules: setCapture refused by the filter: ABI version differs/,
        true,
      );
      const client = new (addon.FilterClient as unknown as new () => NativeFilterClient)();
      assert.equal(client.isOpen, false, 'the filter client was closed (fail-open)');
    } finally {
      process.env.NKE_CLI_DIR = saved;
      if (saved === undefined) delete process.env.NKE_CLI_DIR;
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('exec events scoped to a process tree', () => {
  it("admits the root's children and theirs; traces a child of a subshell that forked without exec through /proc", () => {
    const parents = new Map([
      [30, 20], // a subshell (no exec) forked by 20
      [99, 1],
    ]);
    const t = new ProcessTree([10], (pid) => parents.get(pid));
    assert.equal(t.admitExec(10, 5), true, 'the root itself execs');
    assert.equal(t.admitExec(20, 10), true);
    assert.equal(t.admitExec(31, 30), true, "the subshell's child");
    assert.ok(t.has(30));
    assert.equal(t.admitExec(100, 99), false, 'another process of the machine');
    assert.equal(t.admitExec(200, 12345), false, 'a parent that is gone');
  });

  it("the real /proc: this process's exec is in the tree rooted at its grandparent", () => {
    const stat = fs.readFileSync(`/proc/${process.ppid}/stat`, 'latin1');
    const grandparent = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
    const t = new ProcessTree([grandparent]);
    assert.equal(t.admitExec(process.pid, process.ppid), true);
    assert.ok(t.has(process.ppid));
    assert.equal(new ProcessTree([999999999]).admitExec(process.pid, process.ppid), false);
  });
});

describe('nke status text', () => {
  it('labels what is held now and what is a total since the filter started', () => {
    const r: StatusReport = {
      connected: true,
      transport: 'emulator',
      sessionId: '3',
      paused: false,
      state: {
        captureMode: 'rules',
        now: { socketsLive: 1, chunksHeld: 1, buffersInUse: 0, bytesKept: 13 },
        sinceStart: {
          socketsAttached: 4,
          chunksHeld: 6,
          bytesHeld: 675,
          chunksReported: 9,
          chunksPassedPoolFull: 0,
          chunksAutoReleased: 3,
          chunksDropped: 1,
          chunksModified: 1,
          chunksQueued: 0,
          chunksPassedBudget: 0,
          responsesRejected: 0,
          notificationsLost: 0,
          socketsUntracked: 0,
          staleEntries: 2,
        },
      },
      heldBy: { pid: 4242 },
      pending: [
        {
          id: '17',
          socketId: '1:1',
          pid: 99,
          process: 'cu\x1brl',
          direction: 'out',
          size: 13,
          streamOffset: 0,
          remote: { address: '127.0.0.1', port: 8080 },
          deadline: 0,
          heldAt: 0,
          staged: { size: 20 },
          timeLeftMs: 4200,
        },
      ],
    };
    const text = statusText(r);
    assert.match(text, /^now: 1 socket, 1 chunk held awaiting a verdict, 13 bytes kept, 0 buffers in use$/m);
    assert.match(
      text,
      /^since the filter started: 4 sockets attached, 6 chunks held \(675 bytes\), .*2 late answers skipped/m,
    );
    assert.match(text, /^held by: nke watch\/run pid 4242/m);
    assert.match(text, /^ {2}ID +DIR +SIZE +LEFT +SOCKET +PID +PROCESS +PEER +STAGED EDIT$/m);
    assert.match(text, /^ {2}17 +out +13 +4\.2 s +1:1 +99 +cu\\x1brl +127\.0\.0\.1:8080 +20 bytes$/m);
  });
});

describe('event lines', () => {
  it('a chunk the filter released itself says why and what became of its bytes, for every reason the ABI has', () => {
    for (const reason of Object.values(RELEASE_REASONS)) {
      const line = fmtEvent({ seq: 1, time: 0, kind: 'released', chunkId: '7', reason });
      assert.match(line, /^released 7 by the filter: \S+ \S+ \S+/);
      assert.doesNotMatch(line, new RegExp(`: ${reason}$`), `reason ${reason} has no explanation`);
    }
    assert.match(
      fmtEvent({ seq: 1, time: 0, kind: 'released', chunkId: '7', reason: 'timeout' }),
      /its deadline passed, the filter sent the original bytes$/,
    );
  });
});
