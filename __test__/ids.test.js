'use strict';

// Connection ids are slots the engine reuses (src/engine/registry.rs): a slot serves a new
// connection once the engine and JS are both done with its id. These tests check that the
// slots do come back (the tables stay as small as the connections open at once) and that
// nothing a user keeps of an ended connection reaches the next connection in its slot.
// Peers are `ws` clients and raw sockets (a ws-native client would take slots of its own).

const { test } = require('node:test');
const assert = require('node:assert/strict');
const { once } = require('node:events');
const net = require('node:net');
const path = require('node:path');

const { WebSocketServer } = require(path.join(__dirname, '..'));
const WebSocket = require(path.join(__dirname, '..'));
const native = require(path.join(__dirname, '..', 'lib', 'native.js'));
const Ws = require('ws');
const { bounded, closeEvent, openClient, rawExchange, startWss, upgradeRequest, waitFor } = require('./helpers');

const T = { timeout: 20000 };
const SLOT = 2 ** native.binding.wire().slotBits - 1;

/**
 * Resolves once the engine has no connection left and every slot it made is free again
 * (nothing held by either side); fails after 2 s with the table's counts.
 */
async function allFree() {
  let stats;
  await waitFor(
    () => {
      stats = native.binding.slotStats();
      const [made, free, registered] = stats;
      return registered === 0 && free === made;
    },
    { timeout: 2000, interval: 50, what: () => `every slot to be free (slots made, free, registered: ${stats})` }
  );
}

/** Opens a `ws` client to `wss`; resolves with the client and the server's WebSocket and req. */
const connect = (t, wss) => openClient(t, wss, Ws);

/** Closes both ends; resolves once both emitted 'close'. */
async function closeBoth({ client, server }) {
  const closed = Promise.all([once(server, 'close'), once(client, 'close')]);
  client.close();
  await closed;
}

/** Echoes one message through `pair`; resolves with what the client got back. */
async function echo({ client }, text) {
  const back = once(client, 'message');
  client.send(text);
  const [data] = await back;
  return data.toString();
}

test('a closed connection\'s slot serves the next connection, under a new id', T, async (t) => {
  const wss = await startWss(t, WebSocketServer);
  wss.on('connection', (ws) => ws.on('message', (m) => ws.send(m)));
  const first = await connect(t, wss);
  const slot = first.server._id & SLOT;
  await closeBoth(first);
  let reused = null;
  for (let i = 0; i < 20 && reused === null; i++) {
    const next = await connect(t, wss);
    assert.equal(await echo(next, `m${i}`), `m${i}`);
    if ((next.server._id & SLOT) === slot) reused = next;
    else await closeBoth(next);
  }
  assert.ok(reused, 'the slot came back');
  assert.notEqual(reused.server._id, first.server._id);
  await closeBoth(reused);
  await allFree();
});

test('connections opened and closed one after another keep using the same few slots', T, async (t) => {
  const wss = await startWss(t, WebSocketServer);
  const slots = new Set();
  wss.on('connection', (ws) => {
    slots.add(ws._id & SLOT);
    ws.on('message', (m) => ws.send(m));
  });
  // ws-native clients too: theirs are slots of the same table.
  for (let i = 0; i < 100; i++) {
    const client = new WebSocket(`ws://127.0.0.1:${wss.address().port}`);
    await once(client, 'open');
    slots.add(client._id & SLOT);
    client.send('x');
    await once(client, 'message');
    client.close();
    await once(client, 'close');
  }
  assert.ok(slots.size <= 6, `${slots.size} slots for 200 connections`);
  await allFree();
});

test('req.socket kept after its connection closed does not reach the next connection in its slot', T, async (t) => {
  const wss = await startWss(t, WebSocketServer);
  wss.on('connection', (ws) => ws.on('message', (m) => ws.send(m)));
  const first = await connect(t, wss);
  const stale = first.req.socket;
  const slot = first.server._id & SLOT;
  await closeBoth(first);
  let next = null;
  for (let i = 0; i < 20; i++) {
    next = await connect(t, wss);
    if ((next.server._id & SLOT) === slot) break;
    await closeBoth(next);
    next = null;
  }
  assert.ok(next, 'a connection got the slot');
  stale.write('HTTP/1.1 400 Bad Request\r\n\r\n');
  stale.end();
  stale.destroy();
  // Whatever the stale socket queued goes to the engine in the flush that ends this tick,
  // before the echo's answer: had it reached the next connection, the echo would not come back.
  assert.equal(await echo(next, 'still here'), 'still here');
  assert.equal(next.server.readyState, WebSocket.OPEN);
  await closeBoth(next);
  await allFree();
});

