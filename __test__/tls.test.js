'use strict';

// Native TLS: the wss:// client in the engine (trust, Node's certificate error codes, mutual
// TLS, `ca` forms, servername, NODE_EXTRA_CA_CERTS) and the standalone server's `tls` option,
// with ws's own client and https server as the peers for interop.

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const https = require('node:https');

const WebSocket = require('..');
const Ws = require('ws');
const { closeServer, echoBack, echoOnce, hasOpenssl, listen, makeCerts, once, outcome, silentServer, startWss, waitFor } = require('./helpers');

const openssl = hasOpenssl();
const skip = openssl ? false : 'the openssl CLI is not installed (it makes the test certificates)';
const certs = openssl ? makeCerts() : null;
test.after(() => {
  if (certs) fs.rmSync(certs.dir, { recursive: true, force: true });
});

/** A native TLS echo server, closed after the test; resolves with it and its port. */
async function tlsServer(t, tls) {
  const wss = echoBack(await startWss(t, WebSocket.WebSocketServer, { tls }));
  return { wss, port: wss.address().port };
}

test('trusted server: ca as a string, a Buffer and an array; req.socket.encrypted', { skip, timeout: 20000 }, async (t) => {
  const { wss, port } = await tlsServer(t, certs.server);
  const seen = [];
  wss.on('connection', (ws, req) => seen.push([req.socket.encrypted, req.socket.remoteAddress]));
  const forms = [certs.ca.toString(), certs.ca, [certs.otherCa, certs.ca], [certs.otherCa.toString(), certs.ca.toString()]];
  for (const ca of forms) {
    const ws = new WebSocket(`wss://localhost:${port}/path`, { ca });
    assert.equal((await echoOnce(ws, 'over tls')).toString(), 'over tls');
  }
  // By IP address: the certificate names 127.0.0.1 too (no SNI is sent for an address).
  const ws = new WebSocket(`wss://127.0.0.1:${port}`, { ca: certs.ca });
  const big = Buffer.alloc(300000, 9);
  assert.deepEqual(await echoOnce(ws, big), big);
  assert.equal(seen.length, 5);
  for (const [encrypted, addr] of seen) {
    assert.equal(encrypted, true);
    assert.equal(addr, '127.0.0.1');
  }
});

test('untrusted certificates are refused with Node\'s codes', { skip, timeout: 20000 }, async (t) => {
  const self = await tlsServer(t, certs.self);
  let err = await outcome(new WebSocket(`wss://localhost:${self.port}`));
  assert.equal(err.code, 'DEPTH_ZERO_SELF_SIGNED_CERT');
  assert.equal(err.message, 'self-signed certificate');

  // Signed by a CA the client does not know, with and without the CA in the chain.
  const leafOnly = await tlsServer(t, certs.server);
  err = await outcome(new WebSocket(`wss://localhost:${leafOnly.port}`));
  assert.equal(err.code, 'UNABLE_TO_VERIFY_LEAF_SIGNATURE');
  err = await outcome(new WebSocket(`wss://localhost:${leafOnly.port}`, { ca: certs.otherCa }));
  assert.equal(err.code, 'UNABLE_TO_VERIFY_LEAF_SIGNATURE');
  const withChain = await tlsServer(t, { cert: Buffer.concat([certs.server.cert, certs.ca]), key: certs.server.key });
  err = await outcome(new WebSocket(`wss://localhost:${withChain.port}`));
  assert.equal(err.code, 'SELF_SIGNED_CERT_IN_CHAIN');
  assert.equal(err.message, 'self-signed certificate in certificate chain');
  // ... and accepted once the CA is trusted.
  assert.equal((await echoOnce(new WebSocket(`wss://localhost:${withChain.port}`, { ca: certs.ca }), 'ok')).toString(), 'ok');
});

test('a self-signed certificate: rejected, then accepted with rejectUnauthorized: false or as its own ca', { skip, timeout: 20000 }, async (t) => {
  const { port } = await tlsServer(t, certs.self);
  const err = await outcome(new WebSocket(`wss://127.0.0.1:${port}`));
  assert.equal(err.code, 'DEPTH_ZERO_SELF_SIGNED_CERT');
  assert.equal((await echoOnce(new WebSocket(`wss://127.0.0.1:${port}`, { rejectUnauthorized: false }), 'lax')).toString(), 'lax');
  assert.equal((await echoOnce(new WebSocket(`wss://localhost:${port}`, { ca: certs.self.cert }), 'pinned')).toString(), 'pinned');
});

