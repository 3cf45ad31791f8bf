'use strict';

// Differential tests: each scenario runs once on ws and once on ws-native, with the same peer,
// and what the code under test can observe (events in order, their arguments, error codes and
// messages, readyState, callbacks) must be the same. New differences show up here first.

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const http = require('node:http');
const https = require('node:https');
const net = require('node:net');
const tls = require('node:tls');

const Native = require('..');
const Ws = require('ws');
const { differential, echoBack, frame, makeCerts, once, rawExchange, startWss, upgradeRequest, urlOf } = require('./helpers');

const certs = makeCerts();
test.after(() => fs.rmSync(certs.dir, { recursive: true, force: true }));

/** A ws server on 127.0.0.1 (the constant peer), closed after the test: an echo server, or
 * `onConnection`'s. Resolves with its URL. */
async function peerServer(t, options = {}, onConnection) {
  const wss = await startWss(t, Ws.WebSocketServer, options);
  if (onConnection) wss.on('connection', onConnection);
  else echoBack(wss);
  return urlOf(wss, '');
}

/** An https server with ws on it (the constant peer for TLS), closed after the test. */
async function peerHttps(t, tlsOptions) {
  const server = https.createServer(tlsOptions);
  const wss = new Ws.WebSocketServer({ server });
  wss.on('connection', (ws) => ws.send('hello'));
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(() => {
    for (const c of wss.clients) c.terminate();
    return new Promise((resolve) => server.close(resolve));
  });
  return server.address().port;
}

/** Opens a client and logs its outcome: the first message, or the error. */
async function clientOutcome(impl, log, url, options) {
  const ws = new impl.WebSocket(url, options);
  ws.on('message', (m) => {
    log('message', String(m));
    ws.close();
  });
  ws.on('error', (err) => log('error', err.code));
  await once(ws, 'close');
}

const METHODS = ['send', 'ping', 'pong', 'close', 'terminate', 'pause', 'resume'];

/** Calls `method` on `ws` and logs what it returned, threw or called back. */
function callMethod(ws, method, log) {
  try {
    const cb = (err) => log('callback', err || null, ws.readyState);
    if (method === 'send') ws.send('hello', cb);
    else if (method === 'ping' || method === 'pong') ws[method]('p', undefined, cb);
    else if (method === 'close') ws.close(1000, 'bye');
    else ws[method]();
    log('returned', ws.readyState, ws.isPaused);
  } catch (err) {
    log('threw', err);
  }
}

test('client: each method in each readyState', { timeout: 60000 }, async (t) => {
  const url = await peerServer(t);
  for (const state of ['CONNECTING', 'OPEN', 'CLOSING', 'CLOSED']) {
    for (const method of METHODS) {
      await differential(async (impl, log) => {
        const ws = new impl.WebSocket(url);
        ws.on('error', (err) => log('error', err));
        ws.on('close', (code, reason) => log('close', code, String(reason)));
        if (state !== 'CONNECTING') await once(ws, 'open');
        if (state === 'CLOSING') ws.close();
        if (state === 'CLOSED') {
          ws.terminate();
          await once(ws, 'close');
        }
        log(state, method, ws.readyState, ws.bufferedAmount);
        callMethod(ws, method, log);
        if (ws.readyState !== ws.CLOSED) {
          ws.terminate();
          await once(ws, 'close');
        }
        log('end', ws.readyState, ws.bufferedAmount);
      });
    }
  }
});

test('server: each method in each readyState', { timeout: 60000 }, async () => {
  for (const state of ['OPEN', 'CLOSING', 'CLOSED']) {
    for (const method of METHODS) {
      await differential(async (impl, log) => {
        const wss = new impl.WebSocketServer({ port: 0, host: '127.0.0.1' });
        await once(wss, 'listening');
        const client = new Ws(`ws://127.0.0.1:${wss.address().port}`);
        client.on('error', () => {});
        const [ws] = await once(wss, 'connection');
        ws.on('error', (err) => log('error', err));
        ws.on('close', (code, reason) => log('close', code, String(reason)));
        if (state === 'CLOSING') ws.close();
        if (state === 'CLOSED') {
          ws.terminate();
          await once(ws, 'close');
        }
        log(state, method, ws.readyState, ws.bufferedAmount);
        callMethod(ws, method, log);
        if (ws.readyState !== ws.CLOSED) {
          ws.terminate();
          await once(ws, 'close');
        }
        log('end', ws.readyState, ws.bufferedAmount);
        await new Promise((resolve) => wss.close(resolve));
      });
    }
  }
});

