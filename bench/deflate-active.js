#!/usr/bin/env node
'use strict';

// Server memory per connection while permessage-deflate contexts are in use: a server
// (servers/ws-echo.js --deflate: ws's defaults, context takeover both ways) in a process of
// its own, and 500 ws clients (from bench/node_modules, offering ws's default deflate) that
// each send an 800-byte JSON message every 400 ms for 4 s (--seconds), so that no connection
// goes a second without compressed traffic and every context stays alive. Per connection = (server
// RSS at the end − before the clients connect) ÷ clients. Implementations are interleaved,
// round after round.
//
//   node bench/deflate-active.js [--rounds N] [--seconds S] [--out FILE]
//   WS_NATIVE_OTHER=/path/to/checkout node bench/deflate-active.js ...   (adds that build as a row)
//
// Prints one line per run and writes the runs and medians to FILE (default: none).

const fs = require('fs');
const path = require('path');
const WS = require('ws');
const { median, rssBytes, sleep, startEchoServer } = require('./proc');

const ROOT = path.join(__dirname, '..');
const IMPLS = {
  'ws-native': { WS_IMPL: ROOT },
  'ws-native (1 engine thread)': { WS_IMPL: ROOT, WS_NATIVE_THREADS: '1' },
  ws: { WS_IMPL: path.dirname(require.resolve('ws/package.json')), WS_NO_BUFFER_UTIL: '1', WS_NO_UTF_8_VALIDATE: '1' },
};
// WS_NATIVE_OTHER=/path/to/checkout adds ws-native from another checkout, to compare two versions.
if (process.env.WS_NATIVE_OTHER) IMPLS['ws-native (other checkout)'] = { WS_IMPL: path.resolve(process.env.WS_NATIVE_OTHER) };
const CLIENTS = 500;
const PERIOD_MS = 400;

const opts = { rounds: 3, seconds: 4, out: null };
for (let i = 2; i < process.argv.length; i++) {
  if (process.argv[i] === '--rounds') opts.rounds = Number(process.argv[++i]);
  else if (process.argv[i] === '--seconds') opts.seconds = Number(process.argv[++i]);
  else if (process.argv[i] === '--out') opts.out = path.resolve(process.argv[++i]);
  else {
    console.error('usage: deflate-active.js [--rounds N] [--seconds S] [--out FILE]');
    process.exit(2);
  }
}
if (!(Number.isInteger(opts.rounds) && opts.rounds >= 1 && opts.rounds <= 20)) {
  console.error('--rounds 1..20');
  process.exit(2);
}
if (!(opts.seconds >= 1 && opts.seconds <= 60)) {
  console.error('--seconds 1..60');
  process.exit(2);
}
const ACTIVE_MS = opts.seconds * 1000;

async function runOne(env) {
  const { child: server, port } = await startEchoServer(['--port', '0', '--deflate'], env);
  try {
    await sleep(300);
    const before = rssBytes(server.pid);
    const clients = [];
    const opened = [];
    for (let i = 0; i < CLIENTS; i++) {
      const ws = new WS(`ws://127.0.0.1:${port}/`);
      ws.on('error', () => {});
      ws.on('message', () => {});
      clients.push(ws);
      opened.push(new Promise((resolve, reject) => {
        ws.once('open', resolve);
        ws.once('close', () => reject(new Error('a client closed before it opened')));
      }));
      if (i % 50 === 49) await sleep(20);
    }
    await Promise.race([Promise.all(opened), sleep(10000).then(() => { throw new Error('clients did not open within 10 s'); })]);
    let seq = 0;
    const message = () => JSON.stringify({ type: 'tick', seq: seq++, symbol: `SYM${seq % 97}`, price: Math.random() * 1000, note: 'x'.repeat(700 + (seq % 100)) });
    const timer = setInterval(() => clients.forEach((ws) => ws.send(message())), PERIOD_MS);
    await sleep(ACTIVE_MS);
    const after = rssBytes(server.pid);
    clearInterval(timer);
    clients.forEach((ws) => ws.terminate());
    return { rss_before_bytes: before, rss_after_bytes: after, rss_per_conn_kib: (after - before) / CLIENTS / 1024 };
  } finally {
    server.kill('SIGKILL');
  }
}

(async () => {
  const runs = Object.fromEntries(Object.keys(IMPLS).map((n) => [n, []]));
  for (let r = 1; r <= opts.rounds; r++) {
    for (const [name, env] of Object.entries(IMPLS)) {
      const res = await runOne(env);
      runs[name].push(res);
      console.log(`round ${r}/${opts.rounds} ${name}: ${res.rss_per_conn_kib.toFixed(1)} KiB per connection`);
    }
  }
  const medians = Object.fromEntries(Object.entries(runs).map(([n, rs]) => [n, median(rs.map((x) => x.rss_per_conn_kib))]));
  for (const [n, m] of Object.entries(medians)) console.log(`median ${n}: ${m.toFixed(1)} KiB per connection`);
  if (opts.out) {
    const meta = { date: new Date().toISOString(), node: process.version, clients: CLIENTS, period_ms: PERIOD_MS, active_ms: ACTIVE_MS, rounds: opts.rounds };
    fs.writeFileSync(opts.out, JSON.stringify({ meta, medians, runs }, null, 1) + '\n');
  }
  process.exit(0);
})().catch((err) => {
  console.error(err.message);
  process.exit(1);
});
