'use strict';

// Liveness and flow control in the engine: the built-in heartbeat (server and client), the
// 'drain' event with its water marks, maxBackpressure with and without
// closeOnBackpressureLimit, and bufferedAmount in every state.

const test = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const net = require('node:net');
const path = require('node:path');
const { spawn } = require('node:child_process');

const WebSocket = require('..');
const Ws = require('ws');
const { frame, netServer, once, quietPeriod, sha256, silentPeer, startWss, switchingProtocols, upgradeRequest, urlOf, waitFor } = require('./helpers');

const T = { timeout: 30000 };
const HB = { interval: 150, timeout: 150 };

/** A server that completes the handshake, then reads nothing; resolves with its port. */
async function deafServer(t) {
  const server = await netServer(t, (s) =>
    s.once('data', (head) => {
      s.write(switchingProtocols(/Sec-WebSocket-Key: (.*)\r\n/i.exec(String(head))[1]));
      s.pause();
    })
  );
  return server.address().port;
}

test('heartbeat: a peer that never answers is terminated within interval + timeout, with the heartbeat error', T, async (t) => {
  const wss = await startWss(t, WebSocket.WebSocketServer, { heartbeat: HB });
  const connected = once(wss, 'connection');
  const started = Date.now();
  await silentPeer(t, wss.address().port);
  const [ws] = await connected;
  const events = [];
  ws.on('error', (err) => events.push(['error', err.code]));
  const [code] = await once(ws, 'close');
  const took = Date.now() - started;
  assert.deepEqual(events, [['error', 'WS_ERR_HEARTBEAT_TIMEOUT']]);
  assert.equal(code, 1006);
  assert.ok(took >= HB.interval + HB.timeout, `terminated after ${took} ms`);
  // The sweep looks every sixteenth of the shortest period: some slack for a loaded machine.
  assert.ok(took < HB.interval + HB.timeout + 500, `terminated after ${took} ms`);
});

test('heartbeat: a peer that answers the pings stays, and its pongs are not events', T, async (t) => {
  const wss = await startWss(t, WebSocket.WebSocketServer, { heartbeat: HB });
  const connected = once(wss, 'connection');
  const client = new Ws(urlOf(wss));
  t.after(() => client.terminate());
  let pingsSeen = 0;
  client.on('ping', () => pingsSeen++);
  const [ws] = await connected;
  let pongEvents = 0;
  ws.on('pong', () => pongEvents++);
  // Several heartbeat periods: the ws client answers every ping (its auto-pong).
  await waitFor(() => pingsSeen >= 4, { timeout: 5000, what: 'four heartbeat pings' });
  assert.equal(ws.readyState, WebSocket.OPEN, 'an answering peer stays');
  assert.equal(pongEvents, 0, "the heartbeat's pongs are the engine's");
  // An application ping's pong is an event, as in ws.
  const pong = once(ws, 'pong');
  ws.ping('mine');
  assert.equal(String((await pong)[0]), 'mine');
});

test('heartbeat: any frame from the peer is proof of life', T, async (t) => {
  const wss = await startWss(t, WebSocket.WebSocketServer, { heartbeat: HB });
  const connected = once(wss, 'connection');
  const s = await silentPeer(t, wss.address().port);
  const [ws] = await connected;
  let closed = false;
  ws.on('close', () => (closed = true));
  ws.on('error', () => {});
  // A text frame every 100 ms, for more than three times interval + timeout; no pong ever.
  for (let i = 0; i < 12; i++) {
    s.write(frame({ opcode: 1, payload: `tick ${i}` }));
    await quietPeriod(100);
    assert.equal(closed, false, `closed after ${i + 1} frames`);
  }
  // Then silence: it goes.
  await once(ws, 'close');
});

test('heartbeat on the client: a server that never answers the pings ends the connection', T, async (t) => {
  const port = await deafServer(t);
  const ws = new WebSocket(`ws://127.0.0.1:${port}`, { heartbeat: HB });
  const errors = [];
  ws.on('error', (err) => errors.push(err.code));
  await once(ws, 'open');
  const [code] = await once(ws, 'close');
  assert.equal(code, 1006);
  assert.deepEqual(errors, ['WS_ERR_HEARTBEAT_TIMEOUT']);
});

