#!/usr/bin/env node
'use strict';

// Echo / broadcast server on the `ws` API.
//
//   node bench/servers/ws-echo.js --port P [--host 127.0.0.1] [--broadcast [--publish] [--redis URL]] [--attach]
//                                 [--deflate | --deflate-no-context-takeover]
//                                 [--tls native|https --cert-dir D]
//
// --broadcast: every message goes to every client with ws's idiomatic loop,
// `wss.clients.forEach((c) => c.send(data))`.
// --publish (with --broadcast, ws-native only): every connection subscribes to one topic and
// every message is sent with `wss.publish(topic, data, { binary })`, which frames it once in the
// engine and queues it on every subscriber with no JavaScript per recipient.
// --redis URL (with --publish): the `redis` server option, so that a publication also reaches
// the subscribers of every other server process on that Redis. LISTENING is printed once the
// server listens and its Redis link is up (the `redis` event `connect`), so that a load started
// on that line loses no publication to a link still connecting; `redis` events go to stderr as
// `REDIS <type>[ topic=T][: error message]`.
//
// --deflate: `perMessageDeflate: true`, i.e. ws's defaults (context takeover both ways, zlib
// level 6, threshold 1024, concurrencyLimit 10). With context takeover ws compresses every
// message whatever its size (the threshold only applies without context takeover), and so does
// ws-native; the bench messages are 1 KiB anyway.
// --deflate-no-context-takeover: `{ serverNoContextTakeover: true, clientNoContextTakeover: true }`
// (other options at their defaults).
// --tls native: the server's own TLS (ws-native's `tls` option); --tls https: a Node https
// server with the WebSocket server attached (ws's way). cert.pem / key.pem from --cert-dir.
// Both combine with the deflate options.
//
// The implementation is `require(process.env.WS_IMPL || 'ws')`, so the same
// file runs against `ws` (resolved from bench/node_modules) and, with
// WS_IMPL=/work/main, against ws-native.
//   * plain ws:            WS_NO_BUFFER_UTIL=1 WS_NO_UTF_8_VALIDATE=1
//   * ws + native helpers: bufferutil / utf-8-validate installed in bench/
//
// stdout protocol (one line each):
//   LISTENING <port>              once the server is listening
//   RSS <bytes> <clients>         in reply to a line `rss` on stdin
// stderr: `INFO ...` describing the implementation; errors.
// Exits on SIGTERM/SIGINT or when stdin says `exit`.

const path = require('path');

function parseArgs(argv) {
  const o = { port: 8080, host: '127.0.0.1', broadcast: false };
  for (let i = 2; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--port') o.port = Number(argv[++i]);
    else if (a === '--host') o.host = argv[++i];
    else if (a === '--broadcast') o.broadcast = true;
    else if (a === '--publish') o.publish = true;
    else if (a === '--redis') o.redis = argv[++i];
    else if (a === '--attach') o.attach = true;
    else if (a === '--deflate') o.deflate = true;
    else if (a === '--deflate-no-context-takeover') o.deflate = { serverNoContextTakeover: true, clientNoContextTakeover: true };
    else if (a === '--tls') o.tls = argv[++i];
    else if (a === '--cert-dir') o.certDir = argv[++i];
    else {
      console.error(`usage: ws-echo.js --port P [--host H] [--broadcast [--publish] [--redis URL]] [--attach] [--deflate | --deflate-no-context-takeover] ` +
        `[--tls native|https --cert-dir D] (unknown ${a})`);
      process.exit(2);
    }
  }
  if (o.tls !== undefined && ((o.tls !== 'native' && o.tls !== 'https') || !o.certDir)) {
    console.error('--tls takes native or https, and needs --cert-dir D (with cert.pem and key.pem)');
    process.exit(2);
  }
  if ((o.publish && !o.broadcast) || (o.redis !== undefined && !o.publish)) {
    console.error('--publish needs --broadcast, and --redis needs --publish');
    process.exit(2);
  }
  if (!Number.isInteger(o.port) || o.port < 0 || o.port > 65535) {
    console.error('bad --port');
    process.exit(2);
  }
  return o;
}

const opts = parseArgs(process.argv);
const impl = process.env.WS_IMPL || 'ws';
const WebSocket = require(impl);
const Server = WebSocket.Server || WebSocket.WebSocketServer;
const OPEN = WebSocket.OPEN === undefined ? 1 : WebSocket.OPEN;
if (opts.publish && typeof Server.prototype.publish !== 'function') {
  console.error(`--publish: ${impl} has no WebSocketServer#publish`);
  process.exit(2);
}

