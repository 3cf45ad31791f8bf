'use strict';

// The WebSocket class with ws's API. It adapts the API only: the handshake, frames, masking,
// validation and timers run in the engine (src/engine/connection/); this file turns engine
// events into ws's events and method calls into engine commands.

const EventEmitter = require('events');

const native = require('./native');
const { EVENT, OP, FLAG } = native;
const { abortHandshake, emitErrorAndClose, handleResponse, initAsClient, retryWithNodeTls } = require('./client');
const { EngineSocket, HeldBy } = require('./engine-socket');
const { EventTarget, defineEventAttributes } = require('./event-target');
const { addEventListener, removeEventListener } = EventTarget;
const { BINARY_TYPES, EMPTY_BUFFER, HIGH_WATER_MARK, STATE, kWriteEnded } = require('./constants');
const { parseExtensionNames } = require('./extension');
const { requestStub, responseFromFields } = require('./http-shims');
const { fields } = require('./records');
const topics = require('./topics');
const { isBlob, isValidStatusCode, toBuffer } = require('./validation');

const { CLOSE_RECEIVED, CLOSE_SENT, ERROR_EMITTED, PAUSED, DRAINING_BLOBS, REPLAY_SCHEDULED, WRITE_ENDED, CLOSED_WHILE_PAUSED } =
  STATE;
const { BINARY_TYPE, BINARY_TYPE_SHIFT, BACKPRESSURED, DRAIN_WANTED, OVER_LIMIT } = STATE;
const ERROR_ENDS = native.wire.errorEnds;
const readyStates = ['CONNECTING', 'OPEN', 'CLOSING', 'CLOSED'];
// `_socket.destroy()` was called; and a message went to compression since.
const DESTROYED = 1;
const DESTROYED_WHILE_COMPRESSING = 2;
// The engine's code for a TLS handshake it leaves to Node's TLS (src/engine/tls.rs).
const NEEDS_NODE_TLS = native.wire.tlsNeedsNode;
const NO_EXTENSIONS = Object.freeze({});
const ERROR_CTORS = [Error, RangeError, SyntaxError];

/**
 * The listener table of a WebSocket: no inherited names, so `events[type]` sees only what
 * was added (as with `{ __proto__: null }`), but a fast-mode object (Node's EventEmitter once
 * made its tables this way).
 *
 * @constructor
 */
function Listeners() {}
Listeners.prototype = Object.create(null);

/**
 * EventEmitter without its constructor: `EventEmitter.init` gives every emitter five own
 * properties and a `{ __proto__: null }` listener table (a dictionary of over 200 bytes),
 * where a WebSocket needs two (set in its constructor). The others are read from
 * `EventEmitter.prototype`, which holds their defaults (`_maxListeners`, the
 * captureRejections flag, which then follows `EventEmitter.captureRejections`), until
 * `setMaxListeners()` sets one. Prototype chain and statics are EventEmitter's.
 *
 * @constructor
 */
function Emitter() {}
Emitter.prototype = EventEmitter.prototype;
Object.setPrototypeOf(Emitter, EventEmitter);

/**
 * Class representing a WebSocket.
 *
 * @extends EventEmitter
 */
class WebSocket extends Emitter {
  /**
   * Create a new `WebSocket`.
   *
   * @param {(String|URL)} address The URL to which to connect
   * @param {(String|String[])} [protocols] The subprotocols
   * @param {Object} [options] Connection options
   */
  constructor(address, protocols, options) {
    super();
    // EventEmitter's listener table, as a fast-mode object: `{ __proto__: null }` (what
    // EventEmitter makes) is a dictionary of over 200 bytes, held by every idle connection.
    this._events = new Listeners();
    this._eventsCount = 0;

    // Every idle connection holds this object: booleans are bits of `_state`, what few
    // connections use is in `_rare` (made on first use), and only clients have the fields
    // of a client.
    this._server = null;
    this._readyState = WebSocket.CONNECTING;
    this._id = 0;
    this._unflushed = 0;
    this._epoch = -1;
    this._callbacks = null;
    // Flags and the binaryType's index (see constants.STATE).
    this._state = 0;
    this._rare = null;

    if (address !== null) {
      this._redirects = 0;
      this._req = null;
      this._handshake = null;
      this._url = undefined;

      if (protocols === undefined) {
        protocols = [];
      } else if (!Array.isArray(protocols)) {
        if (typeof protocols === 'object' && protocols !== null) {
          options = protocols;
          protocols = [];
        } else {
          protocols = [protocols];
        }
      }

      initAsClient(this, address, protocols, options);
    }
  }

