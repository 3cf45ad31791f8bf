'use strict';

// ws-native servers attached to Node's http stack: `server`, `noServer` + handleUpgrade, and
// https (TLS sockets go through the byte bridge; plain TCP sockets are handed over by fd).

const test = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const http = require('node:http');
const https = require('node:https');
const net = require('node:net');

const WebSocket = require('..');
const { closeServer, echoBack, echoOnce, frame, listen, once, rawExchange, selfSigned, sha256, upgradeRequest } = require('./helpers');
const Ws = require('ws');

test('{ server }: an http server and ws-native share a port; other paths get 400', { timeout: 10000 }, async () => {
  const server = http.createServer((req, res) => res.end('plain http'));
  const wss = new WebSocket.Server({ server, path: '/ws' });
  echoBack(wss);
  const port = await listen(server);

  const body = await new Promise((resolve) => http.get(`http://127.0.0.1:${port}/`, (res) => {
    let s = '';
    res.on('data', (d) => (s += d));
    res.on('end', () => resolve(s));
  }));
  assert.equal(body, 'plain http');

  assert.equal((await echoOnce(new Ws(`ws://127.0.0.1:${port}/ws`), 'hello')).toString(), 'hello');

  const native = new WebSocket(`ws://127.0.0.1:${port}/ws`);
  await once(native, 'open');
  native.send(Buffer.from([1, 2, 3]));
  const [data, isBinary] = await once(native, 'message');
  assert.deepEqual([...data], [1, 2, 3]);
  assert.equal(isBinary, true);
  native.close(1000);
  await once(native, 'close');

  const other = new Ws(`ws://127.0.0.1:${port}/elsewhere`);
  const [err] = await once(other, 'error');
  assert.equal(err.message, 'Unexpected server response: 400');

  assert.deepEqual(wss.address(), server.address());
  await new Promise((resolve) => wss.close(resolve));
  // wss.close() leaves the user's server running.
  assert.equal(server.listening, true);
  await closeServer(server);
});

test('noServer: two WebSocketServers on one http server, routed by path', { timeout: 10000 }, async () => {
  const server = http.createServer();
  const a = new WebSocket.WebSocketServer({ noServer: true });
  const b = new WebSocket.WebSocketServer({ noServer: true });
  a.on('connection', (ws) => ws.send('from a'));
  b.on('connection', (ws) => ws.send('from b'));
  server.on('upgrade', (req, socket, head) => {
    const { pathname } = new URL(req.url, 'http://x');
    const target = pathname === '/a' ? a : pathname === '/b' ? b : null;
    if (!target) {
      socket.destroy();
      return;
    }
    assert.equal(target.shouldHandle(req), true);
    target.handleUpgrade(req, socket, head, (ws) => target.emit('connection', ws, req));
  });
  const port = await listen(server);
  assert.throws(() => a.address(), /The server is operating in "noServer" mode/);

  for (const [p, expected] of [['/a', 'from a'], ['/b', 'from b']]) {
    const ws = new WebSocket(`ws://127.0.0.1:${port}${p}`);
    const [msg] = await once(ws, 'message');
    assert.equal(msg.toString(), expected);
    ws.close();
    await once(ws, 'close');
  }
  a.close();
  b.close();
  await closeServer(server);
});

test('handleUpgrade after an async auth check that rejects with 401 and custom headers', { timeout: 10000 }, async () => {
  const server = http.createServer();
  const wss = new WebSocket.WebSocketServer({ noServer: true });
  echoBack(wss);
  server.on('upgrade', async (req, socket, head) => {
    const token = new URL(req.url, 'http://x').searchParams.get('token');
    // The check takes a moment (as a lookup would): the upgrade goes on in a later tick.
    await new Promise((r) => setTimeout(r, 5));
    if (token !== 'good') {
      socket.write('HTTP/1.1 401 Unauthorized\r\nX-Reason: bad token\r\nConnection: close\r\n\r\n');
      socket.destroy();
      return;
    }
    wss.handleUpgrade(req, socket, head, (ws) => wss.emit('connection', ws, req));
  });
  const port = await listen(server);

  const bad = new WebSocket(`ws://127.0.0.1:${port}/?token=bad`);
  const [, res] = await once(bad, 'unexpected-response');
  assert.equal(res.statusCode, 401);
  assert.equal(res.headers['x-reason'], 'bad token');
  const errored = once(bad, 'error');
  const closed = once(bad, 'close');
  bad.terminate();
  const [err] = await errored;
  assert.equal(err.message, 'WebSocket was closed before the connection was established');
  assert.equal((await closed)[0], 1006);

  assert.equal((await echoOnce(new Ws(`ws://127.0.0.1:${port}/?token=good`), 'ok')).toString(), 'ok');
  wss.close();
  await closeServer(server);
});

