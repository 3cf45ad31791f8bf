'use strict';

// The boundary with the Rust engine, in both directions, batched:
// - events arrive as one Buffer of records per threadsafe call; `dispatch` splits it with
//   `subarray` and hands each record to its connection or server;
// - commands (send, ping, close...) are appended to one Buffer during a tick and handed to
//   the engine in one `flush` call: at the end of the dispatch, or from a microtask queued by
//   the first command outside one.
// The format and its numbers are the engine's (src/engine/wire.rs): the numbers are read from
// the binding, never copied here.

const binding = loadBinding();
const { fields, upgradeRecord } = require('./records');

/**
 * The addon: its platform package, else a binary built in this directory (the napi CLI's
 * loader, binding.js, looks for both).
 *
 * @return {Object}
 */
function loadBinding() {
  try {
    return require('../binding.js');
  } catch (err) {
    throw require('./platform').noBinaryError(err);
  }
}

const wire = binding.wire();
const { event: EVENT, op: OP, flag: FLAG } = wire;
const EVENT_EXTERNAL = wire.eventFlag.EXTERNAL;
const HEADER = wire.headerLen;
// Buffers at least this large go to the engine by reference; smaller ones are copied into
// the command buffer, which is cheaper than one more N-API value each.
const EXTERNAL_MIN = 4096;
const COMMANDS_SIZE = 64 * 1024;
const COMMANDS_KEPT = 4 * 1024 * 1024;
const SHRINK_AFTER = 64;

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

// A connection id is a slot and the slot's generation (src/engine/registry.rs): the engine
// reuses a slot once JS has released its id, so the slots of the connections open at once
// are dense, and an array indexed by slot holds them (a Map's table takes four to six
// times the room: 458 KB against 80-120 KB at 10,000 connections).
const SLOT_MASK = 2 ** wire.slotBits - 1;

/**
 * The WebSockets bound to engine connections, by slot of their `_id`; each counts towards
 * keeping the process alive. Deleting one releases its id: that is JS's last command for it.
 */
class Connections {
  constructor() {
    this.slots = [];
  }

  get(id) {
    const ws = this.slots[id & SLOT_MASK];
    return ws !== undefined && ws._id === id ? ws : undefined;
  }

  set(id, ws) {
    const slot = id & SLOT_MASK;
    if (this.slots[slot] === undefined && active++ === 0) keepAlive.ref();
    this.slots[slot] = ws;
  }

  delete(id) {
    const slot = id & SLOT_MASK;
    const ws = this.slots[slot];
    if (ws === undefined || ws._id !== id) return false;
    this.slots[slot] = undefined;
    if (--active === 0) keepAlive.unref();
    release(id);
    return true;
  }
}

/** Connection id -> WebSocket (`_onNative(kind, payload)`). */
const connections = new Connections();
/** Server id -> object with `_onUpgrade(id, request)` (see `upgradeRecord` in records.js). */
const servers = new TrackedMap();
/** Hub id -> the server linked to Redis through it, with `_onRedis(payload)`. */
const hubs = new Map();
/**
 * Hubs of closed servers whose link to Redis is still sending what was published: each
 * keeps the process alive until the engine says it is done.
 */
const closingHubs = new TrackedMap();
/** For the batch being built: what runs once the engine took each PUBLISH with `ACK`. */
let published = [];

