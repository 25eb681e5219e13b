// The native addon where no emulator runs: it loads under Node, speaks this
// tree's ABI version, validates arguments up front (TypeError/RangeError) and
// names the cause of a failed open. The data path is in emu.test.ts.
import assert from 'node:assert/strict';
import path from 'node:path';
import { NKE_ABI_VERSION, NKE_KEV_VENDOR } from '../../extension/src/shared/abi';
import { loadAddon, type NativeError } from '../../extension/src/helper/native';
import { makePrivateDir } from '../../extension/src/shared/tokenSocket';

describe('native addon without a filter', () => {
  const addon = loadAddon();
  let saved: string | undefined;
  before(() => {
    saved = process.env.NKE_EMU_DIR;
    process.env.NKE_EMU_DIR = path.join(makePrivateDir('nke-addon-test-'), 'emu');
  });
  after(() => {
    if (saved === undefined) delete process.env.NKE_EMU_DIR;
    else process.env.NKE_EMU_DIR = saved;
  });

  it('is built from this tree’s ABI', () => {
    assert.equal(addon.abiVersion, NKE_ABI_VERSION);
    assert.equal(addon.kevVendor, NKE_KEV_VENDOR);
    assert.equal(addon.platform, process.platform === 'darwin' ? 'iokit' : 'emulator');
  });

  it('names the emulator directory when nothing listens there', () => {
    const c = new addon.FilterClient();
    assert.throws(
      () =>
        c.open(
          () => {},
          () => {},
        ),
      (e: NativeError) =>
        e.code === 'NKE_EMU_NOT_RUNNING' && e.message.includes(`${process.env.NKE_EMU_DIR}/ctl.sock`),
    );
    assert.equal(c.isOpen, false);
    const k = new addon.KevSocket();
    assert.throws(
      () =>
        k.open(
          NKE_KEV_VENDOR,
          () => {},
          () => {},
        ),
      (e: NativeError) => e.code === 'NKE_EMU_NOT_RUNNING' && e.message.includes('kev.sock'),
    );
  });

  it('validates arguments before touching the OS', () => {
    const c = new addon.FilterClient() as unknown as Record<string, (...a: unknown[]) => unknown>;
    assert.throws(() => c.open(1, 2), TypeError);
    const f = () => {};
    assert.throws(() => c.open(f, f, 5), /options must be an object/);
    assert.throws(() => c.open(f, f, { releaseReported: 'yes' }), /releaseReported must be a boolean/);
    assert.throws(() => c.respond('not a buffer'), TypeError);
    assert.throws(() => c.readChunk([0], 'x'), TypeError);
    const k = new addon.KevSocket() as unknown as Record<string, (...a: unknown[]) => unknown>;
    assert.throws(
      () =>
        k.open(
          42,
          () => {},
          () => {},
        ),
      TypeError,
    );
    assert.throws(
      () =>
        k.open(
          'v',
          () => {},
          () => {},
          5,
        ),
      RangeError,
    );
  });

  it('refuses calls on a client that is not open, with NKE_NOT_OPEN', () => {
    const c = new addon.FilterClient();
    for (const call of [() => c.respond(Buffer.alloc(16)), () => c.getState(), () => c.readChunk([0], 1)]) {
      assert.throws(call, (e: NativeError) => e.code === 'NKE_NOT_OPEN');
    }
    c.close(); // closing a closed client is harmless
  });
});
