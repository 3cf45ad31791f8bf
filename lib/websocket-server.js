'use strict';

// WebSocketServer with ws's API. In standalone mode (`port`) the engine owns the listening
// socket and parses and checks each upgrade request; this file makes ws's decisions
// (shouldHandle, verifyClient, handleProtocols, the `headers` event) and hands out WebSocket
// objects.

const EventEmitter = require('events');
const http = require('http');

const native = require('./native');
const WebSocket = require('./websocket');
const { CLOSE_TIMEOUT } = require('./constants');

const RUNNING = 0;
const CLOSING = 1;
const CLOSED = 2;

/**
 * Class representing a WebSocket server.
 *
 * @extends EventEmitter
 */
class WebSocketServer extends EventEmitter {
  /**
   * Create a `WebSocketServer` instance.
   *
   * @param {Object} options Configuration options
   * @param {Function} [callback] A listener for the `listening` event
   */
  constructor(options, callback) {
    super();

    options = {
      allowSynchronousEvents: true,
      autoPong: true,
      maxPayload: 100 * 1024 * 1024,
      skipUTF8Validation: false,
      perMessageDeflate: false,
      handleProtocols: null,
      clientTracking: true,
      closeTimeout: CLOSE_TIMEOUT,
      verifyClient: null,
      noServer: false,
      backlog: null, // use default (511 as implemented in net.js)
      server: null,
      host: null,
      path: null,
      port: null,
      WebSocket,
      ...options
    };

    if (
      (options.port == null && !options.server && !options.noServer) ||
      (options.port != null && (options.server || options.noServer)) ||
      (options.server && options.noServer)
    ) {
      throw new TypeError(
        'One and only one of the "port", "server", or "noServer" options must be specified'
      );
    }

    if (options.server || options.noServer) {
      throw new Error(
        'ws-native: the "server" and "noServer" options are not supported by this build yet; use "port"'
      );
    }

    if (options.perMessageDeflate === true) options.perMessageDeflate = {};
    if (options.clientTracking) {
      this.clients = new Set();
      this._shouldEmitClose = false;
    }

    this.options = options;
    this._state = RUNNING;
    this._pending = new Map();
    this._connections = 0;

    if (callback) this.once('listening', callback);
    this._listen(options);
  }

  /**
   * Binds the native listener and announces `listening` (or `error`) on the next tick.
   *
   * @private
   */
  _listen(options) {
    const port = Number(options.port);
    if (!Number.isInteger(port) || port < 0 || port > 65535) {
      const err = new RangeError(`options.port should be >= 0 and < 65536. Received ${options.port}.`);
      err.code = 'ERR_SOCKET_BAD_PORT';
      throw err;
    }
    const r = native.binding.listen({
      host: options.host || undefined,
      port,
      backlog: options.backlog == null ? undefined : options.backlog,
      conn: {
        maxPayload: options.maxPayload,
        maxFragments: options.maxFragments,
        skipUtf8Validation: !!options.skipUTF8Validation,
        autoPong: !!options.autoPong,
        closeTimeout: options.closeTimeout
      }
    });
    if (r.errorCode) {
      const err = new Error(r.errorMessage);
      err.code = r.errorCode;
      err.syscall = 'listen';
      err.address = options.host || '::';
      err.port = port;
      this._address = null;
      process.nextTick(() => this.emit('error', err));
      return;
    }
    this._id = r.id;
    this._address = { address: r.address, family: r.family, port: r.port };
    native.servers.set(r.id, this);
    process.nextTick(() => {
      if (this._state === RUNNING) this.emit('listening');
    });
  }

  /**
   * Returns the bound address, the address family name, and port of the server
   * as reported by the operating system if listening on an IP socket.
   *
   * @return {(Object|String|null)} The address of the server
   * @public
   */
  address() {
    if (this.options.noServer) {
      throw new Error('The server is operating in "noServer" mode');
    }
    if (this._address === undefined || this._id === undefined) return null;
    return { ...this._address };
  }

  /**
   * Stop the server from accepting new connections and emit the `'close'` event
   * when all existing connections are closed.
   *
   * @param {Function} [cb] A one-time callback for the `'close'` event
   * @public
   */
  close(cb) {
    if (this._state === CLOSED) {
      if (cb) {
        this.once('close', () => {
          cb(new Error('The server is not running'));
        });
      }
      process.nextTick(emitClose, this);
      return;
    }

    if (cb) this.once('close', cb);

    if (this._state === CLOSING) return;
    this._state = CLOSING;

    if (this._id !== undefined) {
      native.binding.closeServer(this._id);
      native.servers.delete(this._id);
    }
    for (const id of this._pending.keys()) native.binding.reject(id, 503, '', []);
    this._pending.clear();

    if (this._connections === 0) {
      process.nextTick(emitClose, this);
    } else {
      this._shouldEmitClose = true;
    }
  }

