'use strict';

// ReconnectingWebSocket (lib/reconnecting-websocket.js): a client that reconnects by itself,
// with reconnecting-websocket's options. A server killed and restarted, the backoff and its
// reset, maxRetries, url and protocols functions, connectionTimeout, the queue of sends made
// while disconnected and its bounds, the close codes that stop it, close() during the wait
// (the process exits), and the WebSocket API across connections.

const test = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');

const WebSocket = require('..');
const { ReconnectingWebSocket, WebSocketServer } = WebSocket;
const {
  bounded,
  closeAfter,
  freePort,
  netServer,
  nodeChild,
  once,
  quietPeriod,
  silentServer,
  startWss,
  switchingProtocols,
  urlOf,
  waitFor
} = require('./helpers');

const T = { timeout: 20000 };
// Small delays for the tests (the defaults wait seconds).
const FAST = { minReconnectionDelay: 10, maxReconnectionDelay: 20 };
// A wait no test reaches: the socket stays between attempts.
const NEVER = { minReconnectionDelay: 60000, maxReconnectionDelay: 60000 };

/**
 * Records the events of a reconnecting socket: `['open']`, `['close', code, shouldReconnect]`,
 * `['error', code or message]`, `['reconnecting', attempt]`, `['reconnect']`. Listens to
 * 'error', so no error is thrown.
 */
function record(rws) {
  const log = [];
  rws.on('open', () => log.push(['open']));
  rws.on('close', (code) => log.push(['close', code, rws.shouldReconnect]));
  rws.on('error', (err) => log.push(['error', err.code || err.message]));
  rws.on('reconnecting', (attempt) => log.push(['reconnecting', attempt]));
  rws.on('reconnect', () => log.push(['reconnect']));
  return log;
}

/** How many entries of `log` are events named `name`. */
function count(log, name) {
  return log.filter((e) => e[0] === name).length;
}

/** Resolves once `rws` has emitted its last 'close' (the one after which nothing follows). */
function finalClose(rws) {
  return new Promise((resolve) => {
    const onClose = (code) => {
      if (rws.shouldReconnect) return;
      rws.off('close', onClose);
      resolve(code);
    };
    rws.on('close', onClose);
  });
}

/** Resolves with the callback error of `rws.send(data, cb)` (null on success). */
function sendResult(rws, data) {
  return new Promise((resolve) => rws.send(data, (err) => resolve(err || null)));
}

test('ReconnectingWebSocket is exported by the package, in CommonJS and ESM, and is a WebSocket', async () => {
  assert.equal(typeof ReconnectingWebSocket, 'function');
  assert.ok(ReconnectingWebSocket.prototype instanceof WebSocket);
  assert.equal(ReconnectingWebSocket.OPEN, WebSocket.OPEN);
  const esm = await import('../wrapper.mjs');
  assert.equal(esm.ReconnectingWebSocket, ReconnectingWebSocket);
});

