'use strict';

// Pub/sub topics on a WebSocketServer, within one process: ws.subscribe / unsubscribe /
// isSubscribed / topics, wss.publish and ws.publish, wss.subscriberCount. Where ws has an
// equivalent, what a `ws` client observes of a publish is compared with what it observes of
// ws's broadcast loop (`wss.clients.forEach((c) => c.send(data))`). The engine's topic table
// is read with binding.topicStats() (a diagnostics call of the test build) to check that
// closed sockets leave nothing behind. Scale-out through Redis is in pubsub-redis.test.js.

const { test } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const http = require('node:http');
const https = require('node:https');
const path = require('node:path');
const zlib = require('node:zlib');
const { fork } = require('node:child_process');

const WebSocket = require('..');
const Ws = require('ws');
const native = require('../lib/native.js');
const {
  bounded,
  closeAfter,
  closeServer,
  closeWss,
  differential,
  hasOpenssl,
  listen,
  once,
  openClient,
  rawWebSocket,
  selfSigned,
  startWss,
  urlOf,
  waitFor
} = require('./helpers');

const HOST = '127.0.0.1';
const T = { timeout: 30000 };

/** The engine's topic table, summed over every server of the process: `{ topics, subscriptions }`. */
function topicStats() {
  return native.binding.topicStats();
}

/** Records the messages `client` gets, as `{ data, isBinary }` (data a Buffer). Returns the array. */
function record(client) {
  const got = [];
  client.on('message', (data, isBinary) => got.push({ data: Buffer.from(data), isBinary }));
  return got;
}

/** The texts of recorded messages. */
function texts(got) {
  return got.map((m) => m.data.toString());
}

/** Resolves once `got` holds `n` messages (fails after `timeout` ms, saying how many came). */
function received(got, n, what = 'the client', timeout = 10000) {
  return waitFor(() => got.length >= n, { timeout, what: () => `${what} to get ${n} messages (it has ${got.length})` });
}

/** Resolves once the last message in `got` is the text `last` (fails after 10 s). */
function receivedUntil(got, last, what = 'the client') {
  return waitFor(() => got.length > 0 && got[got.length - 1].data.toString() === last, {
    what: () => `${what} to get ${JSON.stringify(last)} (it has ${JSON.stringify(texts(got))})`
  });
}

/**
 * Opens `n` `ws` clients to `wss`, one after the other, terminated after the test. Resolves
 * with `[{ client, server, got }]`: `server` is the server's WebSocket, `got` the client's
 * recorded messages.
 */
async function connect(t, wss, n, clientOptions) {
  const list = [];
  for (let i = 0; i < n; i++) {
    const { client, server } = await openClient(t, wss, Ws, clientOptions);
    list.push({ client, server, got: record(client) });
  }
  return list;
}

/** `target.publish(topic, data, options)`, resolving with its callback's argument. */
function publishing(target, topic, data, options = {}) {
  return new Promise((resolve) => target.publish(topic, data, options, resolve));
}

test('subscribe, unsubscribe, isSubscribed and topics', T, async (t) => {
  const wss = await startWss(t, WebSocket.WebSocketServer);
  const [{ server: ws, got }] = await connect(t, wss, 1);
  assert.deepEqual(ws.topics, []);
  assert.equal(ws.isSubscribed('a'), false);
  ws.subscribe('a');
  assert.equal(ws.isSubscribed('a'), true, 'subscribed as soon as subscribe() returns');
  ws.subscribe('b');
  ws.subscribe('a'); // a second time: nothing changes
  ws.subscribe(Buffer.from('c')); // bytes are taken as UTF-8
  ws.subscribe(new TextEncoder().encode('dé'));
  ws.subscribe('ünïcode ✓');
  assert.deepEqual(ws.topics, ['a', 'b', 'c', 'dé', 'ünïcode ✓']);
  // The array is the caller's: changing it changes no subscription.
  const list = ws.topics;
  list.push('pushed');
  list[0] = 'changed';
  assert.deepEqual(ws.topics, ['a', 'b', 'c', 'dé', 'ünïcode ✓']);
  assert.equal(ws.isSubscribed('changed'), false);
  assert.equal(ws.isSubscribed('c'), true);
  assert.equal(ws.isSubscribed('dé'), true);
  assert.equal(wss.subscriberCount('a'), 1);
  assert.equal(wss.subscriberCount('dé'), 1);
  assert.equal(wss.subscriberCount('nothing'), 0);

  ws.unsubscribe('a');
  ws.unsubscribe('a'); // no longer subscribed: nothing happens
  ws.unsubscribe('never');
  ws.unsubscribe(Buffer.from('c'));
  assert.equal(ws.isSubscribed('a'), false);
  assert.equal(ws.isSubscribed('c'), false);
  assert.deepEqual(ws.topics, ['b', 'dé', 'ünïcode ✓']);
  assert.equal(wss.subscriberCount('a'), 0);
  // A topic subscribed again comes last: the order is that of the subscriptions.
  ws.subscribe('a');
  assert.deepEqual(ws.topics, ['b', 'dé', 'ünïcode ✓', 'a']);

  // Only the subscribed topics reach the client; the publish to 'a' comes last, so once it is
  // there every earlier one that was going to arrive has.
  for (const topic of ['c', 'b', 'never', 'dé', 'ünïcode ✓']) wss.publish(topic, `to ${topic}`);
  wss.publish(Buffer.from('b'), 'to b, the topic as bytes');
  wss.publish('a', 'to a');
  await receivedUntil(got, 'to a');
  assert.deepEqual(texts(got), ['to b', 'to dé', 'to ünïcode ✓', 'to b, the topic as bytes', 'to a']);
});

test('subscribe on a socket that is not open does nothing; a closed socket holds no topic', T, async (t) => {
  const wss = await startWss(t, WebSocket.WebSocketServer);
  const [{ client, server: ws }] = await connect(t, wss, 1);
  ws.subscribe('before');
  assert.equal(wss.subscriberCount('before'), 1);
  const clientClosed = once(client, 'close');
  const serverClosed = once(ws, 'close');
  ws.close();
  assert.equal(ws.readyState, WebSocket.CLOSING);
  ws.subscribe('while closing');
  assert.equal(ws.isSubscribed('while closing'), false);
  assert.equal(wss.subscriberCount('while closing'), 0);
  await Promise.all([clientClosed, serverClosed]);
  ws.subscribe('after close');
  assert.equal(ws.isSubscribed('after close'), false);
  assert.equal(wss.subscriberCount('after close'), 0);
  assert.equal(wss.subscriberCount('before'), 0);
  assert.equal(ws.isSubscribed('before'), false);
  assert.deepEqual(ws.topics, []);
  ws.unsubscribe('before'); // nothing to do, and no error
  // Publishing to the topic it held is publishing to nobody.
  assert.equal(await publishing(wss, 'before', 'to nobody'), null);
});

