'use strict';

// permessage-deflate (RFC 7692): negotiation answered as ws answers it, interop with ws in both
// directions for each parameter, bad offers and answers with ws's errors, the decompression
// bomb stopped at maxPayload, and the memory of connections without context takeover.

const { test } = require('node:test');
const assert = require('node:assert/strict');
const { once } = require('node:events');
const crypto = require('node:crypto');
const net = require('node:net');
const path = require('node:path');
const zlib = require('node:zlib');

const WebSocket = require(path.join(__dirname, '..'));
const { WebSocketServer } = WebSocket;
const Ws = require('ws');
const { echoBack, engineHeap, frame, nodeChild, rawWebSocket, startWss, switchingProtocols, upgradeRequest, waitFor } = require('./helpers');

const HOST = '127.0.0.1';
const T = { timeout: 60000 };

/** An echo server of `Impl`, closed after the test; its connections' errors are ignored. */
async function echoServer(t, Impl, options) {
  const wss = echoBack(await startWss(t, Impl.WebSocketServer, options));
  wss.on('connection', (ws) => ws.on('error', () => {}));
  return wss;
}

/** Sends each message (an array is sent as fragments) and resolves with the echoes. */
function exchange(ws, messages) {
  return new Promise((resolve, reject) => {
    const got = [];
    ws.on('message', (data, isBinary) => {
      got.push({ data: Buffer.from(data), isBinary });
      if (got.length === messages.length) resolve(got);
    });
    ws.once('error', reject);
    for (const m of messages) {
      if (Array.isArray(m)) {
        m.forEach((part, i) => ws.send(part, { fin: i === m.length - 1, binary: true }));
      } else {
        ws.send(m);
      }
    }
  });
}

const json = JSON.stringify({ user: 'ada', text: 'hello '.repeat(40), tags: ['a', 'b'], n: 1 });
const MESSAGES = [
  '',
  'a',
  json,
  Buffer.alloc(0),
  crypto.randomBytes(100),
  'é€😀'.repeat(20000),
  Buffer.alloc(1024 * 1024, 'abc'),
  [Buffer.from('frag-'), Buffer.alloc(0), crypto.randomBytes(70000), Buffer.alloc(300000, 1)]
];

function expected(m) {
  if (Array.isArray(m)) return { data: Buffer.concat(m), isBinary: true };
  return { data: Buffer.from(m), isBinary: typeof m !== 'string' };
}

const COMBINATIONS = [
  ['defaults', {}, {}],
  ['threshold 0', { threshold: 0 }, { threshold: 0 }],
  ['server no context takeover', { serverNoContextTakeover: true }, {}],
  ['client no context takeover', {}, { clientNoContextTakeover: true }],
  ['both no context takeover, threshold 0', { serverNoContextTakeover: true, clientNoContextTakeover: true, threshold: 0 }, { threshold: 0 }],
  ['serverMaxWindowBits 9', { serverMaxWindowBits: 9 }, {}],
  ['client asks serverMaxWindowBits 10', {}, { serverMaxWindowBits: 10 }],
  ['clientMaxWindowBits 8 from the server', { clientMaxWindowBits: 8 }, {}],
  ['clientMaxWindowBits 11 offered', {}, { clientMaxWindowBits: 11 }],
  ['clientMaxWindowBits false', {}, { clientMaxWindowBits: false }],
  ['level 1 and 9', { zlibDeflateOptions: { level: 1 } }, { zlibDeflateOptions: { level: 9 } }]
];

for (const [name, serverOpts, clientOpts] of COMBINATIONS) {
  test(`interop, ${name}: ws client -> ws-native server and ws-native client -> ws server`, T, async (t) => {
    for (const [S, C] of [
      [WebSocket, Ws],
      [Ws, WebSocket]
    ]) {
      const wss = await echoServer(t, S, { perMessageDeflate: serverOpts });
      const ws = new C(`ws://${HOST}:${wss.address().port}`, { perMessageDeflate: clientOpts });
      await once(ws, 'open');
      assert.equal(ws.extensions, 'permessage-deflate');
      const got = await exchange(ws, MESSAGES);
      MESSAGES.forEach((m, i) => assert.deepEqual(got[i], expected(m), `message ${i}`));
      ws.close();
    }
  });
}