test("client: 'upgrade' gets the response", async (t) => {
  const url = await peerServer(t);
  await differential(async (impl, log) => {
    const ws = new impl.WebSocket(url);
    ws.on('upgrade', (res) => log('upgrade', res instanceof http.IncomingMessage || typeof res.on === 'function', res.statusCode, res.headers.upgrade));
    ws.on('open', () => {
      log('open');
      ws.close();
    });
    await once(ws, 'close');
  });
});

test('a Blob send among other sends: order and callbacks as in ws', async (t) => {
  const url = await peerServer(t);
  await differential(async (impl, log) => {
    const ws = new impl.WebSocket(url);
    const got = [];
    ws.on('message', (m) => got.push(String(m)));
    await once(ws, 'open');
    for (let i = 0; i < 5; i++) {
      ws.send('a' + i, () => log('cb a' + i));
      ws.send(new Blob(['blob' + i]), () => log('cb blob' + i));
      ws.send('b' + i, () => log('cb b' + i));
    }
    ws.close();
    await once(ws, 'close');
    log('got', got.join(','));
  });
});

test('sends after the socket was destroyed fail as in ws, with and without permessage-deflate', async (t) => {
  const url = await peerServer(t, { perMessageDeflate: true });
  for (const perMessageDeflate of [true, false]) {
    await differential(async (impl, log) => {
      const ws = new impl.WebSocket(url, { perMessageDeflate });
      ws.on('error', (err) => log('error', err));
      ws.on('close', (code) => log('close', code));
      await once(ws, 'open');
      ws._socket.destroy();
      ws.send('x', (err) => log('send', err || null));
      ws.ping('y', undefined, (err) => log('ping', err || null));
      await once(ws, 'close');
    });
  }
});

test('terminate() while a message is being compressed', async (t) => {
  const url = await peerServer(t, { perMessageDeflate: true });
  await differential(async (impl, log) => {
    const ws = new impl.WebSocket(url, { perMessageDeflate: true });
    ws.on('error', (err) => log('error', err));
    ws.on('close', (code) => log('close', code));
    await once(ws, 'open');
    ws.send(Buffer.alloc(4 << 20, 'x'), (err) => log('big', err || null));
    ws.send('small', (err) => log('small', err || null));
    ws.terminate();
    log('terminated', ws.readyState);
    await once(ws, 'close');
    log('after', ws.readyState, ws.bufferedAmount);
  });
});

const BAD_UPGRADE =
  'GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: foo\r\n' +
  'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n';

test('a bad Upgrade header: the server answer, wsClientError and the client error as in ws', async () => {
  await differential(async (impl, log) => {
    const wss = new impl.WebSocketServer({ port: 0, host: '127.0.0.1' });
    await once(wss, 'listening');
    log('answer', (await rawExchange(wss.address().port, BAD_UPGRADE)).replace(/Date: .*\r\n/, ''));
    wss.on('wsClientError', (err, socket, req) => {
      log('wsClientError', err, req instanceof http.IncomingMessage, req.headers.upgrade);
      socket.end('HTTP/1.1 400 Bad Request\r\n\r\n');
    });
    log('after listener', (await rawExchange(wss.address().port, BAD_UPGRADE)).split('\r\n')[0]);
    await new Promise((resolve) => wss.close(resolve));
  });
  await differential(async (impl, log) => {
    const srv = net.createServer((s) =>
      s.once('data', () => s.end('HTTP/1.1 101 Switching Protocols\r\nUpgrade: foo\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: x\r\n\r\n'))
    );
    await new Promise((resolve) => srv.listen(0, '127.0.0.1', resolve));
    const ws = new impl.WebSocket(`ws://127.0.0.1:${srv.address().port}`);
    ws.on('error', (err) => log('error', err));
    await once(ws, 'close');
    srv.close();
  });
});

