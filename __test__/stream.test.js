'use strict';

// createWebSocketStream(): the Duplex wrapper of ws's lib/stream.js, on ws-native. Data in
// both directions, backpressure both ways, ending, destroying, error propagation,
// readableObjectMode and a stream made on a CONNECTING client. Each case runs with ws-native
// on both ends and with ws-native facing the real `ws` on either side.
// Run with WS_IMPL=ws to check the expectations with ws on both ends.

const { test, describe } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const { once } = require('node:events');
const path = require('node:path');

const Native = require(process.env.WS_IMPL === 'ws' ? 'ws' : path.join(__dirname, '..'));
const Ws = require('ws');
const { delay, frame, quietPeriod, rawWebSocket, sha256, waitFor } = require('./helpers');

const HOST = '127.0.0.1';
const T = { timeout: 15000 };
const KiB = 1024;
const MiB = 1024 * KiB;

const PAIRS = [
  { name: 'ws-native <-> ws-native', Client: Native, Server: Native },
  { name: 'ws-native client <-> ws server', Client: Native, Server: Ws },
  { name: 'ws client <-> ws-native server', Client: Ws, Server: Native }
];

/** Polls `pred` until it holds (fails after 10 s, naming `what`). */
const until = (pred, what) => waitFor(pred, { timeout: 10000, interval: 5, what });

/** Starts a server of `pair.Server`; everything is closed after the test. */
async function startServer(t, pair, serverOptions = {}) {
  const wss = new pair.Server.WebSocketServer({ host: HOST, port: 0, ...serverOptions });
  await once(wss, 'listening');
  const sockets = [];
  // Terminates what is left and closes the server; fails (instead of hanging the run) when a
  // websocket never emits 'close' after terminate() or the server never closes.
  t.after(async () => {
    const left = [];
    const done = [];
    for (const [side, ws] of [...sockets.map((ws) => ['client', ws]), ...[...wss.clients].map((ws) => ['server', ws])]) {
      if (ws.readyState !== ws.CLOSED) {
        const entry = { side, readyState: ws.readyState, closed: false };
        left.push(entry);
        done.push(new Promise((resolve) => ws.once('close', () => resolve((entry.closed = true)))));
        ws.on('error', () => {});
        ws.terminate();
      }
    }
    let serverClosed = false;
    done.push(Promise.all(done).then(() => new Promise((resolve) => wss.close(() => resolve((serverClosed = true))))));
    let timer;
    const timeout = new Promise((resolve) => (timer = setTimeout(resolve, 5000, 'timeout')));
    const outcome = await Promise.race([Promise.all(done), timeout]);
    clearTimeout(timer);
    if (outcome === 'timeout') {
      const stuck = left.filter((e) => !e.closed).map((e) => `${e.side} (readyState ${e.readyState} before terminate())`);
      throw new Error(`cleanup: no 'close' after terminate() from ${stuck.join(', ') || 'none'}; server closed: ${serverClosed}`);
    }
  });
  return { wss, url: `ws://${HOST}:${wss.address().port}/`, track: (ws) => sockets.push(ws) };
}

/** Opens a connection; resolves with { client, server } (the two WebSocket ends). */
async function connect(t, pair, serverOptions, clientOptions) {
  const { wss, url, track } = await startServer(t, pair, serverOptions);
  const conn = once(wss, 'connection');
  const client = new pair.Client(url, clientOptions);
  track(client);
  await once(client, 'open');
  const [server] = await conn;
  return { client, server, wss };
}

/**
 * Resolves with { code, reason } when `ws` emits 'close' (or, after `ms`, with a code of null
 * so that the assertion that follows fails fast and says so).
 */
function closed(ws, ms = 5000) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms, { code: null, reason: `no 'close' within ${ms} ms` });
    ws.once('close', (code, reason) => {
      clearTimeout(timer);
      resolve({ code, reason: reason.toString() });
    });
  });
}

/** Records the stream's lifecycle events in order (and so handles its 'error'). */
function record(stream) {
  const log = [];
  Object.defineProperty(log, 'errors', { value: [] });
  for (const name of ['finish', 'end', 'error', 'close']) {
    stream.on(name, (err) => {
      log.push(name);
      if (name === 'error') log.errors.push(err);
    });
  }
  return log;
}

/**
 * Resolves on the stream's 'close' (unlike events.once, does not reject on 'error'), or after
 * `ms` so that a missing 'close' fails fast on the event-log assertion that follows.
 */