test('a socket that is closing gets no publish after its close frame', T, async (t) => {
  const wss = await startWss(t, WebSocket.WebSocketServer);
  const connected = once(wss, 'connection');
  const { reader } = await rawWebSocket(t, wss.address().port);
  const [ws] = await connected;
  ws.subscribe('t');
  wss.publish('t', 'before');
  ws.close(1000, 'bye');
  // In the same tick as the close, and in later ticks while the close handshake is under way
  // (the raw peer does not answer it).
  wss.publish('t', 'after, same tick');
  await new Promise((resolve) => setImmediate(resolve));
  wss.publish('t', 'after, next tick');
  await new Promise((resolve) => setTimeout(resolve, 50));
  wss.publish('t', 'after, 50 ms later');
  const frames = [];
  for (;;) {
    const next = await bounded(reader.next().catch(() => null), 500);
    if (!next) break;
    frames.push(next.opcode === 8 ? ['close', next.payload.readUInt16BE(0), next.payload.subarray(2).toString()] : [next.opcode, next.payload.toString()]);
  }
  assert.deepEqual(frames, [
    [1, 'before'],
    ['close', 1000, 'bye']
  ]);
});

test('publish to a topic without subscribers: the callback still comes, asynchronously, with null', T, async (t) => {
  const wss = await startWss(t, WebSocket.WebSocketServer);
  const [{ server: ws }] = await connect(t, wss, 1);
  const calls = [];
  // Cleared once the calls below have returned: a callback that sees it set ran synchronously.
  let synchronous = true;
  assert.equal(
    wss.publish('nobody', 'hello', (err) => calls.push(['wss, no options', err, synchronous])),
    undefined
  );
  wss.publish('nobody', Buffer.from('bytes'), { binary: true }, (err) => calls.push(['wss, options', err, synchronous]));
  assert.equal(
    ws.publish('nobody', 'from a socket', (err) => calls.push(['ws, no options', err, synchronous])),
    undefined
  );
  ws.publish('nobody', 'from a socket', { compress: false }, (err) => calls.push(['ws, options', err, synchronous]));
  // Without a callback.
  wss.publish('nobody', 'no callback');
  ws.publish('nobody', 'no callback');
  synchronous = false;
  await waitFor(() => calls.length === 4, { what: () => `four callbacks (${calls.length} came)` });
  assert.deepEqual(calls.sort(), [
    ['wss, no options', null, false],
    ['wss, options', null, false],
    ['ws, no options', null, false],
    ['ws, options', null, false]
  ].sort());
  assert.equal(wss.subscriberCount('nobody'), 0);
});

test('a publish reaches the subscribers of its topic, each once, and no one else', T, async (t) => {
  const wss = await startWss(t, WebSocket.WebSocketServer);
  const c = await connect(t, wss, 5);
  const topics = [['a'], ['a', 'b'], ['b'], [], ['a', 'b', 'c']];
  c.forEach(({ server }, i) => {
    for (const topic of topics[i]) server.subscribe(topic);
    server.subscribe('end');
  });
  assert.deepEqual([wss.subscriberCount('a'), wss.subscriberCount('b'), wss.subscriberCount('c'), wss.subscriberCount('end')], [3, 3, 1, 5]);
  const acks = await Promise.all([
    publishing(wss, 'a', 'to a'),
    publishing(wss, 'b', 'to b'),
    publishing(wss, 'c', 'to c'),
    publishing(wss, 'nobody', 'to nobody'),
    publishing(wss, 'a', 'to a again'),
    publishing(wss, 'end', 'end')
  ]);
  assert.deepEqual(acks, [null, null, null, null, null, null]);
  for (const { got } of c) await receivedUntil(got, 'end');
  assert.deepEqual(
    c.map(({ got }) => texts(got)),
    [
      ['to a', 'to a again', 'end'],
      ['to a', 'to b', 'to a again', 'end'],
      ['to b', 'end'],
      ['end'],
      ['to a', 'to b', 'to c', 'to a again', 'end']
    ]
  );
});

test('ws.publish reaches every subscriber of the topic but the sender', T, async (t) => {
  const wss = await startWss(t, WebSocket.WebSocketServer);
  const c = await connect(t, wss, 4);
  for (const { server } of c.slice(0, 3)) server.subscribe('t');
  // The first three are subscribers; the fourth publishes without being one.
  assert.equal(await publishing(c[0].server, 't', 'from 0'), null);
  assert.equal(await publishing(c[3].server, 't', 'from 3'), null);
  c[1].server.publish('t', Buffer.from('from 1'));
  wss.publish('t', 'end');
  for (const { got } of c.slice(0, 3)) await receivedUntil(got, 'end');
  assert.deepEqual(texts(c[0].got), ['from 3', 'from 1', 'end']);
  assert.deepEqual(texts(c[1].got), ['from 0', 'from 3', 'end']);
  assert.deepEqual(texts(c[2].got), ['from 0', 'from 3', 'from 1', 'end']);
  assert.equal(c[2].got[2].isBinary, true);
  // The fourth subscribed to nothing: its own publish did not come back. A message sent to it
  // after the publishes arrives first.
  c[3].server.send('direct');
  await receivedUntil(c[3].got, 'direct');
  assert.deepEqual(texts(c[3].got), ['direct']);
});

test('topics belong to their server: a publish does not reach the subscribers of another server', T, async (t) => {
  const one = await startWss(t, WebSocket.WebSocketServer);
  const two = await startWss(t, WebSocket.WebSocketServer);
  const c1 = await connect(t, one, 2);
  const c2 = await connect(t, two, 2);
  for (const { server } of [...c1, ...c2]) server.subscribe('news');
  assert.equal(one.subscriberCount('news'), 2);
  assert.equal(two.subscriberCount('news'), 2);
  one.publish('news', 'one');
  two.publish('news', 'two');
  c1[0].server.publish('news', 'from a socket of one');
  c2[0].server.publish('news', 'from a socket of two');
  one.publish('news', 'end');
  two.publish('news', 'end');
  for (const { got } of [...c1, ...c2]) await receivedUntil(got, 'end');
  assert.deepEqual(texts(c1[0].got), ['one', 'end']);
  assert.deepEqual(texts(c1[1].got), ['one', 'from a socket of one', 'end']);
  assert.deepEqual(texts(c2[0].got), ['two', 'end']);
  assert.deepEqual(texts(c2[1].got), ['two', 'from a socket of two', 'end']);
  // Unsubscribing on one server leaves the other's count alone.
  c1[0].server.unsubscribe('news');
  assert.equal(one.subscriberCount('news'), 1);
  assert.equal(two.subscriberCount('news'), 2);
});