  /**
   * See if a given request should be handled by this server instance.
   *
   * @param {http.IncomingMessage} req Request object to inspect
   * @return {Boolean} `true` if the request is valid, else `false`
   * @public
   */
  shouldHandle(req) {
    if (this.options.path) {
      const index = req.url.indexOf('?');
      const pathname = index !== -1 ? req.url.slice(0, index) : req.url;

      if (pathname !== this.options.path) return false;
    }

    return true;
  }

  /**
   * Handles an upgrade request the engine parsed and checked.
   *
   * @param {Number} id The engine's connection id
   * @param {Buffer[]} f The request's fields (see src/engine/connection.rs)
   * @private
   */
  _onUpgrade(id, f) {
    const req = new IncomingRequest(id, f);
    const status = Number(f[9]);

    if (this._state !== RUNNING) {
      native.binding.reject(id, 503, '', []);
      return;
    }

    if (status !== 0) {
      const headers = {};
      const h = f[11].split('\0');
      for (let i = 0; i + 1 < h.length; i += 2) headers[h[i]] = h[i + 1];
      abortHandshakeOrEmitwsClientError(this, req, status, f[10], headers);
      return;
    }

    if (!this.shouldHandle(req)) {
      abortHandshake(id, 400);
      return;
    }

    const protocols = new Set(f[13] ? f[13].split(',') : []);
    const accept = f[12];
    const version = Number(f[14]);

    if (this.options.verifyClient) {
      const info = {
        origin: req.headers[`${version === 8 ? 'sec-websocket-origin' : 'origin'}`],
        secure: !!(req.socket.authorized || req.socket.encrypted),
        req
      };

      if (this.options.verifyClient.length === 2) {
        this._pending.set(id, true);
        this.options.verifyClient(info, (verified, code, message, headers) => {
          if (!this._pending.delete(id)) return;
          if (!verified) {
            return abortHandshake(id, code || 401, message, headers);
          }
          this.completeUpgrade(accept, protocols, req);
        });
        return;
      }

      if (!this.options.verifyClient(info)) return abortHandshake(id, 401);
    }

    this.completeUpgrade(accept, protocols, req);
  }

  /**
   * Called by a client's WebSocket when it has closed (instead of a listener per client).
   *
   * @param {WebSocket} ws The client
   * @private
   */
  _clientClosed(ws) {
    this._connections--;
    if (this.clients) this.clients.delete(ws);
    if (this._shouldEmitClose && this._connections === 0) {
      process.nextTick(emitClose, this);
    }
  }

  /**
   * Upgrade the connection to WebSocket.
   *
   * @param {String} accept The `Sec-WebSocket-Accept` value
   * @param {Set} protocols The subprotocols
   * @param {IncomingRequest} req The request object
   * @private
   */
  completeUpgrade(accept, protocols, req) {
    if (req._upgraded) {
      throw new Error(
        'server.handleUpgrade() was called more than once with the same ' +
          'socket, possibly due to a misconfiguration'
      );
    }

    const id = req._id;
    if (this._state > RUNNING) return abortHandshake(id, 503);

    const ws = new this.options.WebSocket(null, undefined, this.options);
    let protocol;

    if (protocols.size) {
      protocol = this.options.handleProtocols
        ? this.options.handleProtocols(protocols, req)
        : protocols.values().next().value;

      if (protocol) ws._protocol = protocol;
    }

    let accepted;
    if (this.listenerCount('headers') === 0) {
      // Nobody can change the answer: the engine writes the standard one.
      accepted = native.binding.acceptStandard(id, accept, protocol ? String(protocol) : undefined);
    } else {
      const headers = [
        'HTTP/1.1 101 Switching Protocols',
        'Upgrade: websocket',
        'Connection: Upgrade',
        `Sec-WebSocket-Accept: ${accept}`
      ];
      if (protocol) headers.push(`Sec-WebSocket-Protocol: ${protocol}`);
      this.emit('headers', headers, req);
      accepted = native.binding.accept(id, Buffer.from(headers.concat('\r\n').join('\r\n')));
    }
    if (!accepted) return;
    req._upgraded = true;
    ws._attach(id);

    this._connections++;
    ws._server = this;
    if (this.clients) this.clients.add(ws);

    this.emit('connection', ws, req);
  }
}

module.exports = WebSocketServer;

/**
 * Emit a `'close'` event on an `EventEmitter`.
 *
 * @param {EventEmitter} server The event emitter
 * @private
 */
function emitClose(server) {
  server._state = CLOSED;
  server.emit('close');
}