test('a server killed with SIGKILL and restarted on its port: the client reconnects by itself, and what was sent meanwhile arrives once, in order', { timeout: 30000 }, async (t) => {
  const fixture = path.join(__dirname, 'fixtures', 'echo-child.js');
  const first = nodeChild(t, fixture, [0]);
  const port = Number((await first.line(/^PORT (\d+)$/))[1]);
  const rws = closeAfter(t, new ReconnectingWebSocket(`ws://127.0.0.1:${port}`, { minReconnectionDelay: 50, maxReconnectionDelay: 200 }));
  const log = record(rws);
  const echoes = [];
  rws.on('message', (data) => echoes.push(String(data)));

  await once(rws, 'open');
  rws.send('before');
  await waitFor(() => echoes.includes('before'), { what: 'the echo of the first message' });

  const dropped = once(rws, 'close');
  first.child.kill('SIGKILL');
  const [code] = await dropped;
  assert.equal(code, 1006);
  assert.equal(rws.shouldReconnect, true);

  // Disconnected: sends are queued, while attempts fail (nothing listens on the port).
  const down = [];
  for (let i = 1; i <= 5; i++) down.push(`down-${i}`);
  for (const m of down.slice(0, 3)) rws.send(m);
  await waitFor(() => count(log, 'reconnecting') >= 3, { what: 'three attempts while the server is down' });
  for (const m of down.slice(3)) rws.send(m);
  assert.equal(rws.readyState, WebSocket.CONNECTING);
  assert.equal(rws.bufferedAmount, down.join('').length);

  const second = nodeChild(t, fixture, [port]);
  await second.line(/^PORT \d+$/);
  await waitFor(() => count(log, 'reconnect') === 1, { what: "'reconnect'" });
  rws.send('after');
  await waitFor(() => echoes.includes('after'), { what: 'the echo of the message sent after the reconnect' });

  const got = (p) => p.lines.filter((l) => l.startsWith('GOT ')).map((l) => l.slice(4));
  assert.deepEqual(got(first), ['before']);
  assert.deepEqual(got(second), [...down, 'after']);
  assert.deepEqual(echoes, ['before', ...down, 'after']);
  assert.equal(rws.bufferedAmount, 0);
  // Each failed attempt: an error (the refused connection) and a close, then the next wait.
  const start = log.findIndex((e) => e[0] === 'reconnecting');
  const failed = log.slice(start, log.findIndex((e, i) => i > start && e[0] === 'open'));
  // At least three waits and the two failed attempts between them.
  assert.ok(failed.length >= 7, JSON.stringify(log));
  for (const e of failed) {
    assert.ok(['reconnecting', 'error', 'close'].includes(e[0]), JSON.stringify(e));
    if (e[0] === 'error') assert.equal(e[1], 'ECONNREFUSED');
    if (e[0] === 'close') assert.deepEqual(e, ['close', 1006, true]);
  }
});

test('backoff: the delays grow within their jitter bounds, and a connection that stays up minUptime resets them', T, async (t) => {
  const wss = await startWss(t, WebSocketServer);
  // How long the server keeps each connection before dropping it.
  let hold = 0;
  wss.on('connection', (ws) => setTimeout(() => ws.terminate(), hold));
  const min = 20;
  const grow = 2;
  const max = 160;
  const rws = closeAfter(
    t,
    new ReconnectingWebSocket(urlOf(wss), {
      minReconnectionDelay: min,
      reconnectionDelayGrowFactor: grow,
      maxReconnectionDelay: max,
      minUptime: 300
    })
  );
  rws.on('error', () => {});
  const seen = [];
  rws.on('reconnecting', (attempt, delay) => {
    seen.push([attempt, delay, rws.retryCount]);
    // The sixth connection stays up longer than minUptime; the others are dropped at once.
    hold = attempt === 6 ? 500 : 0;
  });
  await waitFor(() => seen.length === 7, { timeout: 10000, what: () => `7 'reconnecting' events, got ${JSON.stringify(seen)}` });
  rws.close();

  assert.deepEqual(seen.map((s) => s[0]), [1, 2, 3, 4, 5, 6, 1]);
  for (const [attempt, delay, retryCount] of seen) {
    // Retry k waits between min·grow^(k-1) and min·grow^k, capped at max (then between
    // max/grow and max).
    const hi = Math.min(max, min * grow ** attempt);
    const lo = Math.max(min, hi / grow);
    assert.ok(delay >= lo && delay <= hi, `attempt ${attempt}: ${delay} ms is not within [${lo}, ${hi}]`);
    assert.equal(retryCount, attempt);
  }
});

