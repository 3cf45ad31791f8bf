'use strict';

// The WebSocket client of ws-native, checked against the behaviour of the `ws` package.
// Peers are real `ws` servers (or plain http/net servers) so that only the client is tested.
// Run with WS_IMPL=ws to check the expectations against the real ws client.

const { test } = require('node:test');
const assert = require('node:assert/strict');
const { once } = require('node:events');
const fs = require('node:fs');
const http = require('node:http');
const os = require('node:os');
const path = require('node:path');

const WebSocket = require(process.env.WS_IMPL === 'ws' ? 'ws' : path.join(__dirname, '..'));
const Ws = require('ws');
const { closeAfter, echoBack, failure, freePort, netServer, openClient, quietPeriod, startWss, urlOf, waitFor } = require('./helpers');

const HOST = '127.0.0.1';
const T = { timeout: 10000 };

/** A real `ws` server on 127.0.0.1:0, closed (with its clients) after the test. */
const wsServer = (t, options) => startWss(t, Ws.WebSocketServer, options);

/** A plain http server on 127.0.0.1:0, closed after the test. */
async function httpServer(t, handler) {
  const server = http.createServer(handler);
  const sockets = new Set();
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  server.listen(0, HOST);
  await once(server, 'listening');
  t.after(
    () =>
      new Promise((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      })
  );
  return server;
}

/** A `ws` server on a unix socket in a temporary directory, removed with it after the test. */
async function unixServer(t) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ws-native-'));
  const socketPath = path.join(dir, 'sock');
  const server = http.createServer();
  const wss = new Ws.WebSocketServer({ server });
  server.listen(socketPath);
  await once(server, 'listening');
  t.after(
    () =>
      new Promise((resolve) => {
        for (const c of wss.clients) c.terminate();
        wss.close();
        server.close(() => {
          fs.rmSync(dir, { recursive: true, force: true });
          resolve();
        });
      })
  );
  return { wss, socketPath };
}

/** Opens a ws-native client to a `ws` server and resolves with both ends. */
async function connectPair(t, options = {}, serverOptions = {}) {
  const wss = await wsServer(t, serverOptions);
  const { client: ws, server: peer, req } = await openClient(t, wss, WebSocket, options);
  return { wss, ws, peer, req };
}

// --- constructor validation -------------------------------------------------------------

test('invalid URL throws SyntaxError "Invalid URL: x"', T, () => {
  assert.throws(() => new WebSocket('x'), { name: 'SyntaxError', message: 'Invalid URL: x' });
  assert.throws(() => new WebSocket('foo bar'), {
    name: 'SyntaxError',
    message: 'Invalid URL: foo bar'
  });
});

test('unsupported URL scheme throws SyntaxError', T, () => {
  const message =
    'The URL\'s protocol must be one of "ws:", "wss:", "http:", "https:", or "ws+unix:"';
  assert.throws(() => new WebSocket('ftp://localhost'), { name: 'SyntaxError', message });
  assert.throws(() => new WebSocket(new URL('file:///tmp/x')), { name: 'SyntaxError', message });
});

test('URL with a fragment identifier throws SyntaxError', T, () => {
  assert.throws(() => new WebSocket('ws://localhost/#frag'), {
    name: 'SyntaxError',
    message: 'The URL contains a fragment identifier'
  });
});

test('ws+unix: URL with an empty pathname throws SyntaxError', T, () => {
  assert.throws(() => new WebSocket('ws+unix:'), {
    name: 'SyntaxError',
    message: "The URL's pathname is empty"
  });
});

test('invalid or duplicated subprotocols throw SyntaxError', T, () => {
  const expected = {
    name: 'SyntaxError',
    message: 'An invalid or duplicated subprotocol was specified'
  };
  assert.throws(() => new WebSocket('ws://localhost', ['']), expected);
  assert.throws(() => new WebSocket('ws://localhost', 'a b'), expected);
  assert.throws(() => new WebSocket('ws://localhost', ['foo', 'bar', 'foo']), expected);
  assert.throws(() => new WebSocket('ws://localhost', ['a,b']), expected);
});

test('unsupported protocolVersion throws RangeError', T, () => {
  assert.throws(() => new WebSocket('ws://localhost', { protocolVersion: 1000 }), {
    name: 'RangeError',
    message: 'Unsupported protocol version: 1000 (supported versions: 8, 13)'
  });
});

