// The extcap side of `nke extcap`: the lines Wireshark parses, its command
// lines (both --opt value and --opt=value), the personal folder per
// Wireshark version, and the launcher script.
import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import {
  extcapConfigText,
  extcapDltsText,
  extcapInterfacesText,
  installLauncher,
  launcherScript,
  parseExtcapArgs,
  personalExtcapDirs,
} from '../../extension/src/capture/extcap';

describe('extcap: what Wireshark reads', () => {
  it('every line is a sentence of {key=value} fields', () => {
    for (const text of [extcapInterfacesText(), extcapDltsText(), extcapConfigText()]) {
      for (const line of text.trimEnd().split('\n')) {
        assert.match(line, /^(extcap|interface|dlt|arg) (\{[a-z]+=[^{}]*\})+$/);
      }
    }
    assert.match(extcapInterfacesText(), /^interface \{value=nke\}/m);
    assert.match(extcapDltsText(), /^dlt \{number=1\}\{name=EN10MB\}/);
  });

  it('parses the steps Wireshark runs, in either option syntax, and ignores options it adds later', () => {
    assert.equal(parseExtcapArgs(['--extcap-interfaces', '--extcap-version=4.0']).step, 'interfaces');
    assert.deepEqual(parseExtcapArgs(['--extcap-dlts', '--extcap-interface=nke']).step, 'dlts');
    const c = parseExtcapArgs([
      '--capture',
      '--extcap-interface',
      'nke',
      '--fifo',
      '/tmp/x',
      '--extcap-capture-filter',
      'tcp',
      '--process=curl',
      '--socket',
      '3:1, 4:2',
      '--with-history',
      '--some-future-option',
    ]);
    assert.deepEqual(
      { step: c.step, fifo: c.fifo, process: c.process, sockets: c.sockets, withHistory: c.withHistory },
      { step: 'capture', fifo: '/tmp/x', process: 'curl', sockets: ['3:1', '4:2'], withHistory: true },
    );
  });

  it('refuses what it cannot do, naming it', () => {
    assert.throws(() => parseExtcapArgs([]), /one of --extcap-interfaces/);
    assert.throws(() => parseExtcapArgs(['--capture', '--extcap-interface', 'nke']), /needs --fifo/);
    assert.throws(
      () => parseExtcapArgs(['--extcap-config', '--extcap-interface', 'wlan0']),
      /unknown interface "wlan0"/,
    );
    assert.throws(
      () => parseExtcapArgs(['--capture', '--extcap-interface', 'nke', '--fifo']),
      /--fifo needs a value/,
    );
    assert.throws(
      () => parseExtcapArgs(['--capture', '--extcap-interface', 'nke', '--fifo', '/f', '--socket', 'x']),
      /"x" is not a socket id/,
    );
  });

  it('the personal folder moved in Wireshark 4.2; unknown version: both', () => {
    if (process.platform === 'win32') return;
    assert.deepEqual(personalExtcapDirs('/h', [4, 0]), ['/h/.config/wireshark/extcap']);
    assert.deepEqual(personalExtcapDirs('/h', [3, 6]), ['/h/.config/wireshark/extcap']);
    assert.deepEqual(personalExtcapDirs('/h', [4, 2]), ['/h/.local/lib/wireshark/extcap']);
    assert.deepEqual(personalExtcapDirs('/h', null), [
      '/h/.local/lib/wireshark/extcap',
      '/h/.config/wireshark/extcap',
    ]);
  });

  it('the launcher runs the CLI with the Node that installed it, quoting paths for sh', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "nke-extcap-it's-"));
    try {
      const cli = path.join(dir, 'fake cli.js');
      fs.writeFileSync(cli, 'console.log(JSON.stringify(process.argv.slice(2)))');
      const [file] = installLauncher([path.join(dir, 'extcap')], process.execPath, cli);
      const r = spawnSync(file, ['--extcap-interfaces', 'a b'], { encoding: 'utf8' });
      assert.equal(r.status, 0, r.stderr);
      assert.deepEqual(JSON.parse(r.stdout), ['extcap', '--extcap-interfaces', 'a b']);
      assert.match(
        launcherScript('/n', '/c', { NKE_CLI_DIR: '/run/x' }),
        /NKE_CLI_DIR=\$\{NKE_CLI_DIR:-'\/run\/x'\}/,
      );
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
