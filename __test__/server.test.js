'use strict';

// The standalone WebSocketServer of ws-native (`{ port }`), checked against the behaviour
// of the `ws` package. Clients are real `ws` clients or raw TCP sockets.
// Run with WS_IMPL=ws to check the expectations against the real ws server.

const { test } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const { once } = require('node:events');
const http = require('node:http');
const net = require('node:net');
const path = require('node:path');

const WebSocket = require(process.env.WS_IMPL === 'ws' ? 'ws' : path.join(__dirname, '..'));
const { WebSocketServer } = WebSocket;
const Ws = require('ws');
const { acceptKey, closeAfter, closeWss, echoBack, failure, openClient, quietPeriod, rawExchange, startWss, urlOf, waitFor } = require('./helpers');

const HOST = '127.0.0.1';
const T = { timeout: 10000 };

/** A ws-native server on 127.0.0.1:0, closed (with its clients) after the test. */
const startServer = (t, options) => startWss(t, WebSocketServer, options);

/** A real ws client, terminated after the test. */
const client = (t, url, protocols, options) => closeAfter(t, new Ws(url, protocols, options));

/** Opens a raw TCP connection; destroyed after the test. */
async function rawConnect(t, port) {
  const socket = net.connect(port, HOST);
  socket.on('error', () => {});
  t.after(() => socket.destroy());
  await once(socket, 'connect');
  return socket;
}

function handshake({
  method = 'GET',
  path: p = '/',
  upgrade = 'websocket',
  key = crypto.randomBytes(16).toString('base64'),
  version = '13',
  extra = ''
} = {}) {
  let s = `${method} ${p} HTTP/1.1\r\nHost: ${HOST}\r\n`;
  if (upgrade !== null) s += `Connection: Upgrade\r\nUpgrade: ${upgrade}\r\n`;
  if (key !== null) s += `Sec-WebSocket-Key: ${key}\r\n`;
  if (version !== null) s += `Sec-WebSocket-Version: ${version}\r\n`;
  return s + extra + '\r\n';
}

function abortResponse(code, message, extraHeaders = '') {
  return (
    `HTTP/1.1 ${code} ${http.STATUS_CODES[code]}\r\n` +
    'Connection: close\r\n' +
    'Content-Type: text/html\r\n' +
    `Content-Length: ${Buffer.byteLength(message)}\r\n` +
    extraHeaders +
    '\r\n' +
    message
  );
}

// --- options / listening ----------------------------------------------------------------

test('one and only one of port, server, noServer: TypeError', T, () => {
  const message =
    'One and only one of the "port", "server", or "noServer" options must be specified';
  assert.throws(() => new WebSocketServer(), { name: 'TypeError', message });
  assert.throws(() => new WebSocketServer({}), { name: 'TypeError', message });
  assert.throws(() => new WebSocketServer({ port: 0, noServer: true }), {
    name: 'TypeError',
    message
  });
  assert.throws(() => new WebSocketServer({ port: 0, server: http.createServer() }), {
    name: 'TypeError',
    message
  });
  assert.throws(() => new WebSocketServer({ noServer: true, server: http.createServer() }), {
    name: 'TypeError',
    message
  });
});

test('listening event, callback and address()', T, async (t) => {
  let callbackCalled = false;
  const wss = new WebSocketServer({ host: HOST, port: 0 }, () => {
    callbackCalled = true;
  });
  t.after(() => closeWss(wss));
  await once(wss, 'listening');
  assert.equal(callbackCalled, true);
  const addr = wss.address();
  assert.equal(addr.address, HOST);
  assert.equal(addr.family, 'IPv4');
  assert.equal(typeof addr.port, 'number');
  assert.ok(addr.port > 0);

  const ws = client(t, urlOf(wss));
  await once(ws, 'open');
});

