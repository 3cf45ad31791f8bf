#!/usr/bin/env node
'use strict';

// What a ReconnectingWebSocket costs per message against a plain WebSocket: the same echo
// load (N connections, K small messages in flight each) from clients of each class in turn,
// in this process, against a ws-native echo server in a child process. Both classes' objects
// are alive for the whole run, so the engine's dispatch sees both shapes, as in an
// application that uses both.
//
//   node bench/reconnect-overhead.js [--rounds 3] [--duration 3] [--conns 16] [--inflight 16] [--size 32]
//
// Prints msg/s per class and round, then the medians. Bounded: every run stops after its
// duration, and the whole after rounds × 2 runs (+ 10 s to connect).

const path = require('path');
const { startEchoServer } = require('./proc');

const root = path.join(__dirname, '..');
const WebSocket = require(root);
const { ReconnectingWebSocket } = WebSocket;

const o = { rounds: 3, duration: 3, conns: 16, inflight: 16, size: 32 };
for (let i = 2; i < process.argv.length; i += 2) {
  const name = process.argv[i].replace(/^--/, '');
  const value = Number(process.argv[i + 1]);
  if (!(name in o) || !Number.isFinite(value) || value <= 0) throw new Error(`bad argument ${process.argv[i]}`);
  o[name] = value;
}
if (o.rounds > 20 || o.duration > 60 || o.conns > 1000 || o.inflight > 1000) throw new Error('bounds: rounds ≤ 20, duration ≤ 60');

/** Opens `n` clients made by `make(url)`; resolves with them once all are open. */
async function openAll(make, url, n) {
  const clients = [];
  for (let i = 0; i < n; i++) clients.push(make(url));
  await Promise.all(clients.map((c) => new Promise((resolve, reject) => {
    c.once('open', resolve);
    c.once('error', reject);
  })));
  return clients;
}

/** Echo load on `clients` for `seconds`: resolves with the messages echoed per second. */
function load(clients, seconds) {
  const payload = Buffer.alloc(o.size, 7);
  let count = 0;
  let running = true;
  const listeners = [];
  const settled = [];
  for (const c of clients) {
    let inFlight = 0;
    const onMessage = () => {
      inFlight--;
      count++;
      if (running) {
        c.send(payload);
        inFlight++;
      } else if (inFlight === 0) done();
    };
    let done;
    settled.push(new Promise((resolve) => (done = resolve)));
    listeners.push([c, onMessage]);
    c.on('message', onMessage);
    for (let i = 0; i < o.inflight; i++, inFlight++) c.send(payload);
  }
  const start = process.hrtime.bigint();
  return new Promise((resolve) => {
    setTimeout(async () => {
      const elapsed = Number(process.hrtime.bigint() - start) / 1e9;
      const rate = count / elapsed;
      running = false;
      // Let the messages in flight come back (bounded) before the next run.
      await Promise.race([Promise.all(settled), new Promise((r) => setTimeout(r, 2000))]);
      for (const [c, l] of listeners) c.off('message', l);
      resolve(rate);
    }, seconds * 1000);
  });
}

const median = (xs) => [...xs].sort((a, b) => a - b)[xs.length >> 1];

(async () => {
  const { child, port } = await startEchoServer(['--port', '0'], { WS_IMPL: root });
  const url = `ws://127.0.0.1:${port}/`;
  const plain = await openAll((u) => new WebSocket(u), url, o.conns);
  const reconnecting = await openAll((u) => new ReconnectingWebSocket(u), url, o.conns);
  const rates = { WebSocket: [], ReconnectingWebSocket: [] };
  // Warm-up of both paths.
  await load(plain, 1);
  await load(reconnecting, 1);
  for (let r = 0; r < o.rounds; r++) {
    // Alternate which class goes first.
    const order = r % 2 === 0 ? [['WebSocket', plain], ['ReconnectingWebSocket', reconnecting]] : [['ReconnectingWebSocket', reconnecting], ['WebSocket', plain]];
    for (const [name, clients] of order) {
      const rate = await load(clients, o.duration);
      rates[name].push(rate);
      console.log(`round ${r + 1} ${name}: ${Math.round(rate)} msg/s`);
    }
  }
  const a = median(rates.WebSocket);
  const b = median(rates.ReconnectingWebSocket);
  console.log(`median WebSocket ${Math.round(a)} msg/s, ReconnectingWebSocket ${Math.round(b)} msg/s (${(b / a).toFixed(3)}×)`);
  for (const c of plain) c.terminate();
  for (const c of reconnecting) c.terminate();
  child.kill();
})().catch((err) => {
  console.error(err);
  process.exit(1);
});