test('maxRetries exhausted: an error says so, then the last close, and no attempt follows', T, async (t) => {
  const port = await freePort();
  const rws = closeAfter(t, new ReconnectingWebSocket(`ws://127.0.0.1:${port}`, { ...FAST, maxRetries: 2 }));
  const log = record(rws);
  let giveUp;
  rws.on('error', (err) => {
    if (err.code === 'WS_ERR_RECONNECT_RETRIES') giveUp = err;
  });
  assert.equal(await finalClose(rws), 1006);

  const attempt = [['error', 'ECONNREFUSED'], ['close', 1006, true]];
  assert.deepEqual(log, [
    ...attempt,
    ['reconnecting', 1],
    ...attempt,
    ['reconnecting', 2],
    ['error', 'ECONNREFUSED'],
    ['error', 'WS_ERR_RECONNECT_RETRIES'],
    ['close', 1006, false]
  ]);
  assert.match(giveUp.message, /^Gave up reconnecting: 3 attempts in a row failed \(maxRetries is 2\)$/);
  assert.equal(rws.readyState, WebSocket.CLOSED);
  // A send now fails as on any closed WebSocket.
  assert.match((await sendResult(rws, 'late')).message, /^WebSocket is not open: readyState 3 \(CLOSED\)$/);
  // Several backoff delays pass without another attempt.
  await quietPeriod(150);
  assert.equal(log.length, 9);
});

test('without an error listener, the failed attempts do not throw', T, async (t) => {
  const port = await freePort();
  const rws = closeAfter(t, new ReconnectingWebSocket(`ws://127.0.0.1:${port}`, FAST));
  let attempts = 0;
  rws.on('reconnecting', () => attempts++);
  // An uncaught 'error' would fail the test run.
  await waitFor(() => attempts >= 3, { what: 'three retries' });
  assert.equal(rws.listenerCount('reconnecting'), 1);
});

test('a url function rotates over two servers, one call per attempt', T, async (t) => {
  const servers = [await startWss(t, WebSocketServer), await startWss(t, WebSocketServer)];
  const seen = [];
  servers.forEach((wss, i) =>
    wss.on('connection', (ws) => {
      seen.push(i);
      // 1011 (internal error): the client retries.
      ws.close(1011);
    })
  );
  let calls = 0;
  const rws = closeAfter(t, new ReconnectingWebSocket(() => urlOf(servers[calls++ % 2]), FAST));
  const urls = [];
  rws.on('open', () => urls.push(rws.url));
  rws.on('error', () => {});
  // The server's 'connection' can come before the client's 'open': wait for both sides.
  await waitFor(() => seen.length >= 4 && urls.length >= 4, { what: () => `four connections (${seen.length} seen, ${urls.length} opened)` });
  rws.close();
  assert.deepEqual(seen.slice(0, 4), [0, 1, 0, 1]);
  assert.deepEqual(urls.slice(0, 4), [0, 1, 0, 1].map((i) => urlOf(servers[i])));
});

test('an async url that fails once: that attempt fails, the next connects (protocols from an async function too)', T, async (t) => {
  const wss = await startWss(t, WebSocketServer);
  const protocols = [];
  wss.on('connection', (ws) => protocols.push(ws.protocol));
  let calls = 0;
  const rws = closeAfter(
    t,
    new ReconnectingWebSocket(
      async () => {
        calls++;
        if (calls === 1) throw Object.assign(new Error('the token service is down'), { code: 'ETOKEN' });
        return urlOf(wss);
      },
      async () => [`v${calls}`],
      FAST
    )
  );
  const log = record(rws);
  await waitFor(() => count(log, 'open') === 1, { what: "'open'" });
  assert.deepEqual(log, [['error', 'ETOKEN'], ['close', 1006, true], ['reconnecting', 1], ['open']]);
  assert.equal(rws.protocol, 'v2');
  assert.deepEqual(protocols, ['v2']);
  // No 'reconnect': this is the first connection that opened.
});

test('connectionTimeout bounds each attempt: a server that never answers, and a url promise that never settles', T, async (t) => {
  const silent = await silentServer(t);
  const rws = closeAfter(t, new ReconnectingWebSocket(`ws://127.0.0.1:${silent}`, { ...FAST, connectionTimeout: 100 }));
  const log = record(rws);
  const started = Date.now();
  await waitFor(() => count(log, 'reconnecting') === 2, { what: 'two timed-out attempts' });
  assert.ok(Date.now() - started < 2000);
  assert.deepEqual(log.slice(0, 3), [['error', 'Opening handshake has timed out'], ['close', 1006, true], ['reconnecting', 1]]);
  rws.close();

  const hung = closeAfter(t, new ReconnectingWebSocket(() => new Promise(() => {}), { ...FAST, connectionTimeout: 100 }));
  const hungLog = record(hung);
  await waitFor(() => count(hungLog, 'reconnecting') === 2, { what: 'two timed-out url promises' });
  assert.deepEqual(hungLog.slice(0, 3), [['error', 'Opening handshake has timed out'], ['close', 1006, true], ['reconnecting', 1]]);
});

