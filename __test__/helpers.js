'use strict';

// The helpers the tests share: waiting (for a condition, or for a time during which nothing
// must happen), servers and clients, raw sockets speaking the protocol by hand, certificates,
// memory. One of each: a test file defines only what it alone needs.

const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const { spawn } = require('node:child_process');

// The certificates: one maker, in fixtures/certs.js.
const { hasOpenssl, makeCerts, selfSigned } = require('./fixtures/certs');
// RFC 6455's GUID, from the package's constants (they load no addon: the tests run with
// WS_IMPL=ws use this module too).
const { GUID } = require('../lib/constants');

/** Listens on an ephemeral port of 127.0.0.1; resolves with the port. */
function listen(server) {
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server.address().port)));
}

/** Closes a server; resolves when it has closed. */
function closeServer(server) {
  return new Promise((resolve) => server.close(() => resolve()));
}

/** Resolves with the arguments of the next `event` (never rejects: events.once rejects on 'error'). */
function once(emitter, event) {
  return new Promise((resolve) => emitter.once(event, (...args) => resolve(args)));
}

/** The SHA-256 of `data`, in hex. */
function sha256(data) {
  return crypto.createHash('sha256').update(data).digest('hex');
}

// --- WebSocket servers and clients (ws-native's or ws's: the same API) ---------------------------

/** Terminates the clients of a WebSocketServer (if it tracks them) and closes it. */
function closeWss(wss) {
  return new Promise((resolve) => {
    if (wss.clients) for (const c of wss.clients) c.terminate();
    wss.close(() => resolve());
  });
}

/**
 * Starts `new Server({ host: 127.0.0.1, port: 0, ...options })`, resolves once it listens, and
 * closes it (terminating its clients) after the test `t`.
 */
async function startWss(t, Server, options = {}) {
  const wss = new Server({ host: '127.0.0.1', port: 0, ...options });
  await new Promise((resolve, reject) => {
    wss.once('listening', resolve);
    wss.once('error', reject);
  });
  t.after(() => closeWss(wss));
  return wss;
}

/** Makes every connection of `wss` send each message it gets back as it came. Returns `wss`. */
function echoBack(wss) {
  wss.on('connection', (ws) => ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary })));
  return wss;
}

/** The ws:// URL of a server listening on 127.0.0.1, with path `p`. */
function urlOf(server, p = '/') {
  return `ws://127.0.0.1:${server.address().port}${p}`;
}

/**
 * Terminates client `ws` after the test (unless it has closed by then) and waits for its
 * 'close'. Returns `ws`.
 */
function closeAfter(t, ws) {
  t.after(async () => {
    if (ws.readyState === ws.CLOSED) return;
    const closed = new Promise((resolve) => ws.once('close', resolve));
    ws.on('error', () => {});
    ws.terminate();
    await closed;
  });
  return ws;
}

/**
 * Opens a client of class `Client` (ws-native's or ws's WebSocket) to `wss` with `options`,
 * terminated after the test. Resolves once both ends are open with `{ client, server, req }`
 * (`server` is the server's WebSocket); rejects with the client's error if it does not open.
 */
async function openClient(t, wss, Client, options) {
  const accepted = once(wss, 'connection');
  const client = closeAfter(t, new Client(urlOf(wss), options));
  const err = await outcome(client);
  if (err) throw err;
  const [server, req] = await accepted;
  return { client, server, req };
}

/**
 * Resolves with the first 'open' (as null) or 'error' (the error) of a client. Listens to
 * neither after that: a later 'error' is the test's to handle.
 */
function outcome(ws) {
  return new Promise((resolve) => {
    const onOpen = () => {
      ws.off('error', onError);
      resolve(null);
    };
    const onError = (err) => {
      ws.off('open', onOpen);
      resolve(err);
    };
    ws.once('open', onOpen);
    ws.once('error', onError);
  });
}