test('interop: a 16 MiB text message and a 16 MiB binary message both ways', T, async (t) => {
  const text = 'The quick brown fox jumps over the lazy dog. '.repeat(16 * 1024 * 1024 / 45 + 1).slice(0, 16 * 1024 * 1024);
  const bin = crypto.randomBytes(16 * 1024 * 1024);
  for (const [S, C] of [
    [WebSocket, Ws],
    [Ws, WebSocket]
  ]) {
    const wss = await echoServer(t, S, { perMessageDeflate: true });
    const ws = new C(`ws://${HOST}:${wss.address().port}`);
    await once(ws, 'open');
    const got = await exchange(ws, [text, bin]);
    assert.equal(got[0].data.toString(), text);
    assert.ok(got[1].data.equals(bin));
    ws.close();
  }
});

/** Answers of a server to a raw upgrade request carrying `extensions`. */
function rawUpgrade(port, extensions) {
  return new Promise((resolve) => {
    const s = net.connect(port, HOST);
    const chunks = [];
    s.on('data', (c) => {
      chunks.push(c);
      const text = Buffer.concat(chunks).toString('latin1');
      const end = text.indexOf('\r\n\r\n');
      if (end !== -1 && (text.startsWith('HTTP/1.1 101') || text.length > end + 4)) {
        s.destroy();
        resolve(text.startsWith('HTTP/1.1 101') ? text.slice(0, end) : text);
      }
    });
    s.on('error', () => {});
    s.on('close', () => resolve(Buffer.concat(chunks).toString('latin1')));
    s.write(upgradeRequest(extensions === null ? '' : `Sec-WebSocket-Extensions: ${extensions}\r\n`));
  });
}

function extensionHeader(answer) {
  const m = /\r\nSec-WebSocket-Extensions: ([^\r]*)/i.exec(answer);
  return m ? m[1] : null;
}

test('server: every offer is answered (or refused) exactly as ws answers it', T, async (t) => {
  const offers = [
    'permessage-deflate',
    'permessage-deflate; client_max_window_bits',
    'permessage-deflate; client_max_window_bits=10; server_max_window_bits=12',
    'permessage-deflate; server_no_context_takeover; client_no_context_takeover',
    'permessage-deflate; server_max_window_bits=8, permessage-deflate',
    'x-webkit-deflate-frame, permessage-deflate; client_max_window_bits',
    'x-webkit-deflate-frame',
    'permessage-deflate; client_max_window_bits="9"',
    // bad offers: unknown, repeated, invalid values, malformed headers
    'permessage-deflate; foo',
    'permessage-deflate; foo=1',
    'permessage-deflate; server_no_context_takeover; server_no_context_takeover',
    'permessage-deflate; client_max_window_bits=7',
    'permessage-deflate; client_max_window_bits=16',
    'permessage-deflate; server_max_window_bits',
    'permessage-deflate; server_max_window_bits=abc',
    'permessage-deflate; server_no_context_takeover=1',
    'permessage-deflate;',
    'permessage-deflate; a="b',
    ', permessage-deflate',
    'permessage-deflate; client_max_window_bits=10, permessage-deflate; foo'
  ];
  const configs = [
    true,
    { serverNoContextTakeover: true, clientNoContextTakeover: true },
    { serverMaxWindowBits: 10, clientMaxWindowBits: 9 },
    { serverNoContextTakeover: false, serverMaxWindowBits: false, clientMaxWindowBits: false }
  ];
  for (const perMessageDeflate of configs) {
    const mine = await echoServer(t, WebSocket, { perMessageDeflate });
    const theirs = await echoServer(t, Ws, { perMessageDeflate });
    for (const offer of offers) {
      const a = await rawUpgrade(mine.address().port, offer);
      const b = await rawUpgrade(theirs.address().port, offer);
      const status = (s) => s.split('\r\n')[0];
      assert.equal(status(a), status(b), `${JSON.stringify(perMessageDeflate)} / ${offer}`);
      assert.equal(extensionHeader(a), extensionHeader(b), `${JSON.stringify(perMessageDeflate)} / ${offer}`);
      if (!a.startsWith('HTTP/1.1 101')) {
        assert.ok(a.endsWith('Invalid or unacceptable Sec-WebSocket-Extensions header'), a);
      }
    }
  }
});