test('http: URLs are converted to ws: (url property)', T, async (t) => {
  const wss = await wsServer(t);
  const ws = closeAfter(t, new WebSocket(`http://${HOST}:${wss.address().port}/a?b=c`));
  assert.equal(ws.url, `ws://${HOST}:${wss.address().port}/a?b=c`);
  await once(ws, 'open');
});

// --- readyState / constants -------------------------------------------------------------

test('readyState constants on the class and instances, read-only', T, async (t) => {
  const states = { CONNECTING: 0, OPEN: 1, CLOSING: 2, CLOSED: 3 };
  for (const [name, value] of Object.entries(states)) {
    assert.equal(WebSocket[name], value);
    assert.equal(WebSocket.prototype[name], value);
    assert.throws(() => {
      WebSocket[name] = 42;
    }, TypeError);
    assert.equal(WebSocket[name], value);
  }

  const wss = await wsServer(t);
  const ws = closeAfter(t, new WebSocket(urlOf(wss)));
  for (const [name, value] of Object.entries(states)) {
    assert.equal(ws[name], value);
    assert.throws(() => {
      ws[name] = 42;
    }, TypeError);
    assert.equal(ws[name], value);
  }
  assert.equal(ws.readyState, WebSocket.CONNECTING);
  assert.throws(() => {
    ws.readyState = 3;
  }, TypeError);
  assert.equal(ws.readyState, WebSocket.CONNECTING);
  await once(ws, 'open');
  assert.equal(ws.readyState, WebSocket.OPEN);
  ws.close();
  assert.equal(ws.readyState, WebSocket.CLOSING);
  await once(ws, 'close');
  assert.equal(ws.readyState, WebSocket.CLOSED);
});

// --- sending in the wrong state, argument checks ----------------------------------------

test('send() before open throws "WebSocket is not open: readyState 0 (CONNECTING)"', T, async (t) => {
  const wss = await wsServer(t);
  const ws = closeAfter(t, new WebSocket(urlOf(wss)));
  const expected = { name: 'Error', message: 'WebSocket is not open: readyState 0 (CONNECTING)' };
  assert.throws(() => ws.send('hi'), expected);
  assert.throws(() => ws.ping(), expected);
  assert.throws(() => ws.pong(), expected);
  await once(ws, 'open');
});

test('send() after close calls the callback with an error and grows bufferedAmount', T, async (t) => {
  const { ws } = await connectPair(t);
  ws.close();
  await once(ws, 'close');
  assert.equal(ws.bufferedAmount, 0);

  let sync = true;
  const err = await new Promise((resolve) => {
    ws.send('abc', resolve);
    sync = false;
  });
  assert.equal(sync, false, 'the callback is called asynchronously');
  assert.ok(err instanceof Error);
  assert.equal(err.message, 'WebSocket is not open: readyState 3 (CLOSED)');
  assert.equal(ws.bufferedAmount, 3);

  // Without a callback nothing is thrown.
  ws.send(Buffer.alloc(10));
  assert.equal(ws.bufferedAmount, 13);

  const pingErr = await new Promise((resolve) => ws.ping('x', resolve));
  assert.equal(pingErr.message, 'WebSocket is not open: readyState 3 (CLOSED)');
});

test('send() while closing calls the callback with a CLOSING error', T, async (t) => {
  const { ws } = await connectPair(t);
  ws.close();
  const err = await new Promise((resolve) => ws.send('x', resolve));
  assert.equal(err.message, 'WebSocket is not open: readyState 2 (CLOSING)');
  await once(ws, 'close');
});

test('close() with an invalid code throws TypeError', T, async (t) => {
  const { ws } = await connectPair(t);
  const expected = {
    name: 'TypeError',
    message: 'First argument must be a valid error code number'
  };
  for (const code of [999, 1004, 1005, 1006, 1015, 2000, 5000, '1000']) {
    assert.throws(() => ws.close(code), expected, `code ${code}`);
  }
  assert.equal(ws.readyState, WebSocket.OPEN);
});