test('a request refused through wsClientError gives its slot back once its socket ends', T, async (t) => {
  const wss = await startWss(t, WebSocketServer);
  wss.on('connection', (ws) => ws.on('message', (m) => ws.send(m)));
  const refused = new Promise((resolve) => {
    wss.on('wsClientError', (err, socket) => {
      resolve(socket._link.id);
      socket.end('HTTP/1.1 400 Bad Request\r\n\r\n');
    });
  });
  const raw = net.connect(wss.address().port, '127.0.0.1');
  raw.write(upgradeRequest().replace('Version: 13', 'Version: 12'));
  const id = await refused;
  const answer = [];
  raw.on('data', (d) => answer.push(d));
  await once(raw, 'close');
  assert.match(Buffer.concat(answer).toString(), /^HTTP\/1.1 400 Bad Request/);
  // The engine's side of the refused connection ends too, without waiting for a decision.
  await allFree();
  let reused = false;
  for (let i = 0; i < 20 && !reused; i++) {
    const next = await connect(t, wss);
    reused = (next.server._id & SLOT) === (id & SLOT);
    assert.equal(await echo(next, 'ok'), 'ok');
    await closeBoth(next);
  }
  assert.ok(reused, 'the refused request\'s slot came back');
});

test('requests refused by verifyClient give their slots back', T, async (t) => {
  let n = 0;
  const wss = await startWss(t, WebSocketServer, {
    verifyClient: (info, cb) => setImmediate(cb, n++ % 2 === 0, 403)
  });
  const slots = new Set();
  wss.on('connection', (ws) => slots.add(ws._id & SLOT));
  for (let i = 0; i < 40; i++) {
    const client = new Ws(`ws://127.0.0.1:${wss.address().port}`);
    client.on('error', () => {});
    const [kind] = await Promise.race([
      once(client, 'open').then(() => ['open']),
      once(client, 'unexpected-response').then(([, res]) => [res.statusCode])
    ]);
    assert.equal(kind, i % 2 === 0 ? 'open' : 403);
    client.terminate();
    if (kind === 'open') await once(client, 'close');
  }
  assert.ok(slots.size <= 6, `${slots.size} slots for 20 accepted connections`);
  await allFree();
});

test('a request whose server closed before JS answered gives its slot back', T, async (t) => {
  // An async verifyClient still pending when the server closes: ws answers 503. Its callback
  // comes after that answer.
  let asked;
  const pending = new Promise((resolve) => (asked = resolve));
  const wss = await startWss(t, WebSocketServer, { verifyClient: (info, cb) => asked(cb) });
  const client = new Ws(`ws://127.0.0.1:${wss.address().port}`);
  client.on('error', () => {});
  const response = once(client, 'unexpected-response');
  const verified = await pending;
  wss.close();
  const [, res] = await response;
  assert.equal(res.statusCode, 503);
  verified(true);
  client.terminate();
  await allFree();
});

test('clients that fail, give up or get refused, and connections adopted from Node, give their slots back', T, async (t) => {
  const http = require('node:http');
  const { listen, closeServer } = require('./helpers');
  // An http server refusing every upgrade, and one handing upgrades to a noServer wss.
  const refusing = http.createServer();
  refusing.on('upgrade', (req, socket) => socket.end('HTTP/1.1 403 Forbidden\r\n\r\n'));
  const refusingPort = await listen(refusing);
  t.after(() => closeServer(refusing));
  const wss = new WebSocketServer({ noServer: true });
  wss.on('connection', (ws) => ws.on('message', (m) => ws.send(m)));
  const host = http.createServer();
  host.on('upgrade', (req, socket, head) => wss.handleUpgrade(req, socket, head, (ws) => wss.emit('connection', ws, req)));
  const hostPort = await listen(host);
  t.after(() => closeServer(host));

  for (let i = 0; i < 5; i++) {
    // Refused with 403 (the engine's handshake fails).
    const refused = new WebSocket(`ws://127.0.0.1:${refusingPort}`);
    refused.on('error', () => {});
    await closeEvent(refused);
    // Given up while connecting.
    const givenUp = new WebSocket(`ws://127.0.0.1:${refusingPort}`);
    givenUp.on('error', () => {});
    givenUp.terminate();
    await closeEvent(givenUp);
    // Nothing listening.
    const nobody = new WebSocket('ws://127.0.0.1:1');
    nobody.on('error', () => {});
    await closeEvent(nobody);
    // Adopted by the engine on both sides (the server through handleUpgrade).
    const client = new WebSocket(`ws://127.0.0.1:${hostPort}`);
    await once(client, 'open');
    client.send('x');
    await once(client, 'message');
    client.close();
    await once(client, 'close');
  }
  for (const ws of wss.clients) ws.terminate();
  await allFree();
});

test('a Worker that exits with connections open gives their slots back', T, async () => {
  const { Worker } = require('node:worker_threads');
  const code = `
    const { parentPort } = require('node:worker_threads');
    const WebSocket = require(${JSON.stringify(path.join(__dirname, '..'))});
    const wss = new WebSocket.Server({ host: '127.0.0.1', port: 0 }, () => {
      const client = new WebSocket('ws://127.0.0.1:' + wss.address().port);
      client.on('open', () => parentPort.postMessage('open'));
    });
  `;
  const worker = new Worker(code, { eval: true });
  await once(worker, 'message');
  // Its JS holds both connections' ids; nobody closes them.
  await worker.terminate();
  await allFree();
});