test('close() during the backoff cancels it, and the process exits by itself', T, async (t) => {
  const port = await freePort();
  const child = nodeChild(t, path.join(__dirname, 'fixtures', 'reconnect-close-in-backoff.js'), [port]);
  // The backoff is 60 s: only a cancelled timer lets the process end this soon.
  const exit = await bounded(child.exited, 10000);
  assert.deepEqual(exit, { code: 0, signal: null }, `the process did not exit: ${child.lines.join(' | ')}`);
  assert.deepEqual(child.lines, [
    'ERROR ECONNREFUSED',
    'CLOSE 1006 true',
    'RECONNECTING 1 60000',
    `CLOSED-BY-USER ${WebSocket.CLOSING}`,
    'CLOSE 1006 false',
    'EXIT'
  ]);
});

test('the queue: sends while disconnected are bounded by count and bytes, with WS_ERR_RECONNECT_QUEUE_FULL', T, async (t) => {
  const port = await freePort();
  const byCount = closeAfter(t, new ReconnectingWebSocket(`ws://127.0.0.1:${port}`, { ...NEVER, maxEnqueuedMessages: 3 }));
  const errors = [];
  byCount.on('error', (err) => errors.push(err));
  const queued = [sendResult(byCount, 'a'), sendResult(byCount, 'b')];
  byCount.send('c');
  const full = await sendResult(byCount, 'd');
  assert.equal(full.code, 'WS_ERR_RECONNECT_QUEUE_FULL');
  assert.equal(full.message, 'The message cannot be queued until the connection opens: maxEnqueuedMessages (3) messages are queued');
  // Without a callback: an 'error' event.
  byCount.send('e');
  assert.equal(errors.filter((e) => e.code === 'WS_ERR_RECONNECT_QUEUE_FULL').length, 1);
  assert.equal(byCount.bufferedAmount, 3);
  // The last close: the queued messages will never be sent, and their callbacks say so.
  byCount.close();
  for (const err of await Promise.all(queued)) assert.equal(err.code, 'WS_ERR_RECONNECT_UNSENT');
  assert.equal(byCount.bufferedAmount, 3);

  const byBytes = closeAfter(t, new ReconnectingWebSocket(`ws://127.0.0.1:${port}`, { ...NEVER, maxEnqueuedBytes: 10 }));
  byBytes.send(Buffer.from('abcdef'));
  const tooBig = await sendResult(byBytes, 'ghijk');
  assert.equal(tooBig.code, 'WS_ERR_RECONNECT_QUEUE_FULL');
  assert.equal(
    tooBig.message,
    "The message cannot be queued until the connection opens: the message's 5 bytes would take the queue past maxEnqueuedBytes (10)"
  );
  // Bytes, not characters: 'é' is two.
  byBytes.send('ghé');
  assert.equal(byBytes.bufferedAmount, 10);
  // Without a callback nor an 'error' listener, send() throws it.
  assert.throws(() => byBytes.send('x'), { code: 'WS_ERR_RECONNECT_QUEUE_FULL' });
});

test('queued messages go out, in order, before what is sent in the open listener and after', T, async (t) => {
  const wss = await startWss(t, WebSocketServer);
  const got = [];
  wss.on('connection', (ws) => ws.on('message', (data) => got.push(String(data))));
  const rws = closeAfter(t, new ReconnectingWebSocket(urlOf(wss), FAST));
  // Sent while the first attempt connects: a plain WebSocket would throw.
  rws.send('q1');
  rws.send(Buffer.from('q2'));
  const buf = Buffer.from('q3');
  rws.send(buf);
  // The queue holds its own copy.
  buf.write('XX');
  const written = sendResult(rws, 'q4');
  rws.on('open', () => rws.send('in-open'));
  await once(rws, 'open');
  rws.send('later');
  assert.equal(await written, null);
  await waitFor(() => got.length === 6, { what: () => `6 messages, got ${JSON.stringify(got)}` });
  assert.deepEqual(got, ['q1', 'q2', 'q3', 'q4', 'in-open', 'later']);
});