test('close() with a reason longer than 123 bytes throws RangeError', T, async (t) => {
  const { ws } = await connectPair(t);
  assert.throws(() => ws.close(1000, 'a'.repeat(124)), {
    name: 'RangeError',
    message: 'The message must not be greater than 123 bytes'
  });
  // 62 two-byte characters = 124 bytes.
  assert.throws(() => ws.close(1000, 'é'.repeat(62)), RangeError);
  assert.equal(ws.readyState, WebSocket.OPEN);
  ws.close(1000, 'a'.repeat(123));
  const [code, reason] = await once(ws, 'close');
  assert.equal(code, 1000);
  assert.equal(reason.toString(), 'a'.repeat(123));
});

test('ping()/pong() with more than 125 bytes throw RangeError', T, async (t) => {
  const { ws } = await connectPair(t);
  const expected = {
    name: 'RangeError',
    message: 'The data size must not be greater than 125 bytes'
  };
  assert.throws(() => ws.ping(Buffer.alloc(126)), expected);
  assert.throws(() => ws.pong('a'.repeat(126)), expected);
  ws.ping(Buffer.alloc(125));
});

// --- connection failures ----------------------------------------------------------------

test('connection refused emits error ECONNREFUSED then close 1006', T, async (t) => {
  const port = await freePort();
  const ws = new WebSocket(`ws://${HOST}:${port}`);
  const r = await failure(ws);
  assert.deepEqual(r.events, ['error', 'close']);
  assert.equal(r.err.code, 'ECONNREFUSED');
  assert.equal(r.stateAtError, WebSocket.CLOSING);
  assert.equal(r.code, 1006);
  assert.equal(r.reason.length, 0);
  assert.equal(ws.readyState, WebSocket.CLOSED);
});

test('handshakeTimeout: "Opening handshake has timed out" against a silent server', T, async (t) => {
  let gotRequest = false;
  const server = await netServer(t, (s) => s.on('data', () => (gotRequest = true)));
  const started = Date.now();
  const ws = new WebSocket(urlOf(server), { handshakeTimeout: 200 });
  const r = await failure(ws);
  assert.deepEqual(r.events, ['error', 'close']);
  assert.equal(r.err.message, 'Opening handshake has timed out');
  assert.equal(r.code, 1006);
  assert.ok(gotRequest, 'the server got the request');
  assert.ok(Date.now() - started >= 150, 'not before the timeout');
});

test('close() and terminate() before open abort the handshake', T, async (t) => {
  const server = await netServer(t);
  for (const method of ['close', 'terminate']) {
    const ws = new WebSocket(urlOf(server));
    ws[method]();
    assert.equal(ws.readyState, WebSocket.CLOSING);
    const r = await failure(ws);
    assert.deepEqual(r.events, ['error', 'close']);
    assert.equal(r.err.message, 'WebSocket was closed before the connection was established');
    assert.equal(r.code, 1006);
  }
});

// --- IPC --------------------------------------------------------------------------------

test('ws+unix: connects over a unix socket to a ws server', T, async (t) => {
  const { wss, socketPath } = await unixServer(t);
  echoBack(wss);
  const serverSide = once(wss, 'connection');
  const ws = closeAfter(t, new WebSocket(`ws+unix:${socketPath}:/some/path?q=1`));
  await once(ws, 'open');
  const [, req] = await serverSide;
  assert.equal(req.url, '/some/path?q=1');
  assert.equal(req.headers.host, 'localhost');
  ws.send('over ipc');
  const [data, isBinary] = await once(ws, 'message');
  assert.equal(isBinary, false);
  assert.equal(data.toString(), 'over ipc');
  ws.close(1000, 'bye');
  const [code, reason] = await once(ws, 'close');
  assert.equal(code, 1000);
  assert.equal(reason.toString(), 'bye');
});

test('ws+unix: without a request path uses "/"', T, async (t) => {
  const { wss, socketPath } = await unixServer(t);
  const serverSide = once(wss, 'connection');
  const ws = closeAfter(t, new WebSocket(`ws+unix:${socketPath}`));
  await once(ws, 'open');
  const [, req] = await serverSide;
  assert.equal(req.url, '/');
});

// --- binaryType -------------------------------------------------------------------------