function describe() {
  let resolved = impl;
  try { resolved = require.resolve(impl); } catch (_) { /* keep name */ }
  let helpers = 'n/a';
  try {
    // Which native helpers would this `ws` load? (ws itself looks them up.)
    const from = { paths: [path.dirname(resolved)] };
    const bu = !process.env.WS_NO_BUFFER_UTIL && !!require.resolve('bufferutil', from);
    helpers = `bufferutil=${bu ? 'yes' : 'no'}`;
    // Node >= 18.14 has buffer.isUtf8, which ws prefers to utf-8-validate.
    const nodeUtf8 = typeof require('buffer').isUtf8 === 'function';
    let uv = 'no';
    if (nodeUtf8) uv = 'no(node buffer.isUtf8 used)';
    else if (!process.env.WS_NO_UTF_8_VALIDATE) {
      try { require.resolve('utf-8-validate', from); uv = 'yes'; } catch (_) { /* no */ }
    }
    helpers += ` utf-8-validate=${uv}`;
  } catch (_) {
    helpers = 'bufferutil=no';
  }
  const mode = opts.publish ? `publish${opts.redis ? '+redis' : ''}` : opts.broadcast ? 'broadcast' : 'echo';
  return `INFO impl=${resolved} mode=${mode} ${helpers} ` +
    `perMessageDeflate=${JSON.stringify(perMessageDeflate)} tls=${opts.tls || 'no'} node=${process.version} pid=${process.pid}`;
}

// --attach: the WebSocket server shares an http.Server (`{ server }`), as behind Express.
// --tls: see above.
// WS_DEFLATE_LEVEL=N: zlib level for the server's compression (ws's default is zlib's, 6).
const deflateLevel = process.env.WS_DEFLATE_LEVEL;
const perMessageDeflate =
  opts.deflate && deflateLevel !== undefined
    ? { ...(opts.deflate === true ? {} : opts.deflate), zlibDeflateOptions: { level: Number(deflateLevel) } }
    : opts.deflate || false;
// --redis: the scale-out option, given to every server form below.
const scaleOut = opts.redis ? { redis: opts.redis } : {};
let httpServer = null;
let wss;
const tlsFiles = opts.tls && {
  cert: require('fs').readFileSync(path.join(opts.certDir, 'cert.pem')),
  key: require('fs').readFileSync(path.join(opts.certDir, 'key.pem'))
};
if (opts.tls === 'native') {
  wss = new Server({ port: opts.port, host: opts.host, perMessageDeflate, tls: tlsFiles, ...scaleOut });
} else if (opts.tls === 'https') {
  httpServer = require('https').createServer(tlsFiles, (req, res) => res.end('https'));
  wss = new Server({ server: httpServer, perMessageDeflate, ...scaleOut });
  httpServer.listen(opts.port, opts.host);
} else if (opts.attach) {
  httpServer = require('http').createServer((req, res) => res.end('http'));
  wss = new Server({ server: httpServer, perMessageDeflate, ...scaleOut });
  httpServer.listen(opts.port, opts.host);
} else {
  wss = new Server({ port: opts.port, host: opts.host, perMessageDeflate, ...scaleOut });
}

wss.on('error', (err) => {
  console.error(`SERVER_ERROR ${err && err.stack ? err.stack : err}`);
  process.exit(1);
});

// LISTENING once the server listens and, with --redis, its Redis link is up.
let listeningPort = null;
let redisUp = !opts.redis;
let announced = false;
function announce() {
  if (announced || listeningPort === null || !redisUp) return;
  announced = true;
  console.error(describe());
  process.stdout.write(`LISTENING ${listeningPort}\n`);
}

wss.on('listening', () => {
  let port = opts.port;
  try {
    const a = httpServer ? httpServer.address() : wss.address();
    if (a && typeof a === 'object' && a.port) port = a.port;
  } catch (_) { /* implementation without address(): use the requested port */ }
  listeningPort = port;
  announce();
});

if (opts.redis) {
  wss.on('redis', (event) => {
    console.error(`REDIS ${event.type}${event.topic !== undefined ? ` topic=${event.topic}` : ''}${event.error ? `: ${event.error.message}` : ''}`);
    if (event && event.type === 'connect') {
      redisUp = true;
      announce();
    }
  });
}

if (opts.publish) {
  // one topic for all: the engine frames each message once and queues it on every subscriber
  const TOPIC = 'bench';
  wss.on('connection', (ws) => {
    ws.on('error', () => {});
    ws.subscribe(TOPIC);
    ws.on('message', (data, isBinary) => wss.publish(TOPIC, data, { binary: isBinary }));
  });
} else if (opts.broadcast) {
  // the idiomatic ws broadcast (ws README): forward to every client
  wss.on('connection', (ws) => {
    ws.on('error', () => {});
    ws.on('message', (data, isBinary) => {
      wss.clients.forEach((client) => {
        if (client.readyState === OPEN) client.send(data, { binary: isBinary });
      });
    });
  });
} else {
  wss.on('connection', (ws) => {
    ws.on('error', () => {});
    ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
  });
}

// RSS on request: write `rss` on stdin, get `RSS <bytes> <clients>` on stdout.
let pending = '';
process.stdin.setEncoding('utf8');
process.stdin.on('data', (chunk) => {
  pending += chunk;
  let i;
  while ((i = pending.indexOf('\n')) >= 0) {
    const cmd = pending.slice(0, i).trim();
    pending = pending.slice(i + 1);
    if (cmd === 'rss') {
      const n = wss.clients ? wss.clients.size : -1;
      process.stdout.write(`RSS ${process.memoryUsage.rss ? process.memoryUsage.rss() : process.memoryUsage().rss} ${n}\n`);
    } else if (cmd === 'exit') {
      process.exit(0);
    }
  }
});
process.stdin.on('error', () => {});

process.on('SIGTERM', () => process.exit(0));
process.on('SIGINT', () => process.exit(0));