test('EADDRINUSE reaches the error event', T, async (t) => {
  const first = await startServer(t);
  const second = new WebSocketServer({ host: HOST, port: first.address().port });
  let listening = false;
  second.on('listening', () => (listening = true));
  const [err] = await once(second, 'error').catch((e) => [e]);
  assert.equal(err.code, 'EADDRINUSE');
  assert.equal(err.syscall, 'listen');
  assert.equal(listening, false);
  second.close();
});

// --- clients ----------------------------------------------------------------------------

test('clientTracking: clients Set, removed on close', T, async (t) => {
  const wss = await startServer(t);
  assert.ok(wss.clients instanceof Set);
  assert.equal(wss.clients.size, 0);
  const { client: ws, server: peer } = await openClient(t, wss, Ws);
  assert.equal(wss.clients.size, 1);
  assert.ok(wss.clients.has(peer));
  const peerClosed = once(peer, 'close');
  ws.close();
  await peerClosed;
  assert.equal(wss.clients.size, 0);
});

test('clientTracking: false leaves clients undefined', T, async (t) => {
  const wss = new WebSocketServer({ host: HOST, port: 0, clientTracking: false });
  await once(wss, 'listening');
  // The server does not know its connection: it is terminated here, before the server closes
  // (close() waits for it).
  let peer = null;
  t.after(() => {
    if (peer) peer.terminate();
    return closeWss(wss);
  });
  assert.equal(wss.clients, undefined);
  const conn = once(wss, 'connection');
  const ws = client(t, urlOf(wss));
  await once(ws, 'open');
  [peer] = await conn;
  assert.equal(peer.readyState, WebSocket.OPEN);
  assert.ok(peer instanceof WebSocket);
});

test('path option: other paths get HTTP 400', T, async (t) => {
  const wss = await startServer(t, { path: '/foo' });
  const bad = new Ws(urlOf(wss, '/bar'));
  const r = await failure(bad);
  assert.equal(r.err.message, 'Unexpected server response: 400');

  const raw = await rawExchange(wss.address().port, handshake({ path: '/bar' }));
  assert.equal(raw, abortResponse(400, 'Bad Request'));

  const conn = once(wss, 'connection');
  const good = client(t, urlOf(wss, '/foo?x=1'));
  await once(good, 'open');
  const [, req] = await conn;
  assert.equal(req.url, '/foo?x=1');
});

test('verifyClient sync: false answers 401', T, async (t) => {
  const infos = [];
  const wss = await startServer(t, {
    verifyClient: (info) => {
      infos.push(info);
      return info.req.headers['x-allow'] === 'yes';
    }
  });
  const raw = await rawExchange(wss.address().port, handshake({ extra: 'Origin: http://o.test\r\n' }));
  assert.equal(raw, abortResponse(401, 'Unauthorized'));
  assert.equal(infos.length, 1);
  assert.equal(infos[0].origin, 'http://o.test');
  assert.equal(infos[0].secure, false);
  assert.equal(infos[0].req.headers.origin, 'http://o.test');

  const ws = client(t, urlOf(wss), { headers: { 'X-Allow': 'yes' } });
  await once(ws, 'open');
});

test('verifyClient async: custom code, message and headers reach the HTTP answer', T, async (t) => {
  const wss = await startServer(t, {
    verifyClient: (info, cb) => {
      setTimeout(() => {
        if (info.req.url === '/ok') cb(true);
        else cb(false, 403, 'Go away', { 'X-Reason': 'nope' });
      }, 20);
    }
  });
  const raw = await rawExchange(wss.address().port, handshake({ path: '/no' }));
  assert.equal(raw, abortResponse(403, 'Go away', 'X-Reason: nope\r\n'));

  // Without a code: 401.
  const ws401 = new Ws(urlOf(wss, '/no'));
  ws401.on('unexpected-response', (req, res) => {
    assert.equal(res.statusCode, 403);
    assert.equal(res.headers['x-reason'], 'nope');
    ws401.terminate();
  });
  await failure(ws401);

  const conn = once(wss, 'connection');
  const ws = client(t, urlOf(wss, '/ok'));
  await once(ws, 'open');
  await conn;
});