  /**
   * Gives the fields of one connection the values the constructor gives a client (the
   * binaryType stays), so that a closed client can run another connection on the same
   * object: lib/reconnecting-websocket.js calls it before each new attempt. A field added to
   * the constructor for one connection's state is reset here too.
   *
   * @private
   */
  _resetConnection() {
    this._readyState = WebSocket.CONNECTING;
    this._id = 0;
    this._unflushed = 0;
    this._epoch = -1;
    this._callbacks = null;
    this._state &= BINARY_TYPE;
    this._rare = null;
    this._redirects = 0;
    this._req = null;
    this._handshake = null;
  }

  /**
   * For historical reasons, the custom "nodebuffer" type is used by the default
   * instead of "blob".
   *
   * @type {String}
   */
  get binaryType() {
    return BINARY_TYPES[(this._state & BINARY_TYPE) >> BINARY_TYPE_SHIFT];
  }

  set binaryType(type) {
    const i = BINARY_TYPES.indexOf(type);
    if (i === -1) return;
    this._state = (this._state & ~BINARY_TYPE) | (i << BINARY_TYPE_SHIFT);
  }

  /**
   * @type {Number}
   */
  get bufferedAmount() {
    const unflushed = this._epoch === native.currentEpoch() ? this._unflushed : 0;
    if (this._id === 0 || this._readyState === WebSocket.CLOSED) {
      return afterClose(this) + unflushed;
    }
    return afterClose(this) + unflushed + native.binding.bufferedAmount(this._id);
  }

  /**
   * @type {String}
   */
  get extensions() {
    return this._rare === null ? '' : Object.keys(this._rare.extensions).join();
  }

  /**
   * @type {Boolean}
   */
  get isPaused() {
    return (this._state & PAUSED) !== 0;
  }

  /**
   * Whether the buffered output is past the high-water mark (`highWaterMark`, 64 KiB by
   * default): 'drain' follows once it is back at the low-water mark. An addition over ws.
   *
   * @type {Boolean}
   */
  get isBackpressured() {
    if ((this._state & BACKPRESSURED) !== 0) return true;
    // Sent in this tick, not handed to the engine yet: the engine owes a 'drain' for it.
    if (this._epoch !== native.currentEpoch() || this._unflushed <= highWaterMark(this)) return false;
    if ((this._state & DRAIN_WANTED) === 0 && this._readyState === WebSocket.OPEN) {
      this._state |= DRAIN_WANTED;
      native.queue(OP.WANT_DRAIN, 0, this._id, null);
    }
    return true;
  }

  /**
   * @type {Function}
   */
  /* istanbul ignore next */
  get onclose() {
    return null;
  }

  /**
   * @type {Function}
   */
  /* istanbul ignore next */
  get onerror() {
    return null;
  }

  /**
   * @type {Function}
   */
  /* istanbul ignore next */
  get onopen() {
    return null;
  }

  /**
   * @type {Function}
   */
  /* istanbul ignore next */
  get onmessage() {
    return null;
  }

  /**
   * @type {String}
   */
  get protocol() {
    return this._rare === null ? '' : this._rare.protocol;
  }

  /**
   * @type {Number}
   */
  get readyState() {
    return this._readyState;
  }

  /**
   * @type {String}
   */
  get url() {
    return this._url;
  }

  /**
   * The connection's socket, as ws's `_socket` (null until the connection is open): the
   * Node socket a bridged connection runs on, else the engine's (see engine-socket.js).
   *
   * @type {(EngineSocket|net.Socket|null)}
   */
  get _socket() {
    const rare = this._rare;
    if (rare !== null && rare.socket !== null) return rare.socket;
    if (rare !== null && rare.bridge !== null) return rare.bridge;
    if (this._id === 0 || this._readyState === WebSocket.CONNECTING) return null;
    return (rareOf(this).socket = new EngineSocket(new HeldBy(this)));
  }

  set _socket(socket) {
    rareOf(this).socket = socket;
  }

  /**
   * Binds this object to an engine connection: server side after the 101 was queued, client
   * side after Node's request got its 101 and handed the socket over.
   *
   * @param {Number} id The engine's connection id
   * @param {net.Socket} [bridge] The Node socket behind it, when the engine bridges one
   * @param {EngineSocket} [socket] The request's socket, when the server made one
   * @private
   */
  _attach(id, bridge, socket) {
    if (bridge) rareOf(this).bridge = bridge;
    if (socket) rareOf(this).socket = socket;
    this._id = id;
    this._readyState = WebSocket.OPEN;
    native.connections.set(id, this);
  }

