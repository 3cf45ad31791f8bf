'use strict';

// Two ways to drop peers that vanished without a close frame (a dropped network, a NAT that
// forgot the flow), which are otherwise only noticed when a write fails:
// - HEARTBEAT=builtin (the default): ws-native's `heartbeat` option. The engine pings a
//   connection silent for `interval` ms and terminates it if it is still silent `timeout` ms
//   later; no JS timer, no JS call per ping or pong.
// - HEARTBEAT=pattern: ws's README pattern (an `isAlive` flag, a setInterval that pings and
//   terminates), which runs unchanged on ws-native.
// It also shows flow control: `isBackpressured` and the 'drain' event, for a client that
// asks for a stream of messages faster than it reads them.
//
//   node examples/heartbeat-server.js
//   PORT=8080 by default (0 picks a free port), HOST to bind one address,
//   HEARTBEAT_MS=30000 by default (shorten it to watch it work), HEARTBEAT=builtin|pattern

const WebSocket = require('..');

const port = Number(process.env.PORT || 8080);
const host = process.env.HOST || undefined;
const interval = Number(process.env.HEARTBEAT_MS || 30000);
const mode = process.env.HEARTBEAT || 'builtin';

const wss = new WebSocket.WebSocketServer({
  port,
  host,
  // The built-in heartbeat: the error's code on a timeout is WS_ERR_HEARTBEAT_TIMEOUT.
  heartbeat: mode === 'builtin' ? { interval, timeout: interval } : undefined,
  // Flow control: isBackpressured past 256 KiB buffered, 'drain' back at 64 KiB; a client
  // that lets 16 MiB pile up is closed (1008) instead of growing the server's memory.
  highWaterMark: 256 * 1024,
  lowWaterMark: 64 * 1024,
  maxBackpressure: 16 * 1024 * 1024,
  closeOnBackpressureLimit: true
});

wss.on('connection', (ws, req) => {
  const peer = `${req.socket.remoteAddress}:${req.socket.remotePort}`;
  ws.on('error', (err) => console.error(`${peer}: ${err.code || ''} ${err.message}`));
  ws.on('close', (code) => console.log(`${peer} gone (${code})`));
  ws.on('message', (data) => {
    // "stream N": N messages of 1 KiB, paced by the client's reading.
    const n = /^stream (\d+)$/.exec(String(data));
    if (!n) return ws.send(data);
    let left = Math.min(Number(n[1]), 1e6);
    const chunk = Buffer.alloc(1024, 'x');
    const pump = () => {
      while (left > 0 && ws.readyState === WebSocket.OPEN && !ws.isBackpressured) {
        ws.send(chunk);
        left--;
      }
    };
    ws.on('drain', pump);
    pump();
  });
  console.log(`${peer} connected`);
});

if (mode === 'pattern') {
  // ws's README pattern, unchanged.
  const heartbeat = function () {
    this.isAlive = true;
  };
  wss.on('connection', (ws) => {
    ws.isAlive = true;
    ws.on('pong', heartbeat);
  });
  const timer = setInterval(() => {
    wss.clients.forEach((ws) => {
      if (ws.isAlive === false) return ws.terminate();
      ws.isAlive = false;
      ws.ping();
    });
  }, interval);
  wss.on('close', () => clearInterval(timer));
}

wss.on('error', (err) => {
  console.error(`cannot listen on port ${port}: ${err.message} (set PORT to use another one)`);
  process.exit(1);
});

wss.on('listening', () => {
  console.log(`heartbeat server (${mode}, every ${interval} ms) on ws://localhost:${wss.address().port}`);
});

for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => {
    for (const ws of wss.clients) ws.terminate();
    wss.close(() => process.exit(0));
  });
}
