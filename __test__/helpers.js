'use strict';

// Small helpers shared by the tests.

const crypto = require('node:crypto');
const net = require('node:net');
const path = require('node:path');

// The certificates: one maker, in fixtures/certs.js.
const { hasOpenssl, makeCerts, selfSigned } = require('./fixtures/certs');

/** Listens on an ephemeral port of 127.0.0.1; resolves with the port. */
function listen(server) {
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server.address().port)));
}

/** Closes a server; resolves when it has closed. */
function closeServer(server) {
  return new Promise((resolve) => server.close(() => resolve()));
}

/** Resolves with the arguments of the next `event`. */
function once(emitter, event) {
  return new Promise((resolve) => emitter.once(event, (...args) => resolve(args)));
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
  t.after(
    () =>
      new Promise((resolve) => {
        for (const c of wss.clients) c.terminate();
        wss.close(() => resolve());
      })
  );
  return wss;
}

/** Resolves once something accepts TCP connections on 127.0.0.1:`port` (tries for ~10 s). */
async function waitPort(port) {
  for (let i = 0; i < 100; i++) {
    const up = await new Promise((resolve) => {
      const s = net.connect(port, '127.0.0.1', () => {
        s.destroy();
        resolve(true);
      });
      s.on('error', () => resolve(false));
    });
    if (up) return true;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return false;
}

/** A TCP server that accepts and never answers; closed after the test. Resolves with its port. */
async function silentServer(t) {
  const sockets = [];
  const silent = net.createServer((s) => sockets.push(s));
  const port = await listen(silent);
  t.after(() => {
    for (const s of sockets) s.destroy();
    return closeServer(silent);
  });
  return port;
}

/**
 * The C heap this process holds: glibc's bytes in use plus its mmapped blocks, and the pages of
 * the engine's slabs (the engine's memory, without the allocator's caches).
 */
function engineHeap() {
  const [used, , mapped, slabs] = require(path.join(__dirname, '..', 'lib', 'native.js')).binding.heapStats();
  return used + mapped + slabs;
}

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

module.exports = {
  closeServer,
  engineHeap,
  frame,
  hasOpenssl,
  listen,
  makeCerts,
  once,
  selfSigned,
  silentServer,
  startWss,
  upgradeRequest,
  waitPort
};