test('server with perMessageDeflate off ignores the offer; the client reports no extension', T, async (t) => {
  const wss = await echoServer(t, WebSocket, {});
  assert.equal(extensionHeader(await rawUpgrade(wss.address().port, 'permessage-deflate; foo')), null);
  const ws = new WebSocket(`ws://${HOST}:${wss.address().port}`);
  await once(ws, 'open');
  assert.equal(ws.extensions, '');
  const got = await exchange(ws, ['x'.repeat(5000)]);
  assert.equal(got[0].data.length, 5000);
  ws.close();
});

/** A raw server answering the upgrade with `extensions`; resolves with the client's error. */
async function clientErrorFor(t, extensions, clientOptions) {
  const server = net.createServer((s) => {
    s.once('data', (req) => {
      const key = /Sec-WebSocket-Key: (.*)\r\n/i.exec(req.toString())[1];
      s.write(switchingProtocols(key, `Sec-WebSocket-Extensions: ${extensions}\r\n`));
    });
    s.on('error', () => {});
  });
  await new Promise((resolve) => server.listen(0, HOST, resolve));
  t.after(() => server.close());
  const url = `ws://${HOST}:${server.address().port}`;
  const result = async (Impl) => {
    const ws = new Impl(url, clientOptions);
    return new Promise((resolve) => {
      let err = null;
      ws.on('error', (e) => (err = e));
      ws.on('open', () => ws.terminate());
      ws.on('close', () => resolve(err && err.message));
    });
  };
  return [await result(WebSocket), await result(Ws)];
}

test("client: each bad answer gets ws's error", T, async (t) => {
  const cases = [
    ['permessage-deflate; foo', undefined],
    ['permessage-deflate; client_max_window_bits', undefined],
    ['permessage-deflate; server_max_window_bits=7', undefined],
    ['permessage-deflate; server_no_context_takeover; server_no_context_takeover', undefined],
    ['x-foo', undefined],
    ['permessage-deflate, x-foo', undefined],
    ['permessage-deflate; client_no_context_takeover', { perMessageDeflate: { clientNoContextTakeover: false } }],
    ['permessage-deflate; client_max_window_bits=12', { perMessageDeflate: { clientMaxWindowBits: 10 } }],
    ['permessage-deflate; client_max_window_bits=12', { perMessageDeflate: { clientMaxWindowBits: false } }],
    ['permessage-deflate;;', undefined],
    ['permessage-deflate', { perMessageDeflate: false }]
  ];
  for (const [answer, options] of cases) {
    const [mine, theirs] = await clientErrorFor(t, answer, options);
    assert.ok(theirs, `ws fails on ${answer}`);
    assert.equal(mine, theirs, answer);
  }
});

// --- raw frames on a negotiated connection -------------------------------------------------

/**
 * A raw client that negotiated permessage-deflate with `port`: the socket, the server's answer
 * head, `readFrame()` for the server's frames and `send()` for masked frames of its own.
 */
