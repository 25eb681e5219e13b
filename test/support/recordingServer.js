// A real TCP server (outside the emulator) that records every byte it
// receives, per connection. Shared by the helper's emulator tests, the
// in-host live tests and the UI suite (plain CommonJS so test/ui/run.js can
// require it unbundled; esbuild bundles it into the TypeScript tests).
'use strict';
const net = require('node:net');

// Every recording server still listening: closeRecordingServers() (afterEach)
// closes them, so a failed test cannot leave a listener that keeps mocha alive.
const open = new Set();

function closeRecordingServers() {
  for (const s of open) s.close();
  open.clear();
}

async function recordingServer() {
  const connections = [];
  const server = net.createServer((s) => {
    const i = connections.push(Buffer.alloc(0)) - 1;
    s.on('data', (d) => (connections[i] = Buffer.concat([connections[i], d])));
    s.on('error', () => {});
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  open.add(server);
  const received = () => Buffer.concat(connections);
  return {
    port: server.address().port,
    connections,
    received,
    close() {
      open.delete(server);
      server.close();
    },
    async whenBytes(n, ms = 10000) {
      const t0 = Date.now();
      while (received().length < n) {
        if (Date.now() - t0 > ms) {
          throw new Error(
            `timed out after ${ms} ms waiting for ${n} bytes at the server (have ${received().length})`,
          );
        }
        await new Promise((r) => setTimeout(r, 20));
      }
      return received();
    },
  };
}

module.exports = { recordingServer, closeRecordingServers };