  /**
   * Records what the handshake agreed on (kept out of line: most connections agree on none).
   *
   * @param {String} protocol The subprotocol, or ''
   * @param {Object} [extensions] The extensions, by name
   * @private
   */
  _agree(protocol, extensions) {
    if (protocol) rareOf(this).protocol = protocol;
    if (extensions) rareOf(this).extensions = extensions;
  }

  /**
   * Emit the `'close'` event.
   *
   * @private
   */
  emitClose() {
    this._readyState = WebSocket.CLOSED;
    if (this._id !== 0) native.connections.delete(this._id);
    if (this._server !== null) {
      // ws removes the client from `wss.clients` in a 'close' listener registered first.
      const server = this._server;
      this._server = null;
      server._clientClosed(this);
    }
    const rare = this._rare;
    this.emit('close', rare === null ? 1006 : rare.closeCode, rare === null ? EMPTY_BUFFER : rare.closeMessage);
  }

  /**
   * Start a closing handshake.
   *
   * @param {Number} [code] Status code explaining why the connection is closing
   * @param {(String|Buffer)} [data] The reason why the connection is closing
   * @public
   */
  close(code, data) {
    if (this.readyState === WebSocket.CLOSED) return;
    if (this.readyState === WebSocket.CONNECTING) {
      abortHandshake(this, 'WebSocket was closed before the connection was established');
      return;
    }

    if (this.readyState === WebSocket.CLOSING) return;

    let payload = EMPTY_BUFFER;
    if (code !== undefined) {
      if (typeof code !== 'number' || !isValidStatusCode(code)) {
        throw new TypeError('First argument must be a valid error code number');
      }
      const reason = data === undefined || !data.length ? EMPTY_BUFFER : toBuffer(data);
      if (reason.length > 123) {
        throw new RangeError('The message must not be greater than 123 bytes');
      }
      payload = Buffer.allocUnsafe(2 + reason.length);
      payload.writeUInt16BE(code, 0);
      reason.copy(payload, 2);
    }

    this._readyState = WebSocket.CLOSING;
    this._state |= CLOSE_SENT;
    if (this._held(() => native.queue(OP.CLOSE, 0, this._id, payload))) return;
    native.queue(OP.CLOSE, 0, this._id, payload);
  }

  /**
   * Pause the socket.
   *
   * @public
   */
  pause() {
    if (this.readyState === WebSocket.CONNECTING || this.readyState === WebSocket.CLOSED) {
      return;
    }
    this._state |= PAUSED;
    if ((this._state & CLOSED_WHILE_PAUSED) === 0 && pausedQueue(this) === null) rareOf(this).pausedQueue = [];
    native.queue(OP.PAUSE, 0, this._id, null);
  }

  /**
   * Send a ping.
   *
   * @param {*} [data] The data to send
   * @param {Boolean} [mask] Indicates whether or not to mask `data`
   * @param {Function} [cb] Callback which is executed when the ping is sent
   * @public
   */
  ping(data, mask, cb) {
    this._control(OP.PING, data, mask, cb);
  }

  /**
   * Send a pong.
   *
   * @param {*} [data] The data to send
   * @param {Boolean} [mask] Indicates whether or not to mask `data`
   * @param {Function} [cb] Callback which is executed when the pong is sent
   * @public
   */
  pong(data, mask, cb) {
    this._control(OP.PONG, data, mask, cb);
  }

  /**
   * Shared body of `ping()` and `pong()`.
   *
   * @private
   */
  _control(op, data, mask, cb) {
    if (this.readyState === WebSocket.CONNECTING) {
      throw new Error('WebSocket is not open: readyState 0 (CONNECTING)');
    }

    if (typeof data === 'function') {
      cb = data;
      data = mask = undefined;
    } else if (typeof mask === 'function') {
      cb = mask;
      mask = undefined;
    }

    if (typeof data === 'number') data = data.toString();

    if (this.readyState !== WebSocket.OPEN) {
      sendAfterClose(this, data, cb);
      return;
    }

    const blob = isBlob(data);
    const buf = blob ? null : data === undefined || data === null ? EMPTY_BUFFER : toBuffer(data);
    if ((blob ? data.size : buf.length) > 125) {
      throw new RangeError('The data size must not be greater than 125 bytes');
    }

    let flags = 0;
    if (mask !== undefined) flags |= FLAG.MASK_SET | (mask ? FLAG.MASK : 0);
    if (blob) this._withBlob(data, cb, (bytes) => this._enqueue(op, flags, bytes, cb));
    else this._enqueue(op, flags, buf, cb);
  }