test('binaryType: nodebuffer (default), arraybuffer, fragments, blob; invalid ignored', T, async (t) => {
  const { ws, peer } = await connectPair(t);
  assert.equal(ws.binaryType, 'nodebuffer');
  ws.binaryType = 'foo';
  assert.equal(ws.binaryType, 'nodebuffer');

  const payload = Buffer.from([1, 2, 3, 4, 5]);
  const receive = async () => {
    const p = once(ws, 'message');
    peer.send(payload);
    const [data, isBinary] = await p;
    assert.equal(isBinary, true);
    return data;
  };

  let data = await receive();
  assert.ok(Buffer.isBuffer(data));
  assert.deepEqual(data, payload);

  ws.binaryType = 'arraybuffer';
  assert.equal(ws.binaryType, 'arraybuffer');
  data = await receive();
  assert.ok(data instanceof ArrayBuffer);
  assert.deepEqual(Buffer.from(data), payload);

  ws.binaryType = 'fragments';
  assert.equal(ws.binaryType, 'fragments');
  data = await receive();
  assert.ok(Array.isArray(data));
  assert.deepEqual(Buffer.concat(data), payload);

  ws.binaryType = 'blob';
  assert.equal(ws.binaryType, 'blob');
  data = await receive();
  assert.ok(data instanceof Blob);
  assert.deepEqual(Buffer.from(await data.arrayBuffer()), payload);

  // Text messages are Buffers (isBinary false) whatever the binaryType.
  const p = once(ws, 'message');
  peer.send('text');
  const [text, isBinary] = await p;
  assert.equal(isBinary, false);
  assert.ok(Buffer.isBuffer(text));
  assert.equal(text.toString(), 'text');
});

test('binaryType fragments: a fragmented message arrives as its fragments', T, async (t) => {
  const { ws, peer } = await connectPair(t);
  ws.binaryType = 'fragments';
  const p = once(ws, 'message');
  peer.send(Buffer.from('ab'), { fin: false });
  peer.send(Buffer.from('cd'), { fin: true });
  const [data] = await p;
  assert.ok(Array.isArray(data));
  assert.equal(Buffer.concat(data).toString(), 'abcd');
  assert.equal(data.length, 2);
});

// --- handshake options ------------------------------------------------------------------

test('headers and origin options reach the server', T, async (t) => {
  const { req } = await connectPair(t, {
    headers: { 'X-Custom': 'hello', Cookie: 'a=b' },
    origin: 'https://example.com'
  });
  assert.equal(req.headers['x-custom'], 'hello');
  assert.equal(req.headers.cookie, 'a=b');
  assert.equal(req.headers.origin, 'https://example.com');
  assert.equal(req.headers['sec-websocket-version'], '13');
  assert.equal(req.headers.upgrade, 'websocket');
});

test('protocolVersion 8 sends Sec-WebSocket-Origin', T, async (t) => {
  const { req } = await connectPair(t, { protocolVersion: 8, origin: 'http://o.example' });
  assert.equal(req.headers['sec-websocket-version'], '8');
  assert.equal(req.headers['sec-websocket-origin'], 'http://o.example');
  assert.equal(req.headers.origin, undefined);
});

test('subprotocol negotiation', T, async (t) => {
  const wss = await wsServer(t, {
    handleProtocols: (protocols) => {
      assert.deepEqual([...protocols], ['foo', 'bar']);
      return 'bar';
    }
  });
  const serverSide = once(wss, 'connection');
  const ws = closeAfter(t, new WebSocket(urlOf(wss), ['foo', 'bar']));
  assert.equal(ws.protocol, '');
  await once(ws, 'open');
  const [peer, req] = await serverSide;
  assert.equal(req.headers['sec-websocket-protocol'], 'foo,bar');
  assert.equal(ws.protocol, 'bar');
  assert.equal(peer.protocol, 'bar');
});

test('a single string subprotocol is sent', T, async (t) => {
  const wss = await wsServer(t);
  const ws = closeAfter(t, new WebSocket(urlOf(wss), 'chat'));
  await once(ws, 'open');
  assert.equal(ws.protocol, 'chat');
});

test('server choosing no subprotocol: error "Server sent no subprotocol"', T, async (t) => {
  const wss = await wsServer(t, { handleProtocols: () => false });
  const ws = new WebSocket(urlOf(wss), ['foo']);
  const r = await failure(ws);
  assert.deepEqual(r.events, ['error', 'close']);
  assert.equal(r.err.message, 'Server sent no subprotocol');
  assert.equal(r.code, 1006);
});

