'use strict';

// Malformed frames: a raw `net` peer does a valid handshake then writes frames that break
// RFC 6455; ws-native must react exactly as ws does (error code and message on the
// WebSocket, close frame with the status code, 'close', and the server keeps serving).
// Run with WS_IMPL=ws to check the expectations against the real ws.

const { test } = require('node:test');
const assert = require('node:assert/strict');
const { once } = require('node:events');
const path = require('node:path');

const WebSocket = require(process.env.WS_IMPL === 'ws' ? 'ws' : path.join(__dirname, '..'));
const { WebSocketServer } = WebSocket;
const Ws = require('ws');
const { frame, frameReader, netServer, rawWebSocket, startWss, switchingProtocols, waitFor } = require('./helpers');

const HOST = '127.0.0.1';
const T = { timeout: 10000 };

const closePayload = (code, reason = Buffer.alloc(0)) => {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(code);
  return Buffer.concat([b, Buffer.from(reason)]);
};

const startServer = (t, options) => startWss(t, WebSocketServer, options);

/** Raw client: handshake with the server, resolves with the socket, reader and server ws. */
async function rawClient(t, wss) {
  const conn = once(wss, 'connection');
  const { socket, reader } = await rawWebSocket(t, wss.address().port);
  const [ws] = await conn;
  return { socket, reader, ws };
}

/** Records 'error' and 'close' on a WebSocket; `closed` resolves on 'close'. */
function watch(ws) {
  const r = { events: [], errors: [] };
  r.closed = new Promise((resolve) => {
    ws.on('error', (err) => {
      r.events.push('error');
      r.errors.push(err);
    });
    ws.on('message', () => r.events.push('message'));
    ws.on('close', (code, reason) => {
      r.events.push('close');
      r.code = code;
      r.reason = reason;
      resolve();
    });
  });
  return r;
}

async function serverStillServes(t, wss) {
  const ws = new Ws(`ws://${HOST}:${wss.address().port}/`);
  t.after(() => ws.terminate());
  wss.once('connection', (peer) => peer.on('message', (d, b) => peer.send(d, { binary: b })));
  await once(ws, 'open');
  ws.send('ok');
  const [data] = await once(ws, 'message');
  assert.equal(data.toString(), 'ok');
  ws.close();
  await once(ws, 'close');
}

/**
 * Sends `bytes` after a valid handshake and checks the server side's reaction.
 */
async function expectServerError(t, bytes, { code, message, status, ctor = RangeError, options }) {
  const wss = await startServer(t, options);
  const { socket, reader, ws } = await rawClient(t, wss);
  const w = watch(ws);
  socket.write(bytes);

  const closeFrame = await reader.next();
  assert.equal(closeFrame.opcode, 0x8, 'the server sends a close frame');
  assert.equal(closeFrame.masked, false);
  assert.equal(closeFrame.payload.readUInt16BE(0), status, 'close frame status code');

  socket.end();
  await w.closed;
  assert.deepEqual(w.events, ['error', 'close']);
  const [err] = w.errors;
  assert.ok(err instanceof ctor, `error is a ${ctor.name}`);
  assert.equal(err.code, code);
  assert.equal(err.message, message);
  assert.equal(ws.readyState, WebSocket.CLOSED);

  await serverStillServes(t, wss);
}

const text = (payload, extra = {}) => frame({ opcode: 0x1, payload, ...extra });

// --- server side ------------------------------------------------------------------------

test('unmasked frame: WS_ERR_EXPECTED_MASK, 1002', T, (t) =>
  expectServerError(t, text('hi', { mask: false }), {
    code: 'WS_ERR_EXPECTED_MASK',
    message: 'Invalid WebSocket frame: MASK must be set',
    status: 1002
  }));

test('RSV1 set without an extension: WS_ERR_UNEXPECTED_RSV_1, 1002', T, (t) =>
  expectServerError(t, text('hi', { rsv: 4 }), {
    code: 'WS_ERR_UNEXPECTED_RSV_1',
    message: 'Invalid WebSocket frame: RSV1 must be clear',
    status: 1002
  }));

test('RSV1 on a ping frame: WS_ERR_UNEXPECTED_RSV_1', T, (t) =>
  expectServerError(t, frame({ opcode: 0x9, rsv: 4 }), {
    code: 'WS_ERR_UNEXPECTED_RSV_1',
    message: 'Invalid WebSocket frame: RSV1 must be clear',
    status: 1002
  }));

