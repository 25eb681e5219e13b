// Widely used real servers and clients under the shim, with and without a
// user client: descriptors stay flat over thousands of connections, and
// programs that size tables by descriptor number (wrk, redis) work.
'use strict';
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const H = require('./shim-harness');

const CLIENT_MODES = [false, true];

// A node HTTP server; GET /fds answers its open descriptor count.
const NODE_SERVER = `
const http = require('http'), fs = require('fs');
const srv = http.createServer((req, res) => {
  if (req.url === '/fds') return res.end(String(fs.readdirSync('/proc/self/fd').length));
  res.end('hello');
});
srv.listen(0, '127.0.0.1', () => console.log(srv.address().port));
`;

// Unshimmed load: N requests, C at a time, each on a new connection.
const LOAD = `
const http = require('http');
const [port, n, c] = process.argv.slice(1).map(Number);
let started = 0, done = 0, bad = 0;
function one() {
  if (started >= n) return;
  started++;
  http.get({ host: '127.0.0.1', port, path: '/', agent: false }, (res) => {
    let b = ''; res.on('data', (d) => (b += d));
    res.on('end', () => { if (b !== 'hello') bad++; next(); });
  }).on('error', () => { bad++; next(); });
}
function next() { if (++done === n) console.log('done ' + bad); else one(); }
for (let i = 0; i < c; i++) one();
`;

function fdsOf(port) {
  return H.run(
    'node',
    [
      '-e',
      `require('http').get('http://127.0.0.1:${port}/fds', r => { let b=''; r.on('data', d => b += d); r.on('end', () => console.log(b)); })`,
    ],
    { ...process.env, LD_PRELOAD: '' },
  ).then((r) => Number(r.stdout.trim()));
}