test("connections whose handshake Node's http client makes (an 'upgrade' listener) reconnect the same way", T, async (t) => {
  const wss = await startWss(t, WebSocketServer);
  const got = [];
  let connections = 0;
  wss.on('connection', (ws) => {
    connections++;
    ws.on('message', (data) => got.push(`${connections}:${data}`));
    if (connections === 1) ws.close(1011);
  });
  const rws = closeAfter(t, new ReconnectingWebSocket(urlOf(wss), FAST));
  const upgrades = [];
  rws.on('upgrade', (res) => upgrades.push(res.statusCode));
  const log = record(rws);
  rws.on('reconnecting', () => rws.send('queued'));
  await waitFor(() => count(log, 'reconnect') === 1, { what: "'reconnect'" });
  rws.send('after');
  await waitFor(() => got.length === 2, { what: () => `2 messages, got ${JSON.stringify(got)}` });
  assert.deepEqual(got, ['2:queued', '2:after']);
  assert.deepEqual(upgrades, [101, 101]);
  assert.deepEqual(log, [['open'], ['close', 1011, true], ['reconnecting', 1], ['open'], ['reconnect']]);
});

test('close codes from the server: 1000, 1001 and 4000-4999 stop it, 1011 and 1012 reconnect; stopOnClose changes that', T, async (t) => {
  const cases = [
    [1000, {}, false],
    [1001, {}, false],
    [4000, {}, false],
    [4999, {}, false],
    [1011, {}, true],
    [1012, {}, true],
    [4000, { stopOnClose: (code) => code === 4401 }, true],
    [4401, { stopOnClose: (code) => code === 4401 }, false]
  ];
  await Promise.all(
    cases.map(async ([code, options, reconnects]) => {
      const wss = await startWss(t, WebSocketServer);
      let connections = 0;
      wss.on('connection', (ws) => {
        connections++;
        if (connections === 1) ws.close(code, 'bye');
      });
      const rws = closeAfter(t, new ReconnectingWebSocket(urlOf(wss), { ...FAST, ...options }));
      const log = record(rws);
      const [closeCode, reason] = await once(rws, 'close');
      assert.equal(closeCode, code);
      assert.equal(String(reason), 'bye');
      if (reconnects) {
        await waitFor(() => count(log, 'reconnect') === 1, { what: `a reconnect after ${code}` });
        assert.deepEqual(log, [['open'], ['close', code, true], ['reconnecting', 1], ['open'], ['reconnect']]);
        assert.equal(connections, 2);
      } else {
        // Several backoff delays pass without another attempt.
        await quietPeriod(150);
        assert.deepEqual(log, [['open'], ['close', code, false]]);
        assert.equal(rws.readyState, WebSocket.CLOSED);
        assert.equal(connections, 1);
      }
    })
  );
});

test('an error then an abnormal close (as a heartbeat timeout gives) reconnects', T, async (t) => {
  // A server that answers the upgrade, sends a frame with RSV2 set (a protocol error for the
  // client), and drops the TCP connection when the client answers; the second connection
  // it keeps.
  let connections = 0;
  const server = await netServer(t, (socket) => {
    const n = ++connections;
    let head = '';
    socket.on('data', (chunk) => {
      if (head.endsWith('\r\n\r\n')) {
        if (n === 1) socket.destroy();
        return;
      }
      head += chunk.toString('latin1');
      if (!head.endsWith('\r\n\r\n')) return;
      const key = /sec-websocket-key: *(\S+)/i.exec(head)[1];
      socket.write(switchingProtocols(key));
      if (n === 1) socket.write(Buffer.from([0xa1, 0x00]));
    });
  });
  const rws = closeAfter(t, new ReconnectingWebSocket(`ws://127.0.0.1:${server.address().port}`, FAST));
  const log = record(rws);
  await waitFor(() => count(log, 'reconnect') === 1, { what: "'reconnect'" });
  assert.deepEqual(log, [
    ['open'],
    ['error', 'WS_ERR_UNEXPECTED_RSV_2_3'],
    ['close', 1006, true],
    ['reconnecting', 1],
    ['open'],
    ['reconnect']
  ]);
  assert.equal(connections, 2);
});