/**
 * Resolves on `ws`'s 'close' with `{ code, reason, errors }`: the reason as a string, and the
 * 'error' events since the call (listened to, so none is thrown). Never rejects.
 */
function closeEvent(ws) {
  const errors = [];
  ws.on('error', (e) => errors.push(e));
  return new Promise((resolve) => ws.once('close', (code, reason) => resolve({ code, reason: reason.toString(), errors })));
}

/**
 * Collects the 'error' and 'close' events of a failing client; resolves on 'close' with
 * `{ events, err, stateAtError, code, reason }` (the first error, and the readyState then).
 */
function failure(ws) {
  return new Promise((resolve) => {
    const r = { events: [], err: undefined, stateAtError: undefined };
    ws.on('error', (err) => {
      r.events.push('error');
      if (r.err === undefined) r.err = err;
      r.stateAtError = ws.readyState;
    });
    ws.on('close', (code, reason) => {
      r.events.push('close');
      r.code = code;
      r.reason = reason;
      resolve(r);
    });
  });
}

/**
 * Waits for client `ws` to open (fails with its error if it does not), sends `payloads` in order
 * and resolves with what comes back, one `[data, isBinary]` per payload.
 */
async function echoes(ws, payloads) {
  const err = await outcome(ws);
  assert.equal(err, null, err && `${err.code}: ${err.message}`);
  const got = [];
  const done = new Promise((resolve) => {
    ws.on('message', (data, isBinary) => {
      got.push([Buffer.from(data), isBinary]);
      if (got.length === payloads.length) resolve();
    });
  });
  for (const p of payloads) ws.send(p);
  await done;
  return got;
}

/** echoes(ws, [payload]), then closes `ws` and waits for its 'close'; resolves with the echoed data. */
async function echoOnce(ws, payload) {
  const [[data]] = await echoes(ws, [payload]);
  ws.close();
  await once(ws, 'close');
  return data;
}

// --- Waiting -------------------------------------------------------------------------------------

/** Resolves after `ms`. Not a way to wait for an event: see waitFor and quietPeriod. */
function delay(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Checks `condition` (a function, which may return a promise) every `interval` ms until it
 * gives a truthy value, and resolves with that value. Rejects after `timeout` ms, naming
 * `what` (a string, or a function called then for one that tells the state).
 */
async function waitFor(condition, { timeout = 5000, interval = 10, what = 'the condition' } = {}) {
  const end = Date.now() + timeout;
  for (;;) {
    const value = await condition();
    if (value) return value;
    if (Date.now() >= end) {
      throw new Error(`timed out after ${timeout} ms waiting for ${typeof what === 'function' ? what() : what}`);
    }
    await delay(interval);
  }
}

/**
 * Waits `ms` during which something must NOT happen (a message, a pong, a second callback, a
 * close...). The wait itself is the check: no event says that nothing came. Each caller says
 * in a comment what must stay away.
 */
function quietPeriod(ms) {
  return delay(ms);
}

/**
 * Resolves when `promise` does, or after `ms` at most, whichever comes first: for waits that
 * must not hang the run (cleanups) or that give up on an event to let an assertion report.
 */
function bounded(promise, ms) {
  let timer;
  const timeout = new Promise((resolve) => (timer = setTimeout(resolve, ms)));
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

// --- Child processes -----------------------------------------------------------------------------

/**
 * Runs `node <script> ...args` with its stdout piped (stderr inherited), killed with SIGKILL
 * after the test if still running. Returns `{ child, lines, line(re, ms), exited }`: `lines`
 * are its stdout lines so far, `line` resolves with the match of the first line (already
 * printed or to come) matching `re` and rejects after `ms` (10 s by default) or if the
 * process exits first, and `exited` resolves with `{ code, signal }` when it has exited.
 */
function nodeChild(t, script, args = [], { env } = {}) {
  const child = spawn(process.execPath, [script, ...args.map(String)], {
    stdio: ['ignore', 'pipe', 'inherit'],
    env: env ? { ...process.env, ...env } : process.env
  });
  const lines = [];
  const waiters = new Set();
  let rest = '';
  let done = null;
  const exited = new Promise((resolve) =>
    child.on('exit', (code, signal) => {
      done = { code, signal };
      for (const w of waiters) w.fail();
      resolve(done);
    })
  );
  child.stdout.setEncoding('utf8');
  child.stdout.on('data', (chunk) => {
    rest += chunk;
    let i;
    while ((i = rest.indexOf('\n')) >= 0) {
      const l = rest.slice(0, i);
      rest = rest.slice(i + 1);
      lines.push(l);
      for (const w of waiters) w.check(l);
    }
  });
  t.after(() => {
    if (done === null) child.kill('SIGKILL');
    return exited;
  });
  function line(re, ms = 10000) {
    for (const l of lines) {
      const m = re.exec(l);
      if (m) return Promise.resolve(m);
    }
    return new Promise((resolve, reject) => {
      const w = {
        check(l) {
          const m = re.exec(l);
          if (m) finish(() => resolve(m));
        },
        fail() {
          finish(() => reject(new Error(`${script} exited (${JSON.stringify(done)}) before printing a line matching ${re}`)));
        }
      };
      const timer = setTimeout(() => finish(() => reject(new Error(`no line matching ${re} from ${script} within ${ms} ms`))), ms);
      function finish(settle) {
        clearTimeout(timer);
        waiters.delete(w);
        settle();
      }
      waiters.add(w);
      if (done !== null) w.fail();
    });
  }
  return { child, lines, line, exited };
}

// --- TCP servers, ports, proxies -----------------------------------------------------------------

/** Whether something accepts TCP connections on 127.0.0.1:`port` now. */
function accepts(port) {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1', () => {
      s.destroy();
      resolve(true);
    });
    s.on('error', () => resolve(false));
  });
}

