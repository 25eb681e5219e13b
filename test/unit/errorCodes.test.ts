// The helper protocol's string error codes are written once
// (NKE_ERROR_CODES in shared/helperProtocol.ts): TypeScript producers and
// matchers are held to it by the NkeErrorCode type; the addon's C++ is not
// type-checked against it, so its sources are read here and every code they
// throw must be in the table with its meaning.
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { asNkeErrorCode, NKE_ERROR_CODES } from '../../extension/src/shared/helperProtocol';

function repoRoot(): string {
  for (let dir = __dirname; ; dir = path.dirname(dir)) {
    if (fs.existsSync(path.join(dir, 'native', 'addon', 'src'))) return dir;
    if (path.dirname(dir) === dir) throw new Error(`native/addon/src not found above ${__dirname}`);
  }
}

/** Codes the addon's sources raise: TransportError("X", ...), MakeError(env, "X", ...), e.Set("code", "X"). */
function addonCodes(): Map<string, string> {
  const dir = path.join(repoRoot(), 'native', 'addon', 'src');
  const found = new Map<string, string>();
  const raise = /(?:TransportError\(|MakeError\(\s*env,\s*|Set\(\s*"code",\s*)"(NKE_[A-Z_]+)"/g;
  for (const f of fs.readdirSync(dir).filter((n) => /\.(cpp|h)$/.test(n))) {
    const text = fs.readFileSync(path.join(dir, f), 'utf8');
    for (const m of text.matchAll(raise)) found.set(m[1], f);
  }
  return found;
}

describe('helper protocol error codes', () => {
  it('has every code the addon throws, each with its meaning', () => {
    const codes = addonCodes();
    // The reader: a transport on each platform, and the client itself.
    assert.ok(codes.size >= 15, `only ${codes.size} codes found in native/addon/src: is the pattern stale?`);
    for (const [code, file] of codes) {
      assert.ok(
        Object.hasOwn(NKE_ERROR_CODES, code),
        `${file} throws ${code}, which NKE_ERROR_CODES does not declare`,
      );
    }
  });

  it('says what each code means', () => {
    for (const [code, meaning] of Object.entries(NKE_ERROR_CODES)) {
      assert.match(code, /^NKE_[A-Z_]+$/);
      assert.ok(!code.startsWith('NKE_ERR_'), `${code}: NKE_ERR_ names are the filter's (nke_abi.h)`);
      assert.ok(meaning.length > 10, `${code} has no meaning written`);
    }
  });

  it('takes a code read from an error only when it is one', () => {
    assert.equal(asNkeErrorCode('NKE_BUSY'), 'NKE_BUSY');
    assert.equal(asNkeErrorCode('NKE_ERR_NOT_HELD'), 'NKE_ERR_NOT_HELD'); // the filter's own name
    assert.equal(asNkeErrorCode('NKE_BUSYY'), undefined);
    assert.equal(asNkeErrorCode('ENOENT'), undefined);
    assert.equal(asNkeErrorCode(7), undefined);
    assert.equal(asNkeErrorCode(undefined), undefined);
  });
});