/**
 * Runs `broadcast(impl, wss, data, options)` on a server of `impl` (ws or ws-native) for each of
 * `cases` (`[data, options]`) and logs, per client of three `ws` clients (one without
 * permessage-deflate), what it got: `[isBinary, hex]`. On ws-native the clients are
 * subscribed to 't' first. A `[thrown]` entry logs an error the call threw
 * (name, code and message), then the run goes on with the next case.
 */
async function broadcastScenario(impl, log, cases, broadcast) {
  const wss = new impl.WebSocketServer({ host: HOST, port: 0 });
  await once(wss, 'listening');
  const url = urlOf(wss);
  const clients = [];
  try {
    // One after the other: the server's connections are then in the clients' order.
    for (const options of [{}, { perMessageDeflate: false }, {}]) {
      const client = new Ws(url, options);
      clients.push(client);
      await once(client, 'open');
      await waitFor(() => wss.clients.size === clients.length, { what: `server connection ${clients.length}` });
    }
    if (impl !== Ws) for (const ws of wss.clients) ws.subscribe('t');
    const got = clients.map(record);
    for (const [data, options] of cases) {
      try {
        broadcast(impl, wss, data, options);
      } catch (err) {
        log('thrown', err.name, err.code, err.message);
      }
    }
    // The end mark goes to every client.
    publishOrLoop(impl, wss, 'end', undefined);
    for (const g of got) await receivedUntil(g, 'end');
    got.forEach((g, i) => log(i, g.map((m) => [m.isBinary, m.data.toString('hex')])));
  } finally {
    for (const c of clients) c.terminate();
    await new Promise((resolve) => wss.close(resolve));
  }
}

/** ws's broadcast loop on ws, wss.publish on ws-native. */
function publishOrLoop(impl, wss, data, options) {
  if (impl !== Ws) {
    if (options === undefined) wss.publish('t', data);
    else wss.publish('t', data, options);
  } else {
    wss.clients.forEach((c) => (options === undefined ? c.send(data) : c.send(data, options)));
  }
}

test("what a client gets of wss.publish is what it gets of ws's broadcast loop: text, binary, every data type", T, async () => {
  const backing = new ArrayBuffer(64);
  new Uint8Array(backing).forEach((_, i, a) => (a[i] = i * 7));
  const cases = [
    ['héllo wörld ✓', undefined],
    ['', undefined],
    [Buffer.from('a Buffer'), undefined],
    [Buffer.alloc(0), undefined],
    [Buffer.from('0123456789').subarray(3, 7), undefined], // a view into a larger buffer
    [new Uint8Array([1, 2, 3, 255]).buffer, undefined], // an ArrayBuffer
    [new Uint8Array(backing, 5, 9), undefined],
    [new Uint16Array([1, 0xffff, 3]), undefined],
    [new Float64Array([Math.PI, -0]), undefined],
    [new DataView(backing, 10, 6), undefined],
    ['text sent as binary', { binary: true }],
    [Buffer.from('bytes sent as text'), { binary: false }],
    [Buffer.from('not compressed'), { compress: false }],
    ['a string, options {}', {}],
    [crypto.randomBytes(300 * 1024), undefined],
    ['é'.repeat(70000), undefined]
  ];
  await differential((impl, log) => broadcastScenario(impl, log, cases, publishOrLoop));
});

/**
 * ws's broadcast loop to every client but the first server connection on ws, that connection's
 * ws.publish on ws-native.
 */
function publishFromSocket(impl, wss, data, options) {
  const [sender] = wss.clients;
  if (impl !== Ws) {
    if (options === undefined) sender.publish('t', data);
    else sender.publish('t', data, options);
  } else {
    wss.clients.forEach((c) => c !== sender && (options === undefined ? c.send(data) : c.send(data, options)));
  }
}

test("what a client gets of ws.publish is what it gets of ws's broadcast loop that skips the sender", T, async () => {
  const cases = [
    ['text', undefined],
    [Buffer.from('binary'), undefined],
    [new Uint16Array([1, 2, 3]), undefined],
    ['text sent as binary', { binary: true }],
    [crypto.randomBytes(100 * 1024), { compress: false }],
    [42, undefined],
    [{}, undefined],
    ['after the error', undefined]
  ];
  await differential((impl, log) => broadcastScenario(impl, log, cases, publishFromSocket));
});

test('odd data is taken as ws.send takes it: numbers, null, undefined, arrays; the rest throws the TypeError ws.send throws', T, async () => {
  const cases = [
    [42, undefined],
    [null, undefined],
    [undefined, undefined],
    [[1, 2, 3], undefined],
    [{ length: 2 }, undefined],
    [{}, undefined],
    [true, undefined],
    [Symbol('data'), undefined],
    [new Set([1]), undefined],
    ['after the errors', undefined]
  ];
  const log = await differential((impl, log) => broadcastScenario(impl, log, cases, publishOrLoop));
  assert.equal(log.filter((e) => e[0] === 'thrown').length, 4, 'ws throws for four of them');
});

test('a bad topic is a TypeError, and nothing is sent', T, async (t) => {
  const wss = await startWss(t, WebSocket.WebSocketServer);
  const [{ server: ws, got }] = await connect(t, wss, 1);
  ws.subscribe('end');
  for (const bad of [undefined, null, 42, true, {}, ['a'], Symbol('topic'), () => 'a']) {
    const what = typeof bad === 'symbol' ? 'a symbol' : JSON.stringify(bad) ?? String(bad);
    assert.throws(() => ws.subscribe(bad), TypeError, `subscribe(${what})`);
    assert.throws(() => ws.unsubscribe(bad), TypeError, `unsubscribe(${what})`);
    assert.throws(() => ws.isSubscribed(bad), TypeError, `isSubscribed(${what})`);
    assert.throws(() => wss.subscriberCount(bad), TypeError, `subscriberCount(${what})`);
    assert.throws(() => wss.publish(bad, 'data'), TypeError, `wss.publish(${what})`);
    assert.throws(() => ws.publish(bad, 'data'), TypeError, `ws.publish(${what})`);
  }
  assert.deepEqual(ws.topics, ['end']);
  wss.publish('end', 'end');
  await receivedUntil(got, 'end');
  assert.deepEqual(texts(got), ['end']);
});