test('a wrong host name: ERR_TLS_CERT_ALTNAME_INVALID; servername picks the name to check', { skip, timeout: 20000 }, async (t) => {
  const { port } = await tlsServer(t, certs.other);
  let err = await outcome(new WebSocket(`wss://localhost:${port}`, { ca: certs.ca }));
  assert.equal(err.code, 'ERR_TLS_CERT_ALTNAME_INVALID');
  assert.match(err.message, /Hostname\/IP does not match certificate's altnames: Host: localhost\. is not in the cert's altnames: DNS:other\.example/);
  err = await outcome(new WebSocket(`wss://127.0.0.1:${port}`, { ca: certs.ca }));
  assert.equal(err.code, 'ERR_TLS_CERT_ALTNAME_INVALID');
  assert.match(err.message, /IP: 127\.0\.0\.1 is not in the cert's list/);
  const ws = new WebSocket(`wss://127.0.0.1:${port}`, { ca: certs.ca, servername: 'other.example' });
  assert.equal((await echoOnce(ws, 'named')).toString(), 'named');
  // A pinned self-signed certificate still has its name checked.
  const self = await tlsServer(t, certs.self);
  err = await outcome(new WebSocket(`wss://127.0.0.1:${self.port}`, { ca: certs.self.cert, servername: 'nope.example' }));
  assert.equal(err.code, 'ERR_TLS_CERT_ALTNAME_INVALID');
});

test('an expired certificate: CERT_HAS_EXPIRED', { skip, timeout: 20000 }, async (t) => {
  const { port } = await tlsServer(t, certs.expired);
  const err = await outcome(new WebSocket(`wss://localhost:${port}`, { ca: certs.ca }));
  assert.equal(err.code, 'CERT_HAS_EXPIRED');
  assert.equal(err.message, 'certificate has expired');
  assert.equal((await echoOnce(new WebSocket(`wss://localhost:${port}`, { rejectUnauthorized: false }), 'x')).toString(), 'x');
});

test('mutual TLS: the server asks for a client certificate signed by its ca', { skip, timeout: 20000 }, async (t) => {
  const { wss, port } = await tlsServer(t, { ...certs.server, ca: certs.ca, requestCert: true });
  const authorized = [];
  wss.on('connection', (ws, req) => authorized.push(req.socket.authorized));
  const ok = new WebSocket(`wss://localhost:${port}`, { ca: certs.ca, cert: certs.client.cert, key: certs.client.key });
  assert.equal((await echoOnce(ok, 'mutual')).toString(), 'mutual');
  assert.deepEqual(authorized, [true]);

  // No certificate: the server ends the handshake; the client never opens.
  const none = new WebSocket(`wss://localhost:${port}`, { ca: certs.ca });
  const err = await outcome(none);
  assert.equal(err.code, 'ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED');
  assert.equal(err.message, 'TLS alert from the server: certificate required');
  assert.equal(none.readyState, WebSocket.CLOSED);
  // A certificate from an unknown CA is refused as well.
  const stranger = new WebSocket(`wss://localhost:${port}`, { ca: certs.ca, cert: certs.self.cert, key: certs.self.key });
  assert.match((await outcome(stranger)).code, /^ERR_SSL_.*_ALERT_/);
  assert.deepEqual(authorized, [true]);

  // ws's client (Node's TLS) with a client certificate.
  const ws = new Ws(`wss://localhost:${port}`, { ca: certs.ca, cert: certs.client.cert, key: certs.client.key });
  await once(ws, 'open');
  ws.close();
  await once(ws, 'close');
});

test('interop: ws\'s client against the native TLS server', { skip, timeout: 20000 }, async (t) => {
  const { port } = await tlsServer(t, certs.server);
  const ws = new Ws(`wss://localhost:${port}`, { ca: certs.ca });
  await once(ws, 'open');
  const payloads = ['text', Buffer.alloc(70000, 3), Buffer.alloc(0)];
  const got = [];
  ws.on('message', (d) => got.push(Buffer.from(d)));
  for (const p of payloads) ws.send(p);
  await waitFor(() => got.length >= payloads.length, { timeout: 2000, what: () => `the three echoes (got ${got.length})` });
  assert.equal(got.length, 3);
  assert.equal(got[0].toString(), 'text');
  assert.equal(got[1].length, 70000);
  ws.close(4000, 'bye');
  const [code, reason] = await once(ws, 'close');
  assert.equal(code, 4000);
  assert.equal(reason.toString(), 'bye');
});

test('interop: the native wss:// client against ws on a Node https server', { skip, timeout: 20000 }, async () => {
  const server = https.createServer(certs.server);
  const wss = echoBack(new Ws.WebSocketServer({ server }));
  const seen = [];
  wss.on('connection', (ws, req) => seen.push(req.headers.host));
  const port = await listen(server);
  const ws = new WebSocket(`wss://localhost:${port}/x?y=1`, { ca: [certs.ca] });
  assert.equal((await echoOnce(ws, 'to ws')).toString(), 'to ws');
  assert.deepEqual(seen, [`localhost:${port}`]);
  // The native path: no Node socket behind the client.
  assert.equal(ws._rare === null ? null : ws._rare.bridge, null);
  wss.close();
  await closeServer(server);
});

test('handshakeTimeout covers the TLS handshake (a server that accepts and never answers)', { skip, timeout: 20000 }, async (t) => {
  const port = await silentServer(t);
  const start = Date.now();
  const ws = new WebSocket(`wss://127.0.0.1:${port}`, { handshakeTimeout: 300, rejectUnauthorized: false });
  const err = await outcome(ws);
  assert.equal(err.message, 'Opening handshake has timed out');
  assert.ok(Date.now() - start < 3000);
  assert.equal(ws.readyState, WebSocket.CLOSED);
});

test('NODE_EXTRA_CA_CERTS adds to the default roots', { skip, timeout: 20000 }, async (t) => {
  const { port } = await tlsServer(t, certs.server);
  const script = `
    const WebSocket = require(${JSON.stringify(require.resolve('..'))});
    const ws = new WebSocket('wss://localhost:${port}');
    ws.on('open', () => { console.log('open'); ws.close(); });
    ws.on('error', (e) => { console.log('error ' + e.code); });`;
  const run = (env) => new Promise((resolve, reject) => {
    const { execFile } = require('node:child_process');
    execFile(process.execPath, ['-e', script], { env: { ...process.env, ...env }, timeout: 10000 }, (err, stdout) => {
      if (err) reject(err);
      else resolve(stdout.trim());
    });
  });
  assert.equal(await run({ NODE_EXTRA_CA_CERTS: `${certs.dir}/ca.pem` }), 'open');
  assert.equal(await run({ NODE_EXTRA_CA_CERTS: '' }), 'error UNABLE_TO_VERIFY_LEAF_SIGNATURE');
});

test('encrypted keys (PKCS#8) with passphrase, on both sides; a wrong or missing passphrase fails as in Node', { skip, timeout: 20000 }, async (t) => {
  const { wss, port } = await tlsServer(t, { cert: certs.server.cert, key: certs.encryptedKey, passphrase: 'secret', ca: certs.ca, requestCert: true });
  const authorized = [];
  wss.on('connection', (ws, req) => authorized.push(req.socket.authorized));
  const a = new WebSocket(`wss://localhost:${port}`, { ca: certs.ca, cert: certs.client.cert, key: certs.encryptedClientKey, passphrase: 'secret' });
  assert.equal((await echoOnce(a, 'via passphrase')).toString(), 'via passphrase');
  // Node's `{ pem, passphrase }` form of `key`.
  const b = new WebSocket(`wss://localhost:${port}`, { ca: certs.ca, cert: certs.client.cert, key: [{ pem: certs.encryptedClientKey, passphrase: 'secret' }] });
  assert.equal((await echoOnce(b, 'pem object')).toString(), 'pem object');
  assert.deepEqual(authorized, [true, true]);
  // A wrong or missing passphrase fails as with ws (Node's TLS): the same code.
  for (const passphrase of ['wrong', undefined]) {
    const opts = { ca: certs.ca, cert: certs.client.cert, key: certs.encryptedClientKey, passphrase };
    const expected = await outcome(new Ws(`wss://localhost:${port}`, opts));
    const err = await outcome(new WebSocket(`wss://localhost:${port}`, opts));
    assert.equal(err.code, expected.code);
    assert.equal(err.code, 'ERR_OSSL_BAD_DECRYPT');
  }
  for (const passphrase of ['wrong', undefined]) {
    const tls = { cert: certs.server.cert, key: certs.encryptedKey, passphrase };
    const expected = nodeThrows(() => https.createServer(tls));
    assert.throws(() => new WebSocket.WebSocketServer({ port: 0, tls }), (e) => e.code === expected.code);
  }
});

/** What `f` throws (Node's own error for the same options). */
function nodeThrows(f) {
  try {
    f();
  } catch (err) {
    return err;
  }
  assert.fail('Node accepted the options');
}

test('unusable keys and certificates: the errors of Node\'s TLS, as with ws', { skip, timeout: 20000 }, async (t) => {
  for (const tls of [{ cert: certs.server.cert, key: 'not a key' }, { cert: certs.server.cert, key: certs.other.key }]) {
    const expected = nodeThrows(() => https.createServer(tls));
    assert.throws(() => new WebSocket.WebSocketServer({ port: 0, tls }), (e) => e.code === expected.code && e.message === expected.message);
  }
  assert.throws(() => new WebSocket.WebSocketServer({ noServer: true, tls: certs.server }), TypeError);
  const { port } = await tlsServer(t, certs.server);
  const expected = await outcome(new Ws(`wss://localhost:${port}`, { ca: 'no certificate here' }));
  const err = await outcome(new WebSocket(`wss://localhost:${port}`, { ca: 'no certificate here' }));
  assert.equal(err.code, expected.code);
});

test('a plain client against the TLS server, and TLS against a plain server, fail cleanly', { skip, timeout: 20000 }, async (t) => {
  const { port } = await tlsServer(t, certs.server);
  const plain = new WebSocket(`ws://127.0.0.1:${port}`, { handshakeTimeout: 3000 });
  assert.ok((await outcome(plain)) instanceof Error);
  const wss = new WebSocket.WebSocketServer({ port: 0, host: '127.0.0.1' });
  await once(wss, 'listening');
  const secure = new WebSocket(`wss://127.0.0.1:${wss.address().port}`, { rejectUnauthorized: false, handshakeTimeout: 3000 });
  const err = await outcome(secure);
  assert.ok(err instanceof Error);
  await new Promise((resolve) => wss.close(resolve));
});
