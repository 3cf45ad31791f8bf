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

const { frame, startWss, upgradeRequest, waitFor } = require('./helpers');

const HOST = '127.0.0.1';

/**
 * Opens `n` connections (raw sockets, a valid upgrade each) and resolves once all got 101,
 * and, with `echo`, sent a text message of that many bytes and read all of its echo.
 */
async function connect(port, n, echo = 0) {
  const sockets = [];
  for (let i = 0; i < n; i += 100) {
    const batch = [];
    for (let j = i; j < Math.min(n, i + 100); j++) {
      batch.push(
        new Promise((resolve, reject) => {
          const s = net.connect(port, HOST, () => s.write(upgradeRequest()));
          let received = -1;
          s.on('data', (d) => {
            if (received < 0) {
              if (!d.toString('latin1').startsWith('HTTP/1.1 101')) return reject(new Error(d.toString()));
              if (!echo) return resolve(s);
              received = d.length - d.indexOf('\r\n\r\n') - 4;
              s.write(frame({ opcode: 1, payload: Buffer.alloc(echo, 'a') }));
            } else {
              received += d.length;
            }
            // The echo: a 4-byte header (unmasked, 16-bit length) and the payload.
            if (echo && received >= echo + 4) resolve(s);
          });
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

/**
 * In a server process of its own: warms up, then opens `n` connections (each echoing a
 * message of `echo` bytes if given) and waits until all are parked. Resolves with the
 * engine's and V8's memory per connection on its task (before parking) and once parked.
 */
async function idleCost(t, n, echo = 0) {
  const child = spawn(process.execPath, ['--expose-gc', path.join(__dirname, 'fixtures', 'idle-server.js')], {
    stdio: ['pipe', 'pipe', 'inherit']
  });
  child.stdout.setEncoding('utf8');
  t.after(() => child.kill());
  const port = Number((await ask(child, null, 'PORT ')).split(' ')[1]);
  const count = async (cmd, prefix) => Number((await ask(child, cmd, prefix)).split(' ')[1]);

  // Warm up (slabs, tables, buffers made once), close, then count fresh connections.
  const warm = await connect(port, 200, echo);
  for (const s of warm) s.destroy();
  await waitFor(async () => (await count('clients', 'CLIENTS ')) === 0, {
    timeout: 10000,
    interval: 20,
    what: 'the server to close the warm-up connections'
  });
  // The engine frees the warm-up connections' memory as their tasks end, a little after JS
  // hears of their close: mark once its heap stops shrinking.
  let heap = Infinity;
  await waitFor(
    async () => {
      const now = await count('heap', 'HEAP ');
      const settled = now >= heap;
      heap = now;
      return settled;
    },
    { timeout: 10000, interval: 100, what: "the warm-up connections' memory to settle" }
  );
  await ask(child, 'mark', 'MARKED');
  const sockets = await connect(port, n, echo);
  t.after(() => sockets.forEach((s) => s.destroy()));
  const [, engine, v8, clients] = (await ask(child, 'measure', 'COST ')).split(' ').map(Number);

  // Idle for one to two seconds, each connection leaves its task (src/engine/park.rs).
  let parked = 0;
  await waitFor(async () => (parked = await count('parked', 'PARKED ')) >= n, {
    timeout: 10000,
    interval: 100,
    what: () => `every idle connection to park (${parked} of ${n})`
  });
  // The engine frees the tasks the connections left a little after they count as parked:
  // measure until the engine's heap stops shrinking.
  let engineParked = Infinity;
  await waitFor(
    async () => {
      const [, now] = (await ask(child, 'measure', 'COST ')).split(' ').map(Number);
      const settled = now >= engineParked;
      engineParked = now;
      return settled;
    },
    { timeout: 10000, interval: 100, what: "the parked connections' memory to settle" }
  );
  child.stdin.write('exit\n');
  await once(child, 'exit');

  assert.equal(clients, n);
  assert.equal(parked, n, 'every idle connection parks');
  return { engine: engine / n, parked: engineParked / n, v8: v8 / n };
}

test('an idle server connection costs under 800 bytes of engine memory, 350 once parked, and 600 of V8 objects', { timeout: 60000 }, async (t) => {
  const cost = await idleCost(t, 1000);
  t.diagnostic(`per idle connection: engine ${cost.engine.toFixed(0)} bytes (${cost.parked.toFixed(0)} parked), V8 ${cost.v8.toFixed(0)} bytes`);
  // What the bounds cover. On its task, about 700 bytes of engine memory (510-600 when the
  // warm-up's slab pages stay in use and are not counted again): tokio's task (256) and I/O
  // registration (256), the outbox (144), table entries. Parked, 220-310: the outbox, 48 bytes
  // of parked state, table entries. V8, 230-440 on Node 20, 22 and 24: the WebSocket (104),
  // its listener table (40), the two listeners and their closure, the set and map entries,
  // whose tables grow in steps; a loose bound: the test below pins the WebSocket's own fields.
  assert.ok(cost.engine < 800, `engine memory per idle connection: ${cost.engine} bytes`);
  assert.ok(cost.parked < 350, `engine memory per parked connection: ${cost.parked} bytes`);
  assert.ok(cost.v8 < 600, `V8 objects per idle connection: ${cost.v8} bytes`);
});

test('a connection that echoed a 2 KiB message keeps no buffer of it once idle', { timeout: 60000 }, async (t) => {
  const cost = await idleCost(t, 1000, 2048);
  t.diagnostic(`per parked connection after a 2 KiB echo: engine ${cost.parked.toFixed(0)} bytes`);
  // About 540 bytes: the 280 of a connection that never spoke, and the events buffer the
  // engine keeps for its next batch (up to 256 KiB in all, not per connection). An outbox that
  // kept its write buffer once idle would cost about 2,600 (the echo is written from JS
  // directly, and the buffer would keep its capacity for the next send).
  assert.ok(cost.parked < 800, `engine memory per parked connection: ${cost.parked} bytes`);
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