test('the upgrade event gets the 101 response', T, async (t) => {
  const wss = await wsServer(t);
  wss.on('headers', (headers) => headers.push('X-Extra: 1'));
  const ws = closeAfter(t, new WebSocket(urlOf(wss)));
  const events = [];
  ws.on('upgrade', () => events.push('upgrade'));
  const upgrade = once(ws, 'upgrade');
  const open = once(ws, 'open');
  const [res] = await upgrade;
  await open;
  events.push('open');
  assert.deepEqual(events, ['upgrade', 'open']);
  assert.equal(res.statusCode, 101);
  assert.equal(res.headers['x-extra'], '1');
  assert.equal(res.headers.upgrade, 'websocket');
});

// --- redirects / unexpected responses ---------------------------------------------------

test('followRedirects follows a 302 and emits redirect', T, async (t) => {
  const wss = await wsServer(t);
  const target = urlOf(wss, '/target');
  const redirector = await httpServer(t, (req, res) => {
    res.writeHead(302, { Location: target });
    res.end();
  });
  // Upgrade requests come as 'upgrade' events on an http server.
  redirector.on('upgrade', (req, socket) => {
    socket.end(`HTTP/1.1 302 Found\r\nLocation: ${target}\r\nContent-Length: 0\r\n\r\n`);
  });

  const serverSide = once(wss, 'connection');
  const ws = closeAfter(t, new WebSocket(urlOf(redirector, '/start'), { followRedirects: true }));
  const redirects = [];
  ws.on('redirect', (url, req) => {
    redirects.push(url);
    assert.equal(typeof req, 'object');
  });
  await once(ws, 'open');
  const [, req] = await serverSide;
  assert.deepEqual(redirects, [target]);
  assert.equal(req.url, '/target');
  assert.equal(ws.url, target);
});

test('followRedirects: relative Location', T, async (t) => {
  const wss = await wsServer(t);
  const redirector = await httpServer(t);
  redirector.on('upgrade', (req, socket) => {
    socket.end(
      `HTTP/1.1 301 Moved Permanently\r\nLocation: ws://${HOST}:${wss.address().port}/abs\r\n` +
        'Content-Length: 0\r\n\r\n'
    );
  });
  const ws = closeAfter(t, new WebSocket(urlOf(redirector), { followRedirects: true }));
  await once(ws, 'open');
  assert.equal(ws.url, urlOf(wss, '/abs'));
});

test('maxRedirects exceeded: "Maximum redirects exceeded"', T, async (t) => {
  let count = 0;
  const redirector = await httpServer(t);
  redirector.on('upgrade', (req, socket) => {
    count++;
    socket.end(`HTTP/1.1 302 Found\r\nLocation: ${urlOf(redirector, '/again')}\r\nContent-Length: 0\r\n\r\n`);
  });
  const ws = new WebSocket(urlOf(redirector), { followRedirects: true, maxRedirects: 2 });
  const redirects = [];
  ws.on('redirect', (url) => redirects.push(url));
  const r = await failure(ws);
  assert.deepEqual(r.events, ['error', 'close']);
  assert.equal(r.err.message, 'Maximum redirects exceeded');
  assert.equal(r.code, 1006);
  assert.equal(redirects.length, 2);
  assert.equal(count, 3);
});

test('without followRedirects a 302 is an unexpected response', T, async (t) => {
  const redirector = await httpServer(t);
  redirector.on('upgrade', (req, socket) => {
    socket.end(`HTTP/1.1 302 Found\r\nLocation: ${urlOf(redirector, '/x')}\r\nContent-Length: 0\r\n\r\n`);
  });
  const ws = new WebSocket(urlOf(redirector));
  const r = await failure(ws);
  assert.deepEqual(r.events, ['error', 'close']);
  assert.equal(r.err.message, 'Unexpected server response: 302');
  assert.equal(r.code, 1006);
});

test('403 without an unexpected-response listener: error then close 1006', T, async (t) => {
  const server = await httpServer(t);
  server.on('upgrade', (req, socket) => {
    socket.end('HTTP/1.1 403 Forbidden\r\nContent-Length: 4\r\n\r\nnope');
  });
  const ws = new WebSocket(urlOf(server));
  const r = await failure(ws);
  assert.deepEqual(r.events, ['error', 'close']);
  assert.equal(r.err.message, 'Unexpected server response: 403');
  assert.equal(r.code, 1006);
});

