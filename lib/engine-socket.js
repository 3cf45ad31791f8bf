'use strict';

// The socket of a connection the engine serves, as far as ws users touch it: `ws._socket`
// (both sides) and a standalone server's `req.socket` (the same object once the request is
// accepted). Its addresses and byte counts are the engine's socket's; `setNoDelay` and
// `setKeepAlive` set that socket's options. Before the upgrade it can also write raw bytes
// and end (a `wsClientError` listener's answer).

const EventEmitter = require('events');

const native = require('./native');

const NO_ADDRESSES = Object.freeze({
  remoteAddress: undefined,
  remotePort: undefined,
  remoteFamily: undefined,
  localAddress: undefined,
  localPort: undefined
});

/**
 * A WebSocket's hold on its engine connection id, for its `_socket`: commands go out while
 * the id is the WebSocket's.
 */
class HeldBy {
  constructor(websocket) {
    this.id = websocket._id;
    this.ws = websocket;
  }

  holds() {
    return native.connections.get(this.id) === this.ws;
  }

  release() {}

  socketDestroyed() {
    this.ws._socketDestroyed();
  }
}

class EngineSocket extends EventEmitter {
  /**
   * @param {Object} link Holds the connection id: `id`, `holds()`, `release()`
   * @param {Object} [addresses] The addresses when known (a request's), else read from the
   *     engine on first use
   * @param {Object} [tls] `{ authorized }` when the engine's TLS serves the connection
   */
  constructor(link, addresses, tls) {
    super();
    this._link = link;
    this._addresses = addresses || null;
    this._bytesRead = 0;
    this._bytesWritten = 0;
    this._timer = null;
    this._timeoutMs = 0;
    this.encrypted = tls ? true : undefined;
    if (tls) this.authorized = tls.authorized;
    this.destroyed = false;
  }

  /** Asks the engine for the socket's figures (the last ones once the connection is gone). */
  _query() {
    const info = this._link.holds() ? native.binding.socketInfo(this._link.id) : null;
    if (info) {
      this._bytesRead = info.bytesRead;
      this._bytesWritten = info.bytesWritten;
      if (this._addresses === null && info.remoteAddress) this._addresses = info;
    }
    return info;
  }

  _address() {
    if (this._addresses === null) this._query();
    return this._addresses || NO_ADDRESSES;
  }

  get remoteAddress() {
    return this._address().remoteAddress;
  }

  get remotePort() {
    return this._address().remotePort;
  }

  get remoteFamily() {
    return this._address().remoteFamily;
  }

  get localAddress() {
    return this._address().localAddress;
  }

  get localPort() {
    return this._address().localPort;
  }

  get bytesRead() {
    this._query();
    return this._bytesRead;
  }

  get bytesWritten() {
    this._query();
    return this._bytesWritten;
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

  /** Writes the last raw bytes and ends the connection (before the upgrade only). */
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

  /** Ends the connection at once (an open WebSocket then closes with 1006). */
  destroy() {
    if (!this.destroyed) {
      this.destroyed = true;
      this._clearTimer();
      this._command(native.OP.TERMINATE, null);
      if (this._link.socketDestroyed) this._link.socketDestroyed();
      this._link.release();
      process.nextTick(() => this.emit('close'));
    }
    return this;
  }

  /**
   * Emits 'timeout' once the socket has been idle (no byte read or written) for `ms`, as
   * net.Socket does; 0 turns it off. The check runs when the timer fires: a socket active
   * meanwhile is checked again `ms` after that, so 'timeout' comes between `ms` and `2 * ms`
   * after the last activity. Like Node's, the timer does not keep the process alive.
   */
  setTimeout(ms, cb) {
    this._clearTimer();
    this._timeoutMs = ms > 0 ? ms : 0;
    if (this._timeoutMs === 0) {
      if (cb) this.removeListener('timeout', cb);
    } else {
      if (cb) this.once('timeout', cb);
      this._armTimer(this._activity());
    }
    return this;
  }

  _activity() {
    this._query();
    return this._bytesRead + this._bytesWritten;
  }

  _armTimer(seen) {
    this._timer = setTimeout(() => {
      this._timer = null;
      if (this.destroyed || !this._link.holds()) return;
      const now = this._activity();
      if (now !== seen) this._armTimer(now);
      else this.emit('timeout');
    }, this._timeoutMs);
    this._timer.unref();
  }

  _clearTimer() {
    if (this._timer !== null) {
      clearTimeout(this._timer);
      this._timer = null;
    }
  }

  setNoDelay(noDelay) {
    if (this._link.holds()) native.binding.socketOption(this._link.id, noDelay !== false, undefined, undefined);
    return this;
  }

  setKeepAlive(enable, initialDelay) {
    if (this._link.holds()) native.binding.socketOption(this._link.id, undefined, !!enable, initialDelay || 0);
    return this;
  }

  ref() {
    return this;
  }

  unref() {
    return this;
  }
}

module.exports = { EngineSocket, HeldBy };
