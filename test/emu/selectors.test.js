// The selector contract of nke_abi.h (above enum nke_selector), as nke-emud
// answers it on ctl.sock: OPEN from anyone (BUSY while another client is
// open), every other selector, GET_STATE included, only from the open client
// (NOT_OPEN otherwise), an unknown selector refused as such. The kext's
// externalMethod applies the same check (nke_core_selector_check, unit-tested
// in test/native/test_core.c). Constants are read from the C header.
'use strict';
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const H = require('./shim-harness');

const abiHeader = fs.readFileSync(path.join(H.root, 'kext/include/nke/nke_abi.h'), 'utf8');
const protoHeader = fs.readFileSync(path.join(H.root, 'native/emu/include/nke_emu_proto.h'), 'utf8');
function constant(text, name) {
  const m = new RegExp(`\\b${name}\\s*=?\\s*(0x[0-9a-fA-F]+|\\d+)u?\\b`).exec(text);
  assert.ok(m, `${name} not found in the C headers`);
  return Number(m[1]);
}
const K = {};
for (const n of [
  'NKE_ABI_VERSION',
  'NKE_SEL_OPEN',
  'NKE_SEL_RESPOND',
  'NKE_SEL_SET_CAPTURE',
  'NKE_SEL_GET_STATE',
])
  K[n] = constant(abiHeader, n);
for (const n of ['NKE_OK', 'NKE_ERR_BUSY', 'NKE_ERR_SELECTOR', 'NKE_ERR_NOT_OPEN'])
  K[n] = constant(abiHeader, n);
K.SEL_COUNT = constant(abiHeader, 'NKE_SEL_COUNT');
K.MAGIC_REQ = constant(protoHeader, 'NKE_EMU_MAGIC_REQ');
const STATE_SIZE = Number(/NKE_ASSERT_SIZE\(struct nke_filter_state, (\d+)\)/.exec(abiHeader)[1]);

// ctl.sock connections by name (A, B, ...), each made at its first step;
// each argv step "A:sel[:open]" sends one request and prints "status len"
// for its reply; "A:close" closes A. nke-emud sees a close in its own time:
// the first OPEN after a close is asked again while it answers BUSY, for 10 s
// at most (a BUSY that stays is printed as it is).
const CTL_CLIENT = `
import os, socket, struct, sys, time
path, magic, abi, busy = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
conns = {}
closed = False
def ask(who, sel, body):
    conns[who].send(struct.pack('<IIII', magic, sel, 7, len(body)) + body)
    _, status, seq, n = struct.unpack('<IIII', conns[who].recv(4096)[:16])
    return status, n
for step in sys.argv[5:]:
    who = step.split(':')[0]
    if step.endswith(':close'):
        conns.pop(who).close()
        closed = True
        continue
    sel = int(step.split(':')[1])
    if who not in conns:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        s.connect(path)
        conns[who] = s
    is_open = step.endswith(':open')
    body = struct.pack('<IIiI', abi, 0, os.getpid(), 0) if is_open else b''
    status, n = ask(who, sel, body)
    end = time.monotonic() + 10
    while is_open and closed and status == busy and time.monotonic() < end:
        time.sleep(0.02)
        status, n = ask(who, sel, body)
    if is_open:
        closed = False
    print(status, n, flush=True)
`;

describe('ctl.sock follows the ABI selector contract', function () {
  this.timeout(60000);
  const emu = H.useEmulator();

  /** Runs the steps [who, selector | 'close', expected status, 'open'?] on ctl.sock and checks each reply. */
  async function ctlSteps(steps) {
    const args = steps.map(([who, sel, , open]) => `${who}:${sel}${open ? ':open' : ''}`);
    const r = await H.run(
      'python3',
      [
        '-c',
        CTL_CLIENT,
        path.join(emu.rt, 'ctl.sock'),
        String(K.MAGIC_REQ),
        String(K.NKE_ABI_VERSION),
        String(K.NKE_ERR_BUSY),
        ...args,
      ],
      process.env,
    );
    assert.equal(r.code, 0, r.stderr);
    const replies = r.stdout
      .trim()
      .split('\n')
      .map((l) => l.split(' ').map(Number));
    const asked = steps.filter(([, sel]) => sel !== 'close');
    assert.equal(replies.length, asked.length, r.stdout);
    asked.forEach(([who, sel, want], i) => {
      const [status, len] = replies[i];
      assert.equal(status, want, `step ${i}: ${who} selector ${sel} answered ${status}, expected ${want}`);
      if (sel === K.NKE_SEL_GET_STATE && want === K.NKE_OK)
        assert.equal(len, STATE_SIZE, `step ${i}: state size`);
      else if (sel !== K.NKE_SEL_OPEN) assert.equal(len, 0, `step ${i}: a refusal carries no output`);
    });
  }

  it('GET_STATE and the rest only from the open client; OPEN from anyone; an unknown selector is SELECTOR', async function () {
    const steps = [
      ['A', K.NKE_SEL_GET_STATE, K.NKE_ERR_NOT_OPEN], // before OPEN (the kext once answered it)
      ['A', K.NKE_SEL_RESPOND, K.NKE_ERR_NOT_OPEN],
      ['A', K.SEL_COUNT, K.NKE_ERR_SELECTOR], // unknown, before OPEN
      ['A', K.NKE_SEL_OPEN, K.NKE_OK, 'open'],
      ['A', K.NKE_SEL_GET_STATE, K.NKE_OK],
      ['A', K.NKE_SEL_OPEN, K.NKE_ERR_BUSY, 'open'], // already open
      ['A', K.SEL_COUNT + 7, K.NKE_ERR_SELECTOR],
      ['B', K.NKE_SEL_GET_STATE, K.NKE_ERR_NOT_OPEN], // another client is open
      ['B', K.NKE_SEL_SET_CAPTURE, K.NKE_ERR_NOT_OPEN],
      ['B', K.SEL_COUNT, K.NKE_ERR_SELECTOR],
      ['B', K.NKE_SEL_OPEN, K.NKE_ERR_BUSY, 'open'],
      ['A', K.NKE_SEL_GET_STATE, K.NKE_OK], // B changed nothing for A
    ];
    await ctlSteps(steps);
  });

  // The kext's owner is the client whose OPEN succeeded: a connection that
  // never opens holds nothing, and once the open client closes any other
  // may open (nke-emud once made the first connection the owner at connect).
  it('the open client is the one whose OPEN succeeded, not the first to connect', async function () {
    await ctlSteps([
      ['A', K.NKE_SEL_GET_STATE, K.NKE_ERR_NOT_OPEN], // A connects first, opens nothing
      ['B', K.NKE_SEL_OPEN, K.NKE_OK, 'open'],
      ['B', K.NKE_SEL_GET_STATE, K.NKE_OK],
      ['A', K.NKE_SEL_OPEN, K.NKE_ERR_BUSY, 'open'],
      ['A', K.NKE_SEL_GET_STATE, K.NKE_ERR_NOT_OPEN],
      ['B', 'close'],
      ['A', K.NKE_SEL_OPEN, K.NKE_OK, 'open'], // B gone: A, connected all along, may open
      ['A', K.NKE_SEL_GET_STATE, K.NKE_OK],
      ['C', K.NKE_SEL_OPEN, K.NKE_ERR_BUSY, 'open'],
      ['A', 'close'],
      ['C', K.NKE_SEL_OPEN, K.NKE_OK, 'open'],
    ]);
  });
});