test('handleUpgrade refuses a bad request on the Node socket with ws\'s answer', { timeout: 10000 }, async () => {
  const server = http.createServer();
  const wss = new WebSocket.WebSocketServer({ noServer: true });
  server.on('upgrade', (req, socket, head) => wss.handleUpgrade(req, socket, head, () => {}));
  const port = await listen(server);
  const answer = await rawExchange(
    port,
    'GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
      'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 7\r\n\r\n'
  );
  assert.match(answer, /^HTTP\/1\.1 400 Bad Request\r\n/);
  assert.match(answer, /\r\nSec-WebSocket-Version: 13, 8\r\n/);
  assert.match(answer, /Missing or invalid Sec-WebSocket-Version header$/);
  wss.close();
  await closeServer(server);
});

test('frames sent right behind the upgrade request are not lost in the fd handover', { timeout: 10000 }, async () => {
  const server = http.createServer();
  const wss = new WebSocket.Server({ server });
  const got = [];
  const done = new Promise((resolve) => {
    wss.on('connection', (ws) => {
      ws.on('message', (d) => {
        got.push(d.toString());
        if (got.length === 50) resolve();
      });
    });
  });
  const port = await listen(server);
  const frames = Array.from({ length: 50 }, (_, i) => frame({ opcode: 0x1, payload: `m${i}` }));
  // One write: the frames arrive with the request.
  const socket = net.connect(port, '127.0.0.1', () => socket.write(Buffer.concat([Buffer.from(upgradeRequest()), ...frames])));
  await done;
  assert.deepEqual(got, Array.from({ length: 50 }, (_, i) => `m${i}`));
  socket.destroy();
  wss.close();
  await closeServer(server);
});

test('https server with { server }: TLS sockets go through the bridge, several MiB each way', { timeout: 30000 }, async () => {
  const server = https.createServer(selfSigned());
  const wss = new WebSocket.Server({ server });
  echoBack(wss);
  const port = await listen(server);
  const ws = new Ws(`wss://127.0.0.1:${port}/`, { rejectUnauthorized: false });
  await once(ws, 'open');
  const big = crypto.randomBytes(6 * 1024 * 1024);
  const text = 'ü'.repeat(1024 * 1024);
  ws.send(big);
  ws.send(text);
  const [a, aBinary] = await once(ws, 'message');
  assert.equal(aBinary, true);
  assert.equal(sha256(a), sha256(big));
  const [b, bBinary] = await once(ws, 'message');
  assert.equal(bBinary, false);
  assert.equal(b.toString(), text);
  ws.close(4000, 'tls bye');
  const [code, reason] = await once(ws, 'close');
  assert.equal(code, 4000);
  assert.equal(reason.toString(), 'tls bye');
  await new Promise((resolve) => wss.close(resolve));
  await closeServer(server);
});

test('the WebSocket option: connection hands out the user\'s subclass, standalone and { server }', { timeout: 10000 }, async () => {
  class Tagged extends WebSocket {
    tag() {
      return 'mine';
    }
  }
  const server = http.createServer();
  const attached = new WebSocket.Server({ server, WebSocket: Tagged });
  const standalone = new WebSocket.Server({ port: 0, host: '127.0.0.1', WebSocket: Tagged });
  await once(standalone, 'listening');
  const port = await listen(server);
  for (const [wss, p] of [[attached, port], [standalone, standalone.address().port]]) {
    const connected = once(wss, 'connection');
    const client = new WebSocket(`ws://127.0.0.1:${p}/`);
    const [ws] = await connected;
    assert.ok(ws instanceof Tagged);
    assert.equal(ws.tag(), 'mine');
    await once(client, 'open');
    client.close();
    await once(client, 'close');
  }
  attached.close();
  await new Promise((resolve) => standalone.close(resolve));
  await closeServer(server);
});

