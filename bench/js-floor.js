#!/usr/bin/env node
'use strict';

// The JavaScript floor of the connections workload: what a Node process holds 5 s after a
// burst of 10,000 "connections" that are only the JavaScript objects the ws API makes per
// server connection (the WebSocket, its listener table, the application's two listeners and
// their closure, the `wss.clients` entry) and the request handed to the `connection`
// listener (an object with the method, URL and the five handshake headers, dropped after
// the call), with no socket and no engine. `--no-request` leaves the request out;
// `--transient B` gives each request B more bytes of short-lived data (a string), as a
// server's accept path makes (ws-native's about 1.1 KiB per connection, ws's more). Measured as
// the connections workload measures a server: RSS after the idle time minus RSS before the
// burst, divided by the connections; the burst takes about as long (batches of 200 every
// 10 ms: 0.5 s).
//
//   node bench/js-floor.js [--impl ws-native|ws] [--conns N] [--idle S] [--no-request] [--transient B]
//
// Prints one JSON line: rss_per_conn_bytes and V8's spaces grown (physical bytes per
// connection). What a server measures above this figure is what the implementation adds.

const fs = require('fs');
const path = require('path');
const v8 = require('v8');

const opts = { impl: 'ws-native', conns: 10000, idle: 5, request: true, transient: 0 };
for (let i = 2; i < process.argv.length; i++) {
  const a = process.argv[i];
  if (a === '--impl') opts.impl = process.argv[++i];
  else if (a === '--conns') opts.conns = Number(process.argv[++i]);
  else if (a === '--idle') opts.idle = Number(process.argv[++i]);
  else if (a === '--no-request') opts.request = false;
  else if (a === '--transient') opts.transient = Number(process.argv[++i]);
  else {
    console.error('usage: js-floor.js [--impl ws-native|ws] [--conns N] [--idle S] [--no-request] [--transient B]');
    process.exit(2);
  }
}
if (
  !['ws-native', 'ws'].includes(opts.impl) || !(opts.conns >= 1 && opts.conns <= 1e6) || !(opts.idle >= 0 && opts.idle <= 600) ||
  !(Number.isInteger(opts.transient) && opts.transient >= 0 && opts.transient <= 1e6)
) {
  console.error('--impl ws-native|ws, --conns 1..1000000, --idle 0..600, --transient 0..1000000');
  process.exit(2);
}

// ws from bench/node_modules, ws-native from this checkout; loaded before the baseline.
const WebSocket = opts.impl === 'ws' ? require('ws') : require(path.join(__dirname, '..'));

function rss() {
  return Number(/VmRSS:\s+(\d+)/.exec(fs.readFileSync('/proc/self/status', 'utf8'))[1]) * 1024;
}

function spaces() {
  return Object.fromEntries(v8.getHeapSpaceStatistics().map((s) => [s.space_name, s.physical_space_size]));
}

// What the bench server (servers/ws-echo.js) does with each connection.
const clients = new Set();
function onConnection(ws) {
  ws.on('error', () => {});
  ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
}

// The request of connection `i`, as the load generator's handshake carries it (the smallest
// request object a server can hand to its `connection` listener).
function request(i) {
  return {
    method: 'GET',
    url: '/',
    headers: {
      host: '127.0.0.1',
      upgrade: 'websocket',
      connection: 'Upgrade',
      'sec-websocket-key': `${String(i).padStart(22, 'A')}==`,
      'sec-websocket-version': '13'
    },
    // A fresh string each time (repeat() does not share its result).
    transient: opts.transient ? 'x'.repeat(opts.transient) : null
  };
}

// As the bench's server: measured 300 ms after start.
setTimeout(() => {
  const before = rss();
  const spacesBefore = spaces();
  let made = 0;
  const batch = () => {
    for (let k = 0; k < 200 && made < opts.conns; k++, made++) {
      // The server-side constructor call ws and ws-native make for an accepted connection.
      const ws = new WebSocket(null, undefined, {});
      const req = opts.request ? request(made) : null;
      clients.add(ws);
      onConnection(ws, req);
    }
    if (made < opts.conns) {
      setTimeout(batch, 10);
      return;
    }
    setTimeout(() => {
      const after = spaces();
      const grown = {};
      for (const k of Object.keys(after)) {
        const d = after[k] - (spacesBefore[k] || 0);
        if (d !== 0) grown[k] = Math.round(d / opts.conns);
      }
      const out = {
        impl: opts.impl,
        request: opts.request,
        transient_bytes: opts.transient,
        node: process.version,
        conns: clients.size,
        idle_s: opts.idle,
        rss_per_conn_bytes: Math.round((rss() - before) / opts.conns),
        v8_physical_per_conn_bytes: grown
      };
      process.stdout.write(`${JSON.stringify(out)}\n`);
      process.exit(0);
    }, opts.idle * 1000);
  };
  batch();
}, 300);