/** Resolves with true once something accepts TCP connections on 127.0.0.1:`port`, false after 10 s. */
function waitPort(port) {
  return waitFor(() => accepts(port), { timeout: 10000, interval: 100 }).then(
    () => true,
    () => false
  );
}

/** A port of 127.0.0.1 where nothing listens: one the system hands out, closed again. */
async function freePort() {
  const probe = net.createServer();
  const port = await listen(probe);
  await closeServer(probe);
  return port;
}

/**
 * A TCP server on 127.0.0.1:0 that runs `onSocket` (if given) for each connection; after the
 * test its sockets are destroyed and it is closed.
 */
async function netServer(t, onSocket) {
  const sockets = new Set();
  const server = net.createServer((s) => {
    sockets.add(s);
    s.on('error', () => {});
    s.on('close', () => sockets.delete(s));
    if (onSocket) onSocket(s);
  });
  await listen(server);
  t.after(() => {
    for (const s of sockets) s.destroy();
    return closeServer(server);
  });
  return server;
}

/** A TCP server that accepts and never answers; closed after the test. Resolves with its port. */
async function silentServer(t) {
  return (await netServer(t)).address().port;
}

/** The path of the first of the programs `names` found in the usual directories, or null. */
function findBin(names) {
  for (const n of names) {
    for (const d of ['/usr/bin', '/usr/sbin', '/usr/local/bin']) {
      const p = path.join(d, n);
      if (fs.existsSync(p)) return p;
    }
  }
  return null;
}

/**
 * Starts tinyproxy (an HTTP CONNECT proxy) on a free port of 127.0.0.1, with Basic auth when
 * `auth` is [user, password]; it is stopped after the test. Resolves with its port.
 */
