// The TypeScript side of the runtime directory checks (privateDir.ts), on
// real directories: what is refused, and that the message names the owner.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import {
  assertPrivateDir,
  describeUid,
  PrivateDirError,
  privateDirProblem,
  resolveEmulatorRuntimeDir,
} from '../../extension/src/shared/privateDir';

const what = "the emulator's runtime directory";
const fix = 'set NKE_EMU_DIR to a directory of your own';

describe('privateDir: which directories may hold our endpoints', () => {
  let base: string;
  beforeEach(() => {
    base = fs.mkdtempSync(path.join(os.tmpdir(), 'nke-privdir-'));
  });
  afterEach(() => fs.rmSync(base, { recursive: true, force: true }));

  it('resolves like nke_rundir_resolve: NKE_EMU_DIR, XDG_RUNTIME_DIR/nke-emu, /tmp/nke-emu-<uid>', () => {
    assert.equal(resolveEmulatorRuntimeDir('/s', { NKE_EMU_DIR: '/a', XDG_RUNTIME_DIR: '/b' }), '/s');
    assert.equal(resolveEmulatorRuntimeDir('', { NKE_EMU_DIR: '/a', XDG_RUNTIME_DIR: '/b' }), '/a');
    assert.equal(resolveEmulatorRuntimeDir('', { XDG_RUNTIME_DIR: '/run/user/7' }), '/run/user/7/nke-emu');
    assert.equal(resolveEmulatorRuntimeDir('', {}), `/tmp/nke-emu-${process.getuid!()}`);
  });

  it('accepts a 0700 directory of ours, and one that does not exist yet', () => {
    const d = path.join(base, 'rt');
    assert.equal(privateDirProblem(d, what, fix), undefined);
    fs.mkdirSync(d, { mode: 0o700 });
    assert.equal(privateDirProblem(d, what, fix), undefined);
    assertPrivateDir(d, what, fix);
  });

  it('refuses one open to group or others, naming the mode and the fix', () => {
    const d = path.join(base, 'rt');
    fs.mkdirSync(d);
    fs.chmodSync(d, 0o750);
    assert.match(privateDirProblem(d, what, fix)!, /rt is open to other users \(mode 0750\).*chmod 700 /);
    fs.chmodSync(d, 0o701);
    assert.throws(
      () => assertPrivateDir(d, what, fix),
      (e: unknown) => {
        assert.ok(e instanceof PrivateDirError);
        assert.equal(e.code, 'NKE_NOT_PRIVATE');
        assert.match(e.message, /mode 0701/);
        return true;
      },
    );
  });

  it('refuses a symbolic link, even to a private directory, and a file', () => {
    const d = path.join(base, 'rt');
    fs.mkdirSync(d, { mode: 0o700 });
    fs.symlinkSync(d, path.join(base, 'link'));
    assert.match(
      privateDirProblem(path.join(base, 'link'), what, fix)!,
      /link is a symbolic link: refusing it.*NKE_EMU_DIR/,
    );
    fs.writeFileSync(path.join(base, 'file'), '');
    assert.match(privateDirProblem(path.join(base, 'file'), what, fix)!, /file is not a directory/);
  });

  it("refuses another user's directory, naming that user", function () {
    if (process.getuid!() !== 0) this.skip(); // chown needs root
    const d = path.join(base, 'rt');
    fs.mkdirSync(d, { mode: 0o700 });
    fs.chownSync(d, 65534, 65534);
    const why = privateDirProblem(d, what, fix)!;
    assert.match(why, /belongs to uid 65534 \(nobody\), not to you \(uid 0\) or root/);
    assert.match(why, /nothing was sent there/);
    // root's own directories are trusted by everyone
    fs.chownSync(d, 0, 0);
    assert.equal(privateDirProblem(d, what, fix), undefined);
  });

  it('names a uid by /etc/passwd, or by number alone', () => {
    assert.equal(describeUid(0), 'uid 0 (root)');
    assert.equal(describeUid(2147480000), 'uid 2147480000');
  });
});