  /**
   * Resume the socket.
   *
   * @public
   */
  resume() {
    if (this.readyState === WebSocket.CONNECTING || this.readyState === WebSocket.CLOSED) {
      return;
    }
    this._state &= ~PAUSED;
    native.queue(OP.RESUME, 0, this._id, null);
    if (pausedQueue(this) !== null && (this._state & REPLAY_SCHEDULED) === 0) {
      this._state |= REPLAY_SCHEDULED;
      process.nextTick(replayPaused, this);
    }
  }

  /**
   * Send a data message.
   *
   * @param {*} data The message to send
   * @param {Object} [options] Options object
   * @param {Boolean} [options.binary] Specifies whether `data` is binary or text
   * @param {Boolean} [options.compress] Specifies whether or not to compress `data`
   * @param {Boolean} [options.fin=true] Specifies whether the fragment is the last one
   * @param {Boolean} [options.mask] Specifies whether or not to mask `data`
   * @param {Function} [cb] Callback which is executed when data is written out
   * @public
   */
  send(data, options, cb) {
    if (typeof options === 'function') {
      cb = options;
      options = {};
    }

    if (this.readyState === WebSocket.CONNECTING) {
      throw new Error('WebSocket is not open: readyState 0 (CONNECTING)');
    }

    if (typeof data === 'number') data = data.toString();

    if (this.readyState !== WebSocket.OPEN) {
      sendAfterClose(this, data, cb);
      return;
    }

    // Compressed when permessage-deflate was agreed, unless `compress: false`; the engine
    // applies ws's threshold.
    let flags = FLAG.FIN | FLAG.COMPRESS;
    let binary = typeof data !== 'string';
    if (options !== undefined) {
      if (options.binary !== undefined) binary = !!options.binary;
      if (options.fin === false) flags &= ~FLAG.FIN;
      if (options.compress === false) flags &= ~FLAG.COMPRESS;
      if (options.mask !== undefined) {
        flags |= FLAG.MASK_SET | (options.mask ? FLAG.MASK : 0);
      }
    }
    if (binary) flags |= FLAG.BINARY;

    if (isBlob(data)) {
      this._withBlob(data, cb, (buf) => this._enqueue(OP.SEND, flags, buf, cb));
    } else if (typeof data === 'string') {
      this._enqueue(OP.SEND, flags, data, cb);
    } else {
      this._enqueue(OP.SEND, flags, data === undefined || data === null ? EMPTY_BUFFER : toBuffer(data), cb);
    }
  }

  /**
   * Subscribes to `topic`: what is published to it on this socket's server (`wss.publish`,
   * or another socket's `publish`) is sent to this socket. An addition over ws, as in
   * uWebSockets.js and Bun. Does nothing unless the socket is open.
   *
   * @param {(String|Buffer)} topic The topic
   * @public
   */
  subscribe(topic) {
    topics.subscribe(this, topic);
  }

  /**
   * @param {(String|Buffer)} topic The topic
   * @public
   */
  unsubscribe(topic) {
    topics.unsubscribe(this, topic);
  }

  /**
   * @param {(String|Buffer)} topic The topic
   * @return {Boolean}
   * @public
   */
  isSubscribed(topic) {
    return topics.isSubscribed(this, topic);
  }

  /**
   * The topics this socket is subscribed to, in subscription order.
   *
   * @type {String[]}
   */
  get topics() {
    return topics.topicsOf(this);
  }

  /**
   * Publishes `data` to every subscriber of `topic` on this socket's server but this socket.
   *
   * @param {(String|Buffer)} topic The topic
   * @param {*} data The message, as for `send()`
   * @param {Object} [options] `binary`, `compress`, as for `send()`
   * @param {Function} [cb] Called once the message was handed out (see `wss.publish`)
   * @public
   */
  publish(topic, data, options, cb) {
    const server = this._server;
    topics.publish(topics.socketHub(this), server, this._id, [topic, data, options, cb]);
  }