test('createConnection gets the options ws gives it', async (t) => {
  const url = await peerServer(t, {}, (ws, req) => ws.send(`${req.headers.host} ${req.url}`));
  const { port } = new URL(url);
  await differential(async (impl, log) => {
    const ws = new impl.WebSocket(`ws://localhost:${port}/p?q=1`, {
      createConnection(opts, cb) {
        log('createConnection', opts.host, opts.port, opts.path, opts.servername, opts.method, typeof cb, Object.keys(opts.headers).sort().join());
        return net.connect(port, '127.0.0.1');
      }
    });
    ws.on('message', (m) => {
      log('message', String(m));
      ws.close();
    });
    await once(ws, 'close');
  });
});

test("http.request's options: lookup, family, localAddress, setHost, auth, socketPath", { timeout: 20000 }, async (t) => {
  const url = await peerServer(t, {}, (ws, req) =>
    ws.send(JSON.stringify({ host: req.headers.host, auth: req.headers.authorization, from: req.socket.remoteAddress, url: req.url }))
  );
  const { port } = new URL(url);
  const cases = [
    ['lookup that never calls back', `ws://example.invalid:${port}/`, { lookup() {}, handshakeTimeout: 300 }],
    [
      'lookup',
      `ws://my.host:${port}/x`,
      {
        lookup(host, options, cb) {
          if (options.all) cb(null, [{ address: '127.0.0.1', family: 4 }]);
          else cb(null, '127.0.0.1', 4);
        }
      }
    ],
    ['family 6 with an IPv4 address', `ws://127.0.0.1:${port}/`, { family: 6 }],
    ['family 6 with a name that has only IPv4', `ws://localhost4:${port}/`, { family: 6, lookup: (h, o, cb) => (o.all ? cb(null, []) : cb(null, '127.0.0.1', 4)) }],
    ['localAddress', `ws://127.0.0.1:${port}/`, { localAddress: '127.0.0.2' }],
    ['setHost: false', `ws://127.0.0.1:${port}/`, { setHost: false }],
    ['auth', `ws://127.0.0.1:${port}/`, { auth: 'user:pass' }],
    ['auth and credentials in the URL', `ws://a:b@127.0.0.1:${port}/`, { auth: 'user:pass' }],
    ['a Host header', `ws://127.0.0.1:${port}/h`, { headers: { Host: 'other:1' } }],
    ['defaultPort', `ws://127.0.0.1:${port}/`, { defaultPort: Number(port) }],
    ['socketPath (ws sets it from the URL only)', `ws://127.0.0.1:${port}/`, { socketPath: '/nonexistent.sock' }]
  ];
  for (const [name, address, options] of cases) {
    const log = await differential(async (impl, log) => {
      const ws = new impl.WebSocket(address, options);
      ws.on('message', (m) => {
        log('message', String(m));
        ws.close();
      });
      ws.on('error', (err) => log('error', err.code || err.message));
      await once(ws, 'close');
    });
    assert.ok(log.length > 0, name);
  }
});