async function startTinyproxy(t, auth) {
  const port = await freePort();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ws-native-proxy-'));
  const conf = path.join(dir, 'tinyproxy.conf');
  let text = `Port ${port}\nListen 127.0.0.1\nTimeout 30\nAllow 127.0.0.1\nMaxClients 50\nLogLevel Critical\n`;
  if (auth) text += `BasicAuth ${auth[0]} ${auth[1]}\n`;
  fs.writeFileSync(conf, text);
  const proc = spawn(findBin(['tinyproxy']), ['-d', '-c', conf], { stdio: 'ignore' });
  t.after(() => {
    proc.kill();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  if (!(await waitPort(port))) throw new Error(`tinyproxy does not listen on ${port}`);
  return port;
}

// --- The protocol by hand: requests, answers, frames ---------------------------------------------

/**
 * A valid WebSocket upgrade request for a server on 127.0.0.1, with `extra` header lines (each
 * ending in CRLF).
 */
function upgradeRequest(extra = '') {
  return (
    'GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n' +
    `Sec-WebSocket-Key: ${crypto.randomBytes(16).toString('base64')}\r\nSec-WebSocket-Version: 13\r\n${extra}\r\n`
  );
}

/** The Sec-WebSocket-Accept value that answers Sec-WebSocket-Key `key`. */
function acceptKey(key) {
  return crypto.createHash('sha1').update(key + GUID).digest('base64');
}

/**
 * A server's 101 answer to an upgrade request with `key`, with `extra` header lines (each ending
 * in CRLF).
 */
function switchingProtocols(key, extra = '') {
  return (
    'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
    `Sec-WebSocket-Accept: ${acceptKey(key)}\r\n${extra}\r\n`
  );
}

/**
 * Writes `bytes` on a new TCP connection to 127.0.0.1:`port` (with `bytes` null, writes nothing
 * and ends its side) and resolves with everything that came back (latin1) once it has closed.
 */
function rawExchange(port, bytes) {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1', () => (bytes === null ? s.end() : s.write(bytes)));
    const chunks = [];
    s.on('data', (c) => chunks.push(c));
    s.on('error', () => {});
    s.on('close', () => resolve(Buffer.concat(chunks).toString('latin1')));
  });
}

/**
 * Parses the frames that arrive on `socket`, after an HTTP head when `head` is true (`head`
 * then resolves with it, blank line included, or with null if the socket closes first).
 * `next()` resolves with the next frame, `{ fin, rsv, rsv1, opcode, masked, payload, bytes }`
 * (the payload unmasked, `bytes` the frame as it came), and rejects once the socket has closed
 * without one.
 */
function frameReader(socket, { head = false } = {}) {
  let buf = Buffer.alloc(0);
  let headDone = !head;
  let resolveHead = null;
  const headText = head ? new Promise((resolve) => (resolveHead = resolve)) : null;
  const frames = [];
  const waiters = [];
  let closed = false;
  socket.on('data', (chunk) => {
    buf = Buffer.concat([buf, chunk]);
    if (!headDone) {
      const i = buf.indexOf('\r\n\r\n');
      if (i === -1) return;
      resolveHead(buf.subarray(0, i + 4).toString('latin1'));
      buf = buf.subarray(i + 4);
      headDone = true;
    }
    for (;;) {
      if (buf.length < 2) break;
      let len = buf[1] & 0x7f;
      let off = 2;
      if (len === 126) {
        if (buf.length < 4) break;
        len = buf.readUInt16BE(2);
        off = 4;
      } else if (len === 127) {
        if (buf.length < 10) break;
        len = Number(buf.readBigUInt64BE(2));
        off = 10;
      }
      const masked = (buf[1] & 0x80) !== 0;
      const keyOff = off;
      if (masked) off += 4;
      if (buf.length < off + len) break;
      const payload = Buffer.from(buf.subarray(off, off + len));
      if (masked) for (let i = 0; i < len; i++) payload[i] ^= buf[keyOff + (i & 3)];
      const rsv = (buf[0] >> 4) & 7;
      frames.push({
        fin: (buf[0] & 0x80) !== 0,
        rsv,
        rsv1: (rsv & 4) !== 0,
        opcode: buf[0] & 0x0f,
        masked,
        payload,
        bytes: Buffer.from(buf.subarray(0, off + len))
      });
      buf = buf.subarray(off + len);
    }
    while (waiters.length && frames.length) waiters.shift().resolve(frames.shift());
  });
  socket.on('close', () => {
    closed = true;
    if (!headDone) resolveHead(null);
    for (const w of waiters.splice(0)) w.reject(new Error('the socket closed before the next frame'));
  });
  return {
    head: headText,
    next() {
      if (frames.length) return Promise.resolve(frames.shift());
      if (closed) return Promise.reject(new Error('the socket closed before the next frame'));
      return new Promise((resolve, reject) => waiters.push({ resolve, reject }));
    }
  };
}