  /**
   * Queues a frame for the engine, or behind a Blob being read, so order is kept.
   *
   * @private
   */
  _enqueue(op, flags, data, cb) {
    if (this._held(() => this._enqueue(op, flags, data, cb))) return;
    if (this._rare !== null && this._rare.socketDestroyed !== 0) {
      this._failAfterDestroy(op, flags, cb);
      return;
    }
    if ((this._state & OVER_LIMIT) !== 0 && op === OP.SEND) {
      // Past `maxBackpressure` (without closeOnBackpressureLimit): dropped until the drain.
      if (cb) process.nextTick(cb, backpressureLimitError());
      return;
    }
    if (cb) {
      flags |= FLAG.ACK;
      (this._callbacks || (this._callbacks = [])).push(cb);
    }
    const n = native.queue(op, flags, this._id, data);
    const epoch = native.currentEpoch();
    if (this._epoch !== epoch) {
      this._epoch = epoch;
      this._unflushed = 0;
    }
    this._unflushed += n;
  }

  /**
   * `_socket.destroy()` was called: the connection is ending, and sends made meanwhile fail
   * as ws's do on a destroyed socket.
   *
   * @private
   */
  _socketDestroyed() {
    if (this._readyState === WebSocket.OPEN) rareOf(this).socketDestroyed = DESTROYED;
  }

  /**
   * A send after `_socket.destroy()`: Node's error for a write to a destroyed socket, or,
   * once a message went to compression (ws compresses before writing, and what follows
   * waits behind it), ws's error for a socket closed while compressing.
   *
   * @private
   */
  _failAfterDestroy(op, flags, cb) {
    const rare = this._rare;
    if (op === OP.SEND && (flags & FLAG.COMPRESS) !== 0 && rare.extensions['permessage-deflate']) {
      rare.socketDestroyed = DESTROYED_WHILE_COMPRESSING;
    }
    if (!cb) return;
    const err =
      rare.socketDestroyed === DESTROYED_WHILE_COMPRESSING
        ? new Error('The socket was closed while data was being compressed')
        : streamDestroyed();
    process.nextTick(cb, err);
  }

  /**
   * Reads a Blob, holding later sends until it is read so that order is kept.
   *
   * @private
   */
  _withBlob(blob, cb, then) {
    const entry = { done: false, run: null };
    const rare = rareOf(this);
    if (rare.blobQueue === null) rare.blobQueue = [];
    rare.blobQueue.push(entry);
    blob.arrayBuffer().then(
      (ab) => {
        entry.run = () => {
          // The frame goes out even if close() was called meanwhile (the close frame waits
          // behind it, as in ws), unless the connection is gone.
          if (this._readyState === WebSocket.CLOSED) {
            if (cb) process.nextTick(cb, new Error('The socket was closed while the blob was being read'));
          } else {
            then(Buffer.from(ab));
          }
        };
        entry.done = true;
        this._drainBlobs();
      },
      (err) => {
        // ws's sender error: the callback, then 'error', and the connection ends.
        entry.run = () => {
          if (cb) cb(err);
          if (this._readyState === WebSocket.CLOSED) return;
          if ((this._state & ERROR_EMITTED) === 0) {
            this._state |= ERROR_EMITTED;
            this.emit('error', err);
          }
          this.terminate();
        };
        entry.done = true;
        this._drainBlobs();
      }
    );
  }

  /**
   * Runs the operations held behind Blobs, up to the first Blob not read yet.
   *
   * @private
   */
  _drainBlobs() {
    const rare = this._rare;
    const q = rare.blobQueue;
    this._state |= DRAINING_BLOBS;
    while (q.length && q[0].done) q.shift().run();
    this._state &= ~DRAINING_BLOBS;
    if (q.length === 0 && rare.blobQueue === q) rare.blobQueue = null;
  }

  /**
   * True when an operation must wait behind a Blob being read.
   *
   * @private
   */
  _held(run) {
    const rare = this._rare;
    if (rare === null || rare.blobQueue === null || (this._state & DRAINING_BLOBS) !== 0) return false;
    rare.blobQueue.push({ done: true, run });
    return true;
  }

  /**
   * Forcibly close the connection.
   *
   * @public
   */
  terminate() {
    if (this.readyState === WebSocket.CLOSED) return;
    if (this.readyState === WebSocket.CONNECTING) {
      abortHandshake(this, 'WebSocket was closed before the connection was established');
      return;
    }
    this._readyState = WebSocket.CLOSING;
    native.queue(OP.TERMINATE, 0, this._id, null);
  }