test('verifyClient async: cb(false) defaults to 401', T, async (t) => {
  const wss = await startServer(t, { verifyClient: (info, cb) => cb(false) });
  const raw = await rawExchange(wss.address().port, handshake());
  assert.equal(raw, abortResponse(401, 'Unauthorized'));
});

test('handleProtocols chooses the subprotocol', T, async (t) => {
  let seen;
  const wss = await startServer(t, {
    handleProtocols: (protocols, req) => {
      seen = { protocols: [...protocols], url: req.url };
      return 'b';
    }
  });
  const conn = once(wss, 'connection');
  const ws = client(t, urlOf(wss, '/p'), ['a', 'b', 'c']);
  await once(ws, 'open');
  const [peer] = await conn;
  assert.deepEqual(seen, { protocols: ['a', 'b', 'c'], url: '/p' });
  assert.equal(ws.protocol, 'b');
  assert.equal(peer.protocol, 'b');
});

test('without handleProtocols the first subprotocol is chosen', T, async (t) => {
  const wss = await startServer(t);
  const conn = once(wss, 'connection');
  const ws = client(t, urlOf(wss), ['x', 'y']);
  await once(ws, 'open');
  const [peer] = await conn;
  assert.equal(ws.protocol, 'x');
  assert.equal(peer.protocol, 'x');
});

test('handleProtocols returning false: no subprotocol header', T, async (t) => {
  const wss = await startServer(t, { handleProtocols: () => false });
  const port = wss.address().port;
  const raw = await rawConnect(t, port);
  const chunks = [];
  raw.on('data', (c) => chunks.push(c));
  const conn = once(wss, 'connection');
  raw.write(handshake({ extra: 'Sec-WebSocket-Protocol: a, b\r\n' }));
  const [peer] = await conn;
  assert.equal(peer.protocol, '');
  await waitFor(() => Buffer.concat(chunks).includes('\r\n\r\n'), { what: 'the whole 101 head' });
  const text = Buffer.concat(chunks).toString();
  assert.match(text, /^HTTP\/1\.1 101 Switching Protocols\r\n/);
  assert.doesNotMatch(text, /Sec-WebSocket-Protocol/i);
});

test('invalid Sec-WebSocket-Protocol header: 400', T, async (t) => {
  const wss = await startServer(t);
  const raw = await rawExchange(wss.address().port, handshake({ extra: 'Sec-WebSocket-Protocol: a,,b\r\n' }));
  assert.equal(raw, abortResponse(400, 'Invalid Sec-WebSocket-Protocol header'));
});

test('headers event: mutation adds a header the client sees', T, async (t) => {
  const wss = await startServer(t);
  const seen = [];
  wss.on('headers', (headers, req) => {
    seen.push([...headers]);
    assert.equal(req.url, '/h');
    headers.push('X-Added: yes');
    headers.push('Set-Cookie: a=b');
  });
  const ws = client(t, urlOf(wss, '/h'));
  const upgrade = once(ws, 'upgrade');
  const open = once(ws, 'open');
  const [res] = await upgrade;
  await open;
  assert.equal(res.headers['x-added'], 'yes');
  assert.deepEqual(res.headers['set-cookie'], ['a=b']);
  assert.equal(seen.length, 1);
  assert.equal(seen[0][0], 'HTTP/1.1 101 Switching Protocols');
  assert.equal(seen[0][1], 'Upgrade: websocket');
  assert.equal(seen[0][2], 'Connection: Upgrade');
  assert.match(seen[0][3], /^Sec-WebSocket-Accept: /);
});

