// select, pselect and epoll_pwait2 under the shim keep the kernel's order of
// events, as poll and epoll_wait do (eof-latency.test.js): a peer that
// closes its connections and then connects again is seen to have closed
// them before the new connection is accepted. In the kernel a FIN is
// readable the moment it arrives; under the shim it comes through the relay
// loop, while the listening socket is the kernel's own, so a wait that did
// not wait for the loop to catch up reported the new connection with EOFs
// still on their way. The server (test/emu/waits.c, one thread) counts the
// EOFs it has read when it accepts each connection; the assertion is an
// order, not a time, so a slow machine cannot make it fail.
'use strict';
const path = require('node:path');
const H = require('./shim-harness');
const { MODES, eofOrderRounds } = require('./eof-order-peer');

const SERVER = path.join(H.build, 'waits-test');

describe('select, pselect and epoll_pwait2: a peer closing connections, then connecting again: the EOFs come first', function () {
  this.timeout(120000);
  const emu = H.useEmulator();

  for (const wait of ['select', 'pselect', 'epoll_pwait2'])
    for (const mode of MODES) {
      it(`${wait}: 40 connections closed, then one opened, 8 rounds: every EOF is read before the new one is accepted (${mode.name})`, async function () {
        await eofOrderRounds(H, emu, mode, SERVER, [wait]);
      });
    }
});
