'use strict';

// The demo: an echo server on ws-native. It greets itself once with a client to show the
// round trip, then keeps serving until Ctrl-C.
//   node examples/echo-server.js        (PORT=8080 by default)

const WebSocket = require('..');

const port = Number(process.env.PORT || 8080);
const wss = new WebSocket.WebSocketServer({ port });

wss.on('connection', (ws, req) => {
  ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
  ws.on('error', (err) => console.error(`client ${req.socket.remoteAddress}: ${err.message}`));
});

wss.on('error', (err) => {
  console.error(`cannot listen on port ${port}: ${err.message} (set PORT to use another one)`);
  process.exit(1);
});

wss.on('listening', () => {
  const url = `ws://localhost:${wss.address().port}`;
  console.log(`ws-native echo server listening on ${url}`);

  const client = new WebSocket(url);
  const sent = Date.now();
  client.on('open', () => client.send('hello from ws-native'));
  client.on('message', (data) => {
    console.log(`self-test: echoed "${data}" in ${Date.now() - sent} ms; connect your own client to ${url}`);
    console.log('Press Ctrl-C to stop.');
    client.close(1000, 'done');
  });
});

process.on('SIGINT', () => {
  for (const ws of wss.clients) ws.terminate();
  wss.close(() => process.exit(0));
});