test('the built-in heartbeat: a server that stops answering times the connection out, and the client reconnects', T, async (t) => {
  // The first connection goes to a server that completes the handshake and then reads
  // nothing (no pong ever comes back); the second to one that answers.
  let connections = 0;
  const server = await netServer(t, (socket) => {
    const n = ++connections;
    let head = '';
    socket.on('data', (chunk) => {
      if (head.endsWith('\r\n\r\n')) return;
      head += chunk.toString('latin1');
      if (!head.endsWith('\r\n\r\n')) return;
      const key = /sec-websocket-key: *(\S+)/i.exec(head)[1];
      socket.write(switchingProtocols(key));
      if (n === 1) socket.pause();
      else socket.on('data', (d) => {
        // A masked ping from the client (0x89): answer with an unmasked pong of its payload.
        if (d[0] === 0x89) {
          const len = d[1] & 0x7f;
          const mask = d.subarray(2, 6);
          const payload = Buffer.from(d.subarray(6, 6 + len)).map((b, i) => b ^ mask[i & 3]);
          socket.write(Buffer.concat([Buffer.from([0x8a, len]), payload]));
        }
      });
    });
  });
  const rws = closeAfter(t, new ReconnectingWebSocket(`ws://127.0.0.1:${server.address().port}`, { ...FAST, heartbeat: { interval: 100, timeout: 100 } }));
  const log = record(rws);
  await waitFor(() => count(log, 'reconnect') === 1, { what: "'reconnect'" });
  assert.deepEqual(log.slice(0, 3), [['open'], ['error', 'WS_ERR_HEARTBEAT_TIMEOUT'], ['close', 1006, true]]);
  // The second connection answers the heartbeat's pings: it stays up over several intervals.
  await quietPeriod(600);
  assert.equal(connections, 2);
  assert.equal(rws.readyState, WebSocket.OPEN);
});

test('the WebSocket API across connections: on* handlers, addEventListener, binaryType, protocol, url; reconnect() and terminate()', T, async (t) => {
  const wss = await startWss(t, WebSocketServer, { handleProtocols: (set) => [...set][0] });
  const server = [];
  wss.on('connection', (ws) => {
    server.push(ws);
    ws.send(Buffer.from([server.length]));
  });
  const rws = closeAfter(t, new ReconnectingWebSocket(urlOf(wss), 'chat', FAST));
  assert.equal(rws.url, urlOf(wss));
  rws.binaryType = 'arraybuffer';
  const onmessage = [];
  const listened = [];
  rws.onmessage = (event) => onmessage.push(new Uint8Array(event.data)[0]);
  rws.addEventListener('message', (event) => listened.push(event.data instanceof ArrayBuffer));
  const closes = [];
  rws.onclose = (event) => closes.push(event.code);
  const log = record(rws);

  await waitFor(() => onmessage.length === 1, { what: 'the first message' });
  assert.equal(rws.protocol, 'chat');
  // reconnect(): a close handshake with the given code, then a new connection at once.
  const closedByClient = once(server[0], 'close');
  rws.reconnect(4000, 'again');
  const [code, reason] = await closedByClient;
  assert.equal(code, 4000);
  assert.equal(String(reason), 'again');
  await waitFor(() => onmessage.length === 2, { what: 'the second connection\'s message' });
  assert.deepEqual(onmessage, [1, 2]);
  assert.deepEqual(listened, [true, true]);
  assert.equal(rws.binaryType, 'arraybuffer');
  assert.equal(rws.protocol, 'chat');
  assert.deepEqual(closes, [4000]);
  assert.deepEqual(log, [['open'], ['close', 4000, true], ['reconnecting', 0], ['open'], ['reconnect']]);

  // terminate(), as close(), ends it: no attempt follows.
  rws.terminate();
  assert.equal(await finalClose(rws), 1006);
  await quietPeriod(100);
  assert.equal(server.length, 2);
  // After the last close, reconnect() starts again.
  rws.reconnect();
  await waitFor(() => onmessage.length === 3, { what: 'a third connection' });
});