test('heartbeat: the client side against an answering server stays open', T, async (t) => {
  const wss = await startWss(t, Ws.WebSocketServer);
  let pings = 0;
  wss.on('connection', (s) => s.on('ping', () => pings++));
  const ws = new WebSocket(urlOf(wss), { heartbeat: HB });
  t.after(() => ws.terminate());
  await waitFor(() => pings >= 3, { timeout: 5000, what: 'three heartbeat pings' });
  assert.equal(ws.readyState, WebSocket.OPEN, 'it stays open');
});

test('heartbeat option: bad values throw', () => {
  for (const heartbeat of [{ interval: 0, timeout: 10 }, { interval: 10 }, { interval: -1, timeout: 5 }, 5]) {
    assert.throws(() => new WebSocket.WebSocketServer({ noServer: true, heartbeat }), RangeError);
    assert.throws(() => new WebSocket('ws://127.0.0.1:1', { heartbeat }), RangeError);
  }
});

test('10,000 heartbeat connections create no JS timers', { timeout: 120000 }, async (t) => {
  // The server in a child process, so that only its own timers count; the clients here.
  const child = spawn(process.execPath, [path.join(__dirname, 'fixtures', 'heartbeat-timers.js')], { stdio: ['pipe', 'pipe', 'inherit'] });
  t.after(() => child.kill());
  child.stdout.setEncoding('utf8');
  const lines = [];
  child.stdout.on('data', (d) => lines.push(...d.split('\n').filter(Boolean)));
  const line = async (prefix) => {
    await waitFor(() => lines.some((l) => l.startsWith(prefix)), { timeout: 20000, what: prefix });
    return lines.splice(lines.findIndex((l) => l.startsWith(prefix)), 1)[0].slice(prefix.length);
  };
  const state = async () => {
    child.stdin.write('state\n');
    return JSON.parse(await line('STATE '));
  };
  const port = Number(await line('PORT '));
  const before = await state();
  const N = 10000;
  const sockets = [];
  let pings = 0;
  t.after(() => sockets.forEach((s) => s.destroy()));
  for (let i = 0; i < N; i += 500) {
    await Promise.all(
      Array.from({ length: 500 }, async () => {
        const s = net.connect(port, '127.0.0.1');
        s.on('error', () => {});
        sockets.push(s);
        await once(s, 'connect');
        // Everything after the 101's head is the heartbeat's ping (it may come with the head).
        let got = Buffer.alloc(0);
        const counted = (d) => {
          got = Buffer.concat([got, d]);
          const end = got.indexOf('\r\n\r\n');
          if (end >= 0 && got.length > end + 4) {
            pings++;
            s.off('data', counted);
          }
        };
        s.on('data', counted);
        s.write(upgradeRequest());
      })
    );
  }
  await waitFor(async () => (await state()).connections === N, { timeout: 20000, what: 'every connection' });
  // Several heartbeat intervals (200 ms): every connection gets pinged.
  await waitFor(() => pings >= N, { timeout: 20000, interval: 50, what: () => `a ping on every connection (${pings})` });
  const after = await state();
  assert.equal(after.connections, N);
  assert.equal(after.timers, before.timers, 'no timer was added for the heartbeat');
});

