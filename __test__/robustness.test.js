'use strict';

// Hostile peers and internal failures: a panic in one connection's task, a ping flood from a
// peer that does not read, a client that trickles its handshake, oversize heads.

const { test } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const net = require('node:net');
const path = require('node:path');
const { execFile } = require('node:child_process');
const { once } = require('node:events');

const WebSocket = require(path.join(__dirname, '..'));
const { bounded, engineHeap, frame, rawExchange, silentPeer, startWss, upgradeRequest, waitFor } = require('./helpers');

const HOST = '127.0.0.1';
const T = { timeout: 60000 };

const server = (t, options) => startWss(t, WebSocket.WebSocketServer, options);

test('a panic in one connection closes it with 1011 and an error; the process and the others carry on', T, async () => {
  const out = await new Promise((resolve, reject) => {
    execFile(
      process.execPath,
      [path.join(__dirname, 'fixtures', 'panic-child.js')],
      { env: { ...process.env, WS_NATIVE_TEST_PANIC: '1', RUST_BACKTRACE: '0' }, timeout: 30000 },
      (err, stdout, stderr) => (err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve(stdout))
    );
  });
  const report = JSON.parse(out.trim().split('\n').pop());
  assert.deepEqual(report.closed, { code: 1011, reason: '' }, 'the peer got a 1011 close frame');
  assert.deepEqual(report.echoes, ['still here 0', 'still here 1']);
  const hit = report.serverSide.filter((s) => s.error);
  assert.equal(hit.length, 1);
  assert.equal(hit[0].error.code, 'WS_ERR_INTERNAL');
  assert.equal(hit[0].error.status, 1011);
  assert.match(hit[0].error.message, /^Internal error in the native engine/);
  assert.equal(hit[0].close, 1006);
  assert.equal(report.clients, 3, 'the two others and a new connection are open');
});

test('without the hidden switch the trigger text is an ordinary message', T, async (t) => {
  const wss = await server(t);
  wss.on('connection', (ws) => ws.on('message', (d) => ws.send(d)));
  const ws = new WebSocket(`ws://${HOST}:${wss.address().port}`);
  await once(ws, 'open');
  ws.send('ws-native:test-panic');
  const [echo] = await once(ws, 'message');
  assert.equal(echo.toString(), 'ws-native:test-panic');
  ws.close();
});

test('a ping flood from a peer that does not read our pongs does not grow memory', T, async (t) => {
  // Without ws's limit on pending auto-pongs (below, the default, which ends such a peer):
  // pongs are skipped while 1 MiB of output waits.
  const wss = await server(t, { maxPendingAutoPongs: 0 });
  let pings = 0;
  wss.on('connection', (ws) => ws.on('ping', () => pings++));
  const s = await silentPeer(t, wss.address().port); // from now on nothing is read
  const ping = frame({ opcode: 0x9, payload: crypto.randomBytes(125) });
  const batch = Buffer.concat(Array(1000).fill(ping)); // 131 KB of pings
  const before = engineHeap();
  const N = 200; // 200,000 pings: 26 MB in, 25 MB of pongs if all were answered
  for (let i = 0; i < N; i++) {
    // 'drain', but no more than 200 ms: a server that stopped reading must fail the count
    // below, not hang the writer.
    if (!s.write(batch)) await bounded(once(s, 'drain'), 200);
  }
  await waitFor(() => pings >= N * 1000, { timeout: 10000, interval: 20, what: () => `every ping to reach JS (${pings} of ${N * 1000})` });
  const after = engineHeap();
  assert.equal(pings, N * 1000, 'every ping reached JS');
  const grown = after - before;
  assert.ok(grown < 8 * 1024 * 1024, `engine heap grew by ${grown} bytes`);
});

test('with the default maxPendingAutoPongs, a ping flood from a peer that does not read ends its connection, as in ws', T, async (t) => {
  const wss = await server(t);
  const closed = new Promise((resolve) => wss.on('connection', (ws) => ws.on('close', resolve)));
  const s = await silentPeer(t, wss.address().port);
  const ping = frame({ opcode: 0x9, payload: crypto.randomBytes(125) });
  s.write(Buffer.concat(Array(1000).fill(ping)));
  assert.equal(await closed, 1006);
});

test('a client that trickles its request is cut off after handshakeTimeout (server option)', T, async (t) => {
  const wss = await server(t, { handshakeTimeout: 300 });
  const s = net.connect(wss.address().port, HOST);
  s.on('error', () => {});
  t.after(() => s.destroy());
  await once(s, 'connect');
  const started = Date.now();
  const req = upgradeRequest();
  let i = 0;
  const timer = setInterval(() => {
    if (i < req.length - 4 && !s.destroyed) s.write(req[i++]);
  }, 20);
  t.after(() => clearInterval(timer));
  await once(s, 'close');
  const took = Date.now() - started;
  assert.ok(took >= 250 && took < 3000, `closed after ${took} ms`);
});

test('the default handshake timeout is 60 s, as Node\'s headersTimeout; maxBufferedChunks is accepted', T, async (t) => {
  const wss = await server(t, { maxBufferedChunks: 16 });
  assert.equal(wss._conn.handshakeTimeout, 60000);
  const ws = new WebSocket(`ws://${HOST}:${wss.address().port}`, { maxBufferedChunks: 16 });
  await once(ws, 'open');
  ws.close();
});

test('oversize request heads get 431, whether by size or by number of header lines', T, async (t) => {
  const wss = await server(t);
  const ask = (text) => rawExchange(wss.address().port, text);
  const big = `GET / HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20000)}\r\n\r\n`;
  const many = `GET / HTTP/1.1\r\n${Array.from({ length: 200 }, (_, i) => `X-${i}: v`).join('\r\n')}\r\n\r\n`;
  assert.match(await ask(big), /^HTTP\/1.1 431 /);
  assert.match(await ask(many), /^HTTP\/1.1 431 /);
  // The server still works.
  const ws = new WebSocket(`ws://${HOST}:${wss.address().port}`);
  await once(ws, 'open');
  ws.close();
});

test('maxHeaderSize and maxHeadersCount set the head limits (431 beyond them)', T, async (t) => {
  const wss = await server(t, { maxHeaderSize: 1024, maxHeadersCount: 10 });
  const ask = (text) => rawExchange(wss.address().port, text);
  const upgrade = upgradeRequest();
  assert.match(await ask(upgrade.replace('\r\n\r\n', `\r\nX-Big: ${'a'.repeat(1100)}\r\n\r\n`)), /^HTTP\/1.1 431 /);
  const lines = Array.from({ length: 6 }, (_, i) => `X-${i}: v`).join('\r\n');
  assert.match(await ask(upgrade.replace('\r\n\r\n', `\r\n${lines}\r\n\r\n`)), /^HTTP\/1.1 431 /);
  // Within the limits (5 lines of the upgrade itself + Host): accepted.
  const ws = new WebSocket(`ws://${HOST}:${wss.address().port}`);
  await once(ws, 'open');
  ws.close();
});
