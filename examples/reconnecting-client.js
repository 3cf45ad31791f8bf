'use strict';

// A ReconnectingWebSocket surviving a server restart. The script starts an echo server in a
// child process, connects to it, kills the server (SIGKILL), sends messages while it is
// down (they are queued), starts a new server on the same port, and shows the client
// reconnecting by itself and the queued messages echoed, in order. Then it ends (within
// 20 s at most).
//   node examples/reconnecting-client.js

const { fork } = require('child_process');
const { ReconnectingWebSocket, WebSocketServer } = require('..');

if (process.argv[2] === 'server') {
  // The child: an echo server on the port given (0: any), which tells its port.
  const wss = new WebSocketServer({ host: '127.0.0.1', port: Number(process.argv[3]) });
  wss.on('listening', () => process.send(wss.address().port));
  wss.on('connection', (ws) => ws.on('message', (data) => ws.send(`echo: ${data}`)));
  return;
}

const started = Date.now();
const log = (...args) => console.log(`${String(Date.now() - started).padStart(5)} ms`, ...args);

/** Starts the echo server; resolves with the child process and its port. */
function startServer(port) {
  const child = fork(__filename, ['server', String(port)]);
  return new Promise((resolve) => child.once('message', (p) => resolve({ child, port: p })));
}

const bound = setTimeout(() => {
  console.error('the example did not finish within 20 s');
  process.exit(1);
}, 20000);

(async () => {
  let server = await startServer(0);
  log(`server listening on port ${server.port} (pid ${server.child.pid})`);

  const rws = new ReconnectingWebSocket(`ws://127.0.0.1:${server.port}`, {
    minReconnectionDelay: 200,
    maxReconnectionDelay: 1000
  });
  rws.on('open', () => log('open'));
  rws.on('message', (data) => log('received', JSON.stringify(String(data))));
  rws.on('error', (err) => log('error', err.code || err.message));
  rws.on('close', (code) => log(`close ${code}${rws.shouldReconnect ? ', will reconnect' : ', for good'}`));
  rws.on('reconnecting', (attempt, delay) => log(`reconnecting: attempt ${attempt} in ${delay} ms`));

  await new Promise((resolve) => rws.once('open', resolve));
  rws.send('hello');
  await new Promise((resolve) => rws.once('message', resolve));

  log('killing the server');
  server.child.kill('SIGKILL');
  await new Promise((resolve) => rws.once('close', resolve));
  for (const text of ['sent while down 1', 'sent while down 2', 'sent while down 3']) rws.send(text);
  log(`queued 3 messages (bufferedAmount ${rws.bufferedAmount})`);

  // Let a few attempts fail, then restart the server on the same port.
  await new Promise((resolve) => setTimeout(resolve, 1500));
  server = await startServer(server.port);
  log(`server restarted on port ${server.port} (pid ${server.child.pid})`);

  await new Promise((resolve) => rws.once('reconnect', resolve));
  log('reconnected');
  let echoed = 0;
  await new Promise((resolve) => rws.on('message', () => ++echoed === 3 && resolve()));

  rws.close(1000, 'done');
  await new Promise((resolve) => rws.once('close', resolve));
  server.child.kill();
  clearTimeout(bound);
})();