test("drain: a reader that stops reading makes the output pass the high mark; 'drain' once it reads again", T, async (t) => {
  // A raw peer that reads nothing at first.
  const wss = await startWss(t, WebSocket.WebSocketServer, { highWaterMark: 256 * 1024, lowWaterMark: 16 * 1024 });
  const connected = once(wss, 'connection');
  const s = await silentPeer(t, wss.address().port);
  const [ws] = await connected;
  assert.equal(ws.isBackpressured, false);
  const chunk = Buffer.alloc(64 * 1024, 7);
  let drained = 0;
  ws.on('drain', () => drained++);
  // Until the kernel's buffers are full and the engine holds more than the high mark.
  for (let i = 0; i < 2000 && !ws.isBackpressured; i++) {
    ws.send(chunk);
    await new Promise((resolve) => setImmediate(resolve));
  }
  assert.equal(ws.isBackpressured, true);
  assert.ok(ws.bufferedAmount > 256 * 1024);
  await quietPeriod(50);
  assert.equal(drained, 0, 'no drain while nothing is read');
  s.resume();
  s.on('data', () => {});
  await once(ws, 'drain');
  assert.equal(ws.isBackpressured, false);
  assert.ok(ws.bufferedAmount <= 16 * 1024, `bufferedAmount ${ws.bufferedAmount} at the drain`);
  assert.equal(drained, 1);
});

test("drain: sends that pass the high mark within one tick make isBackpressured true, and 'drain' follows", T, async (t) => {
  // The writer loop of the README: send while not backpressured, go on at 'drain'. The socket
  // takes each tick's bytes at once (a reading peer on loopback), so the engine itself never
  // holds more than the high mark: the 'drain' is owed for what JS counted.
  const wss = await startWss(t, WebSocket.Server, { highWaterMark: 64 * 1024, lowWaterMark: 16 * 1024 });
  const total = 2000;
  let drains = 0;
  wss.on('connection', (ws) => {
    let left = total;
    const chunk = Buffer.alloc(1024, 7);
    const pump = () => {
      while (left > 0 && !ws.isBackpressured) {
        ws.send(chunk);
        left--;
      }
    };
    ws.on('drain', () => {
      drains++;
      pump();
    });
    pump();
  });
  const client = new Ws(urlOf(wss));
  t.after(() => client.terminate());
  let got = 0;
  client.on('message', () => got++);
  await waitFor(() => got === total, { timeout: 10000, what: () => `all ${total} messages (${got})` });
  assert.ok(drains >= 1, `drains: ${drains}`);
});

test('maxBackpressure: past it sends fail with WS_ERR_BACKPRESSURE_LIMIT until the drain', T, async (t) => {
  const wss = await startWss(t, WebSocket.WebSocketServer, { maxBackpressure: 512 * 1024 });
  const connected = once(wss, 'connection');
  const s = await silentPeer(t, wss.address().port);
  const [ws] = await connected;
  const chunk = Buffer.alloc(64 * 1024, 7);
  let dropped = null;
  // The drain can come before the peer reads: loopback's kernel buffers may take the whole
  // backlog at once once the engine's task writes it, so the listener is there from the start.
  const drained = new Promise((resolve) => ws.on('drain', () => dropped !== null && resolve()));
  for (let i = 0; i < 2000 && dropped === null; i++) {
    ws.send(chunk, (err) => {
      if (err && dropped === null) dropped = err;
    });
    await new Promise((resolve) => setImmediate(resolve));
  }
  assert.equal(dropped.code, 'WS_ERR_BACKPRESSURE_LIMIT');
  assert.equal(ws.readyState, WebSocket.OPEN, 'without closeOnBackpressureLimit the connection stays');
  s.resume();
  s.on('data', () => {});
  await drained;
  const sent = await new Promise((resolve) => ws.send('after the drain', resolve));
  assert.equal(sent, undefined);
});