async function rawDeflateClient(t, port, offer = 'permessage-deflate; client_max_window_bits') {
  const { socket: s, head, reader } = await rawWebSocket(t, port, `Sec-WebSocket-Extensions: ${offer}\r\n`);
  const send = (opcode, payload, { rsv1 = false, fin = true } = {}) => s.write(frame({ opcode, payload, fin, rsv: rsv1 ? 4 : 0 }));
  return { s, head, readFrame: () => reader.next(), send };
}

const inflate = (p) =>
  zlib.inflateRawSync(Buffer.concat([p, Buffer.from([0, 0, 0xff, 0xff])]), { finishFlush: zlib.constants.Z_SYNC_FLUSH });

test('compress option, threshold and RSV1 as ws sets them', T, async (t) => {
  // No context takeover on the server's side: the threshold applies (ws's sender rule).
  const wss = await echoServer(t, WebSocket, { perMessageDeflate: { serverNoContextTakeover: true, threshold: 100 } });
  wss.removeAllListeners('connection');
  const peer = new Promise((resolve) => wss.once('connection', resolve));
  const c = await rawDeflateClient(t, wss.address().port);
  assert.match(c.head, /Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover/);
  const ws = await peer;
  assert.equal(ws.extensions, 'permessage-deflate');
  ws.send('x'.repeat(99));
  ws.send('y'.repeat(100));
  ws.send('z'.repeat(5000), { compress: false });
  ws.send('first-', { fin: false });
  ws.send('second', { fin: true });
  let f = await c.readFrame();
  assert.deepEqual([f.rsv1, f.payload.toString()], [false, 'x'.repeat(99)]);
  f = await c.readFrame();
  assert.equal(f.rsv1, true);
  assert.equal(inflate(f.payload).toString(), 'y'.repeat(100));
  f = await c.readFrame();
  assert.deepEqual([f.rsv1, f.payload.length], [false, 5000]);
  // Fragments: the decision is made on the first fragment (6 bytes < threshold: plain).
  f = await c.readFrame();
  assert.deepEqual([f.rsv1, f.fin, f.payload.toString()], [false, false, 'first-']);
  f = await c.readFrame();
  assert.deepEqual([f.rsv1, f.fin, f.opcode, f.payload.toString()], [false, true, 0, 'second']);
});

test('with context takeover every message is compressed, whatever its size (as ws)', T, async (t) => {
  const wss = await echoServer(t, WebSocket, { perMessageDeflate: true });
  wss.removeAllListeners('connection');
  const peer = new Promise((resolve) => wss.once('connection', resolve));
  const c = await rawDeflateClient(t, wss.address().port);
  const ws = await peer;
  ws.send('hi');
  ws.send('hi');
  const a = await c.readFrame();
  const b = await c.readFrame();
  assert.equal(a.rsv1, true);
  assert.equal(b.rsv1, true);
  // The second reuses the window: a shorter back-reference.
  const z = zlib.createInflateRaw();
  const out = [];
  z.on('data', (d) => out.push(d));
  z.write(Buffer.concat([a.payload, Buffer.from([0, 0, 0xff, 0xff]), b.payload, Buffer.from([0, 0, 0xff, 0xff])]));
  await new Promise((r) => z.flush(r));
  assert.equal(Buffer.concat(out).toString(), 'hihi');
});