test('the 101 answer has the right Sec-WebSocket-Accept', T, async (t) => {
  const wss = await startServer(t);
  const key = crypto.randomBytes(16).toString('base64');
  const accept = acceptKey(key);
  const raw = await rawConnect(t, wss.address().port);
  const chunks = [];
  raw.on('data', (c) => chunks.push(c));
  const conn = once(wss, 'connection');
  raw.write(handshake({ key }));
  await conn;
  await waitFor(() => Buffer.concat(chunks).includes('\r\n\r\n'), { what: 'the whole 101 head' });
  assert.equal(
    Buffer.concat(chunks).toString(),
    'HTTP/1.1 101 Switching Protocols\r\n' +
      'Upgrade: websocket\r\n' +
      'Connection: Upgrade\r\n' +
      `Sec-WebSocket-Accept: ${accept}\r\n\r\n`
  );
});

// --- bad handshakes ---------------------------------------------------------------------

test('wsClientError: bad Sec-WebSocket-Version', T, async (t) => {
  const wss = await startServer(t);
  let connections = 0;
  wss.on('connection', () => connections++);
  const got = new Promise((resolve) => {
    wss.on('wsClientError', (err, socket, req) => {
      resolve({ err, req });
      socket.end('HTTP/1.1 400 Bad Request\r\nX-Custom: 1\r\n\r\n');
    });
  });
  const raw = rawExchange(wss.address().port, handshake({ version: '12' }));
  const { err, req } = await got;
  assert.ok(err instanceof Error);
  assert.equal(err.message, 'Missing or invalid Sec-WebSocket-Version header');
  assert.equal(req.headers['sec-websocket-version'], '12');
  assert.equal(req.method, 'GET');
  assert.equal(await raw, 'HTTP/1.1 400 Bad Request\r\nX-Custom: 1\r\n\r\n');
  assert.equal(connections, 0);
});

test('wsClientError: invalid method', T, async (t) => {
  const wss = await startServer(t);
  const got = new Promise((resolve) => {
    wss.on('wsClientError', (err, socket) => {
      resolve(err);
      socket.destroy();
    });
  });
  const raw = rawExchange(wss.address().port, handshake({ method: 'POST' }));
  assert.equal((await got).message, 'Invalid HTTP method');
  assert.equal(await raw, '');
});

test('non-upgrade GET gets 426 Upgrade Required', T, async (t) => {
  const wss = await startServer(t);
  const res = await new Promise((resolve, reject) => {
    http.get({ host: HOST, port: wss.address().port, path: '/', agent: false }, resolve).on('error', reject);
  });
  let body = '';
  res.setEncoding('utf8');
  for await (const chunk of res) body += chunk;
  assert.equal(res.statusCode, 426);
  assert.equal(res.headers['content-type'], 'text/plain');
  assert.equal(res.headers['content-length'], '16');
  assert.equal(body, 'Upgrade Required');
});

test('POST upgrade: 405 Invalid HTTP method', T, async (t) => {
  const wss = await startServer(t);
  const raw = await rawExchange(wss.address().port, handshake({ method: 'POST' }));
  assert.equal(raw, abortResponse(405, 'Invalid HTTP method'));
});

test('bad Upgrade header: 400 Invalid Upgrade header', T, async (t) => {
  const wss = await startServer(t);
  const raw = await rawExchange(wss.address().port, handshake({ upgrade: 'foo' }));
  assert.equal(raw, abortResponse(400, 'Invalid Upgrade header'));
});

test('missing/invalid Sec-WebSocket-Key: 400', T, async (t) => {
  const wss = await startServer(t);
  const port = wss.address().port;
  const expected = abortResponse(400, 'Missing or invalid Sec-WebSocket-Key header');
  assert.equal(await rawExchange(port, handshake({ key: null })), expected);
  assert.equal(await rawExchange(port, handshake({ key: 'abc' })), expected);
});

test('missing/invalid Sec-WebSocket-Version: 400 with Sec-WebSocket-Version: 13, 8', T, async (t) => {
  const wss = await startServer(t);
  const port = wss.address().port;
  const expected = abortResponse(
    400,
    'Missing or invalid Sec-WebSocket-Version header',
    'Sec-WebSocket-Version: 13, 8\r\n'
  );
  assert.equal(await rawExchange(port, handshake({ version: '12' })), expected);
  assert.equal(await rawExchange(port, handshake({ version: null })), expected);
});