test('unexpected-response gets the request and the 403 response', T, async (t) => {
  const server = await httpServer(t);
  server.on('upgrade', (req, socket) => {
    socket.end('HTTP/1.1 403 Forbidden\r\nX-Why: because\r\nContent-Length: 4\r\n\r\nnope');
  });
  const ws = new WebSocket(urlOf(server, '/denied'));
  const [req, res] = await once(ws, 'unexpected-response');
  assert.equal(res.statusCode, 403);
  assert.equal(res.statusMessage, 'Forbidden');
  assert.equal(res.headers['x-why'], 'because');
  assert.equal(req.method, 'GET');
  assert.equal(req.path, '/denied');
});

test('unexpected-response listener: no close until the user aborts, then terminate() emits error and close', T, async (t) => {
  const server = await httpServer(t);
  server.on('upgrade', (req, socket) => {
    socket.end('HTTP/1.1 403 Forbidden\r\nContent-Length: 4\r\n\r\nnope');
  });
  const ws = new WebSocket(urlOf(server));
  const r = failure(ws);
  let closedAlone = false;
  r.then(() => (closedAlone = true));
  await once(ws, 'unexpected-response');
  // With a listener the user decides: neither 'error' nor 'close' may come in this time.
  await quietPeriod(100);
  assert.equal(closedAlone, false, 'no close on its own');
  assert.equal(ws.readyState, WebSocket.CONNECTING);
  ws.terminate();
  const { events, err, code } = await r;
  assert.deepEqual(events, ['error', 'close']);
  assert.equal(err.message, 'WebSocket was closed before the connection was established');
  assert.equal(code, 1006);
});

test('unexpected-response: the response body can be read', T, async (t) => {
  const server = await httpServer(t);
  server.on('upgrade', (req, socket) => {
    socket.end('HTTP/1.1 403 Forbidden\r\nContent-Length: 4\r\n\r\nnope');
  });
  const ws = new WebSocket(urlOf(server));
  const r = failure(ws);
  const [, res] = await once(ws, 'unexpected-response');
  const chunks = [];
  for await (const chunk of res) chunks.push(chunk);
  assert.equal(Buffer.concat(chunks).toString(), 'nope');
  ws.terminate();
  await r;
});

// --- EventTarget API --------------------------------------------------------------------

test('onopen/onmessage/onclose: MessageEvent.data is a string for text', T, async (t) => {
  const wss = await wsServer(t);
  wss.on('connection', (peer) => {
    peer.send('hello');
    peer.send(Buffer.from([1, 2]));
    peer.on('message', () => peer.close(4000, 'done'));
  });
  const ws = closeAfter(t, new WebSocket(urlOf(wss)));
  assert.equal(ws.onopen, null);
  assert.equal(ws.onmessage, null);
  const events = [];
  const done = new Promise((resolve) => {
    ws.onopen = (ev) => {
      events.push(['open', ev.type, ev.target === ws]);
    };
    ws.onmessage = (ev) => {
      events.push(['message', ev.type, ev.data]);
      if (events.filter((e) => e[0] === 'message').length === 2) ws.send('ok');
    };
    ws.onclose = (ev) => {
      events.push(['close', ev.type, ev.code, ev.reason, ev.wasClean]);
      resolve();
    };
    ws.onerror = (ev) => events.push(['error', ev.message]);
  });
  assert.equal(typeof ws.onopen, 'function');
  await done;
  assert.deepEqual(events, [
    ['open', 'open', true],
    ['message', 'message', 'hello'],
    ['message', 'message', Buffer.from([1, 2])],
    ['close', 'close', 4000, 'done', true]
  ]);
});

test('onerror gets an ErrorEvent', T, async (t) => {
  const port = await freePort();
  const ws = new WebSocket(`ws://${HOST}:${port}`);
  const events = [];
  await new Promise((resolve) => {
    ws.onerror = (ev) => events.push(ev);
    ws.onclose = (ev) => {
      events.push(ev);
      resolve();
    };
  });
  assert.equal(events.length, 2);
  const [ev, closeEv] = events;
  assert.equal(ev.type, 'error');
  assert.equal(ev.error.code, 'ECONNREFUSED');
  assert.equal(ev.message, ev.error.message);
  assert.equal(closeEv.type, 'close');
  assert.equal(closeEv.code, 1006);
  assert.equal(closeEv.wasClean, false);
});