test('{ server }: verifyClient, handleProtocols and headers as in standalone mode; connection gets Node\'s req', { timeout: 10000 }, async () => {
  const server = http.createServer();
  const wss = new WebSocket.Server({
    server,
    verifyClient: (info, cb) => {
      if (info.req.url === '/deny') cb(false, 403, 'Go away', { 'X-Why': 'denied' });
      else cb(true);
    },
    handleProtocols: (protocols) => (protocols.has('b') ? 'b' : false)
  });
  wss.on('headers', (headers) => headers.push('X-Extra: yes'));
  const reqs = [];
  wss.on('connection', (ws, req) => {
    reqs.push(req);
    ws.send('welcome');
  });
  const port = await listen(server);

  const ok = new Ws(`ws://127.0.0.1:${port}/ok`, ['a', 'b']);
  const upgraded = once(ok, 'upgrade');
  const opened = once(ok, 'open');
  const message = once(ok, 'message');
  const [res] = await upgraded;
  assert.equal(res.headers['x-extra'], 'yes');
  await opened;
  assert.equal(ok.protocol, 'b');
  const [msg] = await message;
  assert.equal(msg.toString(), 'welcome');
  assert.ok(reqs[0] instanceof http.IncomingMessage);
  assert.equal(reqs[0].url, '/ok');
  // Still answers after the socket was handed to the engine (users log the client's address).
  assert.equal(reqs[0].socket.remoteAddress, '127.0.0.1');
  assert.equal(typeof reqs[0].socket.remotePort, 'number');
  ok.close();
  await once(ok, 'close');

  const denied = new WebSocket(`ws://127.0.0.1:${port}/deny`);
  const [, res2] = await once(denied, 'unexpected-response');
  assert.equal(res2.statusCode, 403);
  assert.equal(res2.headers['x-why'], 'denied');
  const body = await new Promise((resolve) => {
    let s = '';
    res2.on('data', (d) => (s += d));
    res2.on('end', () => resolve(s));
  });
  assert.equal(body, 'Go away');
  const closed = once(denied, 'close');
  denied.on('error', () => {});
  denied.terminate();
  await closed;

  wss.close();
  await closeServer(server);
});

test('redirects drop Authorization and Cookie when the host changes, and keep them otherwise', { timeout: 10000 }, async () => {
  const target = http.createServer();
  const wss = new WebSocket.Server({ server: target });
  const seen = [];
  wss.on('connection', (ws, req) => {
    seen.push({ auth: req.headers.authorization, cookie: req.headers.cookie, host: req.headers.host });
    ws.close();
  });
  const targetPort = await listen(target);
  const redirector = http.createServer();
  redirector.on('upgrade', (req, socket) => {
    const to = req.url === '/same' ? `ws://127.0.0.1:${targetPort}/` : `ws://localhost:${targetPort}/`;
    socket.end(`HTTP/1.1 302 Found\r\nLocation: ${to}\r\nConnection: close\r\n\r\n`);
  });
  const redirectPort = await listen(redirector);

  const headers = { Authorization: 'Bearer secret', Cookie: 'a=1' };
  // Another host (localhost instead of 127.0.0.1): both headers are dropped.
  const other = new WebSocket(`ws://127.0.0.1:${redirectPort}/other`, { followRedirects: true, headers });
  await once(other, 'close');
  // ws compares host:port, so a redirect to another port is another host too.
  assert.equal(seen[0].auth, undefined);
  assert.equal(seen[0].cookie, undefined);

  // With a 'redirect' listener the user decides: ws leaves the headers alone.
  const kept = new WebSocket(`ws://127.0.0.1:${redirectPort}/other`, { followRedirects: true, headers });
  const redirected = once(kept, 'redirect');
  await once(kept, 'close');
  const [url] = await redirected;
  assert.equal(url, `ws://localhost:${targetPort}/`);
  assert.equal(seen[1].auth, 'Bearer secret');
  assert.equal(seen[1].cookie, 'a=1');

  const tooMany = new WebSocket(`ws://127.0.0.1:${redirectPort}/other`, { followRedirects: true, maxRedirects: 0 });
  const [err] = await once(tooMany, 'error');
  assert.equal(err.message, 'Maximum redirects exceeded');

  wss.close();
  await closeServer(target);
  await closeServer(redirector);
});