test('protocol version 8 is accepted', T, async (t) => {
  const wss = await startServer(t);
  const { req } = await openClient(t, wss, Ws, { protocolVersion: 8 });
  assert.equal(req.headers['sec-websocket-version'], '8');
});

// --- the request ------------------------------------------------------------------------

test('req fields: headers, rawHeaders, url, method, httpVersion, socket address', T, async (t) => {
  const wss = await startServer(t);
  const conn = once(wss, 'connection');
  const raw = await rawConnect(t, wss.address().port);
  const key = crypto.randomBytes(16).toString('base64');
  raw.write(
    `GET /some/path?q=1&r=2 HTTP/1.1\r\nHost: ${HOST}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n` +
      `Sec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\nX-Multi: a\r\nX-Multi: b\r\n\r\n`
  );
  const [peer, req] = await conn;
  assert.equal(req.method, 'GET');
  assert.equal(req.url, '/some/path?q=1&r=2');
  assert.equal(req.httpVersion, '1.1');
  assert.equal(req.headers.host, HOST);
  assert.equal(req.headers.upgrade, 'websocket');
  assert.equal(req.headers['sec-websocket-key'], key);
  assert.equal(req.headers['x-multi'], 'a, b');
  assert.deepEqual(req.rawHeaders, [
    'Host', HOST,
    'Connection', 'Upgrade',
    'Upgrade', 'websocket',
    'Sec-WebSocket-Key', key,
    'Sec-WebSocket-Version', '13',
    'X-Multi', 'a',
    'X-Multi', 'b'
  ]);
  assert.equal(req.socket.remoteAddress, HOST);
  assert.equal(req.socket.remotePort, raw.localPort);
  assert.equal(req.socket.remoteFamily, 'IPv4');
  assert.equal(req.socket.localAddress, HOST);
  assert.equal(req.socket.localPort, wss.address().port);
  assert.equal(req.httpVersionMajor, 1);
  assert.equal(req.httpVersionMinor, 1);
  assert.equal(req.complete, true);
  assert.equal(req.upgrade, true);
  assert.equal(req.aborted, false);
  assert.equal(peer.url, undefined);

  // The next request's method, path and addresses are read afresh (the same length, one byte
  // apart), not taken from the first.
  const second = once(wss, 'connection');
  const raw2 = await rawConnect(t, wss.address().port);
  raw2.write(
    `GET /some/path?q=1&r=3 HTTP/1.1\r\nHost: ${HOST}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n` +
      `Sec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`
  );
  const [, req2] = await second;
  assert.equal(req2.url, '/some/path?q=1&r=3');
  assert.equal(req2.method, 'GET');
  assert.equal(req2.socket.remotePort, raw2.localPort);
  assert.deepEqual(req2.rawHeaders.slice(0, 2), ['Host', HOST]);
  assert.equal(req.url, '/some/path?q=1&r=2');
});

// --- close ------------------------------------------------------------------------------

test('close(cb): existing clients stay connected; cb after they close', T, async (t) => {
  const wss = new WebSocketServer({ host: HOST, port: 0 });
  await once(wss, 'listening');
  echoBack(wss);
  const url = urlOf(wss);
  const ws = new Ws(url);
  t.after(() => ws.terminate());
  await once(ws, 'open');

  let closeCalled = false;
  let closeArgs;
  const closed = new Promise((resolve) =>
    wss.close((...args) => {
      closeCalled = true;
      closeArgs = args;
      resolve();
    })
  );
  // The callback must not be called in this time: a client is still connected.
  await quietPeriod(50);
  assert.equal(closeCalled, false, 'not called while a client is connected');
  assert.equal(ws.readyState, Ws.OPEN);
  ws.send('still here');
  const [data] = await once(ws, 'message');
  assert.equal(data.toString(), 'still here');

  // New connections are refused.
  const late = new Ws(url);
  const lr = await failure(late);
  assert.equal(lr.err.code, 'ECONNREFUSED');

  ws.close();
  await closed;
  assert.deepEqual(closeArgs.filter((a) => a !== undefined), []);

  // Already closed: the callback gets an error.
  const err = await new Promise((resolve) => wss.close(resolve));
  assert.ok(err instanceof Error);
  assert.equal(err.message, 'The server is not running');
});