test('RSV2 set: WS_ERR_UNEXPECTED_RSV_2_3, 1002', T, (t) =>
  expectServerError(t, text('hi', { rsv: 2 }), {
    code: 'WS_ERR_UNEXPECTED_RSV_2_3',
    message: 'Invalid WebSocket frame: RSV2 and RSV3 must be clear',
    status: 1002
  }));

test('RSV3 set: WS_ERR_UNEXPECTED_RSV_2_3, 1002', T, (t) =>
  expectServerError(t, text('hi', { rsv: 1 }), {
    code: 'WS_ERR_UNEXPECTED_RSV_2_3',
    message: 'Invalid WebSocket frame: RSV2 and RSV3 must be clear',
    status: 1002
  }));

test('invalid opcode 3: WS_ERR_INVALID_OPCODE, 1002', T, (t) =>
  expectServerError(t, frame({ opcode: 0x3, payload: 'x' }), {
    code: 'WS_ERR_INVALID_OPCODE',
    message: 'Invalid WebSocket frame: invalid opcode 3',
    status: 1002
  }));

test('invalid control opcode 11: WS_ERR_INVALID_OPCODE', T, (t) =>
  expectServerError(t, frame({ opcode: 0xb }), {
    code: 'WS_ERR_INVALID_OPCODE',
    message: 'Invalid WebSocket frame: invalid opcode 11',
    status: 1002
  }));

test('continuation frame without a start: invalid opcode 0', T, (t) =>
  expectServerError(t, frame({ opcode: 0x0, payload: 'x' }), {
    code: 'WS_ERR_INVALID_OPCODE',
    message: 'Invalid WebSocket frame: invalid opcode 0',
    status: 1002
  }));

test('new data frame inside a fragmented message: invalid opcode 2', T, (t) =>
  expectServerError(
    t,
    Buffer.concat([text('part', { fin: false }), frame({ opcode: 0x2, payload: 'x' })]),
    {
      code: 'WS_ERR_INVALID_OPCODE',
      message: 'Invalid WebSocket frame: invalid opcode 2',
      status: 1002
    }
  ));

test('fragmented control frame: WS_ERR_EXPECTED_FIN, 1002', T, (t) =>
  expectServerError(t, frame({ opcode: 0x9, fin: false, payload: 'p' }), {
    code: 'WS_ERR_EXPECTED_FIN',
    message: 'Invalid WebSocket frame: FIN must be set',
    status: 1002
  }));

test('control frame payload > 125: WS_ERR_INVALID_CONTROL_PAYLOAD_LENGTH, 1002', T, (t) =>
  expectServerError(t, frame({ opcode: 0x9, payload: Buffer.alloc(126) }), {
    code: 'WS_ERR_INVALID_CONTROL_PAYLOAD_LENGTH',
    message: 'Invalid WebSocket frame: invalid payload length 126',
    status: 1002
  }));

test('close frame with a 1-byte payload: WS_ERR_INVALID_CONTROL_PAYLOAD_LENGTH', T, (t) =>
  expectServerError(t, frame({ opcode: 0x8, payload: Buffer.from([3]) }), {
    code: 'WS_ERR_INVALID_CONTROL_PAYLOAD_LENGTH',
    message: 'Invalid WebSocket frame: invalid payload length 1',
    status: 1002
  }));

for (const bad of [999, 1005, 1006, 1016, 2999, 5000]) {
  test(`invalid close code ${bad}: WS_ERR_INVALID_CLOSE_CODE, 1002`, T, (t) =>
    expectServerError(t, frame({ opcode: 0x8, payload: closePayload(bad) }), {
      code: 'WS_ERR_INVALID_CLOSE_CODE',
      message: `Invalid WebSocket frame: invalid status code ${bad}`,
      status: 1002
    }));
}

test('invalid UTF-8 in a text message: WS_ERR_INVALID_UTF8, 1007', T, (t) =>
  expectServerError(t, text(Buffer.from([0x68, 0xff, 0xfe])), {
    code: 'WS_ERR_INVALID_UTF8',
    message: 'Invalid WebSocket frame: invalid UTF-8 sequence',
    status: 1007,
    ctor: Error
  }));