test('setting an on<event> attribute replaces the previous handler', T, async (t) => {
  const { ws, peer } = await connectPair(t);
  const got = [];
  ws.onmessage = () => got.push('first');
  ws.onmessage = () => got.push('second');
  assert.equal(ws.listenerCount('message'), 1);
  const p = once(ws, 'message');
  peer.send('x');
  await p;
  assert.deepEqual(got, ['second']);
  ws.onmessage = null;
  assert.equal(ws.onmessage, null);
  assert.equal(ws.listenerCount('message'), 0);
});

test('addEventListener: once option, handler objects, removeEventListener', T, async (t) => {
  const { ws, peer } = await connectPair(t);
  const got = [];
  ws.addEventListener('message', (ev) => got.push(['once', ev.data]), { once: true });
  const handler = {
    handleEvent(ev) {
      got.push(['object', ev.data, this === handler]);
    }
  };
  ws.addEventListener('message', handler);
  const removed = () => got.push(['removed']);
  ws.addEventListener('message', removed);
  ws.removeEventListener('message', removed);
  // The same listener twice is added once.
  ws.addEventListener('message', handler);

  const two = new Promise((resolve) => {
    let n = 0;
    ws.on('message', () => ++n === 2 && resolve());
  });
  peer.send('a');
  peer.send('b');
  await two;
  assert.deepEqual(got, [
    ['once', 'a'],
    ['object', 'a', true],
    ['object', 'b', true]
  ]);
});

test('addEventListener message: binary data follows binaryType', T, async (t) => {
  const { ws, peer } = await connectPair(t);
  ws.binaryType = 'arraybuffer';
  const p = new Promise((resolve) => ws.addEventListener('message', resolve, { once: true }));
  peer.send(Buffer.from([9, 8, 7]));
  const ev = await p;
  assert.ok(ev.data instanceof ArrayBuffer);
  assert.deepEqual([...new Uint8Array(ev.data)], [9, 8, 7]);
});

// --- sending ----------------------------------------------------------------------------

test('send callback is called once, without error, after the data is written', T, async (t) => {
  const { ws, peer } = await connectPair(t);
  let calls = 0;
  const received = once(peer, 'message');
  const err = await new Promise((resolve) =>
    ws.send('hello', (e) => {
      calls++;
      resolve(e);
    })
  );
  assert.ok(err == null);
  const [data] = await received;
  assert.equal(data.toString(), 'hello');
  // A second call of the callback must not come in this time.
  await quietPeriod(50);
  assert.equal(calls, 1);

  // Callbacks run in order.
  const order = [];
  await new Promise((resolve) => {
    ws.send('1', () => order.push(1));
    ws.ping(() => order.push(2));
    ws.send(Buffer.alloc(100000), {}, () => order.push(3));
    ws.send('4', { binary: true }, () => {
      order.push(4);
      resolve();
    });
  });
  assert.deepEqual(order, [1, 2, 3, 4]);
});

test('send() options: binary for strings, numbers are sent as text', T, async (t) => {
  const { ws, peer } = await connectPair(t);
  const messages = [];
  const all = new Promise((resolve) => {
    peer.on('message', (data, isBinary) => {
      messages.push([data.toString(), isBinary]);
      if (messages.length === 3) resolve();
    });
  });
  ws.send('as binary', { binary: true });
  ws.send(42);
  ws.send(new Uint8Array([104, 105]));
  await all;
  assert.deepEqual(messages, [
    ['as binary', true],
    ['42', false],
    ['hi', true]
  ]);
});

test('Blob sends are binary and keep their order', T, async (t) => {
  const { ws, peer } = await connectPair(t);
  const messages = [];
  const all = new Promise((resolve) => {
    peer.on('message', (data, isBinary) => {
      messages.push([data.toString(), isBinary]);
      if (messages.length === 3) resolve();
    });
  });
  const cbDone = new Promise((resolve) => ws.send(new Blob(['blob ', 'data']), resolve));
  ws.send('after blob');
  ws.send(new Blob([Buffer.from('second blob')]));
  await all;
  assert.deepEqual(messages, [
    ['blob data', true],
    ['after blob', false],
    ['second blob', true]
  ]);
  assert.ok((await cbDone) == null);
});

