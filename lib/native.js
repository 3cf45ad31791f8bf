'use strict';

// The boundary with the Rust engine, in both directions, batched:
// - events arrive as one Buffer of records per threadsafe call; `dispatch` splits it with
//   `subarray` and hands each record to its connection or server;
// - commands (send, ping, close...) are appended to one Buffer during a tick and handed to
//   the engine in one `flush` call, at the end of the dispatch or on the next tick.
// Record layouts are documented in src/engine/events.rs and src/engine/outbox.rs.

const binding = require('../binding.js');

const EVENT = {
  OPEN: 1,
  TEXT: 2,
  BINARY: 3,
  PING: 4,
  PONG: 5,
  CLOSE_FRAME: 6,
  CLOSED: 7,
  ERROR: 8,
  WRITTEN: 9,
  UPGRADE: 10,
  HANDSHAKE_FAILED: 11,
  FRAGMENTS: 12,
  BRIDGE_OUT: 13,
  BRIDGE_END: 14
};

const OP = {
  SEND: 1,
  PING: 2,
  PONG: 3,
  CLOSE: 4,
  TERMINATE: 5,
  PAUSE: 6,
  RESUME: 7,
  RAW_WRITE: 8,
  RAW_END: 9,
  BRIDGE_IN: 10,
  BRIDGE_EOF: 11
};

const FLAG = {
  BINARY: 1,
  FIN: 2,
  ACK: 4,
  EXTERNAL: 8,
  MASK_SET: 16,
  MASK: 32,
  COMPRESS: 64
};

const EVENT_EXTERNAL = 1;
const HEADER = 10;
// Buffers at least this large go to the engine by reference; smaller ones are copied into
// the command buffer, which is cheaper than one more N-API value each.
const EXTERNAL_MIN = 4096;
const COMMANDS_SIZE = 64 * 1024;

// The engine's threads never keep Node alive (its threadsafe function is weak). Like Node's
// own sockets, an open connection or a listening server does: one ref'd timer stands for all.
const keepAlive = setInterval(() => {}, 1 << 30);
keepAlive.unref();
let active = 0;

/**
 * A Map whose size counts towards keeping the process alive.
 */
class TrackedMap extends Map {
  set(key, value) {
    if (!this.has(key) && active++ === 0) keepAlive.ref();
    return super.set(key, value);
  }

  delete(key) {
    const had = super.delete(key);
    if (had && --active === 0) keepAlive.unref();
    return had;
  }
}

/** Connection id -> object with `_onNative(kind, payload)`. */
const connections = new TrackedMap();
/** Server id -> object with `_onUpgrade(id, fields)`. */
const servers = new TrackedMap();

let commands = Buffer.allocUnsafe(COMMANDS_SIZE);
let length = 0;
let external = null;
let scheduled = false;
let dispatching = false;
/** Increases at every flush: a socket's unflushed byte count is valid for one epoch only. */
let epoch = 0;

/**
 * Reads the length-prefixed fields of a record (`[len u32 LE][bytes]` each).
 *
 * @param {Buffer} buf The record payload
 * @return {Buffer[]} The fields
 */
function fields(buf) {
  const out = [];
  let pos = 0;
  while (pos + 4 <= buf.length) {
    const n = buf.readUInt32LE(pos);
    out.push(buf.subarray(pos + 4, pos + 4 + n));
    pos += 4 + n;
  }
  return out;
}

/**
 * Reads the length-prefixed fields of a record as UTF-8 strings, without Buffer views.
 *
 * @param {Buffer} buf The record payload
 * @param {Number} [from=0] The index of the first field to read
 * @return {String[]} The fields from `from` on
 */
function strings(buf, from = 0) {
  const out = [];
  let pos = 0;
  for (let i = 0; pos + 4 <= buf.length; i++) {
    const n = buf.readUInt32LE(pos);
    if (i >= from) out.push(buf.utf8Slice(pos + 4, pos + 4 + n));
    pos += 4 + n;
  }
  return out;
}