test("a socket's own sends and the publishes that reach it arrive in the order they were called", T, async (t) => {
  const wss = await startWss(t, WebSocket.WebSocketServer);
  const [a, b] = await connect(t, wss, 2);
  a.server.subscribe('t');
  b.server.subscribe('t');
  const expectA = [];
  const expectB = [];
  const big = (i) => `${i} ${'x'.repeat(100 * 1024)}`;
  for (let i = 0; i < 300; i++) {
    const m = i % 50 === 49 ? big(i) : String(i);
    switch (i % 5) {
      case 0:
        a.server.send(m);
        expectA.push(m);
        break;
      case 1:
        wss.publish('t', m);
        expectA.push(m);
        expectB.push(m);
        break;
      case 2:
        // From b: it reaches a, not b.
        b.server.publish('t', m);
        expectA.push(m);
        break;
      case 3:
        a.server.send(Buffer.from(m), { binary: false });
        expectA.push(m);
        break;
      default:
        // From a: it reaches b only; a's next message is its own send.
        a.server.publish('t', m);
        expectB.push(m);
    }
    // Some of the calls share a tick, some do not.
    if (i % 37 === 36) await new Promise((resolve) => setImmediate(resolve));
  }
  await Promise.all([received(a.got, expectA.length, 'client a'), received(b.got, expectB.length, 'client b')]);
  // Compared as lists of short strings, so that a failure shows where the order breaks.
  const short = (list) => list.map((m) => (m.length > 20 ? `${m.slice(0, 10)}... (${m.length})` : m));
  assert.deepEqual(short(texts(a.got)), short(expectA));
  assert.deepEqual(short(texts(b.got)), short(expectB));
  assert.deepEqual(texts(a.got), expectA);
});

test("a socket that closes leaves its topics, and the engine's table is back to what it was", T, async (t) => {
  const before = topicStats();
  const wss = await startWss(t, WebSocket.WebSocketServer);
  const c = await connect(t, wss, 4);
  c.forEach(({ server }, i) => {
    server.subscribe('x');
    if (i < 2) server.subscribe('y');
    if (i === 3) server.subscribe('z');
  });
  const expected = (topics, subscriptions) => ({ topics: before.topics + topics, subscriptions: before.subscriptions + subscriptions });
  await waitFor(() => {
    const now = topicStats();
    return now.topics === before.topics + 3 && now.subscriptions === before.subscriptions + 7;
  }, { what: () => `the table to hold 3 more topics and 7 more subscriptions (before ${JSON.stringify(before)}, now ${JSON.stringify(topicStats())})` });
  assert.deepEqual(topicStats(), expected(3, 7));

  // Four ways to go: the client's close, the client's terminate, the server's close and the
  // server's terminate.
  const ends = [
    ({ client }) => client.close(),
    ({ client }) => client.terminate(),
    ({ server }) => server.close(),
    ({ server }) => server.terminate()
  ];
  const counts = [];
  for (let i = 0; i < 4; i++) {
    const closed = once(c[i].server, 'close');
    ends[i](c[i]);
    await closed;
    counts.push([wss.subscriberCount('x'), wss.subscriberCount('y'), wss.subscriberCount('z')]);
  }
  assert.deepEqual(counts, [
    [3, 1, 1],
    [2, 0, 1],
    [1, 0, 1],
    [0, 0, 0]
  ]);
  await waitFor(() => {
    const now = topicStats();
    return now.topics === before.topics && now.subscriptions === before.subscriptions;
  }, { what: () => `the table to be back to ${JSON.stringify(before)} (it holds ${JSON.stringify(topicStats())})` });
  // Publishing to the topics they held is publishing to nobody.
  assert.deepEqual(await Promise.all([publishing(wss, 'x', 'x'), publishing(wss, 'z', 'z')]), [null, null]);
});

test("a server that closes with subscribed sockets leaves nothing in the engine's table", T, async (t) => {
  const before = topicStats();
  const wss = new WebSocket.WebSocketServer({ host: HOST, port: 0 });
  await once(wss, 'listening');
  const c = await connect(t, wss, 3);
  for (const { server } of c) {
    server.subscribe('gone');
    server.subscribe('with the server');
  }
  await waitFor(() => topicStats().subscriptions === before.subscriptions + 6, { what: 'six subscriptions in the table' });
  await bounded(closeWss(wss), 5000);
  await waitFor(() => {
    const now = topicStats();
    return now.topics === before.topics && now.subscriptions === before.subscriptions;
  }, { what: () => `the table to be back to ${JSON.stringify(before)} (it holds ${JSON.stringify(topicStats())})` });
});

test('10,000 subscribers, in batches: every one gets every publish for it, in order', { timeout: 60000 }, async (t) => {
  const N = 10000;
  const started = Date.now();
  const wss = await startWss(t, WebSocket.WebSocketServer);
  let first = null;
  let n = 0;
  wss.on('connection', (ws) => {
    ws.subscribe('all');
    if (n++ % 2 === 0) ws.subscribe('even');
    if (first === null) first = ws;
  });
  // The clients live in a child process: one process holding both ends of 10,000 connections
  // would pass the file descriptor limit.
  const child = fork(path.join(__dirname, 'fixtures', 'pubsub-many-clients.js'), [urlOf(wss), N, 500], {
    stdio: ['ignore', 'inherit', 'inherit', 'ipc']
  });
  const exited = new Promise((resolve) => child.on('exit', resolve));
  t.after(() => {
    child.kill('SIGKILL');
    return exited;
  });
  const replies = [];
  child.on('message', (m) => replies.push(m));
  const opened = await waitFor(() => replies.find((m) => m.type === 'open'), { timeout: 40000, interval: 100, what: 'the clients to open' });
  assert.deepEqual(opened, { type: 'open', opened: N, errors: 0 });
  await waitFor(() => wss.subscriberCount('all') === N, {
    timeout: 10000,
    what: () => `${N} subscribers of 'all' (${wss.subscriberCount('all')})`
  });
  assert.equal(wss.subscriberCount('even'), N / 2);

  const messages = ['hello, everyone', crypto.randomBytes(1024), 'x'.repeat(4096), 'from the first connection'];
  const digest = (data) =>
    `${typeof data === 'string' ? 't' : 'b'}${Buffer.byteLength(data)}:${crypto.createHash('sha1').update(data).digest('hex').slice(0, 12)}`;
  const [m0, m1, m2, m3] = messages.map(digest);
  const acks = Promise.all([
    publishing(wss, 'all', messages[0]),
    publishing(wss, 'even', messages[1]),
    publishing(wss, 'all', messages[2]),
    publishing(first, 'all', messages[3])
  ]);
  const total = 3 * N + N / 2 - 1;
  let report = null;
  await waitFor(
    async () => {
      replies.length = 0;
      child.send({ cmd: 'report' });
      report = await waitFor(() => replies.find((m) => m.type === 'report'), { timeout: 5000, what: "the clients' report" });
      return report.total >= total;
    },
    { timeout: 30000, interval: 200, what: () => `${total} messages at the clients (${report && report.total})` }
  );
  assert.deepEqual(await acks, [null, null, null, null]);
  assert.deepEqual(report, {
    type: 'report',
    total,
    errors: 0,
    closed: 0,
    histogram: {
      // The even connections but the first, which sent the last message and does not get it.
      [[m0, m1, m2, m3].join(',')]: N / 2 - 1,
      [[m0, m2, m3].join(',')]: N / 2,
      [[m0, m1, m2].join(',')]: 1
    }
  });
  // The clients go at once: their subscriptions with them.
  child.kill('SIGKILL');
  await exited;
  await waitFor(() => wss.subscriberCount('all') === 0 && wss.subscriberCount('even') === 0, {
    timeout: 15000,
    interval: 50,
    what: () => `the subscribers to leave (${wss.subscriberCount('all')} left)`
  });
  t.diagnostic(`10,000 subscribers: ${Date.now() - started} ms`);
});