test('a decompression bomb is stopped at maxPayload with 1009 and memory does not follow it', T, async (t) => {
  // 64 copies of a 16 MiB block of zeros, each ending in a full flush: 1 GiB once inflated.
  const block = zlib.deflateRawSync(Buffer.alloc(16 * 1024 * 1024), { level: 9, finishFlush: zlib.constants.Z_FULL_FLUSH });
  const bomb = Buffer.concat(Array(64).fill(block));
  assert.ok(bomb.length < 2 * 1024 * 1024, `${bomb.length}`);
  const wss = await echoServer(t, WebSocket, { perMessageDeflate: true, maxPayload: 8 * 1024 * 1024 });
  let serverError = null;
  wss.on('connection', (ws) => ws.on('error', (e) => (serverError = e)));
  const c = await rawDeflateClient(t, wss.address().port);
  const before = engineHeap();
  c.send(2, bomb, { rsv1: true });
  const f = await c.readFrame();
  const after = engineHeap();
  assert.equal(f.opcode, 8);
  assert.equal(f.payload.readUInt16BE(0), 1009);
  await waitFor(() => serverError, { what: "the server connection's 'error'" });
  assert.equal(serverError && serverError.code, 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH');
  assert.equal(serverError.message, 'Max payload size exceeded');
  // The engine's heap (in use + mmapped) grew by far less than the inflated gigabyte.
  const grown = after - before;
  assert.ok(grown < 64 * 1024 * 1024, `grew ${grown}`);
});

test('compressed frames with bad deflate data: Z_DATA_ERROR and 1007; RSV1 on a continuation: 1002', T, async (t) => {
  const wss = await echoServer(t, WebSocket, { perMessageDeflate: true });
  const errors = [];
  wss.on('connection', (ws) => ws.on('error', (e) => errors.push(e)));
  let c = await rawDeflateClient(t, wss.address().port);
  c.send(2, Buffer.from([0xff, 0xff, 0xff, 0xff]), { rsv1: true });
  let f = await c.readFrame();
  assert.deepEqual([f.opcode, f.payload.readUInt16BE(0)], [8, 1007]);
  c = await rawDeflateClient(t, wss.address().port);
  c.send(1, zlib.deflateRawSync(Buffer.from([0x61, 0xff]), { finishFlush: zlib.constants.Z_SYNC_FLUSH }).subarray(0, -4), { rsv1: true });
  f = await c.readFrame();
  assert.deepEqual([f.opcode, f.payload.readUInt16BE(0)], [8, 1007]);
  c = await rawDeflateClient(t, wss.address().port);
  c.send(2, Buffer.from([0x4a, 0x04, 0x00]), { rsv1: true, fin: false });
  c.send(0, Buffer.alloc(0), { rsv1: true });
  f = await c.readFrame();
  assert.deepEqual([f.opcode, f.payload.readUInt16BE(0)], [8, 1002]);
  await waitFor(() => errors.length >= 3, { what: () => `three 'error' events (got ${errors.length})` });
  assert.deepEqual(
    errors.map((e) => e.code),
    ['Z_DATA_ERROR', 'WS_ERR_INVALID_UTF8', 'WS_ERR_UNEXPECTED_RSV_1']
  );
});

test('without context takeover no zlib state stays alive between messages', T, async (t) => {
  const N = 200;
  const measure = async (perMessageDeflate) => {
    const wss = await echoServer(t, WebSocket, { perMessageDeflate });
    const clients = [];
    for (let i = 0; i < N; i++) {
      // ws-native clients: ws's own zlib contexts would be counted in the same heap.
      const ws = new WebSocket(`ws://${HOST}:${wss.address().port}`, { perMessageDeflate });
      clients.push(ws);
    }
    await Promise.all(clients.map((ws) => once(ws, 'open')));
    // Warm up: the per-thread pools keep up to 8 reset contexts of each kind (a bounded
    // ~2.4 MiB, not per connection); fill them before measuring.
    await Promise.all(clients.slice(0, 20).map((ws) => exchange(ws, [json])));
    clients.slice(0, 20).forEach((ws) => ws.removeAllListeners('message'));
    const before = engineHeap();
    await Promise.all(clients.map((ws) => exchange(ws, [json])));
    const after = engineHeap();
    clients.forEach((ws) => ws.terminate());
    return (after - before) / N;
  };
  const without = await measure({ serverNoContextTakeover: true, clientNoContextTakeover: true, threshold: 0 });
  const withTakeover = await measure({ threshold: 0 });
  // A deflate context is ~256 KiB and an inflate context ~40 KiB (both sides are in this
  // process). Without takeover what remains is the event batch buffer and allocator noise
  // (up to a few MiB over 200 connections), not zlib state.
  assert.ok(without < 32 * 1024, `without takeover: ${without} bytes per connection`);
  assert.ok(withTakeover > 8 * without && withTakeover > 128 * 1024, `with takeover: ${withTakeover}, without: ${without}`);
});

test('zlibDeflateOptions.memLevel is honoured: a lower one holds less memory per active connection', T, async (t) => {
  // With context takeover a connection holds its deflate context while it is active. In
  // zlib-rs memLevel sizes the literal buffers, 7 << (memLevel + 6) bytes: 112 KiB at 8 (the
  // default, as in zlib), under 1 KiB at 1. Both sides are ws-native here, in this process.
  const N = 100;
  const measure = async (zlibDeflateOptions) => {
    const perMessageDeflate = { threshold: 0, zlibDeflateOptions };
    const wss = await echoServer(t, WebSocket, { perMessageDeflate });
    const clients = [];
    for (let i = 0; i < N; i++) clients.push(new WebSocket(`ws://${HOST}:${wss.address().port}`, { perMessageDeflate }));
    await Promise.all(clients.map((ws) => once(ws, 'open')));
    const before = engineHeap();
    const got = await Promise.all(clients.map((ws) => exchange(ws, [json])));
    const after = engineHeap();
    got.forEach((g) => assert.deepEqual(g[0], expected(json)));
    clients.forEach((ws) => ws.terminate());
    return (after - before) / N;
  };
  const level8 = await measure({});
  const level1 = await measure({ memLevel: 1, strategy: 1 });
  // Two deflate contexts per connection (server and client): 2 x 111 KiB less at memLevel 1.
  assert.ok(level8 - level1 > 150 * 1024, `memLevel 8: ${Math.round(level8 / 1024)} KiB, memLevel 1: ${Math.round(level1 / 1024)} KiB per connection`);
});

test('with context takeover, idle connections give up their zlib contexts and carry on', T, async (t) => {
  // ws-native parks a connection's contexts after a second without compressed traffic and
  // rebuilds them from the window's worth of history on the next message. Half the peers are
  // ws clients (which keep their contexts: our server's stream must continue exactly), half
  // ws-native clients (both sides park).
  const N = 60;
  const wss = await echoServer(t, WebSocket, { perMessageDeflate: { threshold: 0 } });
  const url = `ws://${HOST}:${wss.address().port}`;
  const clients = [];
  for (let i = 0; i < N; i++) clients.push(i % 2 ? new Ws(url) : new WebSocket(url));
  t.after(() => clients.forEach((ws) => ws.terminate()));
  await Promise.all(clients.map((ws) => once(ws, 'open')));
  const sent = [json, json.replace(/hello/g, 'howdy'), 'é€😀'.repeat(20000), crypto.randomBytes(5000)];
  const round = async (label) => {
    const got = await Promise.all(clients.map((ws) => exchange(ws, sent)));
    clients.forEach((ws) => ws.removeAllListeners('message'));
    got.forEach((g, i) => sent.forEach((m, k) => assert.deepEqual(g[k], expected(m), `${label}: client ${i}, message ${k}`)));
  };
  // Each server connection holds a deflate (~370 KiB in zlib-rs) and an inflate (~42 KiB)
  // context, and each ws-native client the same; once they are given up, what stays is at most
  // a window of history. Resolves with the bytes freed per connection since `held`, once they
  // pass 200 KiB (the connections have been idle long enough).
  const contextsGivenUp = (held) => {
    let freed = 0;
    return waitFor(
      () => {
        freed = (held - engineHeap()) / N;
        return freed > 200 * 1024 && freed;
      },
      {
        timeout: 10000,
        interval: 100,
        what: () => `the idle connections to give up their contexts (freed ${Math.round(freed / 1024)} KiB per connection)`
      }
    );
  };

  await round('first');
  const freed = await contextsGivenUp(engineHeap());
  assert.ok(freed > 200 * 1024, `freed ${Math.round(freed / 1024)} KiB per connection`);
  await round('after parking');
  await contextsGivenUp(engineHeap());
  await round('after parking again');
  assert.equal(wss.clients.size, N);
});

test('through Node http: an attached server (handed-over socket) and a client whose handshake Node makes', T, async (t) => {
  const http = require('node:http');
  const server = http.createServer();
  const wss = new WebSocketServer({ server, perMessageDeflate: { serverNoContextTakeover: true } });
  echoBack(wss);
  await new Promise((resolve) => server.listen(0, HOST, resolve));
  t.after(() => {
    for (const c of wss.clients) c.terminate();
    wss.close();
    server.close();
  });
  const a = new Ws(`ws://${HOST}:${server.address().port}`);
  await once(a, 'open');
  assert.equal(a.extensions, 'permessage-deflate');
  let got = await exchange(a, MESSAGES);
  MESSAGES.forEach((m, i) => assert.deepEqual(got[i], expected(m), `attached, message ${i}`));
  a.close();

  // `createConnection` makes ws-native's client use Node's http for the handshake.
  const theirs = await echoServer(t, Ws, { perMessageDeflate: { clientMaxWindowBits: 10 } });
  const b = new WebSocket(`ws://${HOST}:${theirs.address().port}`, {
    createConnection: (opts) => net.connect(opts.port, opts.host)
  });
  const upgraded = new Promise((resolve) => b.once('upgrade', (res) => resolve(res.headers['sec-websocket-extensions'])));
  await once(b, 'open');
  assert.equal(await upgraded, 'permessage-deflate; client_max_window_bits=10');
  assert.equal(b.extensions, 'permessage-deflate');
  got = await exchange(b, MESSAGES);
  MESSAGES.forEach((m, i) => assert.deepEqual(got[i], expected(m), `node handshake, message ${i}`));
  b.close();
});

test("a 'headers' listener sees the Sec-WebSocket-Extensions answer and the connection still compresses", T, async (t) => {
  const wss = await echoServer(t, WebSocket, { perMessageDeflate: { serverNoContextTakeover: true } });
  let seen = null;
  wss.on('headers', (headers) => {
    seen = headers.slice();
    headers.push('X-Extra: 1');
  });
  const ws = new Ws(`ws://${HOST}:${wss.address().port}`);
  const res = new Promise((resolve) => ws.once('upgrade', resolve));
  await once(ws, 'open');
  assert.equal(seen[seen.length - 1], 'Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover');
  assert.equal((await res).headers['x-extra'], '1');
  assert.equal(ws.extensions, 'permessage-deflate');
  const got = await exchange(ws, [json, 'x'.repeat(100000)]);
  assert.equal(got[0].data.toString(), json);
  assert.equal(got[1].data.length, 100000);
  ws.close();
});

test('a server with permessage-deflate compresses on two engine threads of its own; WS_NATIVE_THREADS=1 keeps one', T, async (t) => {
  const script = path.join(__dirname, 'fixtures', 'engine-threads.js');
  const cores = require('node:os').availableParallelism();
  for (const [env, plain, deflate] of [
    [{}, 1, cores >= 2 ? 3 : 1],
    [{ WS_NATIVE_THREADS: '1' }, 1, 1],
    [{ WS_NATIVE_THREADS: '2' }, 2, 2],
  ]) {
    const child = nodeChild(t, script, [], { env });
    const { code } = await child.exited;
    const what = `${JSON.stringify(env)}: ${child.lines.join(' | ')}`;
    assert.equal(code, 0, what);
    assert.ok(child.lines.includes(`PLAIN ${plain}`), what);
    assert.ok(child.lines.includes(`DEFLATE ${deflate}`), what);
    assert.ok(child.lines.includes('EXTENSIONS permessage-deflate'), what);
    assert.ok(child.lines.includes('ECHO ok'), what);
  }
});
