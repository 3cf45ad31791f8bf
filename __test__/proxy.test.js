'use strict';

// The client's `proxy` option, through real proxies started here: tinyproxy (HTTP CONNECT,
// with and without Basic auth) and microsocks (SOCKS5, with and without RFC 1929 auth), for
// ws:// and wss://; refusals, 407, SOCKS reply codes, a silent proxy against handshakeTimeout,
// and the opt-in environment variables with NO_PROXY.

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const { spawn } = require('node:child_process');

const WebSocket = require('..');
const { echoBack, echoes, findBin, freePort, hasOpenssl, makeCerts, once, outcome, silentServer, startTinyproxy, startWss, waitPort } = require('./helpers');

const TINYPROXY = findBin(['tinyproxy']);
const MICROSOCKS = findBin(['microsocks']);
const skipHttp = TINYPROXY ? false : 'tinyproxy is not installed (.ci/run installs it)';
const skipSocks = MICROSOCKS ? false : 'microsocks is not installed (.ci/run installs it)';

// The wss:// cases need the certificates (made with openssl); without it they are left out.
const certs = hasOpenssl() ? makeCerts() : null;
test.after(() => {
  if (certs) fs.rmSync(certs.dir, { recursive: true, force: true });
});

async function startMicrosocks(t, auth) {
  const port = await freePort();
  const args = ['-i', '127.0.0.1', '-p', String(port)];
  if (auth) args.push('-u', auth[0], '-P', auth[1]);
  const proc = spawn(MICROSOCKS, args, { stdio: 'ignore' });
  t.after(() => proc.kill());
  if (!(await waitPort(port))) throw new Error(`nothing listens on ${port}`);
  return port;
}

/** Echo servers, closed after the test: plain and (when openssl is there) native TLS. */
async function echoServers(t) {
  const start = async (tls) => echoBack(await startWss(t, WebSocket.WebSocketServer, { tls })).address().port;
  return { ws: await start(undefined), wss: certs ? await start(certs.server) : null };
}

/** Opens `url` with `options` and checks that a text and a 200 kB message come back. */
async function echoThrough(url, options) {
  const ws = new WebSocket(url, { handshakeTimeout: 10000, ...options });
  const text = 'hello through ' + options.proxy;
  const big = Buffer.alloc(200000, 5);
  const [[data], [back]] = await echoes(ws, [text, big]);
  assert.equal(data.toString(), text);
  assert.deepEqual(back, big);
  ws.close();
  await once(ws, 'close');
}

test('HTTP CONNECT proxy (tinyproxy): ws:// and wss:// through it; refused targets are the proxy\'s answer', { skip: skipHttp, timeout: 30000 }, async (t) => {
  const proxyPort = await startTinyproxy(t);
  const ports = await echoServers(t);
  const proxy = `http://127.0.0.1:${proxyPort}`;
  await echoThrough(`ws://127.0.0.1:${ports.ws}/`, { proxy });
  await echoThrough(`ws://localhost:${ports.ws}/`, { proxy });
  if (ports.wss) await echoThrough(`wss://localhost:${ports.wss}/`, { proxy, ca: certs.ca });
  // Nothing listens behind the proxy: the proxy reports it, and the error names the proxy.
  const err = await outcome(new WebSocket(`ws://127.0.0.1:${await freePort()}/`, { proxy }));
  assert.equal(err.code, 'ERR_PROXY_TUNNEL');
  assert.match(err.message, new RegExp(`^Proxy http://127\\.0\\.0\\.1:${proxyPort} refused the tunnel to 127\\.0\\.0\\.1:\\d+: 5\\d\\d`));
});

