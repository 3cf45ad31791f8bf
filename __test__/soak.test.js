'use strict';

// Soak and leak tests. A child process (fixtures/soak-child.js, run with
// --expose-gc) hosts a ws-native echo server and ws-native clients; this process drives it
// with `ws` clients and a `ws` echo server, and reads the child's RSS and open file
// descriptors before and after.
//
// Modes:
//   default (CI):  50,000 echoed messages and 1,000 connect/close cycles against the
//                  ws-native server, plus 10,000 messages and 300 cycles by ws-native clients.
//   SOAK=long:     1,000,000 messages and 10,000 cycles against the server, plus 100,000
//                  messages and 2,000 cycles by ws-native clients.
// Tolerance: after a warm-up of the same workload (which fills allocator pools), RSS may
// grow by at most 64 MB (short) / 160 MB (long) while the allocators and V8 reach their
// high-water marks; memory in use (the C heap in use, where the engine allocates, plus V8's
// used heap after collections) by at most 8 MB (short) / 24 MB (long) in the second half of
// the run (a leak grows as much in each half as in the first); open fds by at most 2. Typical
// RSS growth, short mode in the full suite: +32.5 MB then +5.6 MB; long mode: +86.8 MB in the
// first half, +16.6 MB in the second, of which V8's heapTotal is +16 MB (native memory flat);
// fds unchanged. The numbers are printed as diagnostics (node --test shows them).

const { test } = require('node:test');
const assert = require('node:assert/strict');
const { fork, spawn } = require('node:child_process');
const path = require('node:path');
const { once } = require('node:events');
const Ws = require('ws');
const WebSocket = require(path.join(__dirname, '..'));
const { echoLoad, cycles, onceWithin } = require('./fixtures/soak-load.js');
const { bounded, echoBack, waitFor } = require('./helpers');

const LONG = process.env.SOAK === 'long';
const N = LONG
  ? { messages: 1_000_000, cycles: 10_000, clientMessages: 100_000, clientCycles: 2_000, rssMB: 160, halfMB: 24 }
  : { messages: 50_000, cycles: 1_000, clientMessages: 10_000, clientCycles: 300, rssMB: 64, halfMB: 8 };
const FD_SLACK = 2;
const MB = 1024 * 1024;

function startChild(t) {
  const child = fork(path.join(__dirname, 'fixtures', 'soak-child.js'), [], {
    execArgv: ['--expose-gc'],
    stdio: ['ignore', 'inherit', 'inherit', 'ipc']
  });
  let nextId = 0;
  const pending = new Map();
  child.on('message', (m) => {
    const p = pending.get(m.id);
    if (!p) return;
    pending.delete(m.id);
    if (m.ok) p.resolve(m.result);
    else p.reject(new Error(m.error));
  });
  child.on('exit', (code, signal) => {
    for (const p of pending.values()) p.reject(new Error(`soak child exited (${code}, ${signal})`));
  });
  t.after(() => child.kill());
  const call = (cmd, args, ms = LONG ? 3_600_000 : 120_000) =>
    new Promise((resolve, reject) => {
      const id = ++nextId;
      const timer = setTimeout(() => reject(new Error(`${cmd} timed out`)), ms);
      pending.set(id, {
        resolve: (v) => (clearTimeout(timer), resolve(v)),
        reject: (e) => (clearTimeout(timer), reject(e))
      });
      child.send({ id, cmd, args });
    });
  return onceWithin(child, 'message', 10000).then(() => call);
}

function echoServer(t) {
  const wss = echoBack(new Ws.WebSocketServer({ host: '127.0.0.1', port: 0 }));
  // A cleanup must never hang the run.
  t.after(() => bounded(new Promise((resolve) => (wss.clients.forEach((c) => c.terminate()), wss.close(resolve))), 5000));
  return once(wss, 'listening').then(() => `ws://127.0.0.1:${wss.address().port}`);
}

const fmt = (m) => `rss ${(m.rss / MB).toFixed(1)} MB, heap ${(m.heapUsed / MB).toFixed(1)}/${(m.heapTotal / MB).toFixed(1)} MB, external ${(m.external / MB).toFixed(1)} MB, fds ${m.fds}`;

