'use strict';

// The chat as two server processes (server.js) behind one Redis, started by one command:
//   node examples/chat-redis/start.js           prints the two URLs to open; Ctrl-C stops all
//   node examples/chat-redis/start.js --smoke   connects a client to each server, checks that
//                                               a line sent on one reaches the other, prints OK
// Redis: REDIS_URL if set, otherwise a redis-server started here on a free loopback port,
// without persistence, and stopped at the end. The servers are ready once their Redis link
// is: on a Redis that has just started, that takes 6 s (the link gives other processes that
// long to subscribe before it publishes, see docs/pubsub.md). Ports: PORT1 and PORT2 (8081 and 8082; free
// ones with --smoke). Everything listens on 127.0.0.1.

const { spawn } = require('child_process');
const net = require('net');
const path = require('path');
const WebSocket = require('../..');

const smoke = process.argv.includes('--smoke');
const children = [];
let stopping = false;

/** Spawns a child and resolves with the first stdout line matching `ready` (15 s at most). */
function start(command, args, env, ready) {
  const child = spawn(command, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'inherit'] });
  children.push(child);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${path.basename(command)} not ready within 15 s`)), 15000);
    let out = '';
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (chunk) => {
      if (out === null) return; // ready already: the rest of its output is dropped
      const m = ready.exec((out += chunk));
      if (m) {
        clearTimeout(timer);
        out = null;
        resolve(m);
      }
    });
    child.on('error', (err) => reject(new Error(`${command}: ${err.message}`)));
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`${path.basename(command)} exited (${signal || code})`));
      if (!stopping) stop(1, `${path.basename(command)} ${args.join(' ')} exited (${signal || code})`);
    });
  });
}

function freePort() {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/** Stops the children (SIGTERM, SIGKILL after 3 s), then exits. */
function stop(code, reason) {
  if (stopping) return;
  stopping = true;
  if (reason) console.error(reason);
  const alive = children.filter((c) => c.exitCode === null && c.signalCode === null);
  let left = alive.length;
  if (left === 0) process.exit(code);
  for (const c of alive) {
    c.once('exit', () => --left === 0 && process.exit(code));
    c.kill('SIGTERM');
  }
  setTimeout(() => {
    for (const c of alive) c.kill('SIGKILL');
    process.exit(code);
  }, 3000).unref();
}
process.on('SIGINT', () => stop(0));
process.on('SIGTERM', () => stop(0));

/** The smoke test: a line sent by a client of one server reaches a client of the other. */
async function check(urls) {
  const open = (url) => new Promise((resolve, reject) => {
    const ws = new WebSocket(url);
    ws.once('message', () => resolve(ws)); // the server's "you are ..." line
    ws.once('error', reject);
  });
  const [a, b] = await Promise.all(urls.map((u) => open(u.replace('http:', 'ws:') + '/chat')));
  for (const [from, to] of [[a, b], [b, a]]) {
    const text = `hello ${Math.random()}`;
    const received = new Promise((resolve) => to.on('message', (data) => JSON.parse(data).text === text && resolve()));
    from.send(text);
    await received;
  }
  a.close();
  b.close();
}

(async () => {
  if (smoke) setTimeout(() => stop(1, 'smoke test: no answer within 30 s'), 30000).unref();
  console.log('starting Redis and two chat servers...');
  let redisUrl = process.env.REDIS_URL;
  if (!redisUrl) {
    const port = await freePort();
    await start('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], {},
      /Ready to accept connections/);
    redisUrl = `redis://127.0.0.1:${port}`;
  }
  const ports = smoke ? [0, 0] : [process.env.PORT1 || 8081, process.env.PORT2 || 8082];
  const urls = await Promise.all(ports.map(async (port) => {
    const [, actual] = await start(process.execPath, [path.join(__dirname, 'server.js')],
      { PORT: String(port), REDIS_URL: redisUrl }, /LISTENING (\d+)/);
    return `http://127.0.0.1:${actual}`;
  }));
  console.log(`chat on ${urls.join(' and ')} (Redis ${redisUrl})`);
  if (smoke) {
    await check(urls);
    console.log('OK');
    stop(0);
  } else {
    console.log('open both in a browser; Ctrl-C stops everything');
  }
})().catch((err) => stop(1, err.message));
