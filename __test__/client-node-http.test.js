'use strict';

// The client's handshake through Node's http stack (wss:, agent, createConnection,
// finishRequest), the hand-over under load on both sides, Express, and the bad paths of
// handleUpgrade.

const test = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const http = require('node:http');
const https = require('node:https');
const net = require('node:net');

const WebSocket = require('..');
const { closeServer, echoBack, echoes, findBin, frame, listen, once, quietPeriod, selfSigned, startTinyproxy, upgradeRequest } = require('./helpers');
const Ws = require('ws');

test('wss:// client against ws on an https server (ca trusted, and rejectUnauthorized: false)', { timeout: 20000 }, async () => {
  const tls = selfSigned();
  const server = https.createServer(tls);
  const wss = new Ws.WebSocketServer({ server });
  echoBack(wss);
  const port = await listen(server);

  const trusted = new WebSocket(`wss://localhost:${port}/`, { ca: tls.cert });
  const big = crypto.randomBytes(3 * 1024 * 1024);
  const got = await echoes(trusted, ['hi', big]);
  assert.equal(got[0][0].toString(), 'hi');
  assert.equal(got[0][1], false);
  assert.ok(got[1][0].equals(big));
  trusted.close(1000, 'done');
  const [code, reason] = await once(trusted, 'close');
  assert.equal(code, 1000);
  assert.equal(reason.toString(), 'done');

  const untrusted = new WebSocket(`wss://127.0.0.1:${port}/`);
  const closed = once(untrusted, 'close');
  const [err] = await once(untrusted, 'error');
  assert.equal(err.code, 'DEPTH_ZERO_SELF_SIGNED_CERT');
  assert.equal((await closed)[0], 1006);

  const lax = new WebSocket(`wss://127.0.0.1:${port}/`, { rejectUnauthorized: false });
  assert.equal((await echoes(lax, ['x']))[0][0].toString(), 'x');
  lax.terminate();
  await once(lax, 'close');

  wss.close();
  await closeServer(server);
});

test('createConnection and finishRequest are used for the handshake', { timeout: 10000 }, async () => {
  const wss = new WebSocket.Server({ port: 0, host: '127.0.0.1' });
  await once(wss, 'listening');
  wss.on('connection', (ws, req) => ws.send(req.headers['x-finish'] || 'none'));
  let created = 0;
  const ws = new WebSocket(`ws://127.0.0.1:${wss.address().port}/`, {
    createConnection: (opts) => {
      created++;
      return net.connect(opts.port, opts.host);
    },
    finishRequest: (req) => {
      req.setHeader('X-Finish', 'yes');
      req.end();
    }
  });
  const [msg] = await once(ws, 'message');
  assert.equal(msg.toString(), 'yes');
  assert.equal(created, 1);
  ws.close();
  await once(ws, 'close');
  await new Promise((resolve) => wss.close(resolve));
});

test('through https-proxy-agent and a real HTTP proxy (tinyproxy)', { timeout: 20000, skip: findBin(['tinyproxy']) ? false : 'tinyproxy is not installed (.ci/run installs it)' }, async (t) => {
  const { HttpsProxyAgent } = require('https-proxy-agent');
  const proxyPort = await startTinyproxy(t);
  const wss = new WebSocket.Server({ port: 0, host: '127.0.0.1' });
  await once(wss, 'listening');
  echoBack(wss);
  const agent = new HttpsProxyAgent(`http://127.0.0.1:${proxyPort}`);
  const ws = new WebSocket(`ws://127.0.0.1:${wss.address().port}/`, { agent });
  const got = await echoes(ws, ['through the proxy', Buffer.alloc(100000, 7)]);
  assert.equal(got[0][0].toString(), 'through the proxy');
  assert.equal(got[1][0].length, 100000);
  ws.close();
  await once(ws, 'close');
  await new Promise((resolve) => wss.close(resolve));
});