// --- permessage-deflate ---------------------------------------------------------------------------

/**
 * Reads the next message from a raw client's frameReader (fragments joined; control frames
 * fail the test): resolves with `{ opcode, rsv1, payload }`.
 */
async function rawMessage(reader) {
  const first = await reader.next();
  assert.ok(first.opcode === 1 || first.opcode === 2, `a data frame, not opcode ${first.opcode}`);
  const parts = [first.payload];
  let last = first;
  while (!last.fin) {
    last = await reader.next();
    assert.equal(last.opcode, 0, 'a continuation frame');
    parts.push(last.payload);
  }
  return { opcode: first.opcode, rsv1: first.rsv1, payload: Buffer.concat(parts) };
}

for (const [name, perMessageDeflate] of [
  ['with context takeover (perMessageDeflate: true)', true],
  ['without context takeover (serverNoContextTakeover)', { serverNoContextTakeover: true }]
]) {
  test(`permessage-deflate ${name}: a compressed publish reaches deflate and plain subscribers with the right bytes`, T, async (t) => {
    const wss = await startWss(t, WebSocket.WebSocketServer, { perMessageDeflate });
    const deflate = await connect(t, wss, 2);
    const plain = await connect(t, wss, 2, { perMessageDeflate: false });
    assert.deepEqual(
      [...deflate, ...plain].map(({ client }) => client.extensions !== ''),
      [true, true, false, false]
    );
    // Two raw clients that check the frames: one offers permessage-deflate, one does not.
    const port = wss.address().port;
    let accepted = once(wss, 'connection');
    const rawDeflate = await rawWebSocket(t, port, 'Sec-WebSocket-Extensions: permessage-deflate\r\n');
    const [rawDeflateServer] = await accepted;
    accepted = once(wss, 'connection');
    const rawPlain = await rawWebSocket(t, port);
    const [rawPlainServer] = await accepted;
    assert.match(rawDeflate.head, /^sec-websocket-extensions: permessage-deflate/im);
    assert.doesNotMatch(rawPlain.head, /sec-websocket-extensions/i);
    const takeover = !/server_no_context_takeover/i.test(rawDeflate.head);
    assert.equal(takeover, perMessageDeflate === true);

    const subscribers = [...deflate, ...plain];
    for (const { server } of subscribers) server.subscribe('feed');
    rawDeflateServer.subscribe('feed');
    rawPlainServer.subscribe('feed');
    assert.equal(wss.subscriberCount('feed'), 6);

    const json = JSON.stringify({ items: Array.from({ length: 150 }, (_, i) => ({ i, name: `item ${i}`, even: i % 2 === 0 })) });
    const steps = [
      ['publish', json],
      ['publish', json], // the same again: with context takeover, a back-reference to the first
      ['private', `private ${json}`], // a send to one deflate client and to the raw one: their contexts move on
      ['publish', 'small, under the threshold'],
      ['publish', Buffer.from(json)],
      ['publish', crypto.randomBytes(3000)],
      ['publish', json, { compress: false }],
      ['private', `another private ${json}`],
      ['publish', 'z'.repeat(300 * 1024)],
      ['publish', `text as binary ${json}`, { binary: true }],
      ['publish', json.toUpperCase()],
      ['publish', json]
    ];
    // What each client must get, as [isBinary, bytes]; for the raw deflate one also whether
    // the frame is compressed.
    // ws compresses every message on a connection with context takeover, and only those of
    // `threshold` (1024) bytes or more on one without.
    const expect = new Map(subscribers.map(({ client }) => [client, []]));
    const expectRawDeflate = [];
    const expectRawPlain = [];
    for (const [kind, data, options = {}] of steps) {
      const bytes = Buffer.from(data);
      const isBinary = options.binary ?? typeof data !== 'string';
      const compressed = options.compress !== false && (takeover || bytes.length >= 1024);
      if (kind === 'publish') {
        wss.publish('feed', data, options);
        for (const list of expect.values()) list.push([isBinary, bytes]);
        expectRawDeflate.push({ isBinary, bytes, compressed });
        expectRawPlain.push({ isBinary, bytes });
      } else {
        deflate[0].server.send(data, options);
        rawDeflateServer.send(data, options);
        expect.get(deflate[0].client).push([isBinary, bytes]);
        expectRawDeflate.push({ isBinary, bytes, compressed });
      }
    }

    for (const { client, got } of subscribers) await received(got, expect.get(client).length);
    for (const { client, got } of subscribers) {
      assert.deepEqual(
        got.map((m) => [m.isBinary, m.data]),
        expect.get(client)
      );
    }

    // The raw deflate client inflates each compressed message with the window of the ones
    // before (context takeover: the previous compressed messages' bytes, 32 KiB at most).
    let window = Buffer.alloc(0);
    for (const [i, e] of expectRawDeflate.entries()) {
      const m = await rawMessage(rawDeflate.reader);
      assert.equal(m.rsv1, e.compressed, `message ${i} to the deflate client compressed: ${e.compressed}`);
      assert.equal(m.opcode, e.isBinary ? 2 : 1, `message ${i}'s opcode`);
      let payload = m.payload;
      if (m.rsv1) {
        const input = Buffer.concat([m.payload, Buffer.from([0, 0, 0xff, 0xff])]);
        const options = { finishFlush: zlib.constants.Z_SYNC_FLUSH };
        if (takeover && window.length) options.dictionary = window;
        payload = zlib.inflateRawSync(input, options);
        if (takeover) window = Buffer.concat([window, payload]).subarray(-32768);
      }
      assert.ok(payload.equals(e.bytes), `message ${i} to the deflate client: the bytes sent`);
    }
    for (const [i, e] of expectRawPlain.entries()) {
      const m = await rawMessage(rawPlain.reader);
      assert.equal(m.rsv1, false, `message ${i} to the plain client is not compressed`);
      assert.equal(m.opcode, e.isBinary ? 2 : 1, `message ${i}'s opcode`);
      assert.ok(m.payload.equals(e.bytes), `message ${i} to the plain client: the bytes sent`);
    }
  });
}

// --- Slow subscribers ------------------------------------------------------------------------------

const SLOW_SIZE = 64 * 1024;