/**
 * A raw TCP client of 127.0.0.1:`port` that sends a valid upgrade request (with `extra` header
 * lines); destroyed after the test. Resolves once the answer's head has come, with the socket,
 * the head and a frameReader of what follows.
 */
async function rawWebSocket(t, port, extra = '') {
  const socket = net.connect(port, '127.0.0.1');
  socket.on('error', () => {});
  t.after(() => socket.destroy());
  const reader = frameReader(socket, { head: true });
  socket.write(upgradeRequest(extra));
  const head = await reader.head;
  return { socket, head, reader };
}

/**
 * A raw TCP client of 127.0.0.1:`port` that completes the handshake, then neither reads nor
 * writes (destroyed after the test). Resolves with the socket once the answer has come.
 */
async function silentPeer(t, port) {
  const s = net.connect(port, '127.0.0.1');
  s.on('error', () => {});
  t.after(() => s.destroy());
  await once(s, 'connect');
  s.write(upgradeRequest());
  await once(s, 'data');
  s.pause();
  return s;
}

/**
 * Builds a frame. `len` overrides the 7-bit length (126/127 markers are then followed by
 * `ext`, raw extended-length bytes); otherwise the length is computed from the payload.
 */
function frame({ fin = true, rsv = 0, opcode, mask = true, payload = Buffer.alloc(0), len, ext }) {
  payload = Buffer.from(payload);
  const parts = [];
  const b0 = (fin ? 0x80 : 0) | (rsv << 4) | opcode;
  const maskBit = mask ? 0x80 : 0;
  if (len !== undefined) {
    parts.push(Buffer.from([b0, maskBit | len]));
    if (ext) parts.push(ext);
  } else if (payload.length < 126) {
    parts.push(Buffer.from([b0, maskBit | payload.length]));
  } else if (payload.length < 65536) {
    const h = Buffer.alloc(4);
    h[0] = b0;
    h[1] = maskBit | 126;
    h.writeUInt16BE(payload.length, 2);
    parts.push(h);
  } else {
    const h = Buffer.alloc(10);
    h[0] = b0;
    h[1] = maskBit | 127;
    h.writeBigUInt64BE(BigInt(payload.length), 2);
    parts.push(h);
  }
  if (mask) {
    const key = crypto.randomBytes(4);
    const masked = Buffer.from(payload);
    for (let i = 0; i < masked.length; i++) masked[i] ^= key[i & 3];
    parts.push(key, masked);
  } else {
    parts.push(payload);
  }
  return Buffer.concat(parts);
}

// --- Memory --------------------------------------------------------------------------------------

/**
 * The C heap this process holds: glibc's bytes in use plus its mmapped blocks, and the pages of
 * the engine's slabs (the engine's memory, without the allocator's caches).
 */
function engineHeap() {
  const [used, , mapped, slabs] = require(path.join(__dirname, '..', 'lib', 'native.js')).binding.heapStats();
  return used + mapped + slabs;
}

