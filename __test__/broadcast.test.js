'use strict';

// The idiomatic ws broadcast loop (`wss.clients.forEach(c => c.send(m))`): a payload sent to
// many connections in one tick is copied once into the command buffer and framed once.

const { test } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const path = require('node:path');
const { once } = require('node:events');

const WebSocket = require(path.join(__dirname, '..'));
const Ws = require('ws');
const { waitFor } = require('./helpers');

const HOST = '127.0.0.1';
const T = { timeout: 30000 };

async function setup(t, n, serverOptions = {}, clientOptions = {}) {
  const wss = new WebSocket.WebSocketServer({ host: HOST, port: 0, ...serverOptions });
  await once(wss, 'listening');
  const clients = [];
  const connected = new Promise((resolve) => {
    wss.on('connection', () => {
      if (wss.clients.size === n) resolve();
    });
  });
  for (let i = 0; i < n; i++) clients.push(new Ws(`ws://${HOST}:${wss.address().port}`, clientOptions));
  await connected;
  await Promise.all(clients.map((c) => (c.readyState === Ws.OPEN ? null : once(c, 'open'))));
  t.after(
    () =>
      new Promise((resolve) => {
        clients.forEach((c) => c.terminate());
        wss.close(() => resolve());
      })
  );
  return { wss, clients };
}

function collect(clients, count) {
  return Promise.all(
    clients.map(
      (c) =>
        new Promise((resolve) => {
          const got = [];
          c.on('message', (data, isBinary) => {
            got.push([Buffer.from(data), isBinary]);
            if (got.length === count) resolve(got);
          });
        })
    )
  );
}

test('forEach broadcast of strings, small and large Buffers reaches every client intact', T, async (t) => {
  const { wss, clients } = await setup(t, 200);
  const small = Buffer.from('0123456789abcdef'.repeat(4));
  const large = crypto.randomBytes(100 * 1024);
  const text = 'héllo, everyone';
  const all = collect(clients, 4);
  let acks = 0;
  let acked;
  const allAcked = new Promise((resolve) => (acked = resolve));
  const ack = () => ++acks === 600 && acked();
  for (const m of [text, small, large]) wss.clients.forEach((c) => c.send(m, ack));
  wss.clients.forEach((c) => c.send(small, { binary: false })); // same bytes, other opcode
  const got = await all;
  for (const g of got) {
    assert.deepEqual(g[0], [Buffer.from(text), false]);
    assert.deepEqual(g[1], [small, true]);
    assert.deepEqual(g[2], [large, true]);
    assert.deepEqual(g[3], [small, false]);
  }
  await allAcked; // the callbacks run once the bytes are written (maybe after delivery here)
  assert.equal(acks, 600, 'every send callback ran');
});

test('a Buffer changed between two sends of one tick is sent as it was at each send', T, async (t) => {
  const { wss, clients } = await setup(t, 3);
  const all = collect(clients, 1);
  const buf = Buffer.from('v0');
  let i = 0;
  for (const c of wss.clients) {
    buf.write(`v${i++}`);
    c.send(buf);
  }
  const got = (await all).map((g) => g[0][0].toString()).sort();
  assert.deepEqual(got, ['v0', 'v1', 'v2']);
});

test('broadcast to connections with and without permessage-deflate', T, async (t) => {
  const wss = new WebSocket.WebSocketServer({ host: HOST, port: 0, perMessageDeflate: { threshold: 0 } });
  await once(wss, 'listening');
  const url = `ws://${HOST}:${wss.address().port}`;
  const clients = [new Ws(url), new Ws(url, { perMessageDeflate: false }), new Ws(url), new Ws(url, { perMessageDeflate: false })];
  t.after(() => {
    clients.forEach((c) => c.terminate());
    wss.close();
  });
  await Promise.all(clients.map((c) => once(c, 'open')));
  await waitFor(() => wss.clients.size === 4, { what: 'the four server connections' });
  const all = collect(clients, 2);
  const m = JSON.stringify({ n: 1, text: 'x'.repeat(3000) });
  wss.clients.forEach((c) => c.send(m));
  wss.clients.forEach((c) => c.send(m));
  for (const g of await all) {
    assert.deepEqual(g, [
      [Buffer.from(m), false],
      [Buffer.from(m), false]
    ]);
  }
  assert.deepEqual(clients.map((c) => c.extensions !== ''), [true, false, true, false]);
});