/** Publication `i`: SLOW_SIZE bytes, `i` in its first four, `i & 0xff` in the others. */
function numbered(i) {
  const b = Buffer.alloc(SLOW_SIZE, i & 0xff);
  b.writeUInt32BE(i, 0);
  return b;
}

/** The number of publication `data` if it is one, intact; -1 otherwise. */
function numberOf(data) {
  if (data.length !== SLOW_SIZE) return -1;
  const i = data.readUInt32BE(0);
  for (let k = 4; k < SLOW_SIZE; k += 997) if (data[k] !== (i & 0xff)) return -1;
  return data[SLOW_SIZE - 1] === (i & 0xff) ? i : -1;
}

/**
 * Resolves once the reading client has had all but 16 of the `published` publications: paced
 * this way, it stays far below maxBackpressure and misses none, however slowly this process
 * runs, while the client that does not read passes it.
 */
function keptUp(count, published) {
  return waitFor(() => published - count() <= 16, {
    timeout: 10000,
    interval: 1,
    what: () => `the reading client to keep up (${count()} of ${published})`
  });
}

/**
 * A server with `options`, a `ws` client that reads everything (its publication numbers are
 * collected) and a raw client that has stopped reading, both subscribed to 'feed'.
 */
async function slowSetup(t, options) {
  const wss = await startWss(t, WebSocket.WebSocketServer, options);
  const { client: fast, server: fastServer } = await openClient(t, wss, Ws, { perMessageDeflate: false });
  const fastIds = [];
  fast.on('message', (data) => fastIds.push(numberOf(data)));
  const connected = once(wss, 'connection');
  const slow = await rawWebSocket(t, wss.address().port);
  slow.socket.pause();
  const [slowServer] = await connected;
  const slowErrors = [];
  slowServer.on('error', (err) => slowErrors.push(err.code));
  fastServer.subscribe('feed');
  slowServer.subscribe('feed');
  return { wss, fastIds, slow, slowServer, slowErrors };
}

test('maxBackpressure: a subscriber that does not read misses publishes until it drains; the others get them all', T, async (t) => {
  const limit = 512 * 1024;
  const { wss, fastIds, slow, slowServer } = await slowSetup(t, { maxBackpressure: limit });
  const N = 400;
  const acks = [];
  for (let i = 0; i < N; i++) {
    await keptUp(() => fastIds.length, i);
    wss.publish('feed', numbered(i), (err) => acks.push(err));
    await new Promise((resolve) => setImmediate(resolve));
  }
  await received(fastIds, N, 'the reading client', 20000);
  assert.deepEqual(fastIds, Array.from({ length: N }, (_, i) => i));
  assert.equal(slowServer.readyState, WebSocket.OPEN, 'without closeOnBackpressureLimit the slow subscriber stays');
  assert.equal(slowServer.isBackpressured, true, 'the slow subscriber is past maxBackpressure');
  // What the engine holds for it stays near the limit: the publishes past it were not kept
  // (400 of them would be 25 MiB). The connection learns it passed the limit when its task
  // next runs, so the publishes made before that, one per tick here, are kept too: on a busy
  // machine a few more than the usual one or two.
  t.diagnostic(`the slow subscriber's bufferedAmount: ${slowServer.bufferedAmount}`);
  assert.ok(slowServer.bufferedAmount <= limit + 16 * SLOW_SIZE, `bufferedAmount ${slowServer.bufferedAmount}`);
  assert.equal(wss.subscriberCount('feed'), 2);
  await waitFor(() => acks.length === N, { what: () => `${N} publish callbacks (${acks.length})` });
  assert.ok(acks.every((err) => err === null), 'a subscriber missing a publish is not an error of the publish');

  // The slow client reads again; once it has drained, publications reach it again.
  const slowIds = [];
  let marker = false;
  const reading = (async () => {
    for (;;) {
      const m = await rawMessage(slow.reader);
      if (m.opcode === 1 && m.payload.toString() === 'drained') {
        marker = true;
        return;
      }
      slowIds.push(numberOf(m.payload));
    }
  })();
  // A failure of the reader (the socket closed) is reported by the `await reading` below.
  reading.catch(() => {});
  slow.socket.resume();
  const markers = setInterval(() => wss.publish('feed', 'drained'), 100);
  try {
    await waitFor(() => marker, { timeout: 10000, what: () => `the slow client to drain and get a publish again (it read ${slowIds.length})` });
  } finally {
    clearInterval(markers);
  }
  await reading;
  await waitFor(() => slowServer.isBackpressured === false, { what: 'isBackpressured to be false after the drain' });
  assert.ok(slowIds.every((id) => id >= 0), 'every publication the slow client got is intact');
  assert.ok(
    slowIds.every((id, k) => k === 0 || id > slowIds[k - 1]),
    'the slow client got publications in order, each once'
  );
  // What it got is what the limit and the sockets' buffers held: far from all of them.
  assert.ok(slowIds.length < N / 2, `the slow client got ${slowIds.length} of ${N} publications`);
});

test('closeOnBackpressureLimit: a subscriber that does not read is closed with 1008; the others get every publish', T, async (t) => {
  const limit = 512 * 1024;
  const { wss, fastIds, slowServer, slowErrors } = await slowSetup(t, { maxBackpressure: limit, closeOnBackpressureLimit: true });
  const closed = once(slowServer, 'close');
  let closeCode = null;
  closed.then(([code]) => (closeCode = code));
  let published = 0;
  for (let i = 0; i < 2000 && closeCode === null; i++) {
    await keptUp(() => fastIds.length, i);
    wss.publish('feed', numbered(i));
    published++;
    await new Promise((resolve) => setImmediate(resolve));
  }
  await bounded(closed, 5000);
  assert.equal(closeCode, 1008, `the slow subscriber closed with 1008 (after ${published} publications)`);
  assert.ok(slowErrors.every((code) => code === 'WS_ERR_BACKPRESSURE_LIMIT'), `errors: ${slowErrors}`);
  assert.equal(wss.subscriberCount('feed'), 1);
  await received(fastIds, published, 'the reading client', 20000);
  assert.deepEqual(fastIds, Array.from({ length: published }, (_, i) => i));
});

/** 8 KiB of noise, the same for the same `i`. */
function noise(i) {
  const iv = Buffer.alloc(16);
  iv.writeUInt32BE(i >>> 0, 0);
  return crypto.createCipheriv('aes-128-ctr', Buffer.alloc(16, 7), iv).update(Buffer.alloc(8192));
}

/**
 * Publication `i` for the compressed slow subscriber: its own noise (its number in the first
 * four bytes), then the noise of publication `i - 1`, which a compressor with context
 * takeover encodes as a reference into the publication before. A receiver whose window does
 * not hold publication `i - 1` (it missed it) inflates such a reference to other bytes,
 * unless the compressor knew it missed it.
 */
