'use strict';

// Pub/sub topics, an addition over ws with the API of uWebSockets.js and Bun:
// `ws.subscribe(topic)`, `ws.unsubscribe(topic)`, `ws.isSubscribed(topic)`, `ws.topics`,
// `wss.publish(topic, data)` and `ws.publish(topic, data)` (every subscriber but `ws`).
//
// The topic table is the engine's (src/engine/topics.rs): subscribing and publishing are
// commands in the tick's batch, so they keep their order with the sends around them, and a
// publish is framed once and fanned out in Rust with no JS per subscriber. Each server has
// its own topics (its hub, opened on first use, or at once with the `redis` option, which
// links it to the other processes sharing that Redis); client sockets share hub 0.

const native = require('./native');
const { isBlob, toBuffer } = require('./validation');

const { OP, FLAG } = native;
const REDIS_EVENTS = Object.fromEntries(Object.entries(native.wire.redisEvent).map(([name, n]) => [n, name.toLowerCase()]));

// The hub and topic of the last TOPIC command of the batch being built: the SUBSCRIBE,
// UNSUBSCRIBE and PUBLISH commands that follow in the same batch name no topic again.
let lastHub = -1;
let lastTopic = '';
let lastEpoch = -1;

/**
 * A topic as the engine takes it: a string (Buffers and typed arrays are read as UTF-8).
 *
 * @param {(String|Buffer|ArrayBufferView)} topic The topic
 * @return {String}
 */
function topicName(topic) {
  if (typeof topic === 'string') return topic;
  if (ArrayBuffer.isView(topic)) return Buffer.from(topic.buffer, topic.byteOffset, topic.byteLength).toString();
  if (topic instanceof ArrayBuffer) return Buffer.from(topic).toString();
  throw new TypeError('The topic must be a string or a Buffer');
}

/**
 * Queues a TOPIC command unless the batch's last one named the same topic.
 *
 * @param {Number} hub The hub
 * @param {String} topic The topic
 */
function useTopic(hub, topic) {
  const epoch = native.currentEpoch();
  if (hub === lastHub && topic === lastTopic && epoch === lastEpoch) return;
  native.queue(OP.TOPIC, 0, hub, topic);
  lastHub = hub;
  lastTopic = topic;
  lastEpoch = native.currentEpoch();
}

/**
 * The hub of a server, opened on first use.
 *
 * @param {WebSocketServer} server The server
 * @return {Number}
 */
function serverHub(server) {
  if (server._hub === 0) server._hub = native.binding.hubOpen(undefined);
  return server._hub;
}

/**
 * The hub of a socket: its server's, or hub 0 for a client.
 *
 * @param {WebSocket} ws The socket
 * @return {Number}
 */
function socketHub(ws) {
  return ws._server !== null ? serverHub(ws._server) : 0;
}

function subscribe(ws, topic) {
  const name = topicName(topic);
  if (ws.readyState !== 1) return;
  useTopic(socketHub(ws), name);
  native.queue(OP.SUBSCRIBE, 0, ws._id, null);
}

function unsubscribe(ws, topic) {
  const name = topicName(topic);
  if (ws.readyState !== 1) return;
  useTopic(socketHub(ws), name);
  native.queue(OP.UNSUBSCRIBE, 0, ws._id, null);
}

function isSubscribed(ws, topic) {
  const name = topicName(topic);
  if (ws.readyState !== 1) return false;
  // The subscriptions of this tick are in the batch: the engine answers once it has them.
  native.flush();
  return native.binding.isSubscribed(socketHub(ws), ws._id, name);
}

function topicsOf(ws) {
  if (ws.readyState !== 1) return [];
  native.flush();
  return native.binding.topicsOf(socketHub(ws), ws._id);
}

function subscriberCount(server, topic) {
  const name = topicName(topic);
  if (server._hub === 0) return 0;
  native.flush();
  return native.binding.subscriberCount(server._hub, name);
}

/**
 * Publishes `data` to the subscribers of `topic` on `hub` but connection `exclude` (0:
 * none), with ws's send options `binary` and `compress`. `cb(err)` follows once the engine
 * took the publish; `err` says when the link to Redis refused it (its buffer is full).
 *
 * @param {Number} hub The hub
 * @param {(WebSocketServer|null)} server Its server (told of losses without a callback)
 * @param {Number} exclude The publishing connection, or 0
 * @param {Array} args `topic, data[, options][, cb]`
 */
