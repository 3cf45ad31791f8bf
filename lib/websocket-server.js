'use strict';

// WebSocketServer with ws's API. In standalone mode (`port`) the engine owns the listening
// socket and parses and checks each upgrade request. With `server` or `noServer`, Node's http
// server receives the request: the engine checks it, and after the 101 the socket is handed to
// the engine by file descriptor (plain TCP) or served through a byte bridge (TLS, or any
// Duplex without a descriptor). This file makes ws's decisions (shouldHandle, verifyClient,
// handleProtocols, the `headers` event) and hands out WebSocket objects.

const cluster = require('cluster');
const EventEmitter = require('events');
const http = require('http');
const https = require('https');
const net = require('net');

const native = require('./native');
const { CLOSE_TIMEOUT } = require('./constants');
const { engineOptions } = require('./engine-options');
const { extensionName } = require('./permessage-deflate');
const { EngineLink, NodeLink } = require('./server-links');
const { IncomingRequest } = require('./server-request');
const { serverTls } = require('./tls-options');
const topics = require('./topics');
const WebSocket = require('./websocket');

const NO_PROTOCOLS = new Set();
const NO_PROTOCOL_LIST = Object.freeze([]);

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
      maxBufferedChunks: 256 * 1024,
      maxFragments: 16 * 1024,
      maxPayload: 100 * 1024 * 1024,
      maxPendingAutoPongs: 60,
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

    if (options.tls && options.port == null) {
      throw new TypeError('The "tls" option goes with "port"; with "server", configure TLS on that server');
    }

    if (options.perMessageDeflate === true) options.perMessageDeflate = {};
    if (options.clientTracking) {
      this.clients = new Set();
      this._shouldEmitClose = false;
    }

    this.options = options;
    // The engine's permessage-deflate settings (undefined when disabled).
    // The per-connection options the engine applies (the same for every connection).
    // `handshakeTimeout`, an addition over ws: how long a client may take to send its upgrade
    // request (a slow or trickling client is disconnected), as Node's `headersTimeout` (60 s).
    this._conn = engineOptions(options, options.handshakeTimeout === undefined ? 60000 : options.handshakeTimeout);
    this._state = RUNNING;
    this._pending = new Map();
    this._connections = 0;
    this._server = null;
    // Node's server, in a cluster worker that shares its primary's listening socket.
    this._netServer = null;
    this._address = null;
    this._removeListeners = null;
    this._emitConnection = this.emit.bind(this, 'connection');
    // Pub/sub: the engine's hub of this server's topics (0 until first used), and whether it
    // is linked to Redis (see lib/topics.js).
    this._hub = 0;
    this._redis = false;
    if (options.redis !== undefined && options.redis !== null) topics.linkServer(this, options.redis);

    if (options.port != null) {
      if (callback) this.once('listening', callback);
      this._listen(options);
    } else if (options.server) {
      this._server = options.server;
      this._removeListeners = addListeners(this._server, {
        listening: this.emit.bind(this, 'listening'),
        error: this.emit.bind(this, 'error'),
        upgrade: (req, socket, head) => {
          this.handleUpgrade(req, socket, head, this._emitConnection);
        }
      });
    }
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
    // TLS options or certificates the engine's TLS (rustls) does not take: Node's TLS serves
    // the connections, and the engine everything after each upgrade.
    const tls = options.tls && !nodeTlsOption(options.tls) ? serverTls(options.tls) : undefined;
    if (options.tls && (tls === undefined || !native.binding.serverTlsUsable(tls))) {
      this._listenNode(https.createServer(options.tls, upgradeRequired), options, port);
      return;
    }
    if (cluster.isWorker && !options.exclusive && !options.reusePort) {
      this._listenShared(options, port, tls);
      return;
    }
    const r = native.binding.listen({
      host: options.host || undefined,
      port,
      backlog: options.backlog == null ? undefined : options.backlog,
      reusePort: !!options.reusePort,
      conn: this._conn,
      tls
    });
    throwBadOptions(r);
    this._tls = tls ? { authorized: tls.requestCert && tls.rejectUnauthorized } : null;
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
   * Listens with Node's `server` (an https server for TLS the engine does not serve), whose
   * upgrade requests go through `handleUpgrade`, as with ws's `server` option.
   *
   * @private
   */
  _listenNode(server, options, port) {
    this._netServer = server;
    this._removeListeners = addListeners(server, {
      error: (err) => this.emit('error', err),
      upgrade: (req, socket, head) => this.handleUpgrade(req, socket, head, this._emitConnection)
    });
    server.listen({ port, host: options.host || undefined, backlog: options.backlog == null ? undefined : options.backlog }, () => {
      this._address = server.address();
      if (this._state === RUNNING) this.emit('listening');
    });
  }

  /**
   * In a cluster worker: listens with Node's own server, whose handle the cluster shares
   * (so the workers share the port as ws's do, and the primary spreads the connections), and
   * hands each accepted socket to the engine by descriptor, before it has read anything.
   *
   * @private
   */
  _listenShared(options, port, tls) {
    const r = native.binding.attachServer({ conn: this._conn, tls });
    throwBadOptions(r);
    this._tls = tls ? { authorized: tls.requestCert && tls.rejectUnauthorized } : null;
    this._id = r.id;
    native.servers.set(r.id, this);
    const server = net.createServer({ pauseOnConnect: true });
    this._netServer = server;
    server.on('connection', (socket) => {
      const fd = socket._handle && socket._handle.fd;
      try {
        if (typeof fd === 'number' && fd >= 0) native.binding.adoptAccepted(r.id, fd);
      } finally {
        socket.destroy();
      }
    });
    server.on('error', (err) => this.emit('error', err));
    server.listen({ port, host: options.host || undefined, backlog: options.backlog == null ? undefined : options.backlog }, () => {
      this._address = server.address();
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
    if (this.options.server) return this._server ? this._server.address() : null;
    if (!this._address) return null;
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
      this._address = null;
    }
    if (this._netServer) {
      this._netServer.close();
      this._netServer = null;
    }
    if (this._removeListeners !== null) {
      this._removeListeners();
      this._removeListeners = this._server = null;
    }
    for (const link of this._pending.values()) link.abort(503);
    this._pending.clear();

    if (!this.clients && (this.options.noServer || this.options.server)) {
      process.nextTick(emitClose, this);
    } else if (this._connections === 0) {
      process.nextTick(emitClose, this);
    } else {
      this._shouldEmitClose = true;
    }
  }

  /**
   * Publishes `data` to every subscriber of `topic` (`ws.subscribe(topic)`) on this server,
   * and, with the `redis` option, on every server process sharing that Redis. The message
   * is framed once and fanned out by the engine. An addition over ws, as in uWebSockets.js
   * and Bun.
   *
   * @param {(String|Buffer)} topic The topic
   * @param {*} data The message, as for `ws.send()`
   * @param {Object} [options] `binary`, `compress`, as for `ws.send()`
   * @param {Function} [cb] `cb(err)` once the engine took the message; `err`
   *     (`WS_ERR_PUBLISH_LOST`) when the Redis buffer was full and other processes will not
   *     get it
   * @public
   */
  publish(topic, data, options, cb) {
    topics.publish(topics.serverHub(this), this, 0, [topic, data, options, cb]);
  }

  /**
   * How many of this server's sockets are subscribed to `topic`.
   *
   * @param {(String|Buffer)} topic The topic
   * @return {Number}
   * @public
   */
  subscriberCount(topic) {
    return topics.subscriberCount(this, topic);
  }

  /**
   * The state of the link to Redis (`redis` option): `{ connected, bufferedMessages,
   * bufferedBytes, lost, missed, lastError }`; null without one.
   *
   * @return {(Object|null)}
   * @public
   */
  redisStatus() {
    return this._redis && this._hub !== 0 ? native.binding.redisStatus(this._hub) : null;
  }

  /**
   * A REDIS record: the link connected, dropped or failed.
   *
   * @private
   */
  _onRedis(payload) {
    topics.onRedisRecord(this, payload);
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
   * Handle a HTTP Upgrade request.
   *
   * @param {http.IncomingMessage} req The request object
   * @param {Duplex} socket The network socket between the server and client
   * @param {Buffer} head The first packet of the upgraded stream
   * @param {Function} cb Callback
   * @public
   */
  handleUpgrade(req, socket, head, cb) {
    socket.on('error', socketOnError);
    const v = native.binding.checkUpgrade(
      String(req.method),
      req.rawHeaders || rawFromHeaders(req.headers),
      this._conn.deflate
    );
    const link = new NodeLink(socket, head);
    if (v.status !== 0) {
      abortHandshakeOrEmitwsClientError(this, req, link, v.status, v.message, pairsToObject(v.headers));
      return;
    }
    this._upgrade(link, req, v.accept, v.protocols, v.version, v.extensions, cb);
  }

  /**
   * Handles an upgrade request the engine's own listener parsed and checked.
   *
   * @param {Number} id The engine's connection id
   * @param {Object} f The request's fields (see `upgradeRecord` in records.js), valid during
   *     this call only
   * @private
   */
  _onUpgrade(id, f) {
    const link = new EngineLink(id);
    const req = new IncomingRequest(link, f);
    if (this._tls) req._tls = this._tls;
    link.req = req;
    const status = f.status;

    if (this._state !== RUNNING) {
      link.abort(503);
      return;
    }

    if (status !== 0) {
      abortHandshakeOrEmitwsClientError(this, req, link, status, f.message, pairsToObject(f.rejectHeaders.split('\0')));
      return;
    }

    this._upgrade(link, req, f.accept, f.protocols ? f.protocols.split(',') : NO_PROTOCOL_LIST, f.wsVersion, f.extensions, this._emitConnection);
  }

  /**
   * ws's steps after the protocol checks: shouldHandle, verifyClient, then completeUpgrade.
   *
   * @private
   */
  _upgrade(link, req, accept, protocolList, version, extensions, cb) {
    if (!this.shouldHandle(req)) {
      link.abort(400);
      return;
    }

    // Most requests offer no subprotocol: no Set made for them (nothing sees an empty one).
    const protocols = protocolList.length ? new Set(protocolList) : NO_PROTOCOLS;

    if (this.options.verifyClient) {
      const info = {
        origin: req.headers[`${version === 8 ? 'sec-websocket-origin' : 'origin'}`],
        secure: !!(req.socket.authorized || req.socket.encrypted),
        req
      };

      if (this.options.verifyClient.length === 2) {
        this._pending.set(link, link);
        this.options.verifyClient(info, (verified, code, message, headers) => {
          if (!this._pending.delete(link)) return;
          if (!verified) {
            return link.abort(code || 401, message, headers);
          }
          this.completeUpgrade(extensions, accept, protocols, req, link, cb);
        });
        return;
      }

      if (!this.options.verifyClient(info)) return link.abort(401);
    }

    this.completeUpgrade(extensions, accept, protocols, req, link, cb);
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
   * @param {Object} req The request object
   * @param {(EngineLink|NodeLink)} link Where the connection is
   * @param {Function} cb Called with `(ws, req)` once the connection is the engine's
   * @private
   */
  completeUpgrade(extensions, accept, protocols, req, link, cb) {
    if (link.upgraded) {
      throw new Error(
        'server.handleUpgrade() was called more than once with the same ' +
          'socket, possibly due to a misconfiguration'
      );
    }

    if (this._state > RUNNING) return link.abort(503);

    const ws = new this.options.WebSocket(null, undefined, this.options);
    let protocol;

    if (protocols.size) {
      protocol = this.options.handleProtocols
        ? this.options.handleProtocols(protocols, req)
        : protocols.values().next().value;
    }

    let response = null;
    if (this.listenerCount('headers') !== 0) {
      const headers = native.binding.acceptLines(accept, protocol ? String(protocol) : undefined, extensions || undefined);
      this.emit('headers', headers, req);
      response = native.binding.head(headers);
    }

    link.upgraded = true;
    ws._agree(protocol, extensions ? { [extensionName]: true } : null);
    const ext = extensions || undefined;
    link.accept(response, accept, protocol ? String(protocol) : undefined, ext, this._conn, this, ws, req, cb);
  }

  /**
   * The last step of `completeUpgrade`, once the engine has the connection (`id`, 0 if the
   * socket went away meanwhile): a method the link calls, not a closure per connection.
   *
   * @param {(EngineLink|NodeLink)} link Where the connection was
   * @param {Number} id The engine's connection id, or 0
   * @param {WebSocket} ws The connection's WebSocket
   * @param {Object} req The request
   * @param {Function} cb Called with `(ws, req)`
   * @private
   */
  _accepted(link, id, ws, req, cb) {
    if (id === 0) return;
    ws._attach(id, link.bridged || null, link.engineSocket || null);
    this._connections++;
    ws._server = this;
    if (this.clients) this.clients.add(ws);
    cb(ws, req);
  }
}

module.exports = WebSocketServer;

// The server `tls` options the engine's TLS (rustls) serves; any other goes to Node's TLS.
const ENGINE_SERVER_TLS_OPTIONS = new Set(['cert', 'key', 'ca', 'passphrase', 'requestCert', 'rejectUnauthorized']);

/**
 * The first `tls` option only Node's TLS serves, or null.
 *
 * @param {Object} tls The server's `tls` option
 * @return {(String|null)}
 */
function nodeTlsOption(tls) {
  for (const name of Object.keys(tls)) {
    if (tls[name] === undefined || ENGINE_SERVER_TLS_OPTIONS.has(name)) continue;
    return name;
  }
  for (const name of ['key', 'cert']) {
    if (Array.isArray(tls[name]) && tls[name].length > 1) return name;
  }
  return null;
}

/**
 * ws's answer to a request that is not an upgrade, on a server it makes itself.
 *
 * @param {http.IncomingMessage} req The request
 * @param {http.ServerResponse} res The response
 */
function upgradeRequired(req, res) {
  const body = http.STATUS_CODES[426];
  res.writeHead(426, { 'Content-Length': body.length, 'Content-Type': 'text/plain' });
  res.end(body);
}

/**
 * Throws the error of unusable `tls` options at once, as https.createServer() does.
 *
 * @param {Object} r What the engine answered to `listen` or `attachServer`
 */
function throwBadOptions(r) {
  if (!r.badOptions) return;
  const err = new Error(r.errorMessage);
  err.code = r.errorCode;
  throw err;
}

/**
 * Emit a `'close'` event on an `EventEmitter`.
 *
 * @param {EventEmitter} server The event emitter
 * @private
 */
function emitClose(server) {
  server._state = CLOSED;
  topics.closeServerHub(server);
  server.emit('close');
}

/**
 * Add event listeners on an `EventEmitter` using a map of <event, listener>
 * pairs.
 *
 * @param {EventEmitter} server The event emitter
 * @param {Object.<String, Function>} map The listeners to add
 * @return {Function} A function that will remove the added listeners when
 *     called
 * @private
 */
function addListeners(server, map) {
  for (const event of Object.keys(map)) server.on(event, map[event]);

  return function removeListeners() {
    for (const event of Object.keys(map)) {
      server.removeListener(event, map[event]);
    }
  };
}

/**
 * Handle socket errors.
 *
 * @private
 */
function socketOnError() {
  this.destroy();
}

/**
 * Turns a flat name, value list into an object.
 *
 * @param {String[]} list The list
 * @return {Object} The object
 */
function pairsToObject(list) {
  const out = {};
  for (let i = 0; i + 1 < list.length; i += 2) out[list[i]] = list[i + 1];
  return out;
}

/**
 * A flat name, value list from a headers object (for requests made without `rawHeaders`).
 *
 * @param {Object} headers The headers
 * @return {String[]} The list
 */
function rawFromHeaders(headers) {
  const out = [];
  for (const k of Object.keys(headers || {})) {
    const v = headers[k];
    if (Array.isArray(v)) for (const item of v) out.push(k, String(item));
    else if (v !== undefined) out.push(k, String(v));
  }
  return out;
}

/**
 * Emit a `'wsClientError'` event on a `WebSocketServer` if there is at least
 * one listener for it, otherwise refuse the handshake.
 *
 * @param {WebSocketServer} server The WebSocket server
 * @param {Object} req The request object
 * @param {(EngineLink|NodeLink)} link Where the connection is
 * @param {Number} code The HTTP response status code
 * @param {String} message The HTTP response body
 * @param {Object} [headers] The HTTP response headers
 * @private
 */
function abortHandshakeOrEmitwsClientError(server, req, link, code, message, headers) {
  if (server.listenerCount('wsClientError')) {
    const err = new Error(message);
    Error.captureStackTrace(err, abortHandshakeOrEmitwsClientError);

    server.emit('wsClientError', err, link.socket, req);
  } else {
    link.abort(code, message, headers);
  }
}