test('HTTP CONNECT proxy with Basic auth: 407 without or with wrong credentials, through with them', { skip: skipHttp, timeout: 30000 }, async (t) => {
  const proxyPort = await startTinyproxy(t, ['alice', 's3cret']);
  const ports = await echoServers(t);
  let err = await outcome(new WebSocket(`ws://127.0.0.1:${ports.ws}/`, { proxy: `http://127.0.0.1:${proxyPort}` }));
  assert.equal(err.code, 'ERR_PROXY_AUTH');
  assert.match(err.message, /requires authentication .*: 407/);
  err = await outcome(new WebSocket(`ws://127.0.0.1:${ports.ws}/`, { proxy: `http://alice:wrong@127.0.0.1:${proxyPort}` }));
  assert.equal(err.code, 'ERR_PROXY_AUTH');
  assert.match(err.message, /^Proxy http:\/\/alice:\*\*\*@127\.0\.0\.1:\d+ rejected the credentials .*: 40[17]/);
  assert.doesNotMatch(err.message, /wrong/);
  await echoThrough(`ws://127.0.0.1:${ports.ws}/`, { proxy: `http://alice:s3cret@127.0.0.1:${proxyPort}` });
  if (ports.wss) await echoThrough(`wss://localhost:${ports.wss}/`, { proxy: `http://alice:s3cret@127.0.0.1:${proxyPort}`, ca: certs.ca });
});

test('SOCKS5 proxy (microsocks): socks5:// and socks5h://, ws and wss; a refused target gives the reply code', { skip: skipSocks, timeout: 30000 }, async (t) => {
  const proxyPort = await startMicrosocks(t);
  const ports = await echoServers(t);
  await echoThrough(`ws://127.0.0.1:${ports.ws}/`, { proxy: `socks5://127.0.0.1:${proxyPort}` });
  await echoThrough(`ws://localhost:${ports.ws}/`, { proxy: `socks5h://127.0.0.1:${proxyPort}` });
  if (ports.wss) {
    await echoThrough(`wss://localhost:${ports.wss}/`, { proxy: `socks5://127.0.0.1:${proxyPort}`, ca: certs.ca });
    await echoThrough(`wss://localhost:${ports.wss}/`, { proxy: `socks5h://127.0.0.1:${proxyPort}`, ca: certs.ca });
  }
  const err = await outcome(new WebSocket(`ws://127.0.0.1:${await freePort()}/`, { proxy: `socks5://127.0.0.1:${proxyPort}` }));
  assert.equal(err.code, 'ERR_PROXY_TUNNEL');
  assert.match(err.message, new RegExp(`^Proxy socks5://127\\.0\\.0\\.1:${proxyPort} could not connect to 127\\.0\\.0\\.1:\\d+: connection refused \\(SOCKS5 reply 5\\)`));
});

test('SOCKS5 proxy with user/password (RFC 1929)', { skip: skipSocks, timeout: 30000 }, async (t) => {
  const proxyPort = await startMicrosocks(t, ['bob', 'pa55']);
  const ports = await echoServers(t);
  let err = await outcome(new WebSocket(`ws://127.0.0.1:${ports.ws}/`, { proxy: `socks5://127.0.0.1:${proxyPort}` }));
  assert.equal(err.code, 'ERR_PROXY_AUTH');
  assert.match(err.message, /requires authentication/);
  err = await outcome(new WebSocket(`ws://127.0.0.1:${ports.ws}/`, { proxy: `socks5://bob:nope@127.0.0.1:${proxyPort}` }));
  assert.equal(err.code, 'ERR_PROXY_AUTH');
  assert.match(err.message, /^Proxy socks5:\/\/bob:\*\*\*@127\.0\.0\.1:\d+ rejected the credentials/);
  await echoThrough(`ws://127.0.0.1:${ports.ws}/`, { proxy: `socks5h://bob:pa55@127.0.0.1:${proxyPort}` });
  if (ports.wss) await echoThrough(`wss://localhost:${ports.wss}/`, { proxy: `socks5://bob:pa55@127.0.0.1:${proxyPort}`, ca: certs.ca });
});