const closeOf = (stream, ms = 3000) =>
  new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    stream.once('close', () => {
      clearTimeout(timer);
      resolve();
    });
  });

/** A few turns of the event loop, during which the events the caller names must NOT come. */
const settle = () => quietPeriod(50);

for (const pair of PAIRS) {
  const clientStream = (ws, options) => pair.Client.createWebSocketStream(ws, options);
  const serverStream = (ws, options) => pair.Server.createWebSocketStream(ws, options);

  describe(pair.name, () => {
    // --- data ---------------------------------------------------------------------------------

    test('data flows both ways; without objectMode the readable side yields Buffers', T, async (t) => {
      const { client, server } = await connect(t, pair);
      const c = clientStream(client);
      const s = serverStream(server);
      const bytes = Buffer.from([0x00, 0x01, 0x80, 0xff]);

      // client -> server: one message per write(); strings are decoded to Buffers by the
      // Writable, so they go out as binary messages.
      const atServer = [];
      server.on('message', (data, isBinary) => atServer.push([Buffer.from(data), isBinary]));
      const sChunks = [];
      s.on('data', (chunk) => sChunks.push(chunk));
      c.write('héllo');
      c.write(bytes);
      c.write(new Uint8Array([1, 2, 3]));
      await until(() => atServer.length === 3, 'the messages at the server');
      assert.deepEqual(atServer, [
        [Buffer.from('héllo'), true],
        [bytes, true],
        [Buffer.from([1, 2, 3]), true]
      ]);
      const toServer = Buffer.concat([Buffer.from('héllo'), bytes, Buffer.from([1, 2, 3])]);
      await until(() => Buffer.concat(sChunks).length === toServer.length, 'the server stream');
      assert.ok(sChunks.every(Buffer.isBuffer), 'server stream chunks are Buffers');
      assert.deepEqual(Buffer.concat(sChunks), toServer);

      // server -> client: text and binary messages both come out of the stream as Buffers.
      const atClient = [];
      client.on('message', (data, isBinary) => atClient.push(isBinary));
      const cChunks = [];
      c.on('data', (chunk) => cChunks.push(chunk));
      server.send('wörld');
      server.send(bytes);
      s.write(Buffer.from('via the stream'));
      const toClient = Buffer.concat([Buffer.from('wörld'), bytes, Buffer.from('via the stream')]);
      await until(() => Buffer.concat(cChunks).length === toClient.length, 'the client stream');
      assert.ok(cChunks.every(Buffer.isBuffer), 'client stream chunks are Buffers');
      assert.deepEqual(Buffer.concat(cChunks), toClient);
      assert.deepEqual(atClient, [false, true, true]);
    });

    test('with decodeStrings: false a written string is sent as a text message', T, async (t) => {
      const { client, server } = await connect(t, pair);
      const c = clientStream(client, { decodeStrings: false });
      const got = [];
      server.on('message', (data, isBinary) => got.push([data.toString(), isBinary]));
      c.write('text ✓');
      c.write(Buffer.from('binary'));
      await until(() => got.length === 2, 'the messages');
      assert.deepEqual(got, [
        ['text ✓', false],
        ['binary', true]
      ]);
    });

    test('pipe echo: 1 MiB in chunks comes back intact, then both streams close', T, async (t) => {
      const { client, server } = await connect(t, pair);
      const s = serverStream(server);
      const sLog = record(s);
      s.pipe(s);
      const c = clientStream(client);
      const cLog = record(c);
      const data = crypto.randomBytes(MiB);
      const got = [];
      let n = 0;
      c.on('data', (chunk) => {
        got.push(chunk);
        n += chunk.length;
      });
      for (let off = 0; off < data.length; off += 10000) c.write(data.subarray(off, off + 10000));
      await until(() => n === data.length, 'the echo');
      assert.equal(sha256(Buffer.concat(got)), sha256(data));

      const bothClosed = Promise.all([closeOf(c), closeOf(s)]);
      c.end();
      await bothClosed;
      assert.deepEqual(cLog, ['finish', 'end', 'close']);
      assert.deepEqual(sLog, ['end', 'finish', 'close']);
    });

    // --- backpressure -------------------------------------------------------------------------

    test('slow reader: the writer stalls (write() false, drain), the reader pauses the websocket, nothing is lost', T, async (t) => {
      const { client, server } = await connect(t, pair);
      const TOTAL = 64 * MiB;
      const CHUNK = 16 * KiB;
      const c = clientStream(client, { writableHighWaterMark: 64 * KiB });
      const s = serverStream(server, { readableHighWaterMark: 16 * KiB });
      const data = crypto.randomBytes(TOTAL);

      let written = 0;
      let drains = 0;
      let sawFalse = false;
      let waitingDrain = false;
      const writer = (async () => {
        for (let off = 0; off < TOTAL; off += CHUNK) {
          if (!c.write(data.subarray(off, off + CHUNK))) {
            sawFalse = true;
            waitingDrain = true;
            await once(c, 'drain');
            waitingDrain = false;
            drains++;
          }
          written += CHUNK;
        }
        c.end();
      })();

      // Nobody reads: the writer must stall (kernel buffers + one stream buffer on each side,
      // far less than 64 MiB) instead of queuing everything in memory. A stall is only seen over
      // time: this checks every 50 ms until the writer, waiting for 'drain', has made no
      // progress for 300 ms (and fails if it gets to the end instead).
      let last = -1;
      let since = Date.now();
      for (;;) {
        await delay(50);
        if (written !== last) {
          last = written;
          since = Date.now();
        } else if (waitingDrain && Date.now() - since >= 300) {
          break;
        }
        assert.ok(written < TOTAL, 'the writer never stalled');
      }
      assert.ok(sawFalse, 'write() returned false');
      assert.ok(server.isPaused, 'the server websocket is paused by the full stream');
      assert.ok(s.readableLength < 4 * MiB, `stream buffer bounded (${s.readableLength} B)`);

      // Now read, slowly: a 5 ms break every MiB.
      const chunks = [];
      let received = 0;
      let nextBreak = MiB;
      s.on('data', (chunk) => {
        chunks.push(chunk);
        received += chunk.length;
        if (received >= nextBreak) {
          nextBreak += MiB;
          s.pause();
          setTimeout(() => s.resume(), 5);
        }
      });
      await Promise.all([once(s, 'end'), writer]);
      assert.equal(received, TOTAL);
      assert.equal(sha256(Buffer.concat(chunks)), sha256(data), 'nothing lost or reordered');
      assert.ok(drains > 0, "'drain' fired");
    });

    test('a full readable buffer pauses the websocket; reading resumes it', T, async (t) => {
      const { client, server } = await connect(t, pair);
      const c = clientStream(client, { readableHighWaterMark: 16 * KiB });
      const N = 64;
      const msgs = Array.from({ length: N }, () => crypto.randomBytes(16 * KiB));
      for (const m of msgs) server.send(m);

      await until(() => client.isPaused, 'client.isPaused');
      await settle();
      assert.equal(client.isPaused, true, 'stays paused while nobody reads');
      const first = c.read();
      assert.ok(Buffer.isBuffer(first));
      assert.ok(first.length < N * 16 * KiB, 'only part of the messages were buffered');
      assert.equal(client.isPaused, false, 'read() resumes the websocket');

      const chunks = [first];
      let received = first.length;
      c.on('data', (chunk) => {
        chunks.push(chunk);
        received += chunk.length;
      });
      await until(() => received === N * 16 * KiB, 'all the data');
      assert.deepEqual(Buffer.concat(chunks), Buffer.concat(msgs));
      await settle();
      assert.equal(client.isPaused, false);
    });

    // --- ending -------------------------------------------------------------------------------

    test('end() sends a close frame: the peer sees 1005; the stream finishes, ends, closes', T, async (t) => {
      const { client, server } = await connect(t, pair);
      const c = clientStream(client);
      const s = serverStream(server);
      const cLog = record(c);
      const sLog = record(s);
      c.resume();
      s.resume();
      const serverClosed = closed(server);
      const clientClosed = closed(client);
      const cClosed = closeOf(c);
      c.end();
      assert.deepEqual(await serverClosed, { code: 1005, reason: '' });
      assert.deepEqual(await clientClosed, { code: 1005, reason: '' });
      await cClosed;
      assert.deepEqual(cLog, ['finish', 'end', 'close']);
      assert.equal(c.destroyed, true);

      // The peer's stream (allowHalfOpen defaults to true) only ends its readable side...
      await settle();
      assert.deepEqual(sLog, ['end']);
      assert.equal(s.destroyed, false);
      assert.equal(s.writable, true);
      // ...until it is ended too.
      const sClosed = closeOf(s);
      s.end();
      await sClosed;
      assert.deepEqual(sLog, ['end', 'finish', 'close']);
    });

    test('allowHalfOpen: false ends and closes the stream when the peer closes', T, async (t) => {
      const { client, server } = await connect(t, pair);
      const c = clientStream(client, { allowHalfOpen: false });
      const s = serverStream(server, { allowHalfOpen: false });
      const cLog = record(c);
      const sLog = record(s);
      c.resume();
      s.resume();

      // end() on one side: the peer's stream closes by itself.
      const sClosed = closeOf(s);
      const cClosed = closeOf(c);
      const serverClosed = closed(server);
      c.end();
      await Promise.all([sClosed, cClosed]);
      assert.deepEqual(await serverClosed, { code: 1005, reason: '' });
      assert.deepEqual(sLog, ['end', 'finish', 'close']);
      assert.deepEqual(cLog, ['finish', 'end', 'close']);
    });

    test('the peer closing the websocket ends the stream (half-open by default)', T, async (t) => {
      const { client, server } = await connect(t, pair);
      const half = clientStream(client);
      const full = clientStream(client, { allowHalfOpen: false });
      const halfLog = record(half);
      const fullLog = record(full);
      half.resume();
      full.resume();
      const clientClosed = closed(client);
      const fullClosed = closeOf(full);
      server.close(4000, 'bye');
      assert.deepEqual(await clientClosed, { code: 4000, reason: 'bye' });
      await fullClosed;
      assert.deepEqual(fullLog, ['end', 'finish', 'close']);
      await settle();
      assert.deepEqual(halfLog, ['end']);

      // Writing to the half-open stream now fails as ws.send() does on a CLOSED websocket.
      const halfClosed = closeOf(half);
      half.write('late');
      await halfClosed;
      assert.deepEqual(halfLog, ['end', 'error', 'close']);
      assert.equal(halfLog.errors[0].message, 'WebSocket is not open: readyState 3 (CLOSED)');
    });

    // --- destroying and errors ----------------------------------------------------------------

    test('destroy(err): the stream emits error then close, the websocket is terminated (peer 1006)', T, async (t) => {
      const { client, server } = await connect(t, pair);
      const c = clientStream(client);
      const cLog = record(c);
      const serverClosed = closed(server);
      const clientClosed = closed(client);
      const cClosed = closeOf(c);
      const boom = new Error('boom');
      c.destroy(boom);
      await cClosed;
      assert.deepEqual(cLog, ['error', 'close']);
      assert.equal(cLog.errors[0], boom);
      assert.equal(client.readyState, client.CLOSED);
      assert.equal((await clientClosed).code, 1006);
      assert.deepEqual(await serverClosed, { code: 1006, reason: '' });
    });

    test('destroy() without an error: close only, peer 1006', T, async (t) => {
      const { client, server } = await connect(t, pair);
      const s = serverStream(server);
      const sLog = record(s);
      const clientClosed = closed(client);
      const sClosed = closeOf(s);
      s.destroy();
      await sClosed;
      assert.deepEqual(sLog, ['close']);
      assert.equal(server.readyState, server.CLOSED);
      assert.deepEqual(await clientClosed, { code: 1006, reason: '' });
    });

    test("a websocket 'error' (message over maxPayload) becomes the stream's error", T, async (t) => {
      const { client, server } = await connect(t, pair, { maxPayload: 1024 });
      const s = serverStream(server);
      const sLog = record(s);
      const clientClosed = closed(client);
      const sClosed = closeOf(s);
      client.send(Buffer.alloc(2048));
      await sClosed;
      assert.deepEqual(sLog, ['error', 'close']);
      const [err] = sLog.errors;
      assert.ok(err instanceof RangeError);
      assert.equal(err.code, 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH');
      assert.equal(err.message, 'Max payload size exceeded');
      // A close frame was sent (not a terminate): the peer sees the status code.
      assert.equal((await clientClosed).code, 1009);
    });

    // --- objectMode ---------------------------------------------------------------------------

    test('readableObjectMode: one chunk per message, text as string, binary as Buffer', T, async (t) => {
      const { client, server } = await connect(t, pair);
      const c = clientStream(client, { readableObjectMode: true });
      assert.equal(c.readableObjectMode, true);
      assert.equal(c.writableObjectMode, false);
      const chunks = [];
      c.on('data', (chunk) => chunks.push(chunk));
      server.send('héllo');
      server.send(Buffer.from([1, 2, 3]));
      server.send('');
      server.send(Buffer.alloc(0));
      server.send('x');
      await until(() => chunks.length === 5, 'five chunks');
      assert.deepEqual(chunks, ['héllo', Buffer.from([1, 2, 3]), '', Buffer.alloc(0), 'x']);
      // The writable side stays in byte mode.
      assert.throws(() => c.write({ a: 1 }), { code: 'ERR_INVALID_ARG_TYPE' });
    });

    test('objectMode: true is overridden (as in ws): byte mode on both sides', T, async (t) => {
      const { client, server } = await connect(t, pair);
      const c = clientStream(client, { objectMode: true });
      assert.equal(c.readableObjectMode, false);
      assert.equal(c.writableObjectMode, false);
      const chunks = [];
      c.on('data', (chunk) => chunks.push(chunk));
      server.send('héllo');
      server.send(Buffer.from([1, 2, 3]));
      await until(() => Buffer.concat(chunks).length === 9, 'the data');
      assert.ok(chunks.every(Buffer.isBuffer));
      assert.deepEqual(Buffer.concat(chunks), Buffer.from([...Buffer.from('héllo'), 1, 2, 3]));
    });

    // --- CONNECTING ---------------------------------------------------------------------------

    test('a stream on a CONNECTING client: writes and end() wait for open', T, async (t) => {
      const { wss, url, track } = await startServer(t, pair);
      const got = [];
      const serverSide = new Promise((resolve) =>
        wss.once('connection', (ws) => {
          ws.on('message', (data, isBinary) => got.push([data.toString(), isBinary]));
          resolve(closed(ws));
        })
      );
      const client = new pair.Client(url);
      track(client);
      assert.equal(client.readyState, client.CONNECTING);
      const c = clientStream(client);
      const cLog = record(c);
      c.resume();
      const cClosed = closeOf(c);
      c.write('one');
      c.write(Buffer.from('two'));
      c.end('three');
      assert.deepEqual(await (await serverSide), { code: 1005, reason: '' });
      assert.deepEqual(got, [
        ['one', true],
        ['two', true],
        ['three', true]
      ]);
      await cClosed;
      assert.deepEqual(cLog, ['finish', 'end', 'close']);
    });

    test('a failed handshake destroys the stream with the websocket error', T, async (t) => {
      const { url, track } = await startServer(t, pair, { verifyClient: () => false });
      const client = new pair.Client(url);
      track(client);
      const c = clientStream(client);
      const cLog = record(c);
      const cClosed = closeOf(c);
      c.write('never sent');
      await cClosed;
      assert.deepEqual(cLog, ['error', 'close']);
      assert.equal(cLog.errors[0].message, 'Unexpected server response: 401');
      assert.equal(client.readyState, client.CLOSED);
    });
  });
}

// --- a raw peer: invalid UTF-8 ------------------------------------------------------------------

test("invalid UTF-8 from the peer: the stream emits the websocket's WS_ERR_INVALID_UTF8 error, a 1007 close frame is sent", T, async (t) => {
  const pair = PAIRS[0];
  const { wss } = await startServer(t, pair);
  const conn = once(wss, 'connection');
  const { socket, head, reader } = await rawWebSocket(t, wss.address().port);
  const [server] = await conn;
  const s = pair.Server.createWebSocketStream(server);
  const sLog = record(s);
  const sClosed = closeOf(s);
  assert.match(head, /^HTTP\/1\.1 101 /);

  // A masked text frame carrying 0xff 0xfe.
  socket.write(frame({ opcode: 0x1, payload: Buffer.from([0xff, 0xfe]) }));

  const closeFrame = await reader.next();
  assert.deepEqual(closeFrame.bytes, Buffer.from([0x88, 0x02, 0x03, 0xef]), 'close frame 1007');
  socket.end();

  await sClosed;
  assert.deepEqual(sLog, ['error', 'close']);
  const [err] = sLog.errors;
  assert.ok(err instanceof Error);
  assert.equal(err.code, 'WS_ERR_INVALID_UTF8');
  assert.equal(err.message, 'Invalid WebSocket frame: invalid UTF-8 sequence');
  assert.equal(server.readyState, server.CLOSED);
});