test('close event is emitted once the server is closed', T, async (t) => {
  const wss = new WebSocketServer({ host: HOST, port: 0 });
  await once(wss, 'listening');
  const events = [];
  wss.on('close', () => events.push('close'));
  await new Promise((resolve) => wss.close(resolve));
  assert.deepEqual(events, ['close']);
});

// --- connection options -----------------------------------------------------------------

test('autoPong: false', T, async (t) => {
  const wss = await startServer(t, { autoPong: false });
  const { client: ws, server: peer } = await openClient(t, wss, Ws);
  let pongs = 0;
  ws.on('pong', () => pongs++);
  const ping = once(peer, 'ping');
  ws.ping('hello');
  const [data] = await ping;
  assert.equal(data.toString(), 'hello');
  // No pong may reach the client in this time.
  await quietPeriod(200);
  assert.equal(pongs, 0);

  // The application can answer itself.
  const pong = once(ws, 'pong');
  peer.pong('manual');
  assert.equal((await pong)[0].toString(), 'manual');
});

test('autoPong default answers pings with the same payload', T, async (t) => {
  const wss = await startServer(t);
  const { client: ws, server: peer } = await openClient(t, wss, Ws);
  const ping = once(peer, 'ping');
  const pong = once(ws, 'pong');
  ws.ping('abc');
  assert.equal((await ping)[0].toString(), 'abc');
  assert.equal((await pong)[0].toString(), 'abc');
});

test('maxPayload: an oversize message closes with 1009', T, async (t) => {
  const wss = await startServer(t, { maxPayload: 16 });
  const { client: ws, server: peer } = await openClient(t, wss, Ws);
  const peerEvents = failure(peer);
  const clientClosed = once(ws, 'close');
  const received = [];
  peer.on('message', (d) => received.push(d.toString()));
  ws.send('a'.repeat(16));
  await waitFor(() => received.length >= 1, { what: 'the 16-byte message' });
  assert.deepEqual(received, ['a'.repeat(16)]);
  ws.send('b'.repeat(17));
  const r = await peerEvents;
  assert.deepEqual(r.events, ['error', 'close']);
  assert.ok(r.err instanceof RangeError);
  assert.equal(r.err.code, 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH');
  assert.equal(r.err.message, 'Max payload size exceeded');
  const [code] = await clientClosed;
  assert.equal(code, 1009);
  assert.deepEqual(received, ['a'.repeat(16)]);
});

test('connection event: ws is OPEN and can exchange messages', T, async (t) => {
  const wss = await startServer(t);
  wss.on('connection', (peer, req) => {
    assert.equal(peer.readyState, WebSocket.OPEN);
    assert.equal(peer.protocol, '');
    assert.equal(peer.extensions, '');
    peer.send(`hello ${req.url}`);
  });
  const ws = client(t, urlOf(wss, '/greet'));
  const [data] = await once(ws, 'message');
  assert.equal(data.toString(), 'hello /greet');
});

test('terminate() in the connection handler still ends with a close event (accept and terminate in one tick)', T, async (t) => {
  const wss = await startServer(t);
  const N = 100;
  let closed = 0;
  const allClosed = new Promise((resolve) => {
    wss.on('connection', (peer) => {
      peer.on('close', (code) => {
        assert.equal(code, 1006);
        if (++closed === N) resolve();
      });
      peer.terminate();
    });
  });
  const clients = [];
  for (let i = 0; i < N; i++) {
    const ws = new Ws(urlOf(wss));
    ws.on('error', () => {});
    clients.push(ws);
  }
  t.after(() => clients.forEach((c) => c.terminate()));
  await allClosed;
  assert.equal(wss.clients.size, 0);
});