test("reconnect() during the wait connects at once; close() in a 'close' listener stops it", T, async (t) => {
  let requests = 0;
  const wss = await startWss(t, WebSocketServer, {
    // The first upgrade is refused (401): a failed attempt, then a wait of 60 s.
    verifyClient: () => ++requests > 1
  });
  const rws = closeAfter(t, new ReconnectingWebSocket(urlOf(wss), NEVER));
  const log = record(rws);
  await waitFor(() => count(log, 'reconnecting') === 1, { what: 'the first wait' });
  rws.reconnect();
  await waitFor(() => count(log, 'open') === 1, { what: "'open'" });
  assert.deepEqual(log, [
    ['error', 'Unexpected server response: 401'],
    ['close', 1006, true],
    ['reconnecting', 1],
    ['reconnecting', 0],
    ['open']
  ]);

  // The server drops the connection; the 'close' listener closes the socket: no attempt follows.
  rws.once('close', () => rws.close());
  for (const ws of wss.clients) ws.terminate();
  await waitFor(() => count(log, 'close') === 2, { what: "the second 'close'" });
  // Longer than the retry that would follow reconnect()'s reset count (none is scheduled).
  await quietPeriod(100);
  assert.deepEqual(log.slice(5), [['close', 1006, true]]);
  assert.equal(rws.readyState, WebSocket.CLOSED);
  assert.equal(rws.shouldReconnect, false);
});

test('startClosed: no connection until reconnect()', T, async (t) => {
  const wss = await startWss(t, WebSocketServer);
  let connections = 0;
  wss.on('connection', () => connections++);
  const rws = closeAfter(t, new ReconnectingWebSocket(urlOf(wss), { ...FAST, startClosed: true }));
  assert.equal(rws.readyState, WebSocket.CLOSED);
  // Nothing connects while it is closed.
  await quietPeriod(50);
  assert.equal(connections, 0);
  rws.reconnect();
  await once(rws, 'open');
  assert.equal(connections, 1);
});

test('options: every WebSocket option goes to each connection; reconnecting-websocket\'s are checked', T, async (t) => {
  const wss = await startWss(t, WebSocketServer);
  const seen = [];
  wss.on('connection', (ws, req) => {
    seen.push(req.headers['x-token']);
    ws.terminate();
  });
  const logged = [];
  const rws = closeAfter(
    t,
    new ReconnectingWebSocket(urlOf(wss), {
      ...FAST,
      headers: { 'x-token': 'abc' },
      // reconnecting-websocket's choice of class: accepted and not used.
      WebSocket: class {},
      debug: true,
      debugLogger: (...args) => logged.push(args[0])
    })
  );
  rws.on('error', () => {});
  await waitFor(() => seen.length === 2, { what: 'two connections' });
  assert.deepEqual(seen, ['abc', 'abc']);
  assert.ok(logged.length > 0 && logged.every((l) => l === 'RWS>'));

  assert.throws(() => new ReconnectingWebSocket(urlOf(wss), { maxRetries: -1 }), {
    name: 'RangeError',
    message: 'The maxRetries option must be at least 0'
  });
  assert.throws(() => new ReconnectingWebSocket(urlOf(wss), { minUptime: '5s' }), {
    name: 'TypeError',
    message: 'The minUptime option must be a number'
  });
  // As ws: an invalid string URL throws from the constructor.
  assert.throws(() => new ReconnectingWebSocket('not a url'), { name: 'SyntaxError', message: 'Invalid URL: not a url' });
});
