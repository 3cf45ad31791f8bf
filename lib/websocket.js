'use strict';

// The WebSocket class with ws's API. It adapts the API only: the handshake, frames, masking,
// validation and timers run in the engine (src/engine/connection.rs); this file turns engine
// events into ws's events and method calls into engine commands.

const EventEmitter = require('events');
const http = require('http');
const https = require('https');
const net = require('net');
const { Readable } = require('stream');
const { URL } = require('url');

const native = require('./native');
const { EVENT, OP, FLAG } = native;
const { EventTarget, defineEventAttributes } = require('./event-target');
const { addEventListener, removeEventListener } = EventTarget;
const { BINARY_TYPES, CLOSE_TIMEOUT, EMPTY_BUFFER, STATE, kWriteEnded } = require('./constants');
const { isBlob, isValidStatusCode, isValidSubprotocol, toBuffer } = require('./validation');
const { adoptSocket } = require('./adopt');
const { clientTls } = require('./tls-options');
const { engineDeflate } = require('./permessage-deflate');

const { CLOSE_RECEIVED, CLOSE_SENT, ERROR_EMITTED, PAUSED, DRAINING_BLOBS, REPLAY_SCHEDULED, WRITE_ENDED, CLOSED_WHILE_PAUSED } =
  STATE;