describe('real servers under the shim (descriptors, fd numbers, connect semantics)', function () {
  this.timeout(240000);
  const emu = H.useEmulator();

  for (const withClient of CLIENT_MODES) {
    it(`a node HTTP server serves 20 000 connections with its descriptor count flat (±10)${withClient ? ', client attached' : ''}`, async function () {
      if (withClient) await emu.client();
      const srv = H.start('node', ['-e', NODE_SERVER], { env: emu.env() });
      const port = Number((await srv.waitLine(/^\d+$/)).trim());
      const load = (n) =>
        H.run(
          'node',
          ['-e', LOAD, String(port), String(n), '50'],
          { ...process.env, LD_PRELOAD: '' },
          200000,
        );
      const warm = await load(500);
      assert.equal(warm.stdout.trim(), 'done 0', warm.stderr);
      const before = await fdsOf(port);
      const t0 = Date.now();
      const r = await load(20000);
      const ms = Date.now() - t0;
      assert.equal(r.stdout.trim(), 'done 0', r.stderr);
      const after = await fdsOf(port);
      assert.ok(
        Math.abs(after - before) <= 10,
        `descriptors before ${before}, after 20 000 connections ${after}`,
      );
      this.test.title += ` [${before} -> ${after} fds, ${Math.round(20000 / (ms / 1000))} conn/s]`;
    });
  }

  for (const withClient of CLIENT_MODES) {
    it(`redis-cli under the shim talks to redis-server (its connect is non-blocking, then a second connect)${withClient ? ', client attached' : ''}`, async function () {
      if (!H.have('redis-server') || !H.have('redis-cli')) this.skip(); // bash scripts/setup-system.sh installs them
      if (withClient) await emu.client();
      const port = await H.freePort();
      const srv = H.start(
        'redis-server',
        ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', emu.dir],
        { env: { ...process.env, LD_PRELOAD: '' } },
      );
      await srv.waitLine(/Ready to accept connections/);
      const set = await H.run(
        'redis-cli',
        ['-p', String(port), 'set', 'nke-key', 'relayed value'],
        emu.env(),
      );
      assert.equal(set.stdout.trim(), 'OK', set.stderr);
      const get = await H.run('redis-cli', ['-p', String(port), 'get', 'nke-key'], emu.env());
      assert.equal(get.stdout.trim(), 'relayed value', get.stderr);
    });
  }

  for (const withClient of CLIENT_MODES) {
    it(`redis-server --maxclients 100 under the shim serves 60 clients at once${withClient ? ', client attached' : ''}`, async function () {
      if (!H.have('redis-server') || !H.have('redis-benchmark')) this.skip();
      if (withClient) await emu.client();
      const port = await H.freePort();
      const srv = H.start(
        'redis-server',
        [
          '--port',
          String(port),
          '--bind',
          '127.0.0.1',
          '--save',
          '',
          '--appendonly',
          'no',
          '--dir',
          emu.dir,
          '--maxclients',
          '100',
        ],
        { env: emu.env() },
      );
      await srv.waitLine(/Ready to accept connections/);
      const r = await H.run(
        'redis-benchmark',
        ['-p', String(port), '-c', '60', '-n', '6000', '-t', 'set,get', '-q'],
        { ...process.env, LD_PRELOAD: '' },
        60000,
      );
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /SET: [\d.]+ requests per second/, r.stdout + r.stderr);
      assert.match(r.stdout, /GET: [\d.]+ requests per second/, r.stdout + r.stderr);
      assert.doesNotMatch(r.stdout + r.stderr, /max number of clients|error/i);
    });
  }

  for (const withClient of CLIENT_MODES) {
    it(`sshd under the shim sees the real client address after its re-exec: a key limited to from="127.0.0.1" logs in${withClient ? ', client attached' : ''}`, async function () {
      // sshd (as root, for its privilege separation) on its own port, host
      // key and config; the client is unshimmed.
      if (process.getuid() !== 0 || !H.have('/usr/sbin/sshd') || !H.have('ssh') || !H.have('ssh-keygen'))
        this.skip();
      if (withClient) await emu.client();
      const d = emu.dir;
      for (const k of ['host_key', 'id'])
        assert.equal(H.run.sync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', path.join(d, k)]), 0);
      fs.writeFileSync(
        path.join(d, 'authorized_keys'),
        `from="127.0.0.1" ${fs.readFileSync(path.join(d, 'id.pub'))}`,
      );
      const port = await H.freePort();
      fs.writeFileSync(
        path.join(d, 'sshd_config'),
        [
          `Port ${port}`,
          'ListenAddress 127.0.0.1',
          `HostKey ${d}/host_key`,
          `PidFile ${d}/sshd.pid`,
          `AuthorizedKeysFile ${d}/authorized_keys`,
          'StrictModes no',
          'PasswordAuthentication no',
          'KbdInteractiveAuthentication no',
          'UsePAM no',
          'PermitRootLogin prohibit-password',
          'LogLevel VERBOSE',
        ].join('\n') + '\n',
      );
      fs.mkdirSync('/run/sshd', { recursive: true, mode: 0o755 }); // its privilege separation directory
      const sshd = H.start('/usr/sbin/sshd', ['-D', '-e', '-f', path.join(d, 'sshd_config')], {
        env: emu.env(),
      });
      await H.until(() => /Server listening/.test(sshd.stderrText), 15000, 'sshd listening');
      const r = await H.run(
        'ssh',
        [
          '-i',
          path.join(d, 'id'),
          '-p',
          String(port),
          '-o',
          'StrictHostKeyChecking=no',
          '-o',
          'UserKnownHostsFile=/dev/null',
          '-o',
          'BatchMode=yes',
          '-o',
          'IdentitiesOnly=yes',
          'root@127.0.0.1',
          'echo logged-in',
        ],
        { ...process.env, LD_PRELOAD: '' },
        30000,
      );
      assert.equal(r.stdout.trim(), 'logged-in', `${r.stderr}\nsshd: ${sshd.stderrText}`);
      assert.match(sshd.stderrText, /Accepted publickey for root from 127\.0\.0\.1 port [1-9]\d*/);
    });
  }

  it('nginx under the shim as root: its workers drop privileges (nobody) and stay filtered', async function () {
    if (process.getuid() !== 0 || !H.have('nginx')) this.skip();
    const client = await emu.client();
    const port = await H.freePort();
    const d = emu.dir;
    fs.mkdirSync(path.join(d, 'www'));
    fs.mkdirSync(path.join(d, 'tmp'));
    fs.writeFileSync(path.join(d, 'www/hello.txt'), 'hello from nginx\n');
    fs.writeFileSync(
      path.join(d, 'nginx.conf'),
      `worker_processes 2;\ndaemon off;\npid ${d}/nginx.pid;\nerror_log ${d}/error.log warn;\n` +
        `events { worker_connections 256; }\nhttp {\n access_log off;\n client_body_temp_path ${d}/tmp;\n` +
        ` proxy_temp_path ${d}/tmp;\n fastcgi_temp_path ${d}/tmp;\n uwsgi_temp_path ${d}/tmp;\n scgi_temp_path ${d}/tmp;\n` +
        ` server { listen 127.0.0.1:${port}; root ${d}/www; }\n}\n`,
    );
    fs.chmodSync(d, 0o755); // the workers (nobody) read the files; the runtime directory stays 0700
    H.start('nginx', ['-p', d, '-c', path.join(d, 'nginx.conf'), '-e', path.join(d, 'error.log')], {
      env: emu.env(),
    });
    let body = '';
    await H.until(
      async () => {
        const r = await H.run('curl', ['-s', `http://127.0.0.1:${port}/hello.txt`], {
          ...process.env,
          LD_PRELOAD: '',
        });
        body = r.stdout;
        return body === 'hello from nginx\n';
      },
      15000,
      'nginx answering',
    );
    // The request the worker read and the answer it wrote reached the filter.
    await client.waitLine(/^data in \d+ /, 5000);
    await client.waitLine(/^data out \d+ /, 5000);
    assert.equal(fs.readFileSync(path.join(emu.rt, 'shim.state')).readUInt32LE(8), 1);
  });

  for (const withClient of CLIENT_MODES) {
    it(`wrk -c 50 under the shim completes with 0 socket errors${withClient ? ', client attached' : ''}`, async function () {
      if (!H.have('wrk')) this.skip();
      if (withClient) await emu.client();
      const srv = H.start('node', ['-e', NODE_SERVER], { env: { ...process.env, LD_PRELOAD: '' } });
      const port = Number((await srv.waitLine(/^\d+$/)).trim());
      const r = await H.run(
        'wrk',
        ['-t', '2', '-c', '50', '-d', '2s', `http://127.0.0.1:${port}/`],
        emu.env(),
        60000,
      );
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /Requests\/sec:\s+[\d.]+/, r.stdout);
      assert.doesNotMatch(r.stdout, /Socket errors/, r.stdout);
      const rps = r.stdout.match(/Requests\/sec:\s+([\d.]+)/)[1];
      this.test.title += ` [${rps} req/s]`;
    });
  }
});
