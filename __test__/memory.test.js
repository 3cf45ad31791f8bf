'use strict';

// What an idle server connection costs, counted (not timed): the engine's C heap and V8's
// used heap after full collections, in a server process of its own, for 1,000 connections.
// The budgets are the design's, with room for allocator rounding; bench/ measures RSS.

const test = require('node:test');
const assert = require('node:assert');
const net = require('node:net');
const path = require('node:path');
const { spawn } = require('node:child_process');
const { once } = require('node:events');

const { startWss, upgradeRequest } = require('./helpers');

const HOST = '127.0.0.1';

/** Opens `n` connections (raw sockets, a valid upgrade each) and resolves once all got 101. */
async function connect(port, n) {
  const sockets = [];
  for (let i = 0; i < n; i += 100) {
    const batch = [];
    for (let j = i; j < Math.min(n, i + 100); j++) {
      batch.push(
        new Promise((resolve, reject) => {
          const s = net.connect(port, HOST, () => s.write(upgradeRequest()));
          s.once('data', (d) => (d.toString('latin1').startsWith('HTTP/1.1 101') ? resolve(s) : reject(new Error(d.toString()))));
          s.once('error', reject);
        })
      );
    }
    sockets.push(...(await Promise.all(batch)));
  }
  return sockets;
}

/** Sends a line to the server and resolves with its first answer line starting with `prefix`. */
function ask(child, line, prefix) {
  return new Promise((resolve) => {
    let buf = '';
    const onData = (d) => {
      buf += d;
      const l = buf.split('\n').find((x) => x.startsWith(prefix));
      if (l) {
        child.stdout.off('data', onData);
        resolve(l);
      }
    };
    child.stdout.on('data', onData);
    if (line) child.stdin.write(`${line}\n`);
  });
}

test('an idle server connection costs under 800 bytes of engine memory, 350 once parked, and 600 of V8 objects', { timeout: 60000 }, async (t) => {
  const child = spawn(process.execPath, ['--expose-gc', path.join(__dirname, 'fixtures', 'idle-server.js')], {
    stdio: ['pipe', 'pipe', 'inherit']
  });
  child.stdout.setEncoding('utf8');
  t.after(() => child.kill());
  const port = Number((await ask(child, null, 'PORT ')).split(' ')[1]);

  // Warm up (slabs, tables, buffers made once), close, then count 1,000 fresh connections.
  const warm = await connect(port, 200);
  for (const s of warm) s.destroy();
  await new Promise((r) => setTimeout(r, 300));
  await ask(child, 'mark', 'MARKED');
  const N = 1000;
  const sockets = await connect(port, N);
  t.after(() => sockets.forEach((s) => s.destroy()));
  const [, engine, v8, clients] = (await ask(child, 'measure', 'COST ')).split(' ').map(Number);

  // Idle for one to two seconds, each connection leaves its task (src/engine/park.rs).
  let parked = 0;
  for (let i = 0; i < 100 && parked < N; i++) {
    await new Promise((r) => setTimeout(r, 100));
    parked = Number((await ask(child, 'parked', 'PARKED ')).split(' ')[1]);
  }
  const [, engineParked] = (await ask(child, 'measure', 'COST ')).split(' ').map(Number);

  assert.equal(clients, N);
  assert.equal(parked, N, 'every idle connection parks');
  const perEngine = engine / N;
  const perParked = engineParked / N;
  const perV8 = v8 / N;
  t.diagnostic(`per idle connection: engine ${perEngine.toFixed(0)} bytes (${perParked.toFixed(0)} parked), V8 ${perV8.toFixed(0)} bytes`);
  // 2026-11-26: on its task, engine 700-720 (tokio's task 256 and I/O registration 256, the
  // outbox 144, table entries; 510-600 when the warm-up's slab pages stayed in use and were
  // not counted again), 1,052 with the build from before that day's changes; parked 280-310
  // (the outbox, 48 bytes of parked state, table entries). V8 230-440 on Node 20, 22 and 24
  // (the WebSocket 104, its listener table 40, the two listeners and their closure, the set
  // and map entries, whose tables grow in steps): a loose bound; the test below pins the
  // WebSocket's own fields.
  assert.ok(perEngine < 800, `engine memory per idle connection: ${perEngine} bytes`);
  assert.ok(perParked < 350, `engine memory per parked connection: ${perParked} bytes`);
  assert.ok(perV8 < 600, `V8 objects per idle connection: ${perV8} bytes`);
  child.stdin.write('exit\n');
  await once(child, 'exit');
});

test('a server-side WebSocket has 10 own properties (rare state lives out of line)', async (t) => {
  const WebSocket = require(path.join(__dirname, '..'));
  const wss = await startWss(t, WebSocket.WebSocketServer);
  const accepted = once(wss, 'connection');
  const client = new WebSocket(`ws://${HOST}:${wss.address().port}`);
  t.after(() => client.terminate());
  const [ws] = await accepted;
  // EventEmitter's listener table and its count, and 8 of ours; every idle connection holds
  // one (8 bytes per property).
  assert.equal(Reflect.ownKeys(ws).length, 10, Reflect.ownKeys(ws).map(String).join(' '));
  ws.pause();
  ws.resume();
  assert.equal(Reflect.ownKeys(ws).length, 10, 'pausing adds no property');
  ws.close(4000, 'bye');
  await once(ws, 'close');
  assert.equal(Reflect.ownKeys(ws).length, 10, 'closing adds no property');
});
