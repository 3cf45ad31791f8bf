'use strict';

// Pub/sub scale-out through a real Redis (redis-server, started on a free port of 127.0.0.1
// for each test): server processes sharing a Redis get each other's publications, each once
// and in order, across a Redis that dies and comes back, and a Redis that is not there yet;
// the buffer's bounds; the 'redis' events and redisStatus(). The server processes run
// fixtures/pubsub-redis-server.js; the subscribers are `ws` clients of this process.
//
// Two waits are the design's, and bound how long the deliveries below can take: a process
// that reconnects waits until its peers have resubscribed (at most about 6 s), and one whose
// Redis has just started gives the peers up to about 6 s to subscribe before its first
// flush. The tests that stop Redis, need it absent first or configured otherwise start
// their own (and wait out the second); the others share one, started by the first of them.

const { after, test } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const path = require('node:path');
const { fork } = require('node:child_process');
const { Worker } = require('node:worker_threads');

const WebSocket = require('..');
const Ws = require('ws');
const {
  bounded,
  closeAfter,
  closeServer,
  closeWss,
  delay,
  freePort,
  netServer,
  nodeChild,
  onPath,
  openClient,
  quietPeriod,
  rawWebSocket,
  redisCommand,
  startRedis,
  startWss,
  waitFor
} = require('./helpers');

const FIXTURE = path.join(__dirname, 'fixtures', 'pubsub-redis-server.js');
const REDIS_SERVER = onPath('redis-server');
const T = { timeout: 60000 };
// The longest a delivery through a Redis that just started or came back may take: the
// rejoin wait, the backoff and some slack for a loaded machine.
const DELIVERY = 20000;

// The Redis the tests share, and what stops it once the file's tests are done.
let shared = null;
const sharedCleanups = [];
after(async () => {
  for (const cleanup of sharedCleanups.reverse()) await cleanup();
});

/**
 * The Redis shared by the tests that neither stop it nor need it fresh: started by the first
 * call, stopped after the file's tests. Resolves like startRedis().
 */
function sharedRedis() {
  if (shared === null) shared = startRedis({ after: (cleanup) => sharedCleanups.push(cleanup) });
  return shared;
}

/** Skips the test (with the reason) when redis-server is not installed; true if it can run. */
function needsRedis(t) {
  if (REDIS_SERVER) return true;
  t.skip('redis-server is not on the PATH: install it (apt-get install redis-server) to run the scale-out tests');
  return false;
}

/**
 * Starts a server process (the fixture) with `config`, killed after the test. Resolves once
 * it listens with `{ port, events, errors, request, status, exit }`: `events` are its 'redis'
 * events so far, `errors` its 'error' events, `request(cmd)` sends a command and resolves with
 * its reply (rejects after `timeout` ms or if the process exits), `exit()` its exit
 * (`{ code, signal }`) or null while it runs.
 */
