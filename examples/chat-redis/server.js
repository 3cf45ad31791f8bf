'use strict';

// One chat server of examples/chat-redis: an http server for the page (index.html beside this
// file) with the WebSocket endpoint /chat. Every connection subscribes to the topic 'chat' and
// every line is published to it; the `redis` option carries each publication to the
// subscribers of the other server processes on the same Redis.
//   PORT=8081 REDIS_URL=redis://127.0.0.1:6379 node examples/chat-redis/server.js
// start.js starts Redis and two of these. Prints `LISTENING <port>` once it listens on
// 127.0.0.1 and its Redis link is up.
//
// Protocol: the browser sends its chat lines as text; the server sends JSON
//   { type: 'chat', name, text, time }   { type: 'info', text, time }

const fs = require('fs');
const http = require('http');
const path = require('path');
const { WebSocketServer } = require('../..');

const page = fs.readFileSync(path.join(__dirname, 'index.html'));
const server = http.createServer((req, res) => {
  if (req.method === 'GET' && (req.url === '/' || req.url === '/index.html')) {
    res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8' }).end(page);
  } else {
    res.writeHead(404, { 'Content-Type': 'text/plain' }).end('not found\n');
  }
});

const wss = new WebSocketServer({
  server,
  path: '/chat',
  maxPayload: 64 * 1024,
  redis: process.env.REDIS_URL || 'redis://127.0.0.1:6379'
});

let port = null;
let guests = 0;
const message = (type, fields) => JSON.stringify({ type, time: Date.now(), ...fields });

wss.on('connection', (ws) => {
  // The server's port in the name shows which process each participant is on.
  const name = `guest-${++guests}@${port}`;
  ws.subscribe('chat');
  ws.send(message('info', { text: `you are ${name}` }));
  ws.publish('chat', message('info', { text: `${name} joined` })); // every subscriber but ws

  ws.on('message', (data, isBinary) => {
    const text = isBinary ? '' : data.toString().trim().slice(0, 2000);
    if (text) wss.publish('chat', message('chat', { name, text })); // every subscriber, ws too
  });
  ws.on('close', () => wss.publish('chat', message('info', { text: `${name} left` })));
  ws.on('error', (err) => console.error(`${name}: ${err.message}`));
});

// The Redis link reports itself with 'redis' events; it reconnects by itself.
let redisUp = false;
wss.on('redis', (event) => {
  if (event.type === 'connect') {
    redisUp = true;
    announce();
  } else {
    console.error(`redis ${event.type}${event.error ? `: ${event.error.message}` : ''}`);
  }
});

function announce() {
  if (port !== null && redisUp) console.log(`LISTENING ${port}`);
}

server.on('error', (err) => {
  console.error(`cannot listen: ${err.message}`);
  process.exit(1);
});
server.listen(Number(process.env.PORT || 8081), '127.0.0.1', () => {
  port = server.address().port;
  announce();
});

for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => {
    for (const ws of wss.clients) ws.close(1001, 'server stopping');
    wss.close();
    server.close(() => process.exit(0));
    server.closeAllConnections();
    setTimeout(() => process.exit(0), 1000).unref(); // for peers that do not answer the close
  });
}