test('a proxy that refuses the connection, and invalid proxy options', { timeout: 20000 }, async () => {
  const port = await freePort();
  for (const scheme of ['http', 'socks5']) {
    const err = await outcome(new WebSocket('ws://127.0.0.1:9/', { proxy: `${scheme}://127.0.0.1:${port}` }));
    assert.equal(err.code, 'ECONNREFUSED');
    assert.match(err.message, new RegExp(`\\(proxy ${scheme}://127\\.0\\.0\\.1:${port}\\)$`));
  }
  let err = await outcome(new WebSocket('ws://127.0.0.1:9/', { proxy: 'ftp://127.0.0.1:21' }));
  assert.equal(err.code, 'ERR_INVALID_PROXY');
  err = await outcome(new WebSocket('ws://127.0.0.1:9/', { proxy: 'http://u:topsecret@127.0.0.1:99999' }));
  assert.equal(err.code, 'ERR_INVALID_PROXY');
  assert.doesNotMatch(err.message, /topsecret/);
  const http = require('node:http');
  const ws = new WebSocket('ws://127.0.0.1:9/', { proxy: 'http://127.0.0.1:1', agent: new http.Agent() });
  err = await outcome(ws);
  assert.equal(err.code, 'ERR_WS_PROXY_UNSUPPORTED');
});

test('a proxy that accepts and never answers: handshakeTimeout covers it', { timeout: 20000 }, async (t) => {
  const port = await silentServer(t);
  for (const url of [`http://127.0.0.1:${port}`, `socks5h://127.0.0.1:${port}`]) {
    const start = Date.now();
    const ws = new WebSocket('wss://example.invalid/', { proxy: url, handshakeTimeout: 300 });
    const err = await outcome(ws);
    assert.equal(err.message, 'Opening handshake has timed out');
    assert.ok(Date.now() - start < 3000);
    assert.equal(ws.readyState, WebSocket.CLOSED);
  }
});

const ENV_NAMES = ['http_proxy', 'HTTP_PROXY', 'https_proxy', 'HTTPS_PROXY', 'all_proxy', 'ALL_PROXY', 'no_proxy', 'NO_PROXY'];

test('proxy: \'env\' reads HTTP_PROXY / HTTPS_PROXY / ALL_PROXY and honours NO_PROXY; without it the environment is ignored', { skip: skipSocks, timeout: 30000 }, async (t) => {
  const saved = {};
  for (const n of ENV_NAMES) {
    saved[n] = process.env[n];
    delete process.env[n];
  }
  t.after(() => {
    for (const n of ENV_NAMES) {
      if (saved[n] === undefined) delete process.env[n];
      else process.env[n] = saved[n];
    }
  });
  const ports = await echoServers(t);
  const dead = await freePort();
  const url = `ws://127.0.0.1:${ports.ws}/`;

  // A dead proxy in the environment: used with proxy: 'env' only.
  process.env.HTTP_PROXY = `http://127.0.0.1:${dead}`;
  let err = await outcome(new WebSocket(url, { proxy: 'env' }));
  assert.equal(err.code, 'ECONNREFUSED');
  assert.match(err.message, /\(proxy http:\/\/127\.0\.0\.1:\d+\)/);
  await echoThrough(url, {});

  // NO_PROXY: by address, by name suffix, with a port, and '*'.
  for (const list of ['127.0.0.1', `example.com, 127.0.0.1:${ports.ws}`, '*']) {
    process.env.NO_PROXY = list;
    await echoThrough(url, { proxy: 'env' });
  }
  process.env.NO_PROXY = `127.0.0.1:${ports.ws + 1}, .example.com`;
  err = await outcome(new WebSocket(url, { proxy: 'env' }));
  assert.equal(err.code, 'ECONNREFUSED');
  process.env.NO_PROXY = '.localhost';
  await echoThrough(`ws://localhost:${ports.ws}/`, { proxy: 'env' });
  delete process.env.NO_PROXY;

  // ALL_PROXY as the fallback, here a live SOCKS5 proxy; HTTPS_PROXY for wss: only.
  delete process.env.HTTP_PROXY;
  const socks = await startMicrosocks(t);
  process.env.ALL_PROXY = `socks5://127.0.0.1:${socks}`;
  process.env.HTTPS_PROXY = `http://127.0.0.1:${dead}`;
  await echoThrough(url, { proxy: 'env' });
  if (ports.wss) {
    err = await outcome(new WebSocket(`wss://localhost:${ports.wss}/`, { proxy: 'env', ca: certs.ca }));
    assert.equal(err.code, 'ECONNREFUSED');
    delete process.env.HTTPS_PROXY;
    await echoThrough(`wss://localhost:${ports.wss}/`, { proxy: 'env', ca: certs.ca });
  }
});