test('invalid UTF-8 across fragments of a text message: 1007', T, (t) =>
  expectServerError(
    t,
    Buffer.concat([
      text(Buffer.from([0xe2, 0x82]), { fin: false }),
      frame({ opcode: 0x0, payload: Buffer.from([0x41]) })
    ]),
    {
      code: 'WS_ERR_INVALID_UTF8',
      message: 'Invalid WebSocket frame: invalid UTF-8 sequence',
      status: 1007,
      ctor: Error
    }
  ));

test('invalid UTF-8 in a close reason: WS_ERR_INVALID_UTF8, 1007', T, (t) =>
  expectServerError(t, frame({ opcode: 0x8, payload: closePayload(1000, Buffer.from([0xc3, 0x28])) }), {
    code: 'WS_ERR_INVALID_UTF8',
    message: 'Invalid WebSocket frame: invalid UTF-8 sequence',
    status: 1007,
    ctor: Error
  }));

test('message larger than maxPayload: WS_ERR_UNSUPPORTED_MESSAGE_LENGTH, 1009', T, (t) =>
  expectServerError(t, text('x'.repeat(11)), {
    code: 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH',
    message: 'Max payload size exceeded',
    status: 1009,
    options: { maxPayload: 10 }
  }));

test('fragmented message larger than maxPayload: 1009', T, (t) =>
  expectServerError(
    t,
    Buffer.concat([
      frame({ opcode: 0x2, fin: false, payload: Buffer.alloc(6) }),
      frame({ opcode: 0x0, payload: Buffer.alloc(6) })
    ]),
    {
      code: 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH',
      message: 'Max payload size exceeded',
      status: 1009,
      options: { maxPayload: 10 }
    }
  ));

test('64-bit payload length > 2^53 - 1: WS_ERR_UNSUPPORTED_DATA_PAYLOAD_LENGTH, 1009', T, (t) => {
  const ext = Buffer.from([0x00, 0x20, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00]);
  return expectServerError(t, frame({ opcode: 0x2, len: 127, ext }), {
    code: 'WS_ERR_UNSUPPORTED_DATA_PAYLOAD_LENGTH',
    message: 'Unsupported WebSocket frame: payload length > 2^53 - 1',
    status: 1009
  });
});

test('frames split byte by byte are still parsed; a 125-byte ping is fine', T, async (t) => {
  const wss = await startServer(t);
  const { socket, reader, ws } = await rawClient(t, wss);
  const w = watch(ws);
  const pingData = Buffer.alloc(125, 7);
  const bytes = Buffer.concat([
    text('split'),
    frame({ opcode: 0x9, payload: pingData }),
    frame({ opcode: 0x2, payload: Buffer.alloc(300, 1) })
  ]);
  const messages = [];
  ws.on('message', (d, isBinary) => messages.push([d.length, isBinary]));
  const ping = once(ws, 'ping');
  for (const b of bytes) {
    socket.write(Buffer.from([b]));
  }
  const [pd] = await ping;
  assert.deepEqual(pd, pingData);
  const pong = await reader.next();
  assert.equal(pong.opcode, 0xa);
  assert.deepEqual(pong.payload, pingData);
  await waitFor(() => messages.length >= 2, { what: 'the two messages' });
  assert.deepEqual(messages, [
    [5, false],
    [300, true]
  ]);
  assert.equal(w.errors.length, 0);
});

test('a valid close frame from a raw client is echoed and closes cleanly', T, async (t) => {
  const wss = await startServer(t);
  const { socket, reader, ws } = await rawClient(t, wss);
  const w = watch(ws);
  socket.write(frame({ opcode: 0x8, payload: closePayload(4321, 'raw bye') }));
  const echo = await reader.next();
  assert.equal(echo.opcode, 0x8);
  assert.equal(echo.payload.readUInt16BE(0), 4321);
  assert.equal(echo.payload.subarray(2).toString(), 'raw bye');
  await once(socket, 'end');
  socket.end();
  await w.closed;
  assert.deepEqual(w.events, ['close']);
  assert.equal(w.code, 4321);
  assert.equal(w.reason.toString(), 'raw bye');
});

test('skipUTF8Validation (server): invalid UTF-8 text is accepted', T, async (t) => {
  const wss = await startServer(t, { skipUTF8Validation: true });
  const { socket, ws } = await rawClient(t, wss);
  const w = watch(ws);
  const bad = Buffer.from([0x68, 0xff, 0xfe]);
  const msg = once(ws, 'message');
  socket.write(text(bad));
  const [data, isBinary] = await msg;
  assert.equal(isBinary, false);
  assert.deepEqual(Buffer.from(data), bad);
  socket.write(frame({ opcode: 0x8, payload: closePayload(1000, Buffer.from([0xc3, 0x28])) }));
  socket.on('end', () => socket.end());
  await w.closed;
  assert.equal(w.errors.length, 0);
  assert.equal(w.code, 1000);
  assert.deepEqual(w.reason, Buffer.from([0xc3, 0x28]));
});

