'use strict';

// A chat room: one http server serves the page (index.html beside this file) and carries the
// WebSocket endpoint /chat, handled by ws-native (`{ server }` mode).
//   node examples/chat/server.js          (PORT=8080 by default; PORT=0 picks a free port,
//                                          HOST to bind one address, e.g. HOST=127.0.0.1)
// Then open http://localhost:8080 in two browser tabs.
//
// Protocol (JSON text messages):
//   client -> server  { type: 'chat', text }     { type: 'name', name }
//   server -> client  { type: 'welcome', name, users, history }
//                     { type: 'chat', name, text, time }
//                     { type: 'info', text, time }       (joins, leaves, renames)
//                     { type: 'users', users }

const fs = require('fs');
const http = require('http');
const path = require('path');

const WebSocket = require('../..');

const MAX_TEXT = 2000;
const MAX_NAME = 32;
const HISTORY = 50;

function createChatServer() {
  const page = fs.readFileSync(path.join(__dirname, 'index.html'));

  const server = http.createServer((req, res) => {
    const { pathname } = new URL(req.url, 'http://localhost');
    if (req.method === 'GET' && (pathname === '/' || pathname === '/index.html')) {
      res.writeHead(200, {
        'Content-Type': 'text/html; charset=utf-8',
        'Content-Length': page.length,
        'Cache-Control': 'no-cache'
      });
      res.end(page);
    } else {
      res.writeHead(404, { 'Content-Type': 'text/plain' });
      res.end('not found\n');
    }
  });

  const wss = new WebSocket.WebSocketServer({ server, path: '/chat', maxPayload: 64 * 1024 });

  const history = [];
  let guests = 0;

  const users = () => [...wss.clients].map((ws) => ws.userName).filter(Boolean).sort();

  function broadcast(message) {
    const data = JSON.stringify(message);
    wss.clients.forEach((client) => {
      if (client.readyState === WebSocket.OPEN && client.userName) client.send(data);
    });
  }

  function info(text) {
    const message = { type: 'info', text, time: Date.now() };
    remember(message);
    broadcast(message);
  }

  function remember(message) {
    history.push(message);
    if (history.length > HISTORY) history.shift();
  }

  function cleanName(name) {
    if (typeof name !== 'string') return null;
    name = name.replace(/\s+/g, ' ').trim().slice(0, MAX_NAME);
    if (!name) return null;
    const taken = new Set(users());
    return taken.has(name) ? null : name;
  }

  wss.on('connection', (ws, req) => {
    ws.userName = `guest-${++guests}`;
    ws.on('error', (err) => console.error(`${req.socket.remoteAddress}: ${err.message}`));

    ws.send(JSON.stringify({ type: 'welcome', name: ws.userName, users: users(), history }));
    info(`${ws.userName} joined`);
    broadcast({ type: 'users', users: users() });

    ws.on('message', (data, isBinary) => {
      if (isBinary) return;
      let message;
      try {
        message = JSON.parse(data);
      } catch {
        return;
      }
      if (message.type === 'chat' && typeof message.text === 'string') {
        const text = message.text.trim().slice(0, MAX_TEXT);
        if (!text) return;
        const chat = { type: 'chat', name: ws.userName, text, time: Date.now() };
        remember(chat);
        broadcast(chat);
      } else if (message.type === 'name') {
        const name = cleanName(message.name);
        if (!name || name === ws.userName) {
          // Refused (empty or taken): tell the sender which name it still has.
          ws.send(JSON.stringify({ type: 'welcome', name: ws.userName, users: users() }));
          return;
        }
        const old = ws.userName;
        ws.userName = name;
        ws.send(JSON.stringify({ type: 'welcome', name, users: users() }));
        info(`${old} is now ${name}`);
        broadcast({ type: 'users', users: users() });
      }
    });

    ws.on('close', () => {
      const name = ws.userName;
      ws.userName = null;
      info(`${name} left`);
      broadcast({ type: 'users', users: users() });
    });
  });

  function close(callback) {
    for (const ws of wss.clients) ws.terminate();
    wss.close();
    server.close(callback);
    server.closeAllConnections();
  }

  return { server, wss, close };
}

if (require.main === module) {
  const port = Number(process.env.PORT || 8080);
  const host = process.env.HOST || undefined;
  const chat = createChatServer();

  chat.server.on('error', (err) => {
    console.error(`cannot listen on port ${port}: ${err.message} (set PORT to use another one)`);
    process.exit(1);
  });

  chat.server.listen(port, host, () => {
    console.log(`chat example on http://localhost:${chat.server.address().port}`);
  });

  for (const signal of ['SIGINT', 'SIGTERM']) {
    process.on(signal, () => chat.close(() => process.exit(0)));
  }
}

module.exports = { createChatServer };
