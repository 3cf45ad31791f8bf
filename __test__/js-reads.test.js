'use strict';

// Reads served by the JS thread (src/engine/park.rs, src/binding/served.rs): a connection whose
// reads bring whole messages and nothing else leaves the engine's thread, and the JS thread's
// event loop reads its socket itself. Everything must work on it as on a connection with a
// task: messages in order, alone or in bursts, control frames, frames and messages larger
// than a read, bad input with ws's errors, pause, close, and an environment going away while
// it is served.

const { describe, it } = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const { once } = require('node:events');

const WebSocket = require(path.join(__dirname, '..'));
const PeerWebSocket = require('ws');
const native = require(path.join(__dirname, '..', 'lib', 'native.js'));
const { echoBack, frame, nodeChild, openClient, quietPeriod, rawWebSocket, startWss, waitFor } = require('./helpers');

const served = (ws) => native.binding.served(ws._id);

/** Sends `n` messages one at a time, each after the echo of the one before. */
async function oneByOne(client, n, prefix = 'm') {
  for (let i = 0; i < n; i++) {
    const text = `${prefix}${i}`;
    const echoed = once(client, 'message');
    client.send(text);
    const [data] = await echoed;
    assert.equal(String(data), text);
  }
}

/**
 * A raw client of a ws-native echo server whose connection the JS thread serves: `next()`
 * reads the server's frames, `send()` writes raw bytes.
 */
async function servedRaw(t, options = {}) {
  const wss = echoBack(await startWss(t, WebSocket.Server, options));
  const accepted = once(wss, 'connection');
  const { socket, reader } = await rawWebSocket(t, wss.address().port);
  const [server] = await accepted;
  for (let i = 0; i < 12; i++) {
    socket.write(frame({ opcode: 1, payload: `r${i}` }));
    const f = await reader.next();
    assert.equal(String(f.payload), `r${i}`);
  }
  await waitFor(() => served(server), { what: 'the connection to be served by the JS thread' });
  return { wss, server, socket, reader };
}