test('bufferedAmount', T, async (t) => {
  const { ws, peer } = await connectPair(t);
  assert.equal(ws.bufferedAmount, 0);
  peer.pause();
  const big = Buffer.alloc(8 * 1024 * 1024, 1);
  ws.send(big);
  assert.ok(ws.bufferedAmount > 0, `bufferedAmount right after a large send: ${ws.bufferedAmount}`);
  peer.resume();
  await once(peer, 'message');
  await new Promise((resolve) => ws.send('x', resolve));
  assert.equal(ws.bufferedAmount, 0);
});

test('pause()/resume()/isPaused', T, async (t) => {
  const wss = await wsServer(t);
  const ws = closeAfter(t, new WebSocket(urlOf(wss)));
  assert.equal(ws.isPaused, false);
  ws.pause(); // no-op while connecting
  assert.equal(ws.isPaused, false);
  const [peer] = await once(wss, 'connection');
  if (ws.readyState !== WebSocket.OPEN) await once(ws, 'open');

  ws.pause();
  assert.equal(ws.isPaused, true);
  const got = [];
  ws.on('message', (d) => got.push(d.toString()));
  peer.send('one');
  peer.send('two');
  // No message may be emitted while paused.
  await quietPeriod(200);
  assert.deepEqual(got, []);
  ws.resume();
  assert.equal(ws.isPaused, false);
  await waitFor(() => got.length >= 2, { what: 'the messages held while paused' });
  assert.deepEqual(got, ['one', 'two']);
});

test('pause(): no message is emitted after pause() returns, even for data sent in the same tick', T, async (t) => {
  const { ws, peer } = await connectPair(t);
  const got = [];
  ws.on('message', (d) => got.push(d.toString()));
  ws.pause();
  peer.send('one');
  peer.send('two');
  // No message may be emitted while paused.
  await quietPeriod(200);
  assert.deepEqual(got, []);
  ws.resume();
  await waitFor(() => got.length >= 2, { what: 'the messages held while paused' });
  assert.deepEqual(got, ['one', 'two']);
});

test('terminate(): both sides see 1006', T, async (t) => {
  const { ws, peer } = await connectPair(t);
  const peerClosed = once(peer, 'close');
  ws.terminate();
  assert.equal(ws.readyState, WebSocket.CLOSING);
  const [code, reason] = await once(ws, 'close');
  assert.equal(code, 1006);
  assert.equal(reason.length, 0);
  const [peerCode] = await peerClosed;
  assert.equal(peerCode, 1006);
  // Calling it again is harmless.
  ws.terminate();
  ws.close();
});

test('close() with code and reason: the server sees them, the client gets the echo', T, async (t) => {
  const { ws, peer } = await connectPair(t);
  const peerClosed = once(peer, 'close');
  ws.close(4001, 'client bye');
  const [code, reason] = await once(ws, 'close');
  assert.equal(code, 4001);
  assert.equal(reason.toString(), 'client bye');
  const [pc, pr] = await peerClosed;
  assert.equal(pc, 4001);
  assert.equal(pr.toString(), 'client bye');
});

test('ping/pong events and auto-pong', T, async (t) => {
  const { ws, peer } = await connectPair(t);
  const pong = once(peer, 'pong');
  const ping = once(ws, 'ping');
  peer.ping('from server');
  const [pingData] = await ping;
  assert.equal(pingData.toString(), 'from server');
  const [pongData] = await pong;
  assert.equal(pongData.toString(), 'from server');

  const p2 = once(ws, 'pong');
  ws.ping(Buffer.from('from client'));
  const [d2] = await p2;
  assert.equal(d2.toString(), 'from client');
});

test('autoPong: false does not answer pings', T, async (t) => {
  const { ws, peer } = await connectPair(t, { autoPong: false });
  let pongs = 0;
  peer.on('pong', () => pongs++);
  const ping = once(ws, 'ping');
  peer.ping('x');
  await ping;
  // No pong may reach the peer in this time.
  await quietPeriod(200);
  assert.equal(pongs, 0);
});

test('maxPayload: a too large message closes with 1009', T, async (t) => {
  const { ws, peer } = await connectPair(t, { maxPayload: 10 });
  const peerClosed = once(peer, 'close');
  const r = failure(ws);
  peer.send(Buffer.alloc(11));
  const { err, events } = await r;
  assert.deepEqual(events, ['error', 'close']);
  assert.equal(err.code, 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH');
  assert.equal(err.message, 'Max payload size exceeded');
  assert.ok(err instanceof RangeError);
  const [peerCode] = await peerClosed;
  assert.equal(peerCode, 1009);
});