/**
 * Full collections (run with --expose-gc) until `sample()`, a heap size, stops shrinking: at
 * least `minRounds`, at most `maxRounds`. Each is followed by `interval` ms for the finalizers
 * the collection queued (they free the native memory of collected objects), which no event
 * announces: the shrinking heap is the sign they ran.
 */
async function settleHeap(sample, { minRounds = 1, maxRounds = 10, interval = 20 } = {}) {
  let last = Infinity;
  for (let i = 0; i < maxRounds; i++) {
    global.gc();
    await delay(interval);
    const now = sample();
    if (i + 1 >= minRounds && now >= last) break;
    last = now;
  }
}

/**
 * Runs `scenario(impl, log)` on ws and on ws-native (`impl` is the package) and asserts that
 * both logged the same: what a program can observe, such as events in order and their
 * arguments. Errors are logged as `code:message`. Resolves with ws's log.
 */
async function differential(scenario) {
  const logs = [];
  for (const impl of [require('ws'), require('..')]) {
    const log = [];
    await scenario(impl, (...args) => log.push(args.map((a) => (a instanceof Error ? `${a.code || ''}:${a.message}` : a))));
    // Callbacks queued with process.nextTick by the scenario's last step land in the log too.
    await new Promise((resolve) => setImmediate(resolve));
    logs.push(log);
  }
  require('node:assert/strict').deepEqual(logs[1], logs[0]);
  return logs[0];
}

// --- Redis -----------------------------------------------------------------------------------------

/** The path of program `name` in a directory of the PATH, or null. */
function onPath(name) {
  for (const d of (process.env.PATH || '').split(path.delimiter)) {
    if (!d) continue;
    const p = path.join(d, name);
    try {
      fs.accessSync(p, fs.constants.X_OK);
      if (fs.statSync(p).isFile()) return p;
    } catch {
      // Not in this directory.
    }
  }
  return null;
}

/**
 * Reads one RESP (Redis protocol) reply from the start of `buf`: resolves to `{ value, end }`,
 * or null when `buf` does not hold a whole reply yet. Errors are returned as Error values.
 */
function parseResp(buf, at = 0) {
  const eol = buf.indexOf('\r\n', at);
  if (eol === -1) return null;
  const type = String.fromCharCode(buf[at]);
  const text = buf.toString('utf8', at + 1, eol);
  const next = eol + 2;
  switch (type) {
    case '+':
      return { value: text, end: next };
    case '-':
      return { value: new Error(text), end: next };
    case ':':
      return { value: Number(text), end: next };
    case '$': {
      const len = Number(text);
      if (len < 0) return { value: null, end: next };
      if (buf.length < next + len + 2) return null;
      return { value: buf.toString('utf8', next, next + len), end: next + len + 2 };
    }
    case '*': {
      const n = Number(text);
      if (n < 0) return { value: null, end: next };
      const items = [];
      let pos = next;
      for (let i = 0; i < n; i++) {
        const item = parseResp(buf, pos);
        if (item === null) return null;
        items.push(item.value);
        pos = item.end;
      }
      return { value: items, end: pos };
    }
    default:
      throw new Error(`unexpected RESP reply type ${JSON.stringify(type)}`);
  }
}

/**
 * Sends one command (`args`, strings) to the Redis on 127.0.0.1:`port` over a new connection
 * (after `AUTH password` when `password` is given) and resolves with its reply (an Error value
 * for an error reply); rejects if the connection fails or gives no whole reply within
 * `timeout` ms.
 */