function chained(i) {
  const b = Buffer.concat([noise(i), noise(i - 1)]);
  b.writeUInt32BE(i, 0);
  return b;
}

test('maxBackpressure with permessage-deflate and context takeover: what a slow subscriber gets after missing publishes inflates to the right bytes', T, async (t) => {
  const wss = await startWss(t, WebSocket.WebSocketServer, { perMessageDeflate: true, maxBackpressure: 512 * 1024 });
  const { client: fast, server: fastServer } = await openClient(t, wss, Ws);
  assert.notEqual(fast.extensions, '');
  let fastCount = 0;
  let fastBad = 0;
  fast.on('message', (data) => {
    if (!Buffer.from(data).equals(chained(fastCount))) fastBad++;
    fastCount++;
  });
  const connected = once(wss, 'connection');
  const slow = await rawWebSocket(t, wss.address().port, 'Sec-WebSocket-Extensions: permessage-deflate\r\n');
  slow.socket.pause();
  const [slowServer] = await connected;
  assert.doesNotMatch(slow.head, /server_no_context_takeover/i);
  fastServer.subscribe('feed');
  slowServer.subscribe('feed');

  const N = 1500;
  for (let i = 0; i < N; i++) {
    await keptUp(() => fastCount, i);
    wss.publish('feed', chained(i));
  }
  await waitFor(() => fastCount >= N, { timeout: 20000, what: () => `the reading client to get ${N} publications (${fastCount})` });
  assert.equal(fastBad, 0, 'the reading client got the bytes of every publication');

  // The slow client reads again, inflating each message with the window of those before it.
  const ids = [];
  const wrong = [];
  let window = Buffer.alloc(0);
  let marker = false;
  const reading = (async () => {
    for (;;) {
      const m = await rawMessage(slow.reader);
      let payload = m.payload;
      if (m.rsv1) {
        const options = { finishFlush: zlib.constants.Z_SYNC_FLUSH };
        if (window.length) options.dictionary = window;
        try {
          payload = zlib.inflateRawSync(Buffer.concat([m.payload, Buffer.from([0, 0, 0xff, 0xff])]), options);
        } catch (err) {
          wrong.push(`after ${ids[ids.length - 1]}: ${err.message}`);
          return;
        }
        window = Buffer.concat([window, payload]).subarray(-32768);
      }
      const id = payload.readUInt32BE(0);
      if (!payload.equals(chained(id))) wrong.push(`publication ${id} (after ${ids[ids.length - 1]})`);
      ids.push(id);
      if (id >= N) {
        marker = true;
        return;
      }
    }
  })();
  reading.catch(() => {});
  slow.socket.resume();
  // Publications go on until one reaches it again: each refers to the one before, which it
  // missed.
  let next = N;
  const more = setInterval(() => wss.publish('feed', chained(next++)), 100);
  try {
    await waitFor(() => marker || wrong.length > 0, { timeout: 15000, what: () => `the slow client to drain (it read ${ids.length})` });
  } finally {
    clearInterval(more);
  }
  assert.deepEqual(wrong.slice(0, 5), [], `${wrong.length} messages did not inflate to a publication`);
  await reading;
  assert.ok(ids.every((id, k) => k === 0 || id > ids[k - 1]), 'in order, each once');
  assert.ok(ids.length < N, `the slow client missed publications (it got ${ids.length} of ${N})`);
  const afterGap = ids.filter((id, k) => k > 0 && ids[k - 1] !== id - 1);
  assert.ok(afterGap.length > 0, 'a publication came after one the slow client missed');
  t.diagnostic(`the slow client got ${ids.length} of ${N} publications; after a gap: ${afterGap}`);
});

test('without maxBackpressure a subscriber that does not read misses nothing: its buffered output grows, then drains in order', T, async (t) => {
  const wss = await startWss(t, WebSocket.WebSocketServer);
  const connected = once(wss, 'connection');
  const slow = await rawWebSocket(t, wss.address().port);
  slow.socket.pause();
  const [slowServer] = await connected;
  slowServer.subscribe('feed');
  const N = 100;
  for (let i = 0; i < N; i++) wss.publish('feed', numbered(i));
  // More than the sockets' buffers hold stays in the engine, and bufferedAmount says so.
  await waitFor(() => slowServer.bufferedAmount > 1024 * 1024, {
    what: () => `the slow subscriber's bufferedAmount to pass 1 MiB (${slowServer.bufferedAmount})`
  });
  const ids = [];
  slow.socket.resume();
  while (ids.length < N) ids.push(numberOf((await rawMessage(slow.reader)).payload));
  assert.deepEqual(ids, Array.from({ length: N }, (_, i) => i));
  await waitFor(() => slowServer.bufferedAmount === 0, { what: () => `bufferedAmount back to 0 (${slowServer.bufferedAmount})` });
});

test('a publish to a socket mid-way through a fragmented message of its own follows the last fragment', T, async (t) => {
  const wss = await startWss(t, WebSocket.WebSocketServer);
  const [{ server: ws, got }] = await connect(t, wss, 1);
  ws.subscribe('t');
  // In one tick.
  ws.send('frag', { fin: false });
  wss.publish('t', 'published in the middle');
  ws.send('ment', { fin: true });
  // Across ticks.
  ws.send(Buffer.from('bin'), { fin: false });
  await new Promise((resolve) => setTimeout(resolve, 20));
  wss.publish('t', 'published later in the middle');
  await new Promise((resolve) => setTimeout(resolve, 20));
  ws.send(Buffer.from('ary'), { fin: true });
  await received(got, 4);
  assert.deepEqual(
    got.map((m) => [m.isBinary, m.data.toString()]),
    [
      [false, 'fragment'],
      [false, 'published in the middle'],
      [true, 'binary'],
      [false, 'published later in the middle']
    ]
  );
});

test('client sockets share one set of topics: a client\'s publish reaches the process\'s other client sockets subscribed, not a server\'s', T, async (t) => {
  // The peer: a ws server that records what each of its connections receives.
  const peer = await startWss(t, Ws.WebSocketServer);
  const peerGot = [];
  peer.on('connection', (ws) => {
    const got = [];
    peerGot.push(got);
    ws.on('message', (data, isBinary) => got.push([isBinary, String(data)]));
  });
  const clients = [];
  for (let i = 0; i < 3; i++) {
    const client = closeAfter(t, new WebSocket(urlOf(peer)));
    await once(client, 'open');
    await waitFor(() => peerGot.length === i + 1, { what: `the peer's connection ${i + 1}` });
    clients.push(client);
  }
  clients[0].subscribe('up');
  clients[1].subscribe('up');
  assert.equal(clients[1].isSubscribed('up'), true);
  // A server of this process with a subscriber to the same topic: a separate set.
  const wss = await startWss(t, WebSocket.WebSocketServer);
  const [{ server, got: serverSide }] = await connect(t, wss, 1);
  server.subscribe('up');

  clients[2].publish('up', 'from client 2');
  clients[0].publish('up', Buffer.from('from client 0'));
  wss.publish('up', 'from the server');
  for (const c of clients) c.send('end');
  await waitFor(() => peerGot.every((got) => got.length > 0 && got[got.length - 1][1] === 'end'), {
    what: () => `the end mark at every peer connection (${JSON.stringify(peerGot)})`
  });
  assert.deepEqual(peerGot, [
    [
      [false, 'from client 2'],
      [false, 'end']
    ],
    [
      [false, 'from client 2'],
      [true, 'from client 0'],
      [false, 'end']
    ],
    [[false, 'end']]
  ]);
  await receivedUntil(serverSide, 'from the server');
  assert.deepEqual(texts(serverSide), ['from the server']);
});