test('maxPendingAutoPongs: a burst of pings beyond it terminates the connection, as in ws', async () => {
  for (const [count, options] of [[50, {}], [100, {}], [100, { maxPendingAutoPongs: 0 }], [10, { maxPendingAutoPongs: 5 }]]) {
    await differential(async (impl, log) => {
      const wss = new impl.WebSocketServer({ port: 0, host: '127.0.0.1', ...options });
      await once(wss, 'listening');
      wss.on('connection', (ws) => ws.on('close', (code) => log('server close', code)));
      const s = net.connect(wss.address().port, '127.0.0.1');
      s.write(upgradeRequest());
      let got = Buffer.alloc(0);
      s.on('data', (d) => (got = Buffer.concat([got, d])));
      await new Promise((resolve) => {
        const check = () => (got.includes('\r\n\r\n') ? resolve() : setTimeout(check, 5));
        check();
      });
      const head = got.indexOf('\r\n\r\n') + 4;
      s.write(Buffer.concat(Array.from({ length: count }, () => frame({ opcode: 9, payload: 'p' }))));
      const ended = await Promise.race([once(s, 'close').then(() => 'closed'), new Promise((r) => setTimeout(() => r('open'), 300))]);
      // Each pong is 3 bytes (unmasked, 1-byte payload).
      log(count, ended, (got.length - head) / 3);
      s.destroy();
      await new Promise((resolve) => wss.close(resolve));
    });
  }
});

test('address() after close() is null, as in ws', async () => {
  await differential(async (impl, log) => {
    const wss = new impl.WebSocketServer({ port: 0, host: '127.0.0.1' });
    await once(wss, 'listening');
    log(typeof wss.address().port);
    await new Promise((resolve) => wss.close(resolve));
    log(wss.address());
  });
});

test('req is an http.IncomingMessage in every event, with the fields ws users read', async () => {
  await differential(async (impl, log) => {
    const wss = new impl.WebSocketServer({
      port: 0,
      host: '127.0.0.1',
      verifyClient: (info) => {
        log('verifyClient', info.req instanceof http.IncomingMessage, info.origin, info.secure);
        return true;
      },
      handleProtocols: (protocols, req) => {
        log('handleProtocols', req instanceof http.IncomingMessage, [...protocols]);
        return 'chat';
      }
    });
    await once(wss, 'listening');
    wss.on('headers', (headers, req) => log('headers', req instanceof http.IncomingMessage, headers.length));
    wss.on('connection', (ws, req) => {
      const s = req.socket;
      log('connection', req instanceof http.IncomingMessage, req.method, req.url, req.httpVersion, req.headers['sec-websocket-protocol']);
      log('rawHeaders', req.rawHeaders.length, req.headersDistinct.origin, req.complete, req.upgrade);
      log('socket', s === ws._socket, s.remoteAddress, typeof s.remotePort, s.remoteFamily, s.localAddress, s.localPort === wss.address().port);
      log('socket methods', s.setNoDelay(true) === s, s.setKeepAlive(true, 1000) === s, s.setTimeout(0) === s, typeof s.destroy);
      ws.close();
    });
    const c = new Ws(`ws://127.0.0.1:${wss.address().port}/path?x=1`, ['chat'], { origin: 'http://example' });
    await once(c, 'close');
    await new Promise((resolve) => wss.close(resolve));
  });
});

test('ws._socket: addresses, byte counts and options of the engine socket, on both sides', async (t) => {
  const wss = new Native.WebSocketServer({ port: 0, host: '127.0.0.1' });
  await once(wss, 'listening');
  t.after(() => wss.close());
  const serverSide = once(wss, 'connection');
  const ws = new Native(`ws://127.0.0.1:${wss.address().port}`);
  assert.equal(ws._socket, null, 'null until the connection is open, as in ws');
  await once(ws, 'open');
  const [peer] = await serverSide;
  const s = ws._socket;
  assert.equal(s.remoteAddress, '127.0.0.1');
  assert.equal(s.remotePort, wss.address().port);
  assert.equal(s.remoteFamily, 'IPv4');
  assert.equal(s.localAddress, '127.0.0.1');
  assert.equal(s.localPort, peer._socket.remotePort);
  assert.equal(peer._socket.localPort, wss.address().port);
  const [read, written, peerRead] = [s.bytesRead, s.bytesWritten, peer._socket.bytesRead];
  assert.ok(read > 0 && written > 0 && peerRead > 0, 'the handshake was read and written');
  ws.send('12345');
  await once(peer, 'message');
  // A masked 5-byte text frame: 2 header bytes, 4 of mask, 5 of payload.
  assert.equal(s.bytesWritten, written + 11);
  assert.equal(peer._socket.bytesRead, peerRead + 11);
  assert.equal(s.setNoDelay(false), s);
  assert.equal(s.setKeepAlive(true, 5000), s);
  // setTimeout: 'timeout' once the socket is idle for the time given.
  const started = Date.now();
  s.setTimeout(100);
  await once(s, 'timeout');
  assert.ok(Date.now() - started >= 99, "idle for the time given (Node's timers may fire up to 1 ms early by Date.now())");
  s.setTimeout(0);
  // destroy() ends the connection: the peer sees 1006.
  const closed = once(peer, 'close');
  s.destroy();
  assert.equal((await closed)[0], 1006);
});