test(`soak: ${N.messages} messages and ${N.cycles} connect/close cycles, RSS and fds flat`, { timeout: LONG ? 4 * 3_600_000 : 180_000 }, async (t) => {
  const call = await startChild(t);
  const { port } = await call('listen');
  const serverUrl = `ws://127.0.0.1:${port}`;
  const clientUrl = await echoServer(t);

  const round = async (scale) => {
    const m = Math.round(N.messages * scale);
    const c = Math.round(N.cycles * scale);
    assert.equal(await echoLoad(Ws, serverUrl, m), m);
    assert.equal(await cycles(Ws, serverUrl, c), c);
    assert.equal((await call('clientEcho', { url: clientUrl, total: Math.round(N.clientMessages * scale) })).received, Math.round(N.clientMessages * scale));
    assert.equal((await call('clientCycles', { url: clientUrl, n: Math.round(N.clientCycles * scale) })).done, Math.round(N.clientCycles * scale));
  };

  const start = await call('measure');
  await round(0.2); // warm-up
  const before = await call('measure');
  const t0 = Date.now();
  // Two equal halves: memory that leaks grows as much in the second half as in the first;
  // the allocators' and V8's high-water marks (reached during the first) do not.
  await round(0.5);
  const mid = await call('measure');
  await round(0.5);
  const secs = (Date.now() - t0) / 1000;
  const after = await call('measure');
  t.diagnostic(`start:  ${fmt(start)}`);
  t.diagnostic(`before: ${fmt(before)}`);
  t.diagnostic(`mid:    ${fmt(mid)}`);
  t.diagnostic(`after:  ${fmt(after)}  (${secs.toFixed(1)} s)`);
  t.diagnostic(`growth: rss ${((after.rss - before.rss) / MB).toFixed(1)} MB (second half ${((after.rss - mid.rss) / MB).toFixed(1)} MB), C heap in use ${((mid.native - before.native) / MB).toFixed(2)} then ${((after.native - mid.native) / MB).toFixed(2)} MB, fds ${after.fds - before.fds}`);
  assert.equal(after.clients, 0, 'server still holds clients');
  assert.ok(after.fds - before.fds <= FD_SLACK, `fds grew from ${before.fds} to ${after.fds}`);
  assert.ok(after.rss - before.rss <= N.rssMB * MB, `RSS grew by ${((after.rss - before.rss) / MB).toFixed(1)} MB (tolerance ${N.rssMB} MB)`);
  // The leak check: memory in use (the C heap, where the engine allocates, and V8's used heap
  // after collections) must not keep growing in the second half. RSS itself also carries
  // allocator caches and V8's reserved heap, which reach their high-water marks at varying
  // times in a run this short.
  const inUse = (m) => m.native + m.heapUsed;
  assert.ok(
    inUse(after) - inUse(mid) <= N.halfMB * MB,
    `memory in use grew by ${((inUse(after) - inUse(mid)) / MB).toFixed(1)} MB in the second half (tolerance ${N.halfMB} MB)`
  );
  await call('stop');
});

test('terminate() under load, on both sides, leaves the server serving', { timeout: 60_000 }, async (t) => {
  const wss = new WebSocket.WebSocketServer({ host: '127.0.0.1', port: 0 });
  t.after(() => bounded(new Promise((resolve) => (wss.clients.forEach((c) => c.terminate()), wss.close(resolve))), 5000));
  await once(wss, 'listening');
  const url = `ws://127.0.0.1:${wss.address().port}`;
  const big = Buffer.alloc(128 * 1024, 7);
  wss.on('connection', (ws) => {
    ws.on('error', () => {});
    let first = true;
    ws.on('message', (data) => {
      if (first) {
        first = false;
        // Flood, then (when asked) terminate mid-flood.
        for (let i = 0; i < 50; i++) ws.send(big);
        if (String(data) === 'server-terminates') setTimeout(() => ws.terminate(), 5);
        return;
      }
      ws.send(data);
    });
  });
  const rounds = 40;
  const codes = [];
  await Promise.all(
    Array.from({ length: rounds }, async (_, i) => {
      const ws = new WebSocket(url);
      ws.on('error', () => {});
      await onceWithin(ws, 'open');
      ws.send(i % 2 ? 'client-terminates' : 'server-terminates');
      for (let k = 0; k < 50; k++) ws.send(big);
      // Odd rounds: the client terminates while both directions are busy.
      if (i % 2 === 1) setTimeout(() => ws.terminate(), 3 + (i % 5));
      const [code] = await onceWithin(ws, 'close', 20000);
      codes.push(code);
    })
  );
  assert.equal(codes.length, rounds);
  assert.ok(codes.every((c) => c === 1006), `close codes: ${[...new Set(codes)]}`);
  await waitFor(() => wss.clients.size === 0, { timeout: 2000, interval: 20, what: () => `the server to drop its ${wss.clients.size} clients` });
  assert.equal(wss.clients.size, 0);
  // Still serving.
  const ws = new Ws(url);
  await onceWithin(ws, 'open');
  ws.send('still here');
  const [data] = await onceWithin(ws, 'message');
  assert.ok(data.length > 0);
  ws.terminate();
});

function runExitChild(mode) {
  const child = spawn(process.execPath, [path.join(__dirname, 'fixtures', 'exit-under-load.js'), mode], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.on('data', (d) => (out += d));
  child.stderr.on('data', (d) => (err += d));
  return once(child, 'exit').then(([code, signal]) => ({ code, signal, out, err }));
}

test('process.exit() under load exits with code 0, no crash or abort', { timeout: 60_000 }, async () => {
  for (let i = 0; i < 5; i++) {
    const r = await runExitChild('exit');
    assert.equal(r.signal, null, `killed by ${r.signal}: ${r.err}`);
    assert.equal(r.code, 0, `exit code ${r.code}: ${r.err}`);
    assert.match(r.out, /messages \d+/);
    assert.doesNotMatch(r.err, /panic|abort|FATAL|Segmentation/i);
  }
});

test('an uncaught exception under load exits with code 1, no abort', { timeout: 60_000 }, async () => {
  const r = await runExitChild('throw');
  assert.equal(r.signal, null, `killed by ${r.signal}: ${r.err}`);
  assert.equal(r.code, 1);
  assert.match(r.err, /deliberate/);
  assert.doesNotMatch(r.err, /panicked|FATAL|Segmentation/i);
});