async function serverProcess(t, config, name) {
  const child = fork(FIXTURE, [JSON.stringify(config)], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  let exit = null;
  const exited = new Promise((resolve) =>
    child.on('exit', (code, signal) => {
      exit = { code, signal };
      resolve(exit);
    })
  );
  t.after(async () => {
    if (exit === null) child.kill('SIGKILL');
    await exited;
  });
  const events = [];
  const errors = [];
  const replies = new Map();
  let port = null;
  child.on('message', (m) => {
    if (m.type === 'ready') port = m.port;
    else if (m.type === 'redis') events.push(m.event);
    else if (m.type === 'error') errors.push(m.error);
    else if (m.type === 'reply') replies.set(m.id, m);
  });
  const running = (what) => {
    if (exit !== null) throw new Error(`server process ${name} exited (${JSON.stringify(exit)}) while waiting for ${what}`);
  };
  let nextId = 1;
  async function request(cmd, timeout = 10000) {
    const id = nextId++;
    running(`to send ${cmd.cmd}`);
    child.send({ ...cmd, id });
    const what = `server process ${name} to answer ${JSON.stringify(cmd)}`;
    const reply = await waitFor(
      () => {
        running(what);
        return replies.get(id);
      },
      { timeout, interval: 10, what }
    );
    replies.delete(id);
    return reply;
  }
  await waitFor(
    () => {
      running('it to listen');
      return port !== null;
    },
    { timeout: 10000, what: `server process ${name} to listen` }
  );
  return {
    name,
    port,
    events,
    errors,
    request,
    status: async () => (await request({ cmd: 'status' })).status,
    exit: () => exit
  };
}

/**
 * A `ws` client of server process `proc`, subscribed there to `topics` (the fixture's default
 * when not given); resolves once the server says so. `got` collects what it gets next: the
 * text of a text message (its first `keep` characters, if given), `binary:<base64>` for a
 * binary one.
 */
async function subscriber(t, proc, topics, { keep } = {}) {
  const query = topics ? `?topics=${encodeURIComponent(topics.join(','))}` : '';
  const client = closeAfter(t, new Ws(`ws://127.0.0.1:${proc.port}/${query}`, { perMessageDeflate: false }));
  const got = [];
  const errors = [];
  let subscribed = false;
  client.on('error', (err) => errors.push(err.message));
  client.on('message', (data, isBinary) => {
    if (!subscribed && !isBinary && String(data) === 'subscribed') subscribed = true;
    else if (isBinary) got.push(`binary:${data.toString('base64')}`);
    else got.push(keep ? data.toString('utf8', 0, keep) : String(data));
  });
  await waitFor(() => subscribed, { timeout: 5000, what: () => `a subscriber of ${proc.name} (errors: ${errors})` });
  return { client, got, name: `a subscriber of ${proc.name}` };
}

/** The fields of redisStatus() the tests check (it may hold more, such as the last error). */
function counters({ connected, bufferedMessages, bufferedBytes, lost, missed }) {
  return { connected, bufferedMessages, bufferedBytes, lost, missed };
}

/** How many clients of the Redis on `redisPort` hold a pattern subscription (PSUBSCRIBE). */
async function patternSubscribers(redisPort) {
  const list = await redisCommand(redisPort, ['CLIENT', 'LIST']);
  return list.split('\n').filter((line) => /\bpsub=[1-9]/.test(line)).length;
}

/**
 * Resolves once Redis holds a pattern subscription for each of `procs` and every one says it
 * is connected. A process reports itself connected once it has joined: after the wait for its
 * peers, so up to about 6 s after a fresh Redis started.
 */
async function joined(redisPort, procs, timeout = DELIVERY) {
  await waitFor(
    async () => {
      if ((await patternSubscribers(redisPort)) < procs.length) return false;
      for (const p of procs) if (!(await p.status()).connected) return false;
      return true;
    },
    { timeout, interval: 50, what: `${procs.map((p) => p.name)} to join Redis` }
  );
}

/** The messages `<tag>:<i>` (and any suffix after a ':') in `got`, as what differs from `<tag>:0` ... `<tag>:<count - 1>` once each, in order. */
function streamCheck(got, tag, count) {
  const seen = got.filter((s) => s.startsWith(`${tag}:`) && !s.endsWith(':warm')).map((s) => parseInt(s.slice(tag.length + 1), 10));
  const counts = new Map();
  for (const i of seen) counts.set(i, (counts.get(i) || 0) + 1);
  const missing = [];
  for (let i = 0; i < count; i++) if (!counts.has(i)) missing.push(i);
  const duplicates = [...counts].filter(([, n]) => n > 1).map(([i]) => i);
  let outOfOrder = 0;
  for (let k = 1; k < seen.length; k++) if (seen[k] <= seen[k - 1]) outOfOrder++;
  return { missing, duplicates, outOfOrder };
}

/** How many of `<tag>:<i>` `got` holds. */
function countTag(got, tag) {
  return got.filter((s) => s.startsWith(`${tag}:`)).length;
}

/** Resolves once every subscriber of `subs` holds `n` messages (fails after `timeout` ms, saying who lags). */
function allGot(subs, n, timeout = DELIVERY) {
  return waitFor(() => subs.every((s) => s.got.length >= n), {
    timeout,
    interval: 20,
    what: () => `every subscriber to get ${n} messages (${subs.map((s) => `${s.name}: ${s.got.length}`).join(', ')})`
  });
}

/** Resolves once process `proc` has reported a 'redis' event that `match` accepts, after the first `from` events. */
function redisEvent(proc, match, { from = 0, timeout = 10000 } = {}) {
  return waitFor(() => proc.events.slice(from).find(match), {
    timeout,
    interval: 20,
    what: () => `a 'redis' event from ${proc.name} (it reported ${JSON.stringify(proc.events.slice(from))})`
  });
}

test('two server processes: every subscriber gets every publication once, in order, from both', T, async (t) => {
  if (!needsRedis(t)) return;
  const redis = await sharedRedis();
  const a = await serverProcess(t, { redis: redis.url }, 'A');
  const b = await serverProcess(t, { redis: { url: redis.url } }, 'B');
  // A third process on the same Redis with another prefix: a group of its own.
  const other = await serverProcess(t, { redis: { url: redis.url, prefix: 'elsewhere:' } }, 'C');
  const subs = [await subscriber(t, a), await subscriber(t, a), await subscriber(t, b), await subscriber(t, b)];
  const offTopic = await subscriber(t, a, ['sport']);
  const otherGroup = await subscriber(t, other);
  await joined(redis.port, [a, b, other]);

  const COUNT = 200;
  const [ra, rb] = await Promise.all([
    a.request({ cmd: 'stream', topic: 'news', tag: 'A', count: COUNT, every: 2 }, DELIVERY),
    b.request({ cmd: 'stream', topic: 'news', tag: 'B', count: COUNT, every: 2 }, DELIVERY)
  ]);
  assert.deepEqual([ra.errors, rb.errors], [[], []], 'no publication was lost');
  await allGot(subs, 2 * COUNT);
  // Nothing more comes: no second copy through Redis of a process's own publications.
  await quietPeriod(500);
  for (const s of subs) {
    assert.equal(s.got.length, 2 * COUNT, `${s.name} got ${s.got.length} messages`);
    assert.deepEqual(streamCheck(s.got, 'A', COUNT), { missing: [], duplicates: [], outOfOrder: 0 }, `${s.name}, from A`);
    assert.deepEqual(streamCheck(s.got, 'B', COUNT), { missing: [], duplicates: [], outOfOrder: 0 }, `${s.name}, from B`);
  }
  assert.deepEqual(offTopic.got, [], 'a subscriber of another topic got nothing');
  assert.deepEqual(otherGroup.got, [], 'a process with another prefix got nothing');

  // Bursts: 5,000 publications in one tick from each process, more than one pipeline holds.
  const BURST = 5000;
  const [ba, bb] = await Promise.all([
    a.request({ cmd: 'stream', topic: 'news', tag: 'A2', count: BURST, every: 1, burst: BURST }, DELIVERY),
    b.request({ cmd: 'stream', topic: 'news', tag: 'B2', count: BURST, every: 1, burst: BURST }, DELIVERY)
  ]);
  assert.deepEqual([ba.errors, bb.errors], [[], []], 'no publication of the bursts was lost');
  await allGot(subs, 2 * COUNT + 2 * BURST);
  await quietPeriod(300);
  for (const s of subs) {
    assert.equal(s.got.length, 2 * COUNT + 2 * BURST, `${s.name} got ${s.got.length} messages`);
    assert.deepEqual(streamCheck(s.got, 'A2', BURST), { missing: [], duplicates: [], outOfOrder: 0 }, `${s.name}, A's burst`);
    assert.deepEqual(streamCheck(s.got, 'B2', BURST), { missing: [], duplicates: [], outOfOrder: 0 }, `${s.name}, B's burst`);
  }

  for (const p of [a, b]) {
    assert.deepEqual(counters(await p.status()), { connected: true, bufferedMessages: 0, bufferedBytes: 0, lost: 0, missed: 0 }, `${p.name}'s status`);
    assert.equal(p.events[0].type, 'connect', `${p.name}'s first 'redis' event`);
    assert.deepEqual(p.errors, []);
  }
});

test('ws.publish in one process reaches the subscribers of every process but the sender', T, async (t) => {
  if (!needsRedis(t)) return;
  const redis = await sharedRedis();
  const a = await serverProcess(t, { redis: redis.url }, 'A');
  const b = await serverProcess(t, { redis: redis.url }, 'B');
  const [sender, local, remote] = [await subscriber(t, a), await subscriber(t, a), await subscriber(t, b)];
  await joined(redis.port, [a, b]);
  sender.client.send(JSON.stringify({ publish: 'news', data: 'from a socket of A' }));
  await allGot([local, remote], 1);
  // The sender's next message is A's next publication: its own did not come back to it.
  await a.request({ cmd: 'publish', topic: 'news', data: 'end', callback: true });
  await allGot([sender, local, remote], 1);
  await allGot([local, remote], 2);
  assert.deepEqual(sender.got, ['end']);
  assert.deepEqual(local.got, ['from a socket of A', 'end']);
  assert.deepEqual(remote.got, ['from a socket of A', 'end']);
});

test('servers of one process sharing a Redis get each other\'s publications, each once: standalone, noServer, another database number', T, async (t) => {
  if (!needsRedis(t)) return;
  const redis = await sharedRedis();
  const one = await startWss(t, WebSocket.WebSocketServer, { redis: redis.url });
  // Redis's pub/sub ignores the database number: the same group.
  const two = await startWss(t, WebSocket.WebSocketServer, { redis: `${redis.url}/3` });
  const three = new WebSocket.WebSocketServer({ noServer: true, redis: { url: redis.url } });
  const http = require('node:http').createServer();
  http.on('upgrade', (req, socket, head) => three.handleUpgrade(req, socket, head, (ws) => three.emit('connection', ws, req)));
  await new Promise((resolve) => http.listen(0, '127.0.0.1', resolve));
  t.after(async () => {
    await closeWss(three);
    // The upgraded sockets count as the http server's connections until they are destroyed.
    http.closeAllConnections();
    await closeServer(http);
  });
  const servers = [one, two, three];
  const clients = [];
  for (const wss of servers) {
    const accepted = new Promise((resolve) => wss.once('connection', resolve));
    const port = wss === three ? http.address().port : wss.address().port;
    const client = closeAfter(t, new Ws(`ws://127.0.0.1:${port}/`));
    const got = [];
    client.on('message', (data) => got.push(String(data)));
    (await accepted).subscribe('news');
    clients.push({ got, name: `a client of server ${clients.length + 1}` });
  }
  await waitFor(() => servers.every((wss) => wss.redisStatus().connected), { timeout: DELIVERY, what: 'the three servers to join Redis' });
  servers.forEach((wss, i) => wss.publish('news', `from ${i + 1}`));
  await allGot(clients, 3);
  await quietPeriod(500);
  for (const c of clients) assert.deepEqual(c.got.slice().sort(), ['from 1', 'from 2', 'from 3'], c.name);
});

// Each stream: `count` publications, `burst` at a time every `every` ms. The bursts keep
// pipelines of many publications in flight when Redis goes, which are sent again after it
// comes back (and dropped by the subscribers that had them).
for (const [signal, { count: COUNT, burst, every }] of [
  ['SIGKILL', { count: 300, burst: 1, every: 10 }],
  ['SIGTERM', { count: 300, burst: 1, every: 10 }],
  ['SIGKILL', { count: 15000, burst: 100, every: 20 }]
]) {
  const rate = burst === 1 ? `a publication every ${every} ms` : `${burst} publications every ${every} ms`;
  test(`Redis stopped with ${signal} mid-stream (${rate}) and restarted on the same port: nothing lost, nothing twice, in order`, T, async (t) => {
    if (!needsRedis(t)) return;
    const redis = await startRedis(t);
    const config = { redis: { url: redis.url, maxBufferedMessages: 100000 } };
    const a = await serverProcess(t, config, 'A');
    const b = await serverProcess(t, config, 'B');
    const subs = [await subscriber(t, a), await subscriber(t, a), await subscriber(t, b), await subscriber(t, b)];
    await joined(redis.port, [a, b]);
    // The first publications wait until Redis has been up for the rejoin wait; once they are
    // through, the streams below start on a settled group.
    await a.request({ cmd: 'publish', topic: 'news', data: 'A:warm', callback: true });
    await b.request({ cmd: 'publish', topic: 'news', data: 'B:warm', callback: true });
    await allGot(subs, 2);

    // The waits below end before the test's own timeout, so that a failure names the step.
    const streams = Promise.all([
      a.request({ cmd: 'stream', topic: 'news', tag: 'A', count: COUNT, every, burst }, 2 * DELIVERY),
      b.request({ cmd: 'stream', topic: 'news', tag: 'B', count: COUNT, every, burst }, 2 * DELIVERY)
    ]);
    // Redis goes once a fifth of both streams has gone through it.
    await waitFor(() => subs.every((s) => countTag(s.got, 'A') >= COUNT / 5 && countTag(s.got, 'B') >= COUNT / 5), {
      timeout: 10000,
      what: 'a part of both streams at every subscriber'
    });
    const [fromA, fromB] = [a.events.length, b.events.length];
    await redis.stop(signal);
    await Promise.all([
      redisEvent(a, (e) => e.type === 'disconnect', { from: fromA }),
      redisEvent(b, (e) => e.type === 'disconnect', { from: fromB })
    ]);
    const duringOutage = subs.map((s) => s.got.length);
    // Redis stays away for half a second, while the streams go on: they are held.
    await delay(500);
    const held = await Promise.all([a.status(), b.status()]);
    assert.deepEqual(
      held.map((st) => [st.connected, st.bufferedMessages > 0]),
      [
        [false, true],
        [false, true]
      ],
      `the statuses during the outage: ${JSON.stringify(held)}`
    );
    await startRedis(t, { port: redis.port });

    const [ra, rb] = await streams;
    assert.deepEqual([ra.errors, rb.errors], [[], []], 'no publication was lost');
    await allGot(subs, 2 + 2 * COUNT, DELIVERY);
    // Nothing more comes: no resent copy gets through.
    await quietPeriod(500);
    for (const s of subs) {
      assert.equal(s.got.length, 2 + 2 * COUNT, `${s.name} got ${s.got.length} messages`);
      assert.deepEqual(streamCheck(s.got, 'A', COUNT), { missing: [], duplicates: [], outOfOrder: 0 }, `${s.name}, from A`);
      assert.deepEqual(streamCheck(s.got, 'B', COUNT), { missing: [], duplicates: [], outOfOrder: 0 }, `${s.name}, from B`);
    }
    assert.ok(duringOutage.every((n) => n < 2 + 2 * COUNT), 'Redis went while the streams were under way');
    for (const p of [a, b]) {
      const after = p.events.slice(p === a ? fromA : fromB).map((e) => e.type);
      assert.ok(after.includes('disconnect'), `${p.name}'s events after the stop: ${after}`);
      assert.equal(after[after.length - 1], 'connect', `${p.name}'s events after the stop: ${after}`);
      const disconnect = p.events.find((e) => e.type === 'disconnect');
      assert.equal(disconnect.error?.isError, true, `${p.name}'s 'disconnect' carries an Error`);
      assert.deepEqual(counters(await p.status()), { connected: true, bufferedMessages: 0, bufferedBytes: 0, lost: 0, missed: 0 }, `${p.name}'s status`);
      assert.deepEqual(p.errors, []);
    }
  });
}

test('Redis down when the server starts: it serves its clients, reports, and joins when Redis comes', T, async (t) => {
  if (!needsRedis(t)) return;
  const port = await freePort();
  const url = `redis://127.0.0.1:${port}`;
  const a = await serverProcess(t, { redis: url }, 'A');
  // The same without a 'redis' listener.
  const quiet = await serverProcess(t, { redis: url, listen: false }, 'A without a listener');
  const local = await subscriber(t, a);
  const quietLocal = await subscriber(t, quiet);

  // Local publications reach local subscribers at once, and are held for Redis.
  assert.equal((await a.request({ cmd: 'publish', topic: 'news', data: 'held by A', callback: true })).error, null);
  assert.equal((await quiet.request({ cmd: 'publish', topic: 'news', data: 'held by the other', callback: true })).error, null);
  await allGot([local, quietLocal], 1, 5000);
  const reported = await redisEvent(a, (e) => e.type === 'error' || e.type === 'disconnect', { timeout: 5000 });
  assert.equal(reported.error?.isError, true, `the ${reported.type} event carries an Error`);
  assert.ok(!a.events.some((e) => e.type === 'connect'), 'no connect event without Redis');
  const down = await a.status();
  assert.equal(down.connected, false);
  assert.equal(down.bufferedMessages, 1);
  assert.ok(down.bufferedBytes > 0, `bufferedBytes ${down.bufferedBytes}`);

  // Redis comes; a second process with it.
  const redis = await startRedis(t, { port });
  const b = await serverProcess(t, { redis: url }, 'B');
  const remote = await subscriber(t, b);
  await redisEvent(a, (e) => e.type === 'connect', { timeout: DELIVERY });
  await joined(redis.port, [a, b, quiet]);
  // What was held comes through once the peers have had their time to subscribe, then what
  // follows, in order.
  await a.request({ cmd: 'publish', topic: 'news', data: 'A after the join', callback: true });
  await b.request({ cmd: 'publish', topic: 'news', data: 'from B', callback: true });
  await allGot([remote, local, quietLocal], 4);
  await quietPeriod(300);
  const everything = ['A after the join', 'from B', 'held by A', 'held by the other'];
  for (const s of [remote, local, quietLocal]) {
    assert.deepEqual(s.got.slice().sort(), everything, s.name);
    assert.ok(s.got.indexOf('held by A') < s.got.indexOf('A after the join'), `A's order at ${s.name}: ${s.got}`);
  }
  assert.equal(local.got[0], 'held by A');
  assert.equal(quietLocal.got[0], 'held by the other');
  for (const p of [a, quiet, b]) {
    assert.equal(p.exit(), null, `${p.name} is running`);
    assert.deepEqual(p.errors, [], `${p.name} emitted no 'error'`);
  }
  assert.deepEqual(quiet.events, [], 'no listener, no report');
  assert.equal((await a.status()).bufferedMessages, 0);
});

test('past maxBufferedMessages: the callback gets WS_ERR_PUBLISH_LOST, or the server emits a lost event', T, async (t) => {
  if (!needsRedis(t)) return;
  const port = await freePort();
  const url = `redis://127.0.0.1:${port}`;
  const a = await serverProcess(t, { redis: { url, maxBufferedMessages: 5 } }, 'A');
  const local = await subscriber(t, a);
  await redisEvent(a, (e) => e.type === 'error' || e.type === 'disconnect', { timeout: 5000 });

  const results = [];
  for (let i = 0; i < 8; i++) {
    results.push((await a.request({ cmd: 'publish', topic: 'news', data: `p${i}`, callback: true })).error);
  }
  assert.deepEqual(results, [null, null, null, null, null, 'WS_ERR_PUBLISH_LOST', 'WS_ERR_PUBLISH_LOST', 'WS_ERR_PUBLISH_LOST']);
  // Without a callback: a 'lost' event per publication.
  const from = a.events.length;
  for (let i = 8; i < 11; i++) await a.request({ cmd: 'publish', topic: 'news', data: `p${i}` });
  await waitFor(() => a.events.slice(from).filter((e) => e.type === 'lost').length === 3, {
    timeout: 5000,
    what: () => `three lost events (${JSON.stringify(a.events.slice(from))})`
  });
  for (const e of a.events.slice(from).filter((e) => e.type === 'lost')) {
    assert.equal(e.topic, 'news');
    assert.equal(e.error?.isError, true);
    assert.equal(e.error.code, 'WS_ERR_PUBLISH_LOST');
  }
  // A socket's publish (ws.publish, without a callback) past the bound: a 'lost' event too,
  // with its topic; the other local subscriber gets it.
  const other = await subscriber(t, a, ['sport']);
  const fromSocket = a.events.length;
  other.client.send(JSON.stringify({ publish: 'news', data: 'p11' }));
  const lost = await redisEvent(a, (e) => e.type === 'lost', { from: fromSocket, timeout: 5000 });
  assert.equal(lost.topic, 'news');
  assert.equal(lost.error?.code, 'WS_ERR_PUBLISH_LOST');
  // The local subscriber got every one of them.
  await allGot([local], 12, 5000);
  assert.deepEqual(local.got, Array.from({ length: 12 }, (_, i) => `p${i}`));
  const status = await a.status();
  assert.equal(status.connected, false);
  assert.equal(status.bufferedMessages, 5);
  assert.equal(status.lost, 7);

  // Redis comes, with a second process: it gets the five that were held, in order, and not the others.
  await startRedis(t, { port });
  const b = await serverProcess(t, { redis: url }, 'B');
  const remote = await subscriber(t, b);
  await allGot([remote], 5);
  await quietPeriod(500);
  assert.deepEqual(remote.got, ['p0', 'p1', 'p2', 'p3', 'p4']);
  assert.equal((await a.status()).bufferedMessages, 0);
  assert.deepEqual(a.errors, []);
});

test('a publication larger than maxBufferedBytes is lost for Redis, not for local subscribers', T, async (t) => {
  if (!needsRedis(t)) return;
  const redis = await sharedRedis();
  const a = await serverProcess(t, { redis: { url: redis.url, maxBufferedBytes: 4096 } }, 'A');
  const b = await serverProcess(t, { redis: redis.url }, 'B');
  const local = await subscriber(t, a);
  const remote = await subscriber(t, b);
  await joined(redis.port, [a, b]);
  const big = 'x'.repeat(8192);
  assert.equal((await a.request({ cmd: 'publish', topic: 'news', data: big, callback: true })).error, 'WS_ERR_PUBLISH_LOST');
  const from = a.events.length;
  await a.request({ cmd: 'publish', topic: 'news', data: big });
  const lost = await redisEvent(a, (e) => e.type === 'lost', { from, timeout: 5000 });
  assert.equal(lost.error?.code, 'WS_ERR_PUBLISH_LOST');
  assert.equal((await a.request({ cmd: 'publish', topic: 'news', data: 'small', callback: true })).error, null);
  await allGot([remote], 1);
  await allGot([local], 3, 5000);
  await quietPeriod(300);
  assert.deepEqual(remote.got, ['small']);
  assert.deepEqual(local.got, [big, big, 'small']);
  assert.equal((await a.status()).lost, 2);
});

test("a process without a 'redis' listener survives Redis dying, and joins again when it is back", T, async (t) => {
  if (!needsRedis(t)) return;
  const redis = await startRedis(t);
  const a = await serverProcess(t, { redis: redis.url, listen: false }, 'A');
  const b = await serverProcess(t, { redis: redis.url }, 'B');
  const local = await subscriber(t, a);
  const remote = await subscriber(t, b);
  await joined(redis.port, [a, b]);
  await a.request({ cmd: 'publish', topic: 'news', data: 'before', callback: true });
  await allGot([local, remote], 1);

  await redis.stop('SIGKILL');
  await waitFor(async () => !(await a.status()).connected, { timeout: 5000, what: 'A to notice that Redis is gone' });
  // Let its reconnection attempts fail a few times: the process must stay.
  await quietPeriod(1500);
  assert.equal(a.exit(), null, 'A is running');
  await a.request({ cmd: 'publish', topic: 'news', data: 'during', callback: true });
  await allGot([local], 2, 5000);

  await startRedis(t, { port: redis.port });
  await waitFor(async () => (await a.status()).connected, { timeout: DELIVERY, what: 'A to reconnect' });
  await a.request({ cmd: 'publish', topic: 'news', data: 'after', callback: true });
  await allGot([remote], 3);
  await allGot([local], 3, 5000);
  assert.deepEqual(local.got, ['before', 'during', 'after']);
  assert.deepEqual(remote.got, ['before', 'during', 'after']);
  assert.equal(a.exit(), null, 'A is running');
  assert.deepEqual(a.errors, []);
});

test('text and binary, empty and large publications cross processes as they were published', T, async (t) => {
  if (!needsRedis(t)) return;
  const redis = await sharedRedis();
  const a = await serverProcess(t, { redis: redis.url }, 'A');
  const b = await serverProcess(t, { redis: redis.url }, 'B');
  const [local, remote] = [await subscriber(t, a), await subscriber(t, b)];
  await joined(redis.port, [a, b]);
  const random = crypto.randomBytes(1024 * 1024 + 5).toString('base64');
  const publications = [
    [{ data: 'héllo wörld ✓' }, 'héllo wörld ✓'],
    [{ data: '' }, ''],
    [{ data: '', base64: true }, 'binary:'],
    [{ data: random, base64: true }, `binary:${random}`],
    [{ data: 'text sent as binary', options: { binary: true } }, `binary:${Buffer.from('text sent as binary').toString('base64')}`],
    [{ data: Buffer.from('bytes sent as text').toString('base64'), base64: true, options: { binary: false } }, 'bytes sent as text'],
    [{ data: 'x'.repeat(200 * 1024), options: { compress: true } }, 'x'.repeat(200 * 1024)]
  ];
  for (const [p] of publications) {
    assert.equal((await a.request({ cmd: 'publish', topic: 'news', callback: true, ...p })).error, null);
  }
  const expected = publications.map(([, e]) => e);
  await allGot([local, remote], expected.length);
  await quietPeriod(300);
  const short = (list) => list.map((m) => (m.length > 40 ? `${m.slice(0, 20)}... (${m.length})` : m));
  assert.deepEqual(short(local.got), short(expected));
  assert.deepEqual(short(remote.got), short(expected));
  assert.ok(remote.got.every((m, i) => m === expected[i]), 'the bytes at the other process');
});

test('topics with glob characters are topics, and a prefix with glob characters is a group of its own', T, async (t) => {
  if (!needsRedis(t)) return;
  const redis = await sharedRedis();
  // 'px:' would match the prefix 'p*:' taken as a glob pattern.
  const a = await serverProcess(t, { redis: { url: redis.url, prefix: 'p*:' } }, 'A');
  const b = await serverProcess(t, { redis: { url: redis.url, prefix: 'p*:' } }, 'B');
  const c = await serverProcess(t, { redis: { url: redis.url, prefix: 'px:' } }, 'C');
  const topics = ['a*b', 'news?', '[x]', 'back\\slash', 'ünïcode ✓', 'space and: colon'];
  const subs = [];
  for (const topic of [...topics, 'axb', 'newsy', 'x']) subs.push({ topic, ...(await subscriber(t, b, [topic])) });
  const cSub = await subscriber(t, c, topics);
  await joined(redis.port, [a, b, c]);
  for (const topic of topics) {
    await a.request({ cmd: 'publish', topic, data: `A to ${topic}`, callback: true });
    await c.request({ cmd: 'publish', topic, data: `C to ${topic}`, callback: true });
  }
  // An end mark for every subscriber of B, through Redis: A publishes it to each topic last.
  for (const { topic } of subs) await a.request({ cmd: 'publish', topic, data: 'end', callback: true });
  await waitFor(() => subs.every((s) => s.got.includes('end')), {
    timeout: DELIVERY,
    what: () => `the end mark at every subscriber of B (${subs.map((s) => `${s.topic}: ${s.got}`).join('; ')})`
  });
  await allGot([cSub], topics.length);
  await quietPeriod(300);
  for (const s of subs) {
    const expected = topics.includes(s.topic) ? [`A to ${s.topic}`, 'end'] : ['end'];
    assert.deepEqual(s.got, expected, `the subscriber of ${JSON.stringify(s.topic)} at B`);
  }
  // C's own publications, and none of A's.
  assert.deepEqual(cSub.got, topics.map((topic) => `C to ${topic}`));
});

test('a Redis that needs a password: the URL\'s password is used; a wrong one is reported, without a crash', T, async (t) => {
  if (!needsRedis(t)) return;
  const redis = await startRedis(t, { password: 's3cret' });
  const wrong = `redis://:wrong@127.0.0.1:${redis.port}`;
  const a = await serverProcess(t, { redis: redis.url }, 'A');
  const b = await serverProcess(t, { redis: { url: redis.url } }, 'B');
  const refused = await serverProcess(t, { redis: wrong }, 'C');
  const refusedQuietly = await serverProcess(t, { redis: wrong, listen: false }, 'D');
  const [local, remote, refusedLocal] = [await subscriber(t, a), await subscriber(t, b), await subscriber(t, refused)];
  await waitFor(async () => (await a.status()).connected && (await b.status()).connected, { timeout: DELIVERY, what: 'A and B to join Redis' });
  await a.request({ cmd: 'publish', topic: 'news', data: 'from A', callback: true });
  await refused.request({ cmd: 'publish', topic: 'news', data: 'from C', callback: true });
  await allGot([local, remote], 1);
  await allGot([refusedLocal], 1, 5000);
  const reported = await redisEvent(refused, (e) => e.type === 'error' || e.type === 'disconnect', { timeout: 5000 });
  assert.equal(reported.error?.isError, true, `the ${reported.type} event carries an Error`);
  // Let the refused processes retry a few times.
  await quietPeriod(1500);
  assert.equal((await refused.status()).connected, false);
  assert.equal((await refusedQuietly.status()).connected, false);
  for (const p of [a, b, refused, refusedQuietly]) {
    assert.equal(p.exit(), null, `${p.name} is running`);
    assert.deepEqual(p.errors, [], `${p.name} emitted no 'error'`);
  }
  assert.ok(!refused.events.some((e) => e.type === 'connect'), "no 'connect' with a wrong password");
  assert.deepEqual(remote.got, ['from A']);
  assert.deepEqual(refusedLocal.got, ['from C']);
});

test('subscriber connections that Redis drops miss what is published meanwhile; redisStatus().missed counts it', T, async (t) => {
  if (!needsRedis(t)) return;
  const redis = await startRedis(t);
  const a = await serverProcess(t, { redis: redis.url }, 'A');
  const b = await serverProcess(t, { redis: redis.url }, 'B');
  const [atA, atB] = [await subscriber(t, a), await subscriber(t, b)];
  await joined(redis.port, [a, b]);
  await a.request({ cmd: 'publish', topic: 'news', data: 'A:warm', callback: true });
  await b.request({ cmd: 'publish', topic: 'news', data: 'B:warm', callback: true });
  await allGot([atA, atB], 2);

  const COUNT = 400;
  const streams = Promise.all([
    a.request({ cmd: 'stream', topic: 'news', tag: 'A', count: COUNT, every: 5 }, DELIVERY),
    b.request({ cmd: 'stream', topic: 'news', tag: 'B', count: COUNT, every: 5 }, DELIVERY)
  ]);
  await waitFor(() => countTag(atA.got, 'B') >= 50 && countTag(atB.got, 'A') >= 50, { timeout: 10000, what: 'a part of both streams' });
  // Redis drops both subscriber connections; the publishers stay.
  const killed = await redisCommand(redis.port, ['CLIENT', 'KILL', 'TYPE', 'pubsub']);
  assert.equal(killed, 2);
  const [ra, rb] = await streams;
  assert.deepEqual([ra.errors, rb.errors], [[], []]);
  // The last of each stream reaches the other process.
  await waitFor(() => atA.got.includes(`B:${COUNT - 1}`) && atB.got.includes(`A:${COUNT - 1}`), {
    timeout: DELIVERY,
    what: 'the end of both streams at the other process'
  });
  await quietPeriod(300);
  const fromB = streamCheck(atA.got, 'B', COUNT);
  const fromA = streamCheck(atB.got, 'A', COUNT);
  // Local subscribers got all of their process's own.
  assert.deepEqual(streamCheck(atA.got, 'A', COUNT), { missing: [], duplicates: [], outOfOrder: 0 });
  assert.deepEqual(streamCheck(atB.got, 'B', COUNT), { missing: [], duplicates: [], outOfOrder: 0 });
  // Remote ones: what arrived came once and in order; what did not is counted as missed.
  assert.deepEqual([fromB.duplicates, fromB.outOfOrder, fromA.duplicates, fromA.outOfOrder], [[], 0, [], 0]);
  const [sa, sb] = [await a.status(), await b.status()];
  t.diagnostic(`missed: A ${fromB.missing.length} (status ${sa.missed}), B ${fromA.missing.length} (status ${sb.missed})`);
  assert.equal(sa.missed, fromB.missing.length, `A's missed: B's ${JSON.stringify(fromB.missing)}`);
  assert.equal(sb.missed, fromA.missing.length, `B's missed: A's ${JSON.stringify(fromA.missing)}`);
  assert.ok(sa.missed + sb.missed > 0, 'the dropped connections missed something');
  assert.deepEqual([sa.lost, sb.lost], [0, 0]);
});

test('a server that closes sends what it published to Redis, and its process exits by itself', T, async (t) => {
  if (!needsRedis(t)) return;
  const redis = await sharedRedis();
  const b = await serverProcess(t, { redis: redis.url }, 'B');
  const remote = await subscriber(t, b);
  await joined(redis.port, [b]);
  const closing = nodeChild(t, path.join(__dirname, 'fixtures', 'pubsub-redis-exit.js'), [redis.url, 'publish']);
  await closing.line(/^CONNECTED$/, DELIVERY);
  await closing.line(/^CLOSED$/, 5000);
  const exit = await bounded(closing.exited, 10000);
  assert.deepEqual(exit, { code: 0, signal: null }, `the process exited by itself (its output: ${closing.lines})`);
  await allGot([remote], 100, 5000);
  assert.deepEqual(remote.got, Array.from({ length: 100 }, (_, i) => `bye ${i}`));
});

test('a server that closes while Redis is unreachable lets its process exit', T, async (t) => {
  if (!needsRedis(t)) return;
  const port = await freePort();
  const closing = nodeChild(t, path.join(__dirname, 'fixtures', 'pubsub-redis-exit.js'), [`redis://127.0.0.1:${port}`, 'unreachable']);
  await closing.line(/^CLOSED$/, 10000);
  const exit = await bounded(closing.exited, 10000);
  assert.deepEqual(exit, { code: 0, signal: null }, `the process exited by itself (its output: ${closing.lines})`);
});

test('a server in a Worker shares the Redis with the main thread\'s, and the Worker\'s end leaves the main thread\'s links working', T, async (t) => {
  if (!needsRedis(t)) return;
  const redis = await sharedRedis();
  const main = await startWss(t, WebSocket.WebSocketServer, { redis: redis.url });
  const other = await startWss(t, WebSocket.WebSocketServer, { redis: redis.url });
  const subs = [];
  for (const [wss, name] of [
    [main, 'a subscriber of the main thread\'s server'],
    [other, 'a subscriber of its other server']
  ]) {
    const { client, server } = await openClient(t, wss, Ws);
    server.subscribe('news');
    const got = [];
    client.on('message', (data) => got.push(String(data)));
    subs.push({ got, name });
  }
  const worker = new Worker(
    `
    const { parentPort, workerData } = require('node:worker_threads');
    const { WebSocketServer } = require(workerData.root);
    const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, redis: workerData.url });
    wss.on('redis', (e) => parentPort.postMessage({ redis: e.type }));
    wss.on('listening', () => parentPort.postMessage({ port: wss.address().port }));
    wss.on('connection', (ws) => {
      ws.subscribe('news');
      ws.send('subscribed');
    });
    parentPort.on('message', (m) => wss.publish('news', m, (err) => parentPort.postMessage({ published: m, error: err && err.code })));
    `,
    { eval: true, workerData: { root: path.join(__dirname, '..'), url: redis.url } }
  );
  const exited = new Promise((resolve) => worker.once('exit', resolve));
  t.after(() => worker.terminate());
  const fromWorker = [];
  worker.on('message', (m) => fromWorker.push(m));
  const { port } = await waitFor(() => fromWorker.find((m) => m.port), { timeout: 10000, what: 'the Worker\'s server to listen' });
  const inWorker = await subscriber(t, { port, name: 'the Worker' });
  subs.push(inWorker);
  await waitFor(() => main.redisStatus().connected && other.redisStatus().connected && fromWorker.some((m) => m.redis === 'connect'), {
    timeout: DELIVERY,
    what: () => `the three servers to join Redis (the Worker's reports: ${JSON.stringify(fromWorker)})`
  });
  worker.postMessage('from the Worker');
  main.publish('news', 'from the main thread');
  await allGot(subs, 2);
  for (const s of subs) assert.deepEqual(s.got.slice().sort(), ['from the Worker', 'from the main thread'], s.name);

  // The Worker ends without closing its server: its environment goes, and its link with it.
  await worker.terminate();
  await exited;
  main.publish('news', 'after the Worker');
  await allGot(subs.slice(0, 2), 3);
  assert.deepEqual(subs[1].got[2], 'after the Worker');
  assert.deepEqual(main.redisStatus().lost, 0);
  assert.equal(main.redisStatus().connected, true);
});

test('reconnection backs off: quick retries at first, then at most one every 5 s or so per connection, and it keeps trying', { timeout: 30000 }, async (t) => {
  // A TCP server that drops every connection: each is one attempt of the link (its publisher
  // or its subscriber connection).
  const started = Date.now();
  const attempts = [];
  const server = await netServer(t, (s) => {
    attempts.push(Date.now() - started);
    s.destroy();
  });
  const wss = await startWss(t, WebSocket.WebSocketServer, { redis: `redis://127.0.0.1:${server.address().port}` });
  const events = [];
  wss.on('redis', (e) => events.push(e.type));
  // The attempts of 12 s are the observation: no event marks the end of a backoff.
  await delay(12000);
  const within = (from, to) => attempts.filter((ms) => ms >= from && ms < to).length;
  const summary = `attempts at ${attempts.join(', ')} ms`;
  t.diagnostic(summary);
  // Two connections, each from 100 ms doubling to 5 s: 0, 0.1, 0.3, 0.7, 1.5, 3.1, 6.3, 11.3 s
  // or so each (jittered), some 16 in all.
  assert.ok(attempts.length >= 8 && attempts.length <= 40, `between 8 and 40 attempts in 12 s: ${summary}`);
  assert.ok(within(0, 1000) >= 4, `quick retries in the first second: ${summary}`);
  assert.ok(within(6000, 12000) <= 8, `backed off after 6 s: ${summary}`);
  assert.ok(attempts[attempts.length - 1] >= 12000 - 8500, `still trying: ${summary}`);
  assert.ok(events.length > 0 && events.every((type) => type === 'error' || type === 'disconnect'), `events: ${events}`);
  assert.equal(wss.redisStatus().connected, false);
});

test('a subscriber that does not read, on a process that gets publications through Redis, holds up neither the link nor the others', T, async (t) => {
  if (!needsRedis(t)) return;
  const redis = await sharedRedis();
  const a = await serverProcess(t, { redis: redis.url }, 'A');
  const b = await serverProcess(t, { redis: redis.url, serverOptions: { maxBackpressure: 1024 * 1024 } }, 'B');
  const reading = await subscriber(t, b, undefined, { keep: 40 });
  const slow = await rawWebSocket(t, b.port);
  slow.socket.pause();
  await joined(redis.port, [a, b]);
  assert.equal((await b.request({ cmd: 'count', topic: 'news' })).count, 2);
  // 64 MB through Redis, twice what Redis holds for a subscriber connection that falls behind.
  const COUNT = 1000;
  const { errors } = await a.request({ cmd: 'stream', topic: 'news', tag: 'A', count: COUNT, every: 5, pad: 64 * 1024 }, 3 * DELIVERY);
  assert.deepEqual(errors, []);
  await allGot([reading], COUNT, DELIVERY);
  assert.deepEqual(streamCheck(reading.got, 'A', COUNT), { missing: [], duplicates: [], outOfOrder: 0 });
  const status = await b.status();
  assert.deepEqual(counters(status), { connected: true, bufferedMessages: 0, bufferedBytes: 0, lost: 0, missed: 0 }, "B's status");
  assert.equal((await b.request({ cmd: 'count', topic: 'news' })).count, 2, 'the slow subscriber is still there');
  assert.equal(b.exit(), null);
});