test('server hand-over under load: 1,000 messages in flight behind the request, none lost or reordered', { timeout: 20000 }, async () => {
  const server = http.createServer();
  const wss = new WebSocket.Server({ server });
  const got = [];
  const done = new Promise((resolve) => {
    wss.on('connection', (ws) => ws.on('message', (d) => {
      got.push(d.toString());
      if (got.length === 1000) resolve();
    }));
  });
  const port = await listen(server);
  const parts = [Buffer.from(upgradeRequest())];
  for (let i = 0; i < 1000; i++) parts.push(frame({ opcode: 0x1, payload: `message ${i} `.padEnd(200, '.') }));
  const all = Buffer.concat(parts);
  const socket = net.connect(port, '127.0.0.1', () => {
    // Dribble the bytes so some arrive while the socket is being handed over.
    let pos = 0;
    const step = () => {
      if (pos >= all.length) return;
      socket.write(all.subarray(pos, pos + 7919));
      pos += 7919;
      setImmediate(step);
    };
    step();
  });
  await done;
  assert.deepEqual(got.map((s) => s.trimEnd().replace(/\.+$/, '').trim()), Array.from({ length: 1000 }, (_, i) => `message ${i}`));
  socket.destroy();
  wss.close();
  await closeServer(server);
});

test('client hand-over under load: the server sends 1,000 messages right after the 101', { timeout: 20000 }, async () => {
  const wss = new Ws.WebSocketServer({ port: 0, host: '127.0.0.1' });
  await once(wss, 'listening');
  wss.on('connection', (ws) => {
    for (let i = 0; i < 1000; i++) ws.send(`n${i}`);
  });
  const ws = new WebSocket(`ws://127.0.0.1:${wss.address().port}/`, {
    createConnection: (opts) => net.connect(opts.port, opts.host)
  });
  const got = [];
  await new Promise((resolve) => ws.on('message', (d) => {
    got.push(d.toString());
    if (got.length === 1000) resolve();
  }));
  assert.deepEqual(got, Array.from({ length: 1000 }, (_, i) => `n${i}`));
  ws.close();
  await once(ws, 'close');
  await new Promise((resolve) => wss.close(resolve));
});

test('an Express app and ws-native on one port', { timeout: 10000 }, async () => {
  const express = require('express');
  const app = express();
  app.get('/', (req, res) => res.send('express says hi'));
  const server = http.createServer(app);
  const wss = new WebSocket.WebSocketServer({ server, path: '/live' });
  wss.on('connection', (ws) => ws.on('message', (d) => ws.send(`echo: ${d}`)));
  const port = await listen(server);
  const body = await (await fetch(`http://127.0.0.1:${port}/`)).text();
  assert.equal(body, 'express says hi');
  const ws = new WebSocket(`ws://127.0.0.1:${port}/live`);
  await once(ws, 'open');
  ws.send('ping');
  const [msg] = await once(ws, 'message');
  assert.equal(msg.toString(), 'echo: ping');
  ws.close();
  await once(ws, 'close');
  wss.close();
  await closeServer(server);
});

test('handleUpgrade: a socket destroyed during verifyClient, and a second call on one socket', { timeout: 10000 }, async () => {
  const server = http.createServer();
  let release;
  const wss = new WebSocket.WebSocketServer({
    noServer: true,
    verifyClient: (info, cb) => {
      release = () => cb(true);
    }
  });
  let connections = 0;
  wss.on('connection', () => connections++);
  const upgraded = new Promise((resolve) => {
    server.on('upgrade', (req, socket, head) => {
      wss.handleUpgrade(req, socket, head, (ws) => wss.emit('connection', ws, req));
      resolve(socket);
    });
  });
  const port = await listen(server);
  const client = new Ws(`ws://127.0.0.1:${port}/`);
  client.on('error', () => {});
  const socket = await upgraded;
  const socketClosed = once(socket, 'close');
  socket.destroy();
  await socketClosed;
  release();
  // No 'connection' may come for the destroyed socket in this time.
  await quietPeriod(20);
  assert.equal(connections, 0);

  // ws throws when handleUpgrade completes twice for one socket.
  const server2 = http.createServer();
  const wss2 = new WebSocket.WebSocketServer({ noServer: true });
  const thrown = new Promise((resolve) => {
    server2.on('upgrade', (req, socket2, head) => {
      wss2.handleUpgrade(req, socket2, head, () => {
        try {
          wss2.handleUpgrade(req, socket2, head, () => {});
          resolve(null);
        } catch (err) {
          resolve(err);
        }
      });
    });
  });
  const port2 = await listen(server2);
  const c2 = new Ws(`ws://127.0.0.1:${port2}/`);
  c2.on('error', () => {});
  const err = await thrown;
  assert.ok(err, 'the second handleUpgrade must throw');
  assert.match(err.message, /handleUpgrade\(\) was called more than once with the same socket/);
  c2.terminate();
  wss.close();
  wss2.close();
  await closeServer(server);
  await closeServer(server2);
});