/**
 * The socket side of a server connection before and around the upgrade, as far as ws
 * users touch it (`req.socket`, the `wsClientError` socket).
 */
class NativeSocket extends EventEmitter {
  constructor(id, f) {
    super();
    this._id = id;
    this.remoteAddress = f[4];
    this.remotePort = Number(f[5]);
    this.remoteFamily = f[6];
    this.localAddress = f[7];
    this.localPort = Number(f[8]);
    this.encrypted = undefined;
    this.destroyed = false;
  }

  /** Writes raw bytes (before the upgrade only). */
  write(data, encoding, cb) {
    native.queue(native.OP.RAW_WRITE, 0, this._id, typeof data === 'string' ? Buffer.from(data, typeof encoding === 'string' ? encoding : 'utf8') : data);
    if (typeof encoding === 'function') cb = encoding;
    if (cb) process.nextTick(cb);
    return true;
  }

  /** Writes the last raw bytes and ends the connection. */
  end(data, encoding, cb) {
    if (typeof data === 'function') {
      cb = data;
      data = undefined;
    }
    const buf = data === undefined ? null : typeof data === 'string' ? Buffer.from(data, typeof encoding === 'string' ? encoding : 'utf8') : data;
    native.queue(native.OP.RAW_END, 0, this._id, buf);
    if (typeof encoding === 'function') cb = encoding;
    if (cb) process.nextTick(cb);
    process.nextTick(() => this.emit('finish'));
    return this;
  }

  destroy() {
    if (!this.destroyed) {
      this.destroyed = true;
      native.queue(native.OP.TERMINATE, 0, this._id, null);
      process.nextTick(() => this.emit('close'));
    }
    return this;
  }

  setTimeout() {
    return this;
  }

  setNoDelay() {
    return this;
  }

  setKeepAlive() {
    return this;
  }
}

/**
 * The request handed to `connection`, `verifyClient`, `handleProtocols` and `headers`: the
 * parts of `http.IncomingMessage` that ws users read.
 */
class IncomingRequest {
  constructor(id, f) {
    this._id = id;
    this._f = f;
    this._socket = undefined;
    this._upgraded = false;
    this.method = f[0];
    this.url = f[1];
    this.httpVersion = f[2];
    this.httpVersionMajor = 1;
    this.httpVersionMinor = f[2] === '1.0' ? 0 : 1;
    this.complete = true;
    this.upgrade = true;
    this.aborted = false;
    // Header lists are built on first use: most servers never read them.
    this._raw = f[3];
    this._rawHeaders = undefined;
    this._headers = undefined;
  }

  get socket() {
    if (this._socket === undefined) this._socket = new NativeSocket(this._id, this._f);
    return this._socket;
  }

  set socket(value) {
    this._socket = value;
  }

  get connection() {
    return this.socket;
  }

  get rawHeaders() {
    if (this._rawHeaders === undefined) {
      this._rawHeaders = this._raw ? this._raw.split('\0').slice(0, -1) : [];
    }
    return this._rawHeaders;
  }

  set rawHeaders(value) {
    this._rawHeaders = value;
  }

  get headers() {
    if (this._headers === undefined) this._headers = WebSocket.headersFromRaw(this.rawHeaders);
    return this._headers;
  }

  set headers(value) {
    this._headers = value;
  }

  get trailers() {
    return {};
  }

  get rawTrailers() {
    return [];
  }
}

/**
 * Close the connection when preconditions are not fulfilled.
 *
 * @param {Number} id The engine's id of the connection
 * @param {Number} code The HTTP response status code
 * @param {String} [message] The HTTP response body
 * @param {Object} [headers] Additional HTTP response headers
 * @private
 */
function abortHandshake(id, code, message, headers) {
  message = message || http.STATUS_CODES[code];
  const list = [];
  if (headers) {
    for (const k of Object.keys(headers)) list.push(k, String(headers[k]));
  }
  native.binding.reject(id, code, message, list);
}

/**
 * Emit a `'wsClientError'` event on a `WebSocketServer` if there is at least
 * one listener for it, otherwise call `abortHandshake()`.
 *
 * @param {WebSocketServer} server The WebSocket server
 * @param {IncomingRequest} req The request object
 * @param {Number} code The HTTP response status code
 * @param {String} message The HTTP response body
 * @param {Object} [headers] The HTTP response headers
 * @private
 */
function abortHandshakeOrEmitwsClientError(server, req, code, message, headers) {
  if (server.listenerCount('wsClientError')) {
    const err = new Error(message);
    Error.captureStackTrace(err, abortHandshakeOrEmitwsClientError);

    server.emit('wsClientError', err, req.socket, req);
  } else {
    abortHandshake(req._id, code, message, headers);
  }
}