  /**
   * Handles one engine event for this connection.
   *
   * @param {Number} kind The event kind
   * @param {Buffer} payload Its payload
   * @private
   */
  _onNative(kind, payload) {
    const q = pausedQueue(this);
    if (q !== null && kind !== EVENT.WRITTEN && kind !== EVENT.BACKPRESSURE && kind !== EVENT.DRAIN) {
      // Paused: nothing is emitted; what the engine had already read waits here, in order.
      q.push(kind, payload);
      if (kind === EVENT.CLOSED) {
        // The connection is gone: as ws does when its socket closes, what was read is
        // delivered, then 'close', paused or not.
        this._rare.pausedQueue = null;
        this._state |= CLOSED_WHILE_PAUSED;
        for (let i = 0; i < q.length; i += 2) this._onNative(q[i], q[i + 1]);
      }
      return;
    }
    switch (kind) {
      case EVENT.TEXT:
        this.emit('message', payload, false);
        break;
      case EVENT.BINARY:
        if (this._rare !== null && this._rare.fragmentEnds !== null) {
          const ends = this._rare.fragmentEnds;
          this._rare.fragmentEnds = null;
          if (this.binaryType === 'fragments') {
            const parts = [];
            let start = 0;
            for (let i = 0; i < ends.length; i += 4) {
              const end = ends.readUInt32LE(i);
              parts.push(payload.subarray(start, end));
              start = end;
            }
            this.emit('message', parts, true);
            break;
          }
        }
        this.emit('message', toBinaryType(payload, this.binaryType), true);
        break;
      case EVENT.FRAGMENTS:
        rareOf(this).fragmentEnds = payload;
        break;
      case EVENT.BRIDGE_OUT:
        this._rare.bridge.write(Buffer.from(payload));
        break;
      case EVENT.BRIDGE_END:
        this._rare.bridge.end();
        break;
      case EVENT.PING:
        this.emit('ping', payload);
        break;
      case EVENT.PONG:
        this.emit('pong', payload);
        break;
      case EVENT.WRITTEN:
        this._written(payload.readUInt32LE(0));
        break;
      case EVENT.BACKPRESSURE:
        this._state |= BACKPRESSURED | (payload[0] === 1 ? OVER_LIMIT : 0);
        break;
      case EVENT.DRAIN:
        this._state &= ~(BACKPRESSURED | OVER_LIMIT | DRAIN_WANTED);
        this.emit('drain');
        break;
      case EVENT.CLOSE_FRAME: {
        this._state |= CLOSE_RECEIVED;
        const rare = rareOf(this);
        rare.closeCode = payload.readUInt16BE(0);
        rare.closeMessage = Buffer.from(payload.subarray(2));
        // Answer with the same code and reason, after the replies to earlier messages.
        if (rare.closeCode === 1005) this.close();
        else this.close(rare.closeCode, rare.closeMessage);
        this._endWrite();
        break;
      }
      case EVENT.CLOSED:
        this._onClosed(payload);
        break;
      case EVENT.ERROR:
        this._onError(fields(payload));
        break;
      case EVENT.OPEN:
        this._onOpen(fields(payload));
        break;
      case EVENT.HANDSHAKE_FAILED:
        this._onHandshakeFailed(fields(payload));
        break;
      case EVENT.UNEXPECTED_RESPONSE:
        this._onUnexpectedResponse(fields(payload));
        break;
    }
  }

  /**
   * Both close frames are out: the engine ends its write side (ws's socket 'finish').
   *
   * @private
   */
  _endWrite() {
    if ((this._state & WRITE_ENDED) !== 0) return;
    this._state |= WRITE_ENDED;
    this.emit(kWriteEnded);
  }

  /** @private */
  _written(count) {
    const cbs = this._callbacks;
    for (let i = 0; i < count && cbs !== null && cbs.length; i++) {
      cbs.shift()();
    }
  }

  /** @private */
  _onClosed(payload) {
    const cbs = this._callbacks;
    this._callbacks = null;
    // Bytes queued and never written stay in `bufferedAmount`, as the WHATWG WebSocket
    // counts them after the close.
    const unsent = payload.readUIntLE(10, 6);
    if (unsent !== 0) rareOf(this).bufferedAmount += unsent;
    this._readyState = WebSocket.CLOSING;
    const bridge = this._rare === null ? null : this._rare.bridge;
    if (bridge !== null && !bridge.destroyed) {
      // A bridged socket ends with its connection (after its last bytes go out).
      if (typeof bridge.destroySoon === 'function') bridge.destroySoon();
      else bridge.destroy();
    }
    if (cbs !== null && cbs.length) {
      // Sends never written fail as ws's do: with Node's error for a write to a destroyed
      // socket, or ws's own for messages still waiting behind a compression.
      const frames = payload.readUInt32LE(2);
      const compressing = payload.readUInt32LE(6);
      let destroyed = null;
      let closedWhileCompressing = null;
      for (let i = 0; i < cbs.length; i++) {
        if (i >= frames && i < frames + compressing) {
          cbs[i](closedWhileCompressing || (closedWhileCompressing = new Error('The socket was closed while data was being compressed')));
        } else {
          cbs[i](destroyed || (destroyed = streamDestroyed()));
        }
      }
    }
    this._endWrite();
    this.emitClose();
  }

