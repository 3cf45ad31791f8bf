'use strict';
// Autobahn fuzzingclient testee: an echo server on ws-native.
//   node autobahn/echo-server.js [PORT]   (default: $PORT, else 9002)
const { WebSocketServer } = require('..');

const port = Number(process.argv[2] || process.env.PORT || 9002);
// maxFragments: 0 as in the ws baseline note: Autobahn 9.3/9.4 send 4 MiB in 64-byte fragments.
// permessage-deflate on, as in the ws baseline (12.* and 13.* need it).
const wss = new WebSocketServer({ host: '127.0.0.1', port, maxFragments: 0, perMessageDeflate: true });

wss.on('connection', (ws) => {
  ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
  ws.on('error', () => {}); // protocol errors are what the suite provokes
});
wss.on('listening', () => console.log(`ws-native echo server on ws://127.0.0.1:${port}`));
wss.on('error', (err) => {
  console.error(err);
  process.exit(1);
});

function shutdown() {
  for (const ws of wss.clients) ws.terminate();
  wss.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 1000).unref();
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
