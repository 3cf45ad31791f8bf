'use strict';

// The request a standalone server hands to `connection`, `verifyClient`, `handleProtocols`,
// `headers` and `wsClientError`, and its socket: made from the engine's UPGRADE record.

const EventEmitter = require('events');

const native = require('./native');
const { headersFromRaw } = require('./http-shims');

/**
 * The socket side of a server connection before and around the upgrade, as far as ws
 * users touch it (`req.socket`, the `wsClientError` socket).
 */
class NativeSocket extends EventEmitter {
  constructor(link, req, tls) {
    super();
    this._link = link;
    this.remoteAddress = req._remoteAddress;
    this.remotePort = req._remotePort;
    this.remoteFamily = req._remoteFamily;
    this.localAddress = req._localAddress;
    this.localPort = req._localPort;
    this.encrypted = tls ? true : undefined;
    if (tls) this.authorized = tls.authorized;
    this.destroyed = false;
  }

  /** Queues a command for the connection while JS holds its id (a socket kept after its
   * connection ended must not reach the next connection given the same slot). */
  _command(op, data) {
    if (this._link.holds()) native.queue(op, 0, this._link.id, data);
  }

  /** Writes raw bytes (before the upgrade only). */
  write(data, encoding, cb) {
    this._command(native.OP.RAW_WRITE, typeof data === 'string' ? Buffer.from(data, typeof encoding === 'string' ? encoding : 'utf8') : data);
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
    this._command(native.OP.RAW_END, buf);
    // A refused request's socket (`wsClientError`): JS is done with the connection.
    this._link.release();
    if (typeof encoding === 'function') cb = encoding;
    if (cb) process.nextTick(cb);
    process.nextTick(() => this.emit('finish'));
    return this;
  }

  destroy() {
    if (!this.destroyed) {
      this.destroyed = true;
      this._command(native.OP.TERMINATE, null);
      this._link.release();
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
  constructor(link, f) {
    this._link = link;
    this.method = f.method;
    this.url = f.url;
    this.httpVersion = f.httpVersion;
    this.httpVersionMinor = f.httpVersion === '1.0' ? 0 : 1;
    // Header lists are built on first use (most servers never read them), and so is the
    // socket: until then `_rawHeaders`, `_headers`, `_socket` and `_tls` are the prototype's.
    this._raw = f.raw;
    this._remoteAddress = f.remoteAddress;
    this._remotePort = f.remotePort;
    this._remoteFamily = f.remoteFamily;
    this._localAddress = f.localAddress;
    this._localPort = f.localPort;
  }

  get socket() {
    if (this._socket === undefined) this._socket = new NativeSocket(this._link, this, this._tls);
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
    if (this._headers === undefined) this._headers = headersFromRaw(this.rawHeaders);
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

// The same for every request, or not made yet (read from the prototype; a request whose
// value is set gets its own).
IncomingRequest.prototype._rawHeaders = undefined;
IncomingRequest.prototype._headers = undefined;
IncomingRequest.prototype._socket = undefined;
IncomingRequest.prototype._tls = undefined;
IncomingRequest.prototype.httpVersionMajor = 1;
IncomingRequest.prototype.complete = true;
IncomingRequest.prototype.upgrade = true;
IncomingRequest.prototype.aborted = false;

module.exports = { IncomingRequest };