describe('reads served by the JS thread', () => {
  it('a connection answered message by message moves to the JS thread, in order', async (t) => {
    const wss = echoBack(await startWss(t, WebSocket.Server));
    const { client, server } = await openClient(t, wss, PeerWebSocket);
    await oneByOne(client, 12);
    await waitFor(() => served(server), { what: 'the connection to be served by the JS thread' });
    await oneByOne(client, 50, 'served');
    assert.equal(served(server), true);
    // Binary stays binary, large and empty messages arrive whole.
    const got = [];
    server.on('message', (data, isBinary) => got.push([isBinary, data.length]));
    for (const [payload, opts] of [[Buffer.alloc(10000, 7), { binary: true }], ['', {}], [Buffer.alloc(0), { binary: true }]]) {
      client.send(payload, opts);
      await once(client, 'message');
    }
    assert.deepEqual(got, [[true, 10000], [false, 0], [true, 0]]);
  });

  it('messages that come together are read on the JS thread too, in order', async (t) => {
    const { server, socket, reader } = await servedRaw(t);
    const got = [];
    server.on('message', (d) => got.push(String(d)));
    const texts = Array.from({ length: 50 }, (_, i) => `t${i}`);
    socket.write(Buffer.concat(texts.map((payload) => frame({ opcode: 1, payload }))));
    for (const text of texts) assert.equal(String((await reader.next()).payload), text);
    assert.deepEqual(got, texts);
    assert.equal(served(server), true);
  });

  it('a burst larger than a read: all arrive once, in order', async (t) => {
    const wss = await startWss(t, WebSocket.Server);
    const received = [];
    let serverWs = null;
    wss.on('connection', (ws) => {
      serverWs = ws;
      ws.on('message', (data) => {
        received.push(String(data));
        ws.send(data);
      });
    });
    const { client } = await openClient(t, wss, PeerWebSocket);
    await oneByOne(client, 12);
    await waitFor(() => served(serverWs));
    received.length = 0;
    const echoed = [];
    client.on('message', (d) => echoed.push(String(d)));
    // 600 KB at once: more than the JS thread reads from a socket per wake.
    const all = Array.from({ length: 2000 }, (_, i) => `b${i}`.padEnd(300, '.'));
    for (const m of all) client.send(m);
    await waitFor(() => echoed.length === all.length, { what: 'every echo' });
    assert.deepEqual(received, all);
    assert.deepEqual(echoed, all);
  });

  it('a frame the read cuts short goes to the task, which completes it', async (t) => {
    const { server, socket, reader } = await servedRaw(t);
    const got = [];
    server.on('message', (d) => got.push(String(d)));
    const second = frame({ opcode: 1, payload: 'second' });
    socket.write(Buffer.concat([frame({ opcode: 1, payload: 'first' }), second.subarray(0, 5)]));
    assert.equal(String((await reader.next()).payload), 'first');
    await quietPeriod(30);
    socket.write(second.subarray(5));
    assert.equal(String((await reader.next()).payload), 'second');
    assert.deepEqual(got, ['first', 'second']);
  });

  it('a message larger than a read arrives whole', async (t) => {
    const { server, socket, reader } = await servedRaw(t);
    const got = [];
    server.on('message', (d) => got.push(d.length));
    socket.write(frame({ opcode: 2, payload: Buffer.alloc(1024 * 1024, 3) }));
    const f = await reader.next();
    assert.equal(f.payload.length, 1024 * 1024);
    assert.deepEqual(got, [1024 * 1024]);
  });

  it('a ws-native client is served too', async (t) => {
    const wss = echoBack(await startWss(t, PeerWebSocket.Server));
    const { client } = await openClient(t, wss, WebSocket);
    await oneByOne(client, 12);
    await waitFor(() => served(client), { what: 'the client to be served by the JS thread' });
    await oneByOne(client, 20, 'c');
  });

  it('pings get their pong and events while served; pongs reach JS', async (t) => {
    const { server, socket, reader } = await servedRaw(t);
    const pings = [];
    const pongs = [];
    server.on('ping', (d) => pings.push(String(d)));
    server.on('pong', (d) => pongs.push(String(d)));
    socket.write(Buffer.concat([frame({ opcode: 9, payload: 'p1' }), frame({ opcode: 10, payload: 'q1' })]));
    const pong = await reader.next();
    assert.deepEqual([pong.opcode, String(pong.payload)], [10, 'p1']);
    await waitFor(() => pongs.length === 1);
    assert.deepEqual([pings, pongs], [['p1'], ['q1']]);
    assert.equal(served(server), true);
  });

  it('a fragmented message goes to the task, which assembles it', async (t) => {
    const { server, socket, reader } = await servedRaw(t);
    socket.write(frame({ opcode: 1, fin: false, payload: 'hel' }));
    await quietPeriod(30);
    socket.write(frame({ opcode: 0, payload: 'lo' }));
    const f = await reader.next();
    assert.equal(String(f.payload), 'hello');
    assert.equal(server.readyState, WebSocket.OPEN);
  });

  // Bad input while served: what ws does with it (error, its code and message, the close
  // frame it sends, the close event once the peer drops the socket).
  async function badInput(t, Server, options, bytes, served) {
    const wss = echoBack(await startWss(t, Server, options));
    const accepted = once(wss, 'connection');
    const { socket, reader } = await rawWebSocket(t, wss.address().port);
    const [conn] = await accepted;
    const errors = [];
    conn.on('error', (err) => errors.push([err.code, err.message]));
    const closed = new Promise((resolve) => conn.on('close', (code) => resolve(code)));
    for (let i = 0; i < 12; i++) {
      socket.write(frame({ opcode: 1, payload: `r${i}` }));
      await reader.next();
    }
    if (served) await waitFor(() => native.binding.served(conn._id), { what: 'the connection to be served' });
    socket.write(bytes);
    const close = await reader.next();
    socket.destroy();
    return { errors, close: [close.opcode, close.payload.toString('hex')], code: await closed };
  }

  for (const [name, bytes, options, code] of [
    ['invalid UTF-8', () => frame({ opcode: 1, payload: Buffer.from([0xc3, 0x28]) }), {}, 'WS_ERR_INVALID_UTF8'],
    ['a message over maxPayload', () => frame({ opcode: 2, payload: Buffer.alloc(100) }), { maxPayload: 50 }, 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH'],
    ['an unmasked frame', () => frame({ opcode: 1, mask: false, payload: 'x' }), {}, 'WS_ERR_EXPECTED_MASK'],
    ['RSV1 without deflate', () => frame({ opcode: 1, rsv: 4, payload: 'x' }), {}, 'WS_ERR_UNEXPECTED_RSV_1'],
    ['an unknown opcode', () => frame({ opcode: 3, payload: 'x' }), {}, 'WS_ERR_INVALID_OPCODE']
  ]) {
    it(`${name}: what ws does`, async (t) => {
      const input = bytes();
      const ref = await badInput(t, PeerWebSocket.Server, options, input, false);
      const got = await badInput(t, WebSocket.Server, options, input, true);
      assert.equal(got.errors[0][0], code);
      assert.deepEqual(got, ref);
    });
  }

  it('a close frame while served: the close handshake completes with its code and reason', async (t) => {
    const { server, socket, reader } = await servedRaw(t);
    const closed = once(server, 'close');
    const payload = Buffer.concat([Buffer.from([0x0f, 0xa0]), Buffer.from('bye')]);
    socket.write(frame({ opcode: 8, payload }));
    const [code, reason] = await closed;
    assert.deepEqual([code, String(reason)], [4000, 'bye']);
    const f = await reader.next();
    assert.deepEqual([f.opcode, f.payload], [8, payload]);
  });

  it('pause() while served holds messages back until resume()', async (t) => {
    const { server, socket } = await servedRaw(t);
    const got = [];
    server.on('message', (d) => got.push(String(d)));
    server.pause();
    socket.write(frame({ opcode: 1, payload: 'held' }));
    await quietPeriod(100);
    assert.deepEqual(got, []);
    server.resume();
    await waitFor(() => got.length === 1);
    assert.deepEqual(got, ['held']);
  });

  it('the peer going away while served: close 1006', async (t) => {
    const { server, socket } = await servedRaw(t);
    const closed = once(server, 'close');
    socket.destroy();
    const [code] = await closed;
    assert.equal(code, 1006);
  });

  it('a Worker that ends with served connections, and a process that exits with them', async (t) => {
    const script = path.join(__dirname, 'fixtures', 'js-reads-exit.js');
    for (const mode of ['worker', 'main']) {
      const child = nodeChild(t, script, [mode]);
      const { code, signal } = await child.exited;
      assert.deepEqual({ code, signal }, { code: 0, signal: null }, mode);
      assert.ok(child.lines.includes('served'), `${mode}: ${child.lines.join(' | ')}`);
    }
  });

  it('timers keep their time during a tight request-answer loop', async (t) => {
    const wss = echoBack(await startWss(t, WebSocket.Server));
    const { client, server } = await openClient(t, wss, PeerWebSocket);
    await oneByOne(client, 12);
    await waitFor(() => served(server));
    let ticks = 0;
    const timer = setInterval(() => ticks++, 10);
    const until = Date.now() + 300;
    let n = 0;
    while (Date.now() < until) {
      await oneByOne(client, 1, `t${n++}`);
    }
    clearInterval(timer);
    assert.ok(n > 100, `${n} round trips`);
    assert.ok(ticks >= 20, `${ticks} ticks of a 10 ms interval in 300 ms`);
  });

  it('WS_NATIVE_JS_READS=0 keeps every read on the engine thread', async (t) => {
    const script = path.join(__dirname, 'fixtures', 'js-reads-exit.js');
    const child = nodeChild(t, script, ['off'], { env: { WS_NATIVE_JS_READS: '0' } });
    const { code } = await child.exited;
    assert.equal(code, 0);
    assert.ok(child.lines.includes('not served'), child.lines.join(' | '));
  });
});