  /** @private */
  _onError(f) {
    const Ctor = ERROR_CTORS[f[0][0] & ~ERROR_ENDS] || Error;
    const err = new Ctor(f[2].toString());
    err.code = f[1].toString();
    const statusCode = f[3].readUInt16BE(0);
    Object.defineProperty(err, Symbol.for('status-code'), { value: statusCode });
    if ((f[0][0] & ERROR_ENDS) !== 0) {
      // The engine ends the connection itself (the heartbeat's timeout, maxBackpressure):
      // 'close' follows with the error's code.
      const rare = rareOf(this);
      rare.closeCode = statusCode;
      rare.closeMessage = EMPTY_BUFFER;
      this._readyState = WebSocket.CLOSING;
    } else {
      this.close(statusCode);
    }
    if ((this._state & ERROR_EMITTED) === 0) {
      this._state |= ERROR_EMITTED;
      this.emit('error', err);
    }
  }

  /** @private */
  _onOpen(f) {
    if (this._readyState !== WebSocket.CONNECTING) return;
    this._handshake = null;
    const ext = f[1].toString();
    this._agree(f[0].toString(), ext ? parseExtensionNames(ext) : null);
    if (this.listenerCount('upgrade')) {
      this.emit('upgrade', responseFromFields(101, f[2], f[3]));
    }
    if (this._readyState !== WebSocket.CONNECTING) return;
    this._readyState = WebSocket.OPEN;
    this.emit('open');
  }

  /** @private */
  _onHandshakeFailed(f) {
    native.connections.delete(this._id);
    if (this._readyState !== WebSocket.CONNECTING) return;
    const code = f[1].toString();
    if (code === NEEDS_NODE_TLS && retryWithNodeTls(this)) return;
    this._handshake = null;
    const err = new Error(f[0].toString());
    if (code) {
      err.code = code;
      if (/^(connect|getaddrinfo) /.test(err.message)) {
        err.syscall = err.message.split(' ')[0];
      }
    }
    emitErrorAndClose(this, err);
  }

  /** @private */
  _onUnexpectedResponse(f) {
    native.connections.delete(this._id);
    if (this._readyState !== WebSocket.CONNECTING) return;
    this._handshake = null;
    // With a listener, the handshake stays pending until the user calls terminate() or
    // close(), as in ws; the engine's side of it has ended already.
    this._id = 0;
    handleResponse(this, requestStub(this._path), responseFromFields(Number(f[0].toString()), f[1], f[2], f[3]));
  }
}

/**
 * @constant {Number} CONNECTING
 * @memberof WebSocket
 */
Object.defineProperty(WebSocket, 'CONNECTING', { enumerable: true, value: readyStates.indexOf('CONNECTING') });
Object.defineProperty(WebSocket.prototype, 'CONNECTING', { enumerable: true, value: readyStates.indexOf('CONNECTING') });
Object.defineProperty(WebSocket, 'OPEN', { enumerable: true, value: readyStates.indexOf('OPEN') });
Object.defineProperty(WebSocket.prototype, 'OPEN', { enumerable: true, value: readyStates.indexOf('OPEN') });
Object.defineProperty(WebSocket, 'CLOSING', { enumerable: true, value: readyStates.indexOf('CLOSING') });
Object.defineProperty(WebSocket.prototype, 'CLOSING', { enumerable: true, value: readyStates.indexOf('CLOSING') });
Object.defineProperty(WebSocket, 'CLOSED', { enumerable: true, value: readyStates.indexOf('CLOSED') });
Object.defineProperty(WebSocket.prototype, 'CLOSED', { enumerable: true, value: readyStates.indexOf('CLOSED') });

[
  'binaryType',
  'bufferedAmount',
  'extensions',
  'isBackpressured',
  'isPaused',
  'protocol',
  'readyState',
  'url'
].forEach((property) => {
  Object.defineProperty(WebSocket.prototype, property, { enumerable: true });
});

defineEventAttributes(WebSocket.prototype);

WebSocket.prototype.addEventListener = addEventListener;
WebSocket.prototype.removeEventListener = removeEventListener;

module.exports = WebSocket;

/**
 * What few connections use (a close frame's reason, sends after close, Blobs being read,
 * `fragments` boundaries, a bridged socket), out of the WebSocket object.
 */