let commands = Buffer.allocUnsafe(COMMANDS_SIZE);
// Flushes in a row that used less than a quarter of a grown `commands` (see keepOrShrink).
let underused = 0;
let length = 0;
let external = null;
// The previous SEND's payload, for FLAG.REPEAT: the value, its byte length, and where its bytes
// start in `commands` (-1 when it went as an external buffer).
let lastData = null;
let lastLength = 0;
let lastStart = 0;
let scheduled = false;
let dispatching = false;
/** Increases at every flush: a socket's unflushed byte count is valid for one epoch only. */
let epoch = 0;

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
    let payload = null;
    const start = pos;
    if (flags & EVENT_EXTERNAL) {
      payload = binding.takeExternal();
    } else {
      // An upgrade request is read in place, without a view of its own.
      if (kind !== EVENT.UPGRADE) payload = buf.subarray(pos, pos + len);
      pos += len;
    }
    try {
      if (kind === EVENT.UPGRADE) {
        const request = payload === null ? upgradeRecord(buf, start) : upgradeRecord(payload, 0);
        const server = servers.get(request.server);
        if (server !== undefined) {
          server._onUpgrade(id, request);
        } else {
          // The server closed while the request was on its way: ws answers 503.
          binding.reject(id, 503, 'Service Unavailable', []);
          release(id);
        }
      } else if (kind === EVENT.REDIS) {
        const server = hubs.get(id);
        if (server !== undefined) server._onRedis(payload);
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
  if (op === OP.SEND && data === lastData && data !== null && sameBytes(data)) {
    ensure(HEADER);
    header(op, flags | FLAG.REPEAT, id, lastLength);
    schedule();
    return lastLength;
  }
  lastData = op === OP.SEND ? data : null;
  lastStart = length + HEADER;
  lastLength = 0;
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
    lastStart = -1;
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
  lastLength = n;
  schedule();
  return n;
}

/**
 * Whether `data` (the same value as the previous SEND's) still has the bytes that were
 * queued: a Buffer may have been changed in between.
 *
 * @param {(Buffer|String)} data The payload
 * @return {Boolean}
 */
function sameBytes(data) {
  if (typeof data === 'string' || lastStart === -1) return true;
  return data.length === lastLength && commands.compare(data, 0, lastLength, lastStart, lastStart + lastLength) === 0;
}

/**
 * Tells the engine JS is done with connection `id` (it sends no command for it after this):
 * the id's slot can serve another connection once the engine is done with it too.
 *
 * @param {Number} id The connection id
 */
function release(id) {
  queue(OP.RELEASE, 0, id, null);
}

/**
 * After a flush of `used` bytes: the command buffer, grown by a large batch, is kept for the
 * next one (growing again would copy what is queued and fault in fresh pages every time), up
 * to COMMANDS_KEPT, and goes back to COMMANDS_SIZE once SHRINK_AFTER flushes in a row have
 * used less than a quarter of it.
 *
 * @param {Number} used The bytes the flush took
 */
function keepOrShrink(used) {
  if (commands.length === COMMANDS_SIZE) return;
  if (commands.length <= COMMANDS_KEPT && used * 4 >= commands.length) {
    underused = 0;
  } else if (commands.length > COMMANDS_KEPT || ++underused >= SHRINK_AFTER) {
    underused = 0;
    commands = Buffer.allocUnsafe(COMMANDS_SIZE);
  }
}

/** Hands the queued commands to the engine in one call. */
function flush() {
  scheduled = false;
  if (length === 0) return;
  const cmds = commands.subarray(0, length);
  const ext = external;
  length = 0;
  external = null;
  lastData = null;
  epoch++;
  const lost = binding.flush(cmds, ext || undefined);
  keepOrShrink(cmds.length);
  if (published.length !== 0) {
    const done = published;
    published = [];
    for (let i = 0; i < done.length; i++) process.nextTick(done[i], lost !== null && lost !== undefined && lost[i] === true);
  }
}

/**
 * Runs `fn(lost)` on the next tick once the engine took the PUBLISH command queued next
 * (with `FLAG.ACK`); `lost`: the link to Redis refused it.
 *
 * @param {Function} fn The function
 */
function afterFlush(fn) {
  published.push(fn);
}

/** The current flush epoch. */
function currentEpoch() {
  return epoch;
}

module.exports = {
  afterFlush,
  closingHubs,
  hubs,
  wire,
  EVENT,
  OP,
  FLAG,
  binding,
  connections,
  currentEpoch,
  fields,
  flush,
  queue,
  release,
  servers
};