test('a request that arrives after its server closed gets 503 and gives its slot back', T, async (t) => {
  const wss = await startWss(t, WebSocketServer);
  const raw = net.connect(wss.address().port, '127.0.0.1');
  await once(raw, 'connect');
  const answer = [];
  raw.on('data', (d) => answer.push(d));
  raw.write(upgradeRequest());
  // Keep JS busy while the engine reads the request and queues it for JS; the server closes
  // before JS gets to it. A busy loop, not a wait: JS must not run meanwhile, so no event or
  // condition can end it (300 ms is far more than the engine needs to read the request).
  const until = Date.now() + 300;
  while (Date.now() < until);
  wss.close();
  await once(raw, 'close');
  assert.match(Buffer.concat(answer).toString(), /^HTTP\/1.1 503 Service Unavailable\r\n/);
  await allFree();
});

test('connections the engine refuses or that leave before their request give their slots back', T, async (t) => {
  const wss = await startWss(t, WebSocketServer);
  const exchange = (bytes) => rawExchange(wss.address().port, bytes);
  for (let i = 0; i < 5; i++) {
    // Not an upgrade: the engine answers 426 without JS.
    assert.match(await exchange('GET / HTTP/1.1\r\nHost: x\r\n\r\n'), /^HTTP\/1.1 426 /);
    // Not HTTP: 400.
    assert.match(await exchange('\x00\x01 nonsense\r\n\r\n'), /^HTTP\/1.1 400 /);
    // Connects and leaves without a request.
    assert.equal(await exchange(null), '');
  }
  await allFree();
});

test('under churn, every message reaches its own connection and every slot comes back', T, async (t) => {
  // Server connections close from both sides while others open in the slots they free, with
  // sends in flight: a message that reached another connection would come back to the wrong
  // client (each client checks that it gets its own messages back, and only those).
  const wss = await startWss(t, WebSocketServer);
  wss.on('connection', (ws) => {
    ws.on('message', (m) => {
      ws.send(m);
      // Every third connection is closed by the server, right after its echo.
      if (m.toString().endsWith(':close')) ws.close();
    });
  });
  const url = `ws://127.0.0.1:${wss.address().port}`;
  let done = 0;
  const deadline = Date.now() + 3000;
  async function worker(w) {
    for (let i = 0; done < 3000 && Date.now() < deadline; i++) {
      const me = `${w}.${i}`;
      const client = new WebSocket(url);
      await once(client, 'open');
      const serverCloses = i % 3 === 0;
      const expected = [`${me}:a`, `${me}:b`, `${me}:c${serverCloses ? ':close' : ''}`];
      const got = [];
      const closed = new Promise((resolve) => client.once('close', resolve));
      client.on('message', (m) => {
        got.push(m.toString());
        if (got.length === expected.length && !serverCloses) client.close();
      });
      for (const m of expected) client.send(m);
      await closed;
      assert.deepEqual(got, expected);
      done++;
    }
  }
  await Promise.all(Array.from({ length: 24 }, (_, w) => worker(w)));
  assert.ok(done >= 100, `${done} connections`);
  t.diagnostic(`${done} connections`);
  await allFree();
});

test('a Worker that exits while requests keep arriving leaves no connection behind', T, async () => {
  const { Worker } = require('node:worker_threads');
  const code = `
    const { parentPort } = require('node:worker_threads');
    const WebSocket = require(${JSON.stringify(path.join(__dirname, '..'))});
    const wss = new WebSocket.Server({ host: '127.0.0.1', port: 0 }, () => parentPort.postMessage(wss.address().port));
  `;
  const worker = new Worker(code, { eval: true });
  const [port] = await once(worker, 'message');
  // Upgrade requests arrive before, while and after the Worker's environment goes away (the
  // server's accept loop may take a few more): none may stay registered for it.
  const sockets = [];
  let exiting = null;
  for (let i = 0; i < 300; i++) {
    const s = net.connect(port, '127.0.0.1', () => s.write(upgradeRequest()));
    s.on('error', () => {});
    sockets.push(s);
    if (i === 150) exiting = worker.terminate();
    if (i % 10 === 0) await new Promise((resolve) => setImmediate(resolve));
  }
  await exiting;
  // Each socket closes once the engine is done with its request (refused or answered, or ended
  // with the Worker's server). Whatever is still open after 5 s is destroyed here, and
  // allFree() says whether a connection stayed registered.
  await bounded(Promise.all(sockets.map((s) => new Promise((resolve) => (s.destroyed ? resolve() : s.once('close', resolve))))), 5000);
  for (const s of sockets) s.destroy();
  await allFree();
});