test('closeOnBackpressureLimit: a client that floods and never reads is ended, and the server stays bounded', T, async (t) => {
  const limit = 1024 * 1024;
  const wss = await startWss(t, WebSocket.WebSocketServer, { maxBackpressure: limit, closeOnBackpressureLimit: true });
  const connected = once(wss, 'connection');
  const s = await silentPeer(t, wss.address().port);
  const [ws] = await connected;
  // An echo server: each message goes back to a client that reads none of it.
  let peak = 0;
  ws.on('message', (data) => {
    ws.send(data);
    peak = Math.max(peak, ws.bufferedAmount);
  });
  const errors = [];
  ws.on('error', (err) => errors.push(err.code));
  const closed = once(ws, 'close');
  let ended = false;
  closed.then(() => (ended = true));
  const payload = Buffer.alloc(16 * 1024, 1);
  for (let i = 0; i < 5000 && !ended; i++) {
    if (!s.write(frame({ opcode: 2, payload }))) await Promise.race([once(s, 'drain'), closed]);
  }
  const [code] = await closed;
  assert.equal(code, 1008);
  assert.deepEqual(errors, ['WS_ERR_BACKPRESSURE_LIMIT']);
  // The output held for the peer: the limit, and what the echoes of the batches JS handles
  // before the engine's next look add (a batch carries at most 1 MiB of a connection's
  // messages, and a few can be under way); without the limit it would take all 80 MB sent.
  assert.ok(peak <= limit + 4 * 1024 * 1024, `the output reached ${peak} bytes`);
});

test('large messages to a peer that reads late arrive whole and in order, with small ones between them', T, async (t) => {
  // A large payload goes from JS's memory to an idle socket without a copy into the queue;
  // what the socket does not take is queued, and what is sent after it waits behind it.
  const wss = await startWss(t, WebSocket.WebSocketServer);
  const client = new Ws(urlOf(wss));
  t.after(() => client.terminate());
  const [[ws]] = await Promise.all([once(wss, 'connection'), once(client, 'open')]);
  client.pause();
  const sent = [];
  // Enough large ones first that one of them finds the socket's buffers full part way.
  for (let i = 0; i < 14; i++) {
    const data = i >= 8 && i % 2 === 0 ? Buffer.from(`small ${i}`) : crypto.randomBytes(1024 * 1024 + i);
    sent.push(sha256(data));
    ws.send(data);
  }
  await waitFor(() => ws.bufferedAmount > 0, { what: () => 'output held for the paused peer' });
  const got = [];
  client.on('message', (data) => got.push(sha256(data)));
  client.resume();
  await waitFor(() => got.length === sent.length, { timeout: 20000, what: () => `all ${sent.length} messages (${got.length})` });
  assert.deepEqual(got, sent);
  await waitFor(() => ws.bufferedAmount === 0, { what: () => `bufferedAmount ${ws.bufferedAmount}` });
});

test('bufferedAmount before open, while open, while closing and after close', T, async (t) => {
  const port = await deafServer(t);
  const ws = new WebSocket(`ws://127.0.0.1:${port}`, { perMessageDeflate: false, closeTimeout: 200 });
  assert.equal(ws.bufferedAmount, 0, 'before open: the request head is not counted');
  await once(ws, 'open');
  assert.equal(ws.bufferedAmount, 0, 'open, nothing sent');
  // Fill the kernel's buffers, then count exactly what the engine holds.
  const chunk = Buffer.alloc(256 * 1024, 1);
  for (let i = 0; i < 200 && ws.bufferedAmount < 1024 * 1024; i++) {
    ws.send(chunk);
    await new Promise((resolve) => setImmediate(resolve));
  }
  const held = ws.bufferedAmount;
  assert.ok(held > 256 * 1024, `held ${held}`);
  ws.send('xyz');
  assert.equal(ws.bufferedAmount, held + 3, 'a send in this tick counts its bytes at once');
  await new Promise((resolve) => setImmediate(resolve));
  // In the engine: the frame's 2 + 4 header and mask bytes too.
  assert.equal(ws.bufferedAmount, held + 3 + 6);
  ws.close();
  assert.equal(ws.readyState, WebSocket.CLOSING);
  assert.ok(ws.bufferedAmount >= held + 9, 'closing: the bytes are still there');
  ws.send('late', () => {});
  assert.ok(ws.bufferedAmount >= held + 9 + 4, 'a send while closing counts, as in ws');
  await once(ws, 'close');
  // After close: what was never written stays counted, with the sends after the close.
  assert.ok(ws.bufferedAmount >= held + 9 + 4, `after close: ${ws.bufferedAmount}`);
  const before = ws.bufferedAmount;
  ws.send('12345');
  assert.equal(ws.bufferedAmount, before + 5);
});