function publish(hub, server, exclude, [topic, data, options, cb]) {
  const name = topicName(topic);
  if (typeof options === 'function') {
    cb = options;
    options = undefined;
  }
  if (cb !== undefined && cb !== null && typeof cb !== 'function') throw new TypeError('The callback must be a function');
  if (typeof data === 'number') data = data.toString();
  if (isBlob(data)) throw new TypeError('publish() does not take a Blob: read it first (blob.arrayBuffer())');
  let binary = typeof data !== 'string';
  let flags = FLAG.COMPRESS;
  if (options !== undefined && options !== null) {
    if (options.binary !== undefined) binary = !!options.binary;
    if (options.compress === false) flags = 0;
  }
  if (binary) flags |= FLAG.BINARY;
  if (typeof data !== 'string') data = data === undefined || data === null ? Buffer.alloc(0) : toBuffer(data);
  useTopic(hub, name);
  const linked = server !== null && server._redis;
  if (cb || linked) {
    flags |= FLAG.ACK;
    native.afterFlush((lost) => {
      if (!lost) {
        if (cb) cb(null);
        return;
      }
      const err = lostError(name);
      if (cb) cb(err);
      else server.emit('redis', { type: 'lost', topic: name, error: err });
    });
  }
  native.queue(OP.PUBLISH, flags, exclude, data);
}

/**
 * The error of a publish the link to Redis refused.
 *
 * @param {String} topic The topic
 * @return {Error}
 */
function lostError(topic) {
  const err = new Error(
    `The publish to "${topic}" did not reach the other processes: the Redis buffer (maxBufferedMessages / maxBufferedBytes) is full`
  );
  err.code = 'WS_ERR_PUBLISH_LOST';
  return err;
}

/**
 * The server's `redis` option as the engine takes it.
 *
 * @param {(String|Object)} redis The option
 * @return {Object}
 */
function redisOptions(redis) {
  const o = typeof redis === 'string' || redis instanceof URL ? { url: String(redis) } : redis;
  if (o === null || typeof o !== 'object' || typeof o.url !== 'string' && !(o.url instanceof URL)) {
    throw new TypeError('The "redis" option must be a URL or { url, prefix, maxBufferedMessages, maxBufferedBytes }');
  }
  const count = (name) => {
    const v = o[name];
    if (v !== undefined && !(Number.isInteger(v) && v >= 0)) throw new RangeError(`redis.${name} must be a non-negative integer`);
    return v;
  };
  if (o.prefix !== undefined && typeof o.prefix !== 'string') throw new TypeError('redis.prefix must be a string');
  return {
    url: String(o.url),
    prefix: o.prefix,
    maxBufferedMessages: count('maxBufferedMessages'),
    maxBufferedBytes: count('maxBufferedBytes'),
    backoffMinMs: count('backoffMin'),
    backoffMaxMs: count('backoffMax'),
    rejoinWaitMs: count('rejoinWait')
  };
}

/**
 * Links a server to Redis (its `redis` option): its hub opens now, so that it connects.
 *
 * @param {WebSocketServer} server The server
 * @param {(String|Object)} redis The option
 */
function linkServer(server, redis) {
  const options = redisOptions(redis);
  try {
    server._hub = native.binding.hubOpen(options);
  } catch (err) {
    const bad = new TypeError(`Invalid Redis URL "${options.url}": ${err.message}`);
    bad.code = 'ERR_INVALID_URL';
    throw bad;
  }
  server._redis = true;
  native.hubs.set(server._hub, server);
}

/**
 * A REDIS record for a server: `'redis'` events, never `'error'` (an outage must not crash a
 * server that does not listen for it).
 *
 * @param {WebSocketServer} server The server
 * @param {Buffer} payload `[event u8][message]`
 */
function onRedisRecord(server, payload) {
  const type = REDIS_EVENTS[payload[0]];
  const message = payload.subarray(1).toString();
  if (type === 'stopped') {
    // The closed server's link has sent what it had: the last record for the hub.
    for (const [hub, s] of native.closingHubs) {
      if (s !== server) continue;
      native.closingHubs.delete(hub);
      native.hubs.delete(hub);
    }
  } else if (type === 'connect') {
    server.emit('redis', { type });
  } else {
    const error = new Error(`Redis: ${message}`);
    error.code = 'WS_ERR_REDIS';
    server.emit('redis', { type, error });
  }
}

/**
 * The server closed: its topics go, and its link to Redis stops.
 *
 * @param {WebSocketServer} server The server
 */
function closeServerHub(server) {
  if (server._hub === 0) return;
  if (server._redis) {
    // Until the link has sent what was published (a STOPPED record), the process stays up.
    native.closingHubs.set(server._hub, server);
  } else {
    native.hubs.delete(server._hub);
  }
  native.binding.hubClose(server._hub);
  server._hub = 0;
}

module.exports = {
  closeServerHub,
  isSubscribed,
  linkServer,
  onRedisRecord,
  publish,
  serverHub,
  socketHub,
  subscribe,
  subscriberCount,
  topicsOf,
  unsubscribe
};
