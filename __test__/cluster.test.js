'use strict';

// Node's cluster module (and pm2's cluster mode, which uses it): workers that each start a
// standalone server on one port all get connections, as with ws. By default the workers share
// the primary's listening socket; with `reusePort` each binds its own (SO_REUSEPORT) and the
// kernel spreads the connections.

const test = require('node:test');
const assert = require('node:assert');
const path = require('node:path');
const { spawn } = require('node:child_process');

const WebSocket = require('..');
const { freePort, once } = require('./helpers');

/** Starts the two-worker cluster; resolves with its port once both workers listen. */
function startCluster(t, port, mode) {
  const child = spawn(process.execPath, [path.join(__dirname, 'fixtures', 'cluster-server.js'), String(port), mode || ''], {
    stdio: ['ignore', 'pipe', 'inherit']
  });
  t.after(() => child.kill('SIGTERM'));
  return new Promise((resolve, reject) => {
    let out = '';
    child.stdout.on('data', (d) => {
      out += d;
      const m = /READY (\d+)/.exec(out);
      if (m) resolve(Number(m[1]));
    });
    child.on('exit', (code) => reject(new Error(`cluster exited with ${code}`)));
  });
}

/** The process id the server sends on connection. */
function pidOf(port) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws://127.0.0.1:${port}`);
    ws.once('message', (data) => {
      resolve(String(data));
      ws.close();
    });
    ws.once('error', reject);
  });
}

async function workersServing(port) {
  const pids = new Set();
  for (let i = 0; i < 40 && pids.size < 2; i++) {
    const batch = await Promise.all(Array.from({ length: 8 }, () => pidOf(port)));
    for (const p of batch) pids.add(p);
  }
  return pids;
}

test('cluster workers share one port and every worker gets connections', { timeout: 30000 }, async (t) => {
  const port = await startCluster(t, 0);
  const pids = await workersServing(port);
  assert.equal(pids.size, 2, `connections reached ${[...pids]}`);
});

test('cluster workers with reusePort each bind the port and every worker gets connections', { timeout: 30000 }, async (t) => {
  const port = await startCluster(t, await freePort(), 'reusePort');
  const pids = await workersServing(port);
  assert.equal(pids.size, 2, `connections reached ${[...pids]}`);
});

test('two servers on one port outside a cluster: the second fails with EADDRINUSE unless both use reusePort', async (t) => {
  const port = await freePort();
  const a = new WebSocket.Server({ port, host: '127.0.0.1' });
  t.after(() => a.close());
  await once(a, 'listening');
  const b = new WebSocket.Server({ port, host: '127.0.0.1' });
  const [err] = await once(b, 'error');
  assert.equal(err.code, 'EADDRINUSE');
  b.close();

  const port2 = await freePort();
  const c = new WebSocket.Server({ port: port2, host: '127.0.0.1', reusePort: true });
  t.after(() => c.close());
  await once(c, 'listening');
  const d = new WebSocket.Server({ port: port2, host: '127.0.0.1', reusePort: true });
  t.after(() => d.close());
  await once(d, 'listening');
  assert.equal(d.address().port, port2);
});

test('address() is null once the server is closed, as in ws', async () => {
  const wss = new WebSocket.Server({ port: 0, host: '127.0.0.1' });
  await once(wss, 'listening');
  assert.equal(typeof wss.address().port, 'number');
  await new Promise((resolve) => wss.close(resolve));
  assert.equal(wss.address(), null);
});