test('redisStatus() is null on a server without redis', T, async (t) => {
  const wss = await startWss(t, WebSocket.WebSocketServer);
  assert.equal(wss.redisStatus(), null);
});

// --- Connections of every kind -------------------------------------------------------------------

test('a publish reaches a parked connection, which parks again', T, async (t) => {
  const wss = await startWss(t, WebSocket.WebSocketServer);
  const [a, b] = await connect(t, wss, 2);
  a.server.subscribe('t');
  b.server.subscribe('t');
  const parked = (ws) => waitFor(() => native.binding.parked(ws._id), { timeout: 6000, interval: 50, what: `connection ${ws._id} to park` });
  await Promise.all([parked(a.server), parked(b.server)]);
  wss.publish('t', 'to the parked');
  b.server.publish('t', Buffer.from('from a parked one'));
  await Promise.all([received(a.got, 2, 'client a'), received(b.got, 1, 'client b')]);
  assert.deepEqual(texts(a.got), ['to the parked', 'from a parked one']);
  assert.deepEqual(texts(b.got), ['to the parked']);
  await Promise.all([parked(a.server), parked(b.server)]);
  wss.publish('t', 'again');
  await Promise.all([received(a.got, 3, 'client a'), received(b.got, 2, 'client b')]);
});

test('one server fed by an http and an https server (noServer): a publish reaches the connections handed over and the bridged ones', { ...T, skip: !hasOpenssl() && 'the openssl CLI is needed for the certificate' }, async (t) => {
  const wss = new WebSocket.WebSocketServer({ noServer: true, perMessageDeflate: true });
  t.after(() => closeWss(wss));
  const plain = http.createServer();
  const secure = https.createServer(selfSigned());
  for (const server of [plain, secure]) {
    server.on('upgrade', (req, socket, head) => wss.handleUpgrade(req, socket, head, (ws) => wss.emit('connection', ws, req)));
    await listen(server);
    t.after(() => closeServer(server));
  }
  wss.on('connection', (ws) => ws.subscribe('feed'));
  const urls = [`ws://127.0.0.1:${plain.address().port}/`, `wss://127.0.0.1:${secure.address().port}/`];
  const subs = [];
  for (const url of urls) {
    for (const perMessageDeflate of [true, false]) {
      const client = closeAfter(t, new Ws(url, { rejectUnauthorized: false, perMessageDeflate }));
      const got = record(client);
      await once(client, 'open');
      subs.push({ client, got, name: `${url.slice(0, 4)} client${perMessageDeflate ? ' with deflate' : ''}` });
    }
  }
  await waitFor(() => wss.subscriberCount('feed') === 4, { what: () => `four subscribers (${wss.subscriberCount('feed')})` });
  const messages = ['text', crypto.randomBytes(1024 * 1024 + 3), JSON.stringify({ list: Array.from({ length: 2000 }, (_, i) => i) }), Buffer.alloc(0)];
  for (const m of messages) wss.publish('feed', m);
  for (const s of subs) await received(s.got, messages.length, s.name);
  for (const s of subs) {
    assert.deepEqual(
      s.got.map((m) => [m.isBinary, m.data]),
      messages.map((m) => [typeof m !== 'string', Buffer.from(m)]),
      s.name
    );
  }
});

test('a publish reaches the connections of a server with the engine\'s TLS and of one on an http server', { ...T, skip: !hasOpenssl() && 'the openssl CLI is needed for the certificate' }, async (t) => {
  const tlsServer = await startWss(t, WebSocket.WebSocketServer, { tls: selfSigned() });
  const plain = http.createServer();
  const onHttp = new WebSocket.WebSocketServer({ server: plain });
  await listen(plain);
  t.after(async () => {
    await closeWss(onHttp);
    await closeServer(plain);
  });
  const subs = [];
  for (const [wss, url] of [
    [tlsServer, `wss://127.0.0.1:${tlsServer.address().port}/`],
    [onHttp, `ws://127.0.0.1:${plain.address().port}/`]
  ]) {
    const accepted = once(wss, 'connection');
    const client = closeAfter(t, new Ws(url, { rejectUnauthorized: false }));
    const got = record(client);
    const [server] = await accepted;
    await once(client, 'open');
    server.subscribe('news');
    subs.push({ wss, got });
  }
  const big = crypto.randomBytes(256 * 1024);
  for (const { wss } of subs) {
    wss.publish('news', 'hello');
    wss.publish('news', big);
  }
  for (const { got } of subs) {
    await received(got, 2);
    assert.deepEqual(got.map((m) => [m.isBinary, m.data]), [[false, Buffer.from('hello')], [true, big]]);
  }
});

test('many topics on one socket: each publish reaches it once, and unsubscribing from all of them empties the table', T, async (t) => {
  const before = topicStats();
  const wss = await startWss(t, WebSocket.WebSocketServer);
  const [{ server: ws, got }] = await connect(t, wss, 1);
  const topics = Array.from({ length: 1000 }, (_, i) => `topic ${i}`);
  for (const topic of topics) ws.subscribe(topic);
  assert.equal(ws.topics.length, 1000);
  await waitFor(() => topicStats().subscriptions === before.subscriptions + 1000, { what: 'a thousand subscriptions in the table' });
  for (const topic of topics) wss.publish(topic, topic);
  await received(got, 1000);
  assert.deepEqual(texts(got), topics);
  for (const topic of topics) ws.unsubscribe(topic);
  assert.deepEqual(ws.topics, []);
  await waitFor(() => {
    const now = topicStats();
    return now.topics === before.topics && now.subscriptions === before.subscriptions;
  }, { what: () => `the table to be back to ${JSON.stringify(before)} (it holds ${JSON.stringify(topicStats())})` });
});

test("the engine's topic table is empty once every server of this file has closed", T, async () => {
  await waitFor(() => {
    const now = topicStats();
    return now.topics === 0 && now.subscriptions === 0;
  }, { what: () => `an empty table (it holds ${JSON.stringify(topicStats())})` });
});