const { BINARY_TYPE, BINARY_TYPE_SHIFT } = STATE;
const readyStates = ['CONNECTING', 'OPEN', 'CLOSING', 'CLOSED'];
const NO_EXTENSIONS = Object.freeze({});
const protocolVersions = [8, 13];
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
   * Binds this object to an engine connection: server side after the 101 was queued, client
   * side after Node's request got its 101 and handed the socket over.
   *
   * @param {Number} id The engine's connection id
   * @param {net.Socket} [bridge] The Node socket behind it, when the engine bridges one
   * @private
   */
  _attach(id, bridge) {
    if (bridge) rareOf(this).bridge = bridge;
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

    if (isBlob(data)) {
      this._withBlob(data, (buf) => this._control(op, buf, mask, cb));
      return;
    }

    const buf = data === undefined || data === null ? EMPTY_BUFFER : toBuffer(data);
    if (buf.length > 125) {
      throw new RangeError('The data size must not be greater than 125 bytes');
    }

    let flags = 0;
    if (mask !== undefined) flags |= FLAG.MASK_SET | (mask ? FLAG.MASK : 0);
    this._enqueue(op, flags, buf, cb);
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

    if (isBlob(data)) {
      this._withBlob(data, (buf) => this.send(buf, { binary: true, ...options }, cb));
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

    if (typeof data === 'string') {
      this._enqueue(OP.SEND, flags, data, cb);
    } else {
      this._enqueue(OP.SEND, flags, data === undefined || data === null ? EMPTY_BUFFER : toBuffer(data), cb);
    }
  }

  /**
   * Queues a frame for the engine, or behind a Blob being read, so order is kept.
   *
   * @private
   */
  _enqueue(op, flags, data, cb) {
    if (this._held(() => this._enqueue(op, flags, data, cb))) return;
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
   * Reads a Blob, holding later sends until it is read so that order is kept.
   *
   * @private
   */
  _withBlob(blob, then) {
    const entry = { done: false, run: null };
    const rare = rareOf(this);
    if (rare.blobQueue === null) rare.blobQueue = [];
    rare.blobQueue.push(entry);
    blob.arrayBuffer().then(
      (ab) => {
        entry.run = () => then(Buffer.from(ab));
        entry.done = true;
        this._drainBlobs();
      },
      (err) => {
        entry.run = () => this.emit('error', err);
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
    if (q !== null && kind !== EVENT.WRITTEN) {
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
        this._onError(native.fields(payload));
        break;
      case EVENT.OPEN:
        this._onOpen(native.fields(payload));
        break;
      case EVENT.HANDSHAKE_FAILED:
        this._onHandshakeFailed(native.fields(payload));
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
    this._readyState = WebSocket.CLOSED;
    const bridge = this._rare === null ? null : this._rare.bridge;
    if (bridge !== null && !bridge.destroyed) {
      // A bridged socket ends with its connection (after its last bytes go out).
      if (typeof bridge.destroySoon === 'function') bridge.destroySoon();
      else bridge.destroy();
    }
    if (cbs !== null && cbs.length) {
      const err = new Error('WebSocket is not open: readyState 3 (CLOSED)');
      for (const cb of cbs) cb(err);
    }
    this._endWrite();
    this.emitClose();
  }

  /** @private */
  _onError(f) {
    const Ctor = ERROR_CTORS[f[0][0]] || Error;
    const err = new Ctor(f[2].toString());
    err.code = f[1].toString();
    const statusCode = f[3].readUInt16BE(0);
    Object.defineProperty(err, Symbol.for('status-code'), { value: statusCode });
    this.close(statusCode);
    if ((this._state & ERROR_EMITTED) === 0) {
      this._state |= ERROR_EMITTED;
      this.emit('error', err);
    }
  }

  /** @private */
  _onOpen(f) {
    if (this._readyState !== WebSocket.CONNECTING) return;
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
    const status = f[2].toString();
    if (status === '') {
      const err = new Error(f[0].toString());
      const code = f[1].toString();
      if (code) {
        err.code = code;
        if (/^(connect|getaddrinfo) /.test(err.message)) {
          err.syscall = err.message.split(' ')[0];
        }
      }
      emitErrorAndClose(this, err);
      return;
    }
    // With a listener, the handshake stays pending until the user calls terminate() or
    // close(), as in ws; the engine's side of it has ended already.
    this._id = 0;
    handleResponse(this, requestStub(this), responseFromFields(Number(status), f[3], f[4], f[5]));
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
  }
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
 * Parses the extension names of a `Sec-WebSocket-Extensions` value for `ws.extensions`.
 *
 * @param {String} header The header value
 * @return {Object} Names as keys
 */
function parseExtensionNames(header) {
  const out = {};
  for (const part of header.split(',')) {
    const name = part.split(';')[0].trim();
    if (name) out[name] = true;
  }
  return out;
}

/**
 * Builds an `http.IncomingMessage`-like response for `upgrade` and `unexpected-response`.
 *
 * @param {Number} statusCode The status
 * @param {Buffer} reason The reason phrase
 * @param {Buffer} lines Header names and values separated by NUL bytes
 * @param {Buffer} [body] The body, if any
 * @return {Readable} The response
 */
function responseFromFields(statusCode, reason, lines, body) {
  const res = new Readable({ read() {} });
  if (body && body.length) res.push(Buffer.from(body));
  res.push(null);
  res.statusCode = statusCode;
  res.statusMessage = reason.toString();
  res.httpVersion = '1.1';
  res.rawHeaders = lines.length ? lines.toString().split('\0').slice(0, -1) : [];
  res.headers = headersFromRaw(res.rawHeaders);
  return res;
}

const DISCARD_DUPLICATES = new Set([
  'age', 'authorization', 'content-length', 'content-type', 'etag', 'expires', 'from', 'host',
  'if-modified-since', 'if-unmodified-since', 'last-modified', 'location', 'max-forwards',
  'proxy-authorization', 'referer', 'retry-after', 'server', 'user-agent'
]);

/**
 * Builds Node's `headers` object from `rawHeaders`, with Node's rules for duplicates.
 *
 * @param {String[]} raw Alternating names and values
 * @return {Object} The headers
 */
function headersFromRaw(raw) {
  const headers = {};
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = raw[i].toLowerCase();
    const value = raw[i + 1];
    const prev = headers[name];
    if (prev === undefined) {
      headers[name] = name === 'set-cookie' ? [value] : value;
    } else if (name === 'set-cookie') {
      prev.push(value);
    } else if (!DISCARD_DUPLICATES.has(name)) {
      headers[name] = prev + (name === 'cookie' ? '; ' : ', ') + value;
    }
  }
  return headers;
}

WebSocket.headersFromRaw = headersFromRaw;

/**
 * A non-101 answer: follow a redirect, or hand it to `unexpected-response`, or fail.
 *
 * @param {WebSocket} websocket The client
 * @param {Object} req The request (Node's, or a stand-in)
 * @param {Object} res The response (Node's, or a stand-in)
 */
function handleResponse(websocket, req, res) {
  const opts = websocket._options;
  const location = res.headers.location;
  if (location && opts.followRedirects && res.statusCode >= 300 && res.statusCode < 400) {
    if (++websocket._redirects > opts.maxRedirects) {
      abortHandshake(websocket, 'Maximum redirects exceeded');
      return;
    }
    if (typeof req.destroy === 'function') req.destroy();
    let addr;
    try {
      addr = new URL(location, websocket._address);
    } catch {
      emitErrorAndClose(websocket, new SyntaxError(`Invalid URL: ${location}`));
      return;
    }
    initAsClient(websocket, addr, websocket._protocols, websocket._userOptions);
    return;
  }
  if (!websocket.emit('unexpected-response', req, res)) {
    abortHandshake(websocket, `Unexpected server response: ${res.statusCode}`);
  }
}

/**
 * The opening handshake through Node's http client, for `agent`, `createConnection`,
 * `finishRequest` and `wss:` URLs; once upgraded, the socket is handed to the engine.
 *
 * @param {WebSocket} websocket The client
 * @param {Object} p What initAsClient worked out
 */
function nodeHandshake(websocket, p) {
  const opts = p.opts;
  if (opts.proxy && !p.isIpcUrl) {
    // The proxy is the engine's; Node's http client would silently bypass it.
    const err = new Error(
      'The proxy option cannot be combined with agent, createConnection, finishRequest, ' +
        "or listeners for 'upgrade', 'unexpected-response' or 'redirect'"
    );
    err.code = 'ERR_WS_PROXY_UNSUPPORTED';
    process.nextTick(emitErrorAndClose, websocket, err);
    return;
  }
  const key = native.binding.generateKey();
  const headers = {};
  const list = p.list.concat('Sec-WebSocket-Key', key);
  if (p.conn.deflate) list.push('Sec-WebSocket-Extensions', native.binding.deflateOffer(p.conn.deflate));
  for (let i = 0; i < list.length; i += 2) {
    const name = list[i];
    const prev = headers[name];
    if (prev === undefined) headers[name] = list[i + 1];
    else headers[name] = [].concat(prev, list[i + 1]);
  }
  const requestOptions = {
    ...opts,
    protocol: p.isSecure ? 'https:' : 'http:',
    host: p.host,
    hostname: undefined,
    port: p.port,
    path: p.path,
    socketPath: p.socketPath,
    method: 'GET',
    headers,
    timeout: opts.handshakeTimeout,
    defaultPort: opts.defaultPort || (p.isSecure ? 443 : 80),
    createConnection: opts.createConnection,
    servername: opts.servername !== undefined ? opts.servername : net.isIP(p.host) ? '' : p.host
  };
  const req = (p.isSecure ? https : http).request(requestOptions);
  websocket._req = req;

  if (opts.handshakeTimeout) {
    req.on('timeout', () => abortHandshake(websocket, 'Opening handshake has timed out'));
  }
  req.on('error', (err) => {
    if (websocket._req !== req) return;
    websocket._req = null;
    emitErrorAndClose(websocket, err);
  });
  req.on('response', (res) => {
    if (websocket._req !== req) return;
    handleResponse(websocket, req, res);
  });
  req.on('upgrade', (res, socket, head) => {
    websocket.emit('upgrade', res);
    if (websocket.readyState !== WebSocket.CONNECTING || websocket._req !== req) {
      socket.destroy();
      return;
    }
    websocket._req = null;
    const checked = native.binding.checkResponse(key, res.rawHeaders, p.protocols, p.conn.deflate);
    if (checked[0]) {
      socket.destroy();
      emitErrorAndClose(websocket, new Error(checked[0]));
      return;
    }
    websocket._agree(checked[1], checked[2] ? parseExtensionNames(checked[2]) : null);
    adoptSocket(socket, head, EMPTY_BUFFER, p.conn, true, checked[2] || undefined, (id, bridged) => {
      if (id === 0) {
        emitErrorAndClose(websocket, new Error('The socket was closed during the handshake'));
        return;
      }
      websocket._attach(id, bridged);
      websocket.emit('open');
    });
  });

  if (opts.finishRequest) opts.finishRequest(req, websocket);
  else req.end();
}

/**
 * A stand-in for the `http.ClientRequest` of `unexpected-response` and `redirect`.
 *
 * @param {WebSocket} websocket The client
 * @return {Object} The request
 */
function requestStub(websocket) {
  const req = new EventEmitter();
  req.path = websocket._path;
  req.method = 'GET';
  req.abort = req.destroy = () => {};
  return req;
}

/**
 * Initialize a WebSocket client.
 *
 * @param {WebSocket} websocket The client to initialize
 * @param {(String|URL)} address The URL to which to connect
 * @param {Array} protocols The subprotocols
 * @param {Object} [options] Connection options
 * @private
 */
function initAsClient(websocket, address, protocols, options) {
  const opts = {
    allowSynchronousEvents: true,
    autoPong: true,
    closeTimeout: CLOSE_TIMEOUT,
    protocolVersion: protocolVersions[1],
    maxPayload: 100 * 1024 * 1024,
    skipUTF8Validation: false,
    perMessageDeflate: true,
    followRedirects: false,
    maxRedirects: 10,
    ...options
  };

  websocket._options = opts;
  websocket._userOptions = options;
  websocket._protocols = protocols;

  if (!protocolVersions.includes(opts.protocolVersion)) {
    throw new RangeError(
      `Unsupported protocol version: ${opts.protocolVersion} ` +
        `(supported versions: ${protocolVersions.join(', ')})`
    );
  }

  let parsedUrl;

  if (address instanceof URL) {
    parsedUrl = address;
  } else {
    try {
      parsedUrl = new URL(address);
    } catch {
      throw new SyntaxError(`Invalid URL: ${address}`);
    }
  }

  if (parsedUrl.protocol === 'http:') {
    parsedUrl.protocol = 'ws:';
  } else if (parsedUrl.protocol === 'https:') {
    parsedUrl.protocol = 'wss:';
  }

  websocket._url = parsedUrl.href;
  websocket._address = parsedUrl;

  const isSecure = parsedUrl.protocol === 'wss:';
  const isIpcUrl = parsedUrl.protocol === 'ws+unix:';
  let invalidUrlMessage;

  if (parsedUrl.protocol !== 'ws:' && !isSecure && !isIpcUrl) {
    invalidUrlMessage =
      'The URL\'s protocol must be one of "ws:", "wss:", ' + '"http:", "https:", or "ws+unix:"';
  } else if (isIpcUrl && !parsedUrl.pathname) {
    invalidUrlMessage = "The URL's pathname is empty";
  } else if (parsedUrl.hash) {
    invalidUrlMessage = 'The URL contains a fragment identifier';
  }

  if (invalidUrlMessage) {
    const err = new SyntaxError(invalidUrlMessage);

    if (websocket._redirects === 0) {
      throw err;
    } else {
      emitErrorAndClose(websocket, err);
      return;
    }
  }

  const protocolSet = new Set();
  for (const protocol of protocols) {
    if (!isValidSubprotocol(protocol) || protocolSet.has(protocol)) {
      throw new SyntaxError('An invalid or duplicated subprotocol was specified');
    }
    protocolSet.add(protocol);
  }

  const defaultPort = isSecure ? 443 : 80;
  const port = parsedUrl.port ? Number(parsedUrl.port) : defaultPort;
  const host = parsedUrl.hostname.startsWith('[') ? parsedUrl.hostname.slice(1, -1) : parsedUrl.hostname;
  let path = parsedUrl.pathname + parsedUrl.search;
  let socketPath;

  if (isIpcUrl) {
    const parts = path.split(':');
    socketPath = parts[0];
    path = parts[1] || '/';
  }

  // Headers as Node's http client would send them: Host first, then the user's, then ws's.
  const headers = {};
  const userHeaders = opts.headers || {};
  if (opts.followRedirects && websocket._redirects > 0 && websocket.listenerCount('redirect') === 0) {
    const sameHost = isIpcUrl
      ? websocket._originalIpc && socketPath === websocket._originalHostOrSocketPath
      : !websocket._originalIpc && parsedUrl.host === websocket._originalHostOrSocketPath;
    if (!sameHost || (websocket._originalSecure && !isSecure)) {
      for (const k of Object.keys(userHeaders)) {
        const lk = k.toLowerCase();
        if (lk === 'authorization' || lk === 'cookie' || (!sameHost && lk === 'host')) continue;
        headers[k] = userHeaders[k];
      }
    } else {
      Object.assign(headers, userHeaders);
    }
  } else {
    Object.assign(headers, userHeaders);
  }
  if (opts.followRedirects && websocket._redirects === 0) {
    websocket._originalIpc = isIpcUrl;
    websocket._originalSecure = isSecure;
    websocket._originalHostOrSocketPath = isIpcUrl ? socketPath : parsedUrl.host;
  }

  const list = [];
  const has = (name) => Object.keys(headers).some((k) => k.toLowerCase() === name);
  if (!has('host')) {
    const h = host.includes(':') ? `[${host}]` : host;
    list.push('Host', isIpcUrl ? 'localhost' : port === defaultPort ? h : `${h}:${port}`);
  }
  if ((parsedUrl.username || parsedUrl.password) && !has('authorization')) {
    const auth = `${decodeURIComponent(parsedUrl.username)}:${decodeURIComponent(parsedUrl.password)}`;
    list.push('Authorization', 'Basic ' + Buffer.from(auth).toString('base64'));
  }
  const managed = new Set(['sec-websocket-version', 'sec-websocket-key', 'connection', 'upgrade']);
  if (protocols.length) managed.add('sec-websocket-protocol');
  for (const k of Object.keys(headers)) {
    if (managed.has(k.toLowerCase())) continue;
    const v = headers[k];
    if (v === undefined) continue;
    if (Array.isArray(v)) {
      for (const item of v) list.push(k, String(item));
    } else {
      list.push(k, String(v));
    }
  }
  list.push('Sec-WebSocket-Version', String(opts.protocolVersion), 'Connection', 'Upgrade', 'Upgrade', 'websocket');
  if (protocols.length) list.push('Sec-WebSocket-Protocol', protocols.join(','));
  if (opts.origin) {
    list.push(opts.protocolVersion < 13 ? 'Sec-WebSocket-Origin' : 'Origin', String(opts.origin));
  }
  for (let i = 0; i < list.length; i++) {
    if (/[\r\n\0]/.test(list[i])) {
      throw new TypeError(`Invalid character in header content ["${list[i - (i % 2)]}"]`);
    }
  }

  websocket._path = path;

  if (opts.followRedirects && websocket._redirects > 0) {
    websocket.emit('redirect', websocket.url, requestStub(websocket));
    if (websocket._readyState !== WebSocket.CONNECTING) return;
  }

  const conn = {
    maxPayload: opts.maxPayload,
    maxFragments: opts.maxFragments,
    skipUtf8Validation: !!opts.skipUTF8Validation,
    autoPong: !!opts.autoPong,
    closeTimeout: opts.closeTimeout,
    handshakeTimeout: opts.handshakeTimeout,
    deflate: engineDeflate(opts.perMessageDeflate),
    maxHeaderSize: opts.maxHeaderSize,
    maxHeadersCount: opts.maxHeadersCount
  };

  const p = { opts, isSecure, isIpcUrl, host, port, path, socketPath, list, protocols, conn };
  if (opts.agent || opts.createConnection || opts.finishRequest) {
    nodeHandshake(websocket, p);
    return;
  }
  // Listeners for 'upgrade', 'unexpected-response' and 'redirect' are added after the
  // constructor returns: the path is chosen on the next tick, when they are known.
  process.nextTick(startHandshake, websocket, p);
}

const NODE_OBJECT_EVENTS = ['upgrade', 'unexpected-response', 'redirect'];

/**
 * Starts the opening handshake: in the engine, or through Node's http client when a listener
 * expects Node's request and response objects.
 *
 * @param {WebSocket} websocket The client
 * @param {Object} p What initAsClient worked out
 */
function startHandshake(websocket, p) {
  if (websocket._readyState !== WebSocket.CONNECTING) return;
  if (NODE_OBJECT_EVENTS.some((e) => websocket.listenerCount(e) > 0)) {
    nodeHandshake(websocket, p);
    return;
  }
  const id = native.binding.connect({
    host: p.isIpcUrl ? undefined : p.host,
    port: p.port,
    socketPath: p.socketPath,
    path: p.path,
    headers: p.list,
    protocols: p.protocols,
    conn: p.conn,
    tls: p.isSecure ? clientTls(p.opts) : undefined,
    proxy: p.opts.proxy ? String(p.opts.proxy) : undefined
  });
  websocket._id = id;
  native.connections.set(id, websocket);
}

/**
 * Emit the `'error'` and `'close'` events.
 *
 * @param {WebSocket} websocket The WebSocket instance
 * @param {Error} err The error to emit
 * @private
 */
function emitErrorAndClose(websocket, err) {
  if (websocket._readyState === WebSocket.CLOSED) return;
  websocket._readyState = WebSocket.CLOSING;
  websocket.emit('error', err);
  websocket.emitClose();
}

/**
 * Abort the handshake and emit an error.
 *
 * @param {WebSocket} websocket The WebSocket instance
 * @param {String} message The error message
 * @private
 */
function abortHandshake(websocket, message) {
  websocket._readyState = WebSocket.CLOSING;
  const err = new Error(message);
  Error.captureStackTrace(err, abortHandshake);
  if (websocket._req) {
    const req = websocket._req;
    websocket._req = null;
    req.destroy();
  }
  if (websocket._id !== 0) {
    native.queue(OP.TERMINATE, 0, websocket._id, null);
    native.connections.delete(websocket._id);
  }
  process.nextTick(emitErrorAndClose, websocket, err);
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
