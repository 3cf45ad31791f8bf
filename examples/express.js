'use strict';

// Express and ws-native on one port: Express serves the page at /, and a WebSocketServer
// attached to the same http.Server takes the WebSocket upgrades on /ws (an echo endpoint).
//   node examples/express.js          (PORT=8080 by default; PORT=0 picks a free port)
// Express is a devDependency of this package; in your app, `npm install express`.

const express = require('express');
const { WebSocketServer } = require('..'); // require('ws-native') in your app

const page = `<!doctype html>
<meta charset="utf-8">
<title>ws-native + Express</title>
<pre id="log"></pre>
<script>
  const log = (line) => (document.getElementById('log').textContent += line + '\\n');
  const ws = new WebSocket(\`ws://\${location.host}/ws\`);
  ws.onopen = () => ws.send('hello from the browser');
  ws.onmessage = (event) => log('received: ' + event.data);
  ws.onclose = (event) => log('closed: ' + event.code);
</script>
`;

const app = express();
app.get('/', (req, res) => res.type('html').send(page));

const server = app.listen(Number(process.env.PORT || 8080), (err) => {
  if (err) throw err;
  console.log(`express example on http://localhost:${server.address().port}`);
});

const wss = new WebSocketServer({ server, path: '/ws' });

wss.on('connection', (ws) => {
  ws.on('error', console.error);
  ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary })); // echo
  ws.send('welcome');
});