test('TLS options the engine does not serve go through Node\'s TLS: same outcome as ws', { timeout: 30000 }, async (t) => {
  const v3 = await peerHttps(t, { cert: certs.server.cert, key: certs.server.key, ca: certs.ca, requestCert: true, rejectUnauthorized: false });
  const v1 = await peerHttps(t, certs.v1);
  const cases = [
    [v3, { ca: certs.ca }],
    [v3, { pfx: certs.pfx, passphrase: 'secret', ca: certs.ca }],
    [v3, { ca: certs.ca, ciphers: 'ECDHE-ECDSA-AES128-GCM-SHA256', maxVersion: 'TLSv1.2' }],
    [v3, { ca: certs.ca, ciphers: 'NO-SUCH-CIPHER' }],
    [v3, { ca: certs.ca, checkServerIdentity: () => new Error('refused by checkServerIdentity') }],
    [v3, { ca: certs.ca, checkServerIdentity: () => undefined, servername: 'wrong.example' }],
    [v3, { secureContext: tls.createSecureContext({ ca: certs.ca }) }],
    [v3, { ca: certs.ca, minVersion: 'TLSv1.3' }],
    [v3, { ca: certs.ca, maxVersion: 'TLSv1.2' }],
    [v3, { ca: certs.ca, minVersion: 'TLSv1', maxVersion: 'TLSv1.1' }],
    [v3, { ca: certs.ca, ecdhCurve: 'P-384' }],
    [v3, { ca: certs.ca, sigalgs: 'ecdsa_secp256r1_sha256' }],
    [v3, { ca: certs.ca, cert: certs.v1.cert, key: certs.v1.key }],
    [v1, { rejectUnauthorized: false }],
    [v1, { ca: certs.v1.cert }],
    [v1, {}]
  ];
  for (const [port, options] of cases) {
    await differential((impl, log) => clientOutcome(impl, log, `wss://localhost:${port}`, options));
  }
});

test("the server's tls option: certificates and options Node's TLS takes work the same", { timeout: 30000 }, async () => {
  const cases = [
    [certs.v1, { rejectUnauthorized: false }],
    [{ pfx: certs.pfx, passphrase: 'secret' }, { ca: certs.ca }],
    [{ cert: certs.server.cert, key: certs.server.key, ciphers: 'ECDHE-ECDSA-AES256-GCM-SHA384', maxVersion: 'TLSv1.2' }, { ca: certs.ca }],
    [{ cert: certs.server.cert, key: certs.server.key }, { ca: certs.ca }]
  ];
  for (const [serverTls, clientOptions] of cases) {
    await differential(async (impl, log) => {
      // ws serves TLS through an https server; ws-native's `tls` option does it itself.
      let wss;
      let server = null;
      if (impl === Ws) {
        server = https.createServer(serverTls);
        wss = new Ws.WebSocketServer({ server });
        await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
      } else {
        wss = new Native.WebSocketServer({ port: 0, host: '127.0.0.1', tls: serverTls });
        await once(wss, 'listening');
      }
      wss.on('connection', (ws, req) => {
        log('connection', req.socket.encrypted);
        ws.send('hello');
      });
      await clientOutcome(Ws, log, `wss://localhost:${(server || wss).address().port}`, clientOptions);
      await new Promise((resolve) => wss.close(resolve));
      if (server) await new Promise((resolve) => server.close(resolve));
    });
  }
});