// --- client side ------------------------------------------------------------------------

/** A raw TCP server that completes the handshake, then runs `after(socket, reader)`. */
function rawServer(t, after) {
  return netServer(t, (socket) => {
    let head = '';
    const onData = (chunk) => {
      head += chunk.toString('latin1');
      const end = head.indexOf('\r\n\r\n');
      if (end === -1) return;
      socket.removeListener('data', onData);
      socket.write(switchingProtocols(/sec-websocket-key:\s*(\S+)/i.exec(head)[1]));
      after(socket, frameReader(socket));
    };
    socket.on('data', onData);
  });
}

async function expectClientError(t, bytes, { code, message, status, ctor = RangeError, options }) {
  let closeFrame;
  const gotClose = new Promise((resolve) => {
    closeFrame = resolve;
  });
  const server = await rawServer(t, async (socket, reader) => {
    socket.write(bytes);
    const f = await reader.next();
    closeFrame(f);
    socket.end();
  });
  const ws = new WebSocket(`ws://${HOST}:${server.address().port}/`, options);
  const w = watch(ws);
  await once(ws, 'open');
  const f = await gotClose;
  assert.equal(f.opcode, 0x8);
  assert.equal(f.masked, true, 'client frames are masked');
  assert.equal(f.payload.readUInt16BE(0), status);
  await w.closed;
  assert.deepEqual(w.events, ['error', 'close']);
  const [err] = w.errors;
  assert.ok(err instanceof ctor);
  assert.equal(err.code, code);
  assert.equal(err.message, message);
}

test('client: masked frame from the server: WS_ERR_UNEXPECTED_MASK, 1002', T, (t) =>
  expectClientError(t, frame({ opcode: 0x1, payload: 'hi', mask: true }), {
    code: 'WS_ERR_UNEXPECTED_MASK',
    message: 'Invalid WebSocket frame: MASK must be clear',
    status: 1002
  }));

test('client: RSV1 set: WS_ERR_UNEXPECTED_RSV_1', T, (t) =>
  expectClientError(t, frame({ opcode: 0x1, payload: 'hi', mask: false, rsv: 4 }), {
    code: 'WS_ERR_UNEXPECTED_RSV_1',
    message: 'Invalid WebSocket frame: RSV1 must be clear',
    status: 1002
  }));

test('client: invalid UTF-8: WS_ERR_INVALID_UTF8, 1007', T, (t) =>
  expectClientError(t, frame({ opcode: 0x1, payload: Buffer.from([0xff]), mask: false }), {
    code: 'WS_ERR_INVALID_UTF8',
    message: 'Invalid WebSocket frame: invalid UTF-8 sequence',
    status: 1007,
    ctor: Error
  }));

test('client: invalid opcode: WS_ERR_INVALID_OPCODE', T, (t) =>
  expectClientError(t, frame({ opcode: 0x5, mask: false }), {
    code: 'WS_ERR_INVALID_OPCODE',
    message: 'Invalid WebSocket frame: invalid opcode 5',
    status: 1002
  }));

test('client: maxPayload exceeded: WS_ERR_UNSUPPORTED_MESSAGE_LENGTH, 1009', T, (t) =>
  expectClientError(t, frame({ opcode: 0x2, payload: Buffer.alloc(100), mask: false }), {
    code: 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH',
    message: 'Max payload size exceeded',
    status: 1009,
    options: { maxPayload: 99 }
  }));

test('client: skipUTF8Validation accepts invalid UTF-8', T, async (t) => {
  const bad = Buffer.from([0xe2, 0x28, 0xa1]);
  const server = await rawServer(t, (socket) => {
    socket.write(frame({ opcode: 0x1, payload: bad, mask: false }));
  });
  const ws = new WebSocket(`ws://${HOST}:${server.address().port}/`, { skipUTF8Validation: true });
  const w = watch(ws);
  const [data, isBinary] = await once(ws, 'message');
  assert.equal(isBinary, false);
  assert.deepEqual(Buffer.from(data), bad);
  ws.terminate();
  await w.closed;
  assert.equal(w.errors.length, 0);
});
