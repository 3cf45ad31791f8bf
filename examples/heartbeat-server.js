'use strict';

// ws's heartbeat pattern on ws-native: ping every client at each interval and terminate the
// ones that did not answer the previous ping (a peer that vanished without a close frame,
// e.g. a dropped network, is otherwise only noticed when a write fails).
//   node examples/heartbeat-server.js
//   PORT=8080 by default (0 picks a free port), HOST to bind one address,
//   HEARTBEAT_MS=30000 by default (shorten it to watch it work)

const WebSocket = require('..');

const port = Number(process.env.PORT || 8080);
const host = process.env.HOST || undefined;
const interval = Number(process.env.HEARTBEAT_MS || 30000);

function heartbeat() {
  this.isAlive = true;
}

const wss = new WebSocket.WebSocketServer({ port, host });

wss.on('connection', (ws, req) => {
  const peer = `${req.socket.remoteAddress}:${req.socket.remotePort}`;
  ws.isAlive = true;
  ws.on('error', (err) => console.error(`${peer}: ${err.message}`));
  ws.on('pong', heartbeat);
  ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
  ws.on('close', (code) => console.log(`${peer} gone (${code})`));
  console.log(`${peer} connected`);
});

const timer = setInterval(() => {
  wss.clients.forEach((ws) => {
    if (ws.isAlive === false) {
      console.log('terminating a client that missed a heartbeat');
      return ws.terminate();
    }
    ws.isAlive = false;
    ws.ping();
  });
}, interval);

wss.on('close', () => clearInterval(timer));

wss.on('error', (err) => {
  console.error(`cannot listen on port ${port}: ${err.message} (set PORT to use another one)`);
  process.exit(1);
});

wss.on('listening', () => {
  console.log(`heartbeat server on ws://localhost:${wss.address().port} (ping every ${interval} ms)`);
});

for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => {
    for (const ws of wss.clients) ws.terminate();
    wss.close(() => process.exit(0));
  });
}