function redisCommand(port, args, { timeout = 2000, password } = {}) {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1');
    let buf = Buffer.alloc(0);
    let settled = false;
    const finish = (fn, v) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      s.destroy();
      fn(v);
    };
    const timer = setTimeout(() => finish(reject, new Error(`no reply from Redis on ${port} to ${args[0]} within ${timeout} ms`)), timeout);
    const commands = password === undefined ? [args] : [['AUTH', password], args];
    s.on('connect', () => {
      const parts = [];
      for (const command of commands) {
        parts.push(`*${command.length}\r\n`);
        for (const a of command) parts.push(`$${Buffer.byteLength(String(a))}\r\n${a}\r\n`);
      }
      s.write(parts.join(''));
    });
    s.on('data', (chunk) => {
      buf = Buffer.concat([buf, chunk]);
      // The reply to the last command, once every reply has come.
      let reply = { end: 0 };
      for (let i = 0; i < commands.length && reply !== null; i++) reply = parseResp(buf, reply.end);
      if (reply !== null) finish(resolve, reply.value);
    });
    s.on('error', (err) => finish(reject, err));
    s.on('close', () => finish(reject, new Error(`Redis on ${port} closed the connection before replying to ${args[0]}`)));
  });
}

/** Whether a Redis answers PING on 127.0.0.1:`port` now (after `AUTH password` when given). */
async function redisAnswers(port, password) {
  try {
    return (await redisCommand(port, ['PING'], { timeout: 1000, password })) === 'PONG';
  } catch {
    return false;
  }
}

/**
 * Starts redis-server (found on the PATH) on 127.0.0.1:`port` (a free port when not given),
 * without persistence, and resolves once it answers PING (rejects if it exits first or does
 * not answer within 10 s). With `password`, clients must authenticate (`requirepass`). It is
 * killed after the test if still running. Resolves with
 * `{ port, url, proc, exited, stop(signal = 'SIGTERM') }` (`url` with the password, if any):
 * `stop` kills it and resolves once it has exited. Another call with the same `port` after
 * `stop` starts it again there.
 */
async function startRedis(t, { port, password } = {}) {
  const bin = onPath('redis-server');
  if (!bin) throw new Error('redis-server is not on the PATH');
  if (!port) port = await freePort();
  // Its working directory: a Redis started without persistence still writes nothing there,
  // but a stray dump file would land in a temporary directory, not the repository.
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ws-native-redis-'));
  const args = ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir, '--loglevel', 'warning'];
  if (password !== undefined) args.push('--requirepass', password);
  const proc = spawn(bin, args, { stdio: ['ignore', 'ignore', 'inherit'] });
  let done = null;
  const exited = new Promise((resolve) =>
    proc.on('exit', (code, signal) => {
      done = { code, signal };
      resolve(done);
    })
  );
  proc.on('error', () => {});
  const stop = (signal = 'SIGTERM') => {
    if (done === null) proc.kill(signal);
    return exited;
  };
  t.after(async () => {
    await bounded(stop('SIGKILL'), 5000);
    fs.rmSync(dir, { recursive: true, force: true });
  });
  await waitFor(
    async () => {
      if (done !== null) throw new Error(`redis-server on port ${port} exited (${JSON.stringify(done)}) before answering PING`);
      return redisAnswers(port, password);
    },
    { timeout: 10000, interval: 25, what: `redis-server on port ${port} to answer PING` }
  );
  const auth = password === undefined ? '' : `:${encodeURIComponent(password)}@`;
  return { port, url: `redis://${auth}127.0.0.1:${port}`, proc, exited, stop };
}

module.exports = {
  GUID,
  acceptKey,
  bounded,
  closeAfter,
  closeEvent,
  closeServer,
  closeWss,
  delay,
  differential,
  echoBack,
  echoOnce,
  echoes,
  engineHeap,
  failure,
  findBin,
  frame,
  frameReader,
  freePort,
  hasOpenssl,
  listen,
  makeCerts,
  netServer,
  nodeChild,
  once,
  onPath,
  openClient,
  outcome,
  quietPeriod,
  rawExchange,
  rawWebSocket,
  silentPeer,
  redisAnswers,
  redisCommand,
  selfSigned,
  settleHeap,
  sha256,
  silentServer,
  startRedis,
  startTinyproxy,
  startWss,
  switchingProtocols,
  upgradeRequest,
  urlOf,
  waitFor,
  waitPort
};