class Rare {
  constructor() {
    /** The close frame's code and reason (1006 and none without one). */
    this.closeCode = 1006;
    this.closeMessage = EMPTY_BUFFER;
    /** What the handshake agreed on, when it did. */
    this.protocol = '';
    this.extensions = NO_EXTENSIONS;
    /** Events that arrived while paused, `[kind, payload, ...]`. */
    this.pausedQueue = null;
    /** Bytes of sends made after the close, which ws counts into `bufferedAmount`. */
    this.bufferedAmount = 0;
    this.blobQueue = null;
    this.fragmentEnds = null;
    /** The Node socket behind an adopted connection (TLS or `createConnection`), if any. */
    this.bridge = null;
    /** `_socket`, once made. */
    this.socket = null;
    /** `_socket.destroy()` was called: 0, `DESTROYED`, or `DESTROYED_WHILE_COMPRESSING`. */
    this.socketDestroyed = 0;
  }
}

/**
 * The error of a send dropped past `maxBackpressure`.
 *
 * @return {Error} The error
 */
function backpressureLimitError() {
  const err = new Error('The buffered output is past maxBackpressure: the message was dropped');
  err.code = 'WS_ERR_BACKPRESSURE_LIMIT';
  return err;
}

/**
 * @param {WebSocket} websocket The socket
 * @return {Number} Its `highWaterMark`
 */
function highWaterMark(websocket) {
  const opts = websocket._server !== null ? websocket._server.options : websocket._options;
  return (opts && opts.highWaterMark) || HIGH_WATER_MARK;
}

/**
 * Node's error for a write to a destroyed stream, which ws's sends get when the socket is
 * gone before their bytes were written.
 *
 * @return {Error} The error
 */
function streamDestroyed() {
  const err = new Error('Cannot call write after a stream was destroyed');
  err.code = 'ERR_STREAM_DESTROYED';
  return err;
}

/**
 * @param {WebSocket} websocket The socket
 * @return {Rare} Its rare fields, made on first use
 */
function rareOf(websocket) {
  return websocket._rare === null ? (websocket._rare = new Rare()) : websocket._rare;
}

/**
 * @param {WebSocket} websocket The socket
 * @return {Number} Bytes of sends made after the close
 */
function afterClose(websocket) {
  return websocket._rare === null ? 0 : websocket._rare.bufferedAmount;
}

/**
 * @param {WebSocket} websocket The socket
 * @return {Array} The events held while paused, or null
 */
function pausedQueue(websocket) {
  return websocket._rare === null ? null : websocket._rare.pausedQueue;
}

/**
 * Emits the events held while a socket was paused, until it is paused again.
 *
 * @param {WebSocket} websocket The socket
 */
function replayPaused(websocket) {
  websocket._state &= ~REPLAY_SCHEDULED;
  if ((websocket._state & PAUSED) !== 0) return;
  const q = websocket._rare.pausedQueue;
  websocket._rare.pausedQueue = null;
  for (let i = 0; i < q.length; i += 2) {
    if ((websocket._state & PAUSED) !== 0) {
      websocket._rare.pausedQueue = q.slice(i);
      return;
    }
    websocket._onNative(q[i], q[i + 1]);
  }
}

/**
 * Converts a binary message to the socket's `binaryType`.
 *
 * @param {Buffer} buf The message
 * @param {String} type The binary type
 * @return {*} The converted message
 */
function toBinaryType(buf, type) {
  if (type === 'nodebuffer') return buf;
  if (type === 'arraybuffer') {
    if (buf.byteOffset === 0 && buf.byteLength === buf.buffer.byteLength) return buf.buffer;
    return buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength);
  }
  if (type === 'blob') return new Blob([buf]);
  return [buf];
}

/**
 * Handle cases where the `ping()`, `pong()`, or `send()` methods are called
 * when the `readyState` attribute is `CLOSING` or `CLOSED`.
 *
 * @param {WebSocket} websocket The WebSocket instance
 * @param {*} [data] The data to send
 * @param {Function} [cb] Callback
 * @private
 */
function sendAfterClose(websocket, data, cb) {
  if (data) {
    const length = isBlob(data) ? data.size : toBuffer(data).length;
    rareOf(websocket).bufferedAmount += length;
  }

  if (cb) {
    const err = new Error(
      `WebSocket is not open: readyState ${websocket.readyState} ` +
        `(${readyStates[websocket.readyState]})`
    );
    process.nextTick(cb, err);
  }
}