/**
 * Splits a batch of events and delivers each. An exception thrown by a listener does not
 * stop the batch: it is rethrown on the next tick, where Node reports it as uncaught.
 *
 * @param {Buffer} buf The batch
 */
function dispatch(buf) {
  dispatching = true;
  let pos = 0;
  while (pos + HEADER <= buf.length) {
    const kind = buf[pos];
    const flags = buf[pos + 1];
    const id = buf.readUInt32LE(pos + 2);
    const len = buf.readUInt32LE(pos + 6);
    pos += HEADER;
    let payload;
    if (flags & EVENT_EXTERNAL) {
      payload = binding.takeExternal();
    } else {
      payload = buf.subarray(pos, pos + len);
      pos += len;
    }
    try {
      if (kind === EVENT.UPGRADE) {
        // Field 0 is the server id (u32); the others are text.
        const server = servers.get(payload.readUInt32LE(4));
        if (server !== undefined) server._onUpgrade(id, strings(payload, 1));
      } else {
        const target = connections.get(id);
        if (target !== undefined) target._onNative(kind, payload);
      }
    } catch (err) {
      process.nextTick(rethrow, err);
    }
  }
  dispatching = false;
  flush();
}

function rethrow(err) {
  throw err;
}

binding.init(dispatch);

function ensure(n) {
  if (length + n <= commands.length) return;
  let size = commands.length * 2;
  while (size < length + n) size *= 2;
  const bigger = Buffer.allocUnsafe(size);
  commands.copy(bigger, 0, 0, length);
  commands = bigger;
}

function header(op, flags, id, len) {
  commands[length] = op;
  commands[length + 1] = flags;
  commands.writeUInt32LE(id, length + 2);
  commands.writeUInt32LE(len, length + 6);
  length += HEADER;
}

// Commands queued outside an event batch are flushed by a microtask: it runs once the current
// synchronous code and the promise continuations queued before it are done, so a loop of sends
// still goes out in one call. (A process.nextTick queued from a promise continuation inside a
// threadsafe-function callback was seen to wait for the next event-loop turn.)
function schedule() {
  if (!scheduled && !dispatching) {
    scheduled = true;
    queueMicrotask(flush);
  }
}

/**
 * Queues a command for the engine.
 *
 * @param {Number} op The operation (`OP`)
 * @param {Number} flags `FLAG` bits
 * @param {Number} id The connection id
 * @param {(Buffer|String|null)} data The payload; strings are written as UTF-8
 * @return {Number} The payload's length in bytes
 */
function queue(op, flags, id, data) {
  let n = 0;
  if (data === null || data === undefined) {
    ensure(HEADER);
    header(op, flags, id, 0);
  } else if (typeof data === 'string') {
    if (data.length > EXTERNAL_MIN) return queue(op, flags, id, Buffer.from(data));
    ensure(HEADER + data.length * 3);
    n = commands.utf8Write(data, length + HEADER);
    header(op, flags, id, n);
    length += n;
  } else if (data.length >= EXTERNAL_MIN) {
    n = data.length;
    ensure(HEADER);
    header(op, flags | FLAG.EXTERNAL, id, data.length);
    (external || (external = [])).push(data);
  } else {
    n = data.length;
    ensure(HEADER + n);
    header(op, flags, id, n);
    commands.set(data, length);
    length += n;
  }
  schedule();
  return n;
}

/** Hands the queued commands to the engine in one call. */
function flush() {
  scheduled = false;
  if (length === 0) return;
  const cmds = commands.subarray(0, length);
  const ext = external;
  length = 0;
  external = null;
  epoch++;
  binding.flush(cmds, ext || undefined);
  if (commands.length > 4 * COMMANDS_SIZE) commands = Buffer.allocUnsafe(COMMANDS_SIZE);
}

/** The current flush epoch. */
function currentEpoch() {
  return epoch;
}

module.exports = {
  EVENT,
  OP,
  FLAG,
  binding,
  connections,
  currentEpoch,
  fields,
  flush,
  queue,
  servers,
  strings
};
