'use strict';

// ReconnectingWebSocket: a client that reconnects by itself, with the options, defaults and
// events of the reconnecting-websocket package (and its fork partysocket).
//
// Design: the reconnecting socket *is* a WebSocket (a subclass of lib/websocket.js's class).
// Each attempt runs ws's client initialisation (`initAsClient`, as a redirect does) on this
// same object, after `_resetConnection()` has given the fields of the previous connection
// their initial values; the engine's events for the new connection then reach this object
// directly (native.js's table of connections maps the new id to it). So a received message
// goes from the engine to the user's 'message' listeners exactly as for a plain WebSocket:
// no wrapper, no forwarding listener, no per-message code here. What runs here is per
// connection (the overrides of `emitClose`, `_onOpen`, `_attach`, `_onError`, `close`,
// `terminate`) or per send while disconnected (the queue). `send` is overridden to queue
// while disconnected: connected, it adds one call and two field checks before ws's `send`.
// docs/reconnect.md has the options, events, error codes and measurements.
//
// The reconnect loop lives in JavaScript: one timer per attempt (the backoff), one per
// attempt whose `url` or `protocols` function is asynchronous (bounding it by
// `connectionTimeout`), one per open connection (`minUptime`, unref'd). The engine bounds the
// handshake itself (`handshakeTimeout`).

const WebSocket = require('./websocket');
const { emitErrorAndClose, initAsClient } = require('./client');
const { READY_STATE, STATE } = require('./constants');
const { isBlob, toBuffer } = require('./validation');

const { CONNECTING, OPEN, CLOSING, CLOSED } = READY_STATE;
const { CLOSE_RECEIVED } = STATE;

// reconnecting-websocket's options and defaults (`minReconnectionDelay` is drawn per socket:
// 1000 ms plus up to 4000, see the constructor), and ws-native's own. These are taken out
// of the options object; every other option goes to each connection as a WebSocket option.
const DEFAULTS = {
  maxReconnectionDelay: 10000,
  minReconnectionDelay: undefined,
  reconnectionDelayGrowFactor: 1.3,
  minUptime: 5000,
  connectionTimeout: 4000,
  maxRetries: Infinity,
  maxEnqueuedMessages: Infinity,
  startClosed: false,
  debug: false,
  // partysocket's: where `debug` writes.
  debugLogger: undefined,
  // reconnecting-websocket's choice of WebSocket class: accepted, and not used (the
  // connections are this package's).
  WebSocket: undefined,
  // ws-native's: the bytes the queue of unsent messages may hold, and which close codes from
  // the server end the reconnecting.
  maxEnqueuedBytes: 16 * 1024 * 1024,
  stopOnClose: undefined
};

/**
 * The default of the `stopOnClose` option: the close codes from the server that end the
 * reconnecting. 1000 (normal closure) and 1001 (going away) say the server is done with this
 * client; 4000-4999 are the application's own codes, by which servers refuse clients (an
 * expired token, a kicked user). Any other code (1011, 1012, 1005...) and an abnormal end
 * (1006) are retried.
 *
 * @param {Number} code The close code
 * @return {Boolean} `true` if no reconnection follows
 */
function defaultStopOnClose(code) {
  return code === 1000 || code === 1001 || (code >= 4000 && code <= 4999);
}

/**
 * An error with a `code`, as ws's errors have.
 *
 * @param {String} message The message
 * @param {String} code The code
 * @return {Error}
 */
function codedError(message, code) {
  const err = new Error(message);
  err.code = code;
  return err;
}

/**
 * The first listener of every reconnecting socket's 'error' event. Errors of connections
 * that are retried are expected: they are emitted to the user's listeners, if any, and never
 * thrown for want of one (EventEmitter throws an 'error' nobody listens to). It also marks
 * the moment user code can run in `_onError` (see `_internalCall`).
 *
 * @this {ReconnectingWebSocket}
 */
function errorGuard() {
  this._internalClose = false;
}

/**
 * Whether `value` is a promise (or a thenable).
 *
 * @param {*} value The value
 * @return {Boolean}
 */
function isThenable(value) {
  return value !== null && (typeof value === 'object' || typeof value === 'function') && typeof value.then === 'function';
}

/**
 * Checks a numeric option.
 *
 * @param {String} name Its name
 * @param {*} value Its value
 * @param {Number} min The least value allowed
 * @return {Number} The value
 * @throws {TypeError|RangeError} If it is not a number, or below `min`
 */
function numberOption(name, value, min) {
  if (typeof value !== 'number' || Number.isNaN(value)) {
    throw new TypeError(`The ${name} option must be a number`);
  }
  if (value < min) throw new RangeError(`The ${name} option must be at least ${min}`);
  return value;
}

/**
 * A client that reconnects by itself when its connection closes or fails, with the
 * options and events of reconnecting-websocket, and ws's API (it is a WebSocket).
 *
 * @extends WebSocket
 */
class ReconnectingWebSocket extends WebSocket {
  /**
   * Create a new `ReconnectingWebSocket`.
   *
   * @param {(String|URL|Function)} url The URL, or a function (possibly async) called
   *     before each attempt that returns one
   * @param {(String|String[]|Function)} [protocols] The subprotocols, or a function
   *     (possibly async) called before each attempt that returns them
   * @param {Object} [options] reconnecting-websocket's options (see docs/reconnect.md) and
   *     any WebSocket option, passed to each connection
   */
  constructor(url, protocols, options) {
    super(null);
    // ws's form `new WebSocket(url, options)`.
    if (
      options === undefined &&
      typeof protocols === 'object' &&
      protocols !== null &&
      !Array.isArray(protocols)
    ) {
      options = protocols;
      protocols = undefined;
    }

    const opts = { ...DEFAULTS };
    const wsOptions = {};
    if (options !== undefined && options !== null) {
      for (const name of Object.keys(options)) {
        if (Object.prototype.hasOwnProperty.call(DEFAULTS, name)) {
          if (options[name] !== undefined) opts[name] = options[name];
        } else {
          wsOptions[name] = options[name];
        }
      }
    }
    if (opts.minReconnectionDelay === undefined) opts.minReconnectionDelay = 1000 + Math.random() * 4000;
    numberOption('minReconnectionDelay', opts.minReconnectionDelay, 0);
    numberOption('maxReconnectionDelay', opts.maxReconnectionDelay, 0);
    numberOption('reconnectionDelayGrowFactor', opts.reconnectionDelayGrowFactor, 1);
    numberOption('minUptime', opts.minUptime, 0);
    numberOption('connectionTimeout', opts.connectionTimeout, 0);
    numberOption('maxRetries', opts.maxRetries, 0);
    numberOption('maxEnqueuedMessages', opts.maxEnqueuedMessages, 0);
    numberOption('maxEnqueuedBytes', opts.maxEnqueuedBytes, 0);
    if (opts.stopOnClose !== undefined && typeof opts.stopOnClose !== 'function') {
      throw new TypeError('The stopOnClose option must be a function');
    }

    // The client fields a plain client's constructor sets.
    this._redirects = 0;
    this._req = null;
    this._handshake = null;
    this._url = typeof url === 'string' ? url : url instanceof URL ? url.href : '';

    /** What each attempt connects to, and with. */
    this._urlProvider = url;
    this._protocolsProvider = protocols;
    this._wsOptions = wsOptions;
    this._reconnectOptions = opts;
    this._stopOnClose = opts.stopOnClose || defaultStopOnClose;
    /** Failed attempts since the last connection that stayed up `minUptime` (or reconnect()). */
    this._retryCount = 0;
    /** No reconnection follows: close() or terminate() was called, or a close ended it. */
    this._stopped = false;
    /** The next attempt starts at once, whatever ends the current connection (reconnect()). */
    this._reconnectNow = false;
    /** An attempt's connection exists (initAsClient ran) and has not closed. */
    this._inFlight = false;
    /** Increases when an attempt is abandoned: a late `url` promise or failure is ignored. */
    this._attemptToken = 0;
    this._everOpened = false;
    /** The id of the connection whose open was handled (the node path reports it twice). */
    this._connectedId = 0;
    this._backoffTimer = null;
    this._urlTimer = null;
    this._uptimeTimer = null;
    /** Sends made while disconnected: `[data, options, cb, ...]`, and their bytes. */
    this._queue = null;
    this._queuedCount = 0;
    this._queuedBytes = 0;
    /** Set while ws's own code may call close()/terminate() (see `_internalCall`). */
    this._internalClose = false;
    this._sawCloseFrame = false;
    this._emittingClose = false;

    this.prependListener('error', errorGuard);

    if (opts.startClosed) {
      this._stopped = true;
      this._readyState = CLOSED;
      return;
    }
    // A string or URL is checked now, as ws's constructor does (an invalid one throws);
    // what a function returns is checked at each attempt (an invalid one fails it).
    this._connect(typeof url !== 'function' && typeof protocols !== 'function');
  }

  /**
   * The bytes sent and not written yet, including the messages queued while disconnected
   * (and, after the final close, those never sent).
   *
   * @type {Number}
   */
  get bufferedAmount() {
    return super.bufferedAmount + this._queuedBytes;
  }

  /**
   * Failed attempts since the last connection that stayed up `minUptime`
   * (reconnecting-websocket's `retryCount`).
   *
   * @type {Number}
   */
  get retryCount() {
    return this._retryCount;
  }

  /**
   * Whether another connection follows when the current one closes (partysocket's
   * `shouldReconnect`): in a 'close' listener, `false` means this close is the last.
   *
   * @type {Boolean}
   */
  get shouldReconnect() {
    return !this._stopped;
  }

  /**
   * Starts an attempt: calls the `url` and `protocols` functions, then connects.
   *
   * @param {Boolean} sync The constructor's attempt with a string URL: errors throw
   * @private
   */
  _connect(sync) {
    const token = ++this._attemptToken;
    this._resetConnection();
    this._connectedId = 0;
    this._internalClose = false;
    this._sawCloseFrame = false;
    if (!this.rawListeners('error').includes(errorGuard)) this.prependListener('error', errorGuard);
    const started = Date.now();
    this._debug('connect, attempt', this._retryCount);

    let url = this._urlProvider;
    let protocols = this._protocolsProvider;
    try {
      if (typeof url === 'function') url = url();
      if (typeof protocols === 'function') protocols = protocols();
    } catch (err) {
      this._failAttempt(err);
      return;
    }
    if (!isThenable(url) && !isThenable(protocols)) {
      this._open(url, protocols, started, sync);
      return;
    }
    const timeout = this._reconnectOptions.connectionTimeout;
    if (timeout > 0 && timeout !== Infinity) {
      this._urlTimer = setTimeout(() => {
        this._urlTimer = null;
        if (token === this._attemptToken) this._failAttempt(new Error('Opening handshake has timed out'));
      }, timeout);
    }
    Promise.all([url, protocols]).then(
      ([u, p]) => {
        if (token !== this._attemptToken) return;
        this._clearTimer('_urlTimer');
        this._open(u, p, started, false);
      },
      (err) => {
        if (token !== this._attemptToken) return;
        this._clearTimer('_urlTimer');
        this._failAttempt(err instanceof Error ? err : new Error(String(err)));
      }
    );
  }

  /**
   * Opens the attempt's connection: ws's client initialisation on this object, with the
   * handshake bounded by what is left of `connectionTimeout`.
   *
   * @param {(String|URL)} url The URL
   * @param {(String|String[]|null|undefined)} protocols The subprotocols
   * @param {Number} started When the attempt started (`Date.now()`)
   * @param {Boolean} sync Let errors throw (the constructor's attempt)
   * @private
   */
  _open(url, protocols, started, sync) {
    if (protocols === undefined || protocols === null) protocols = [];
    else if (!Array.isArray(protocols)) protocols = [protocols];
    const options = { ...this._wsOptions };
    const timeout = this._reconnectOptions.connectionTimeout;
    if (timeout > 0 && timeout !== Infinity) {
      const left = Math.ceil(timeout - (Date.now() - started));
      if (left <= 0) {
        this._failAttempt(new Error('Opening handshake has timed out'));
        return;
      }
      const own = options.handshakeTimeout;
      if (!(own > 0) || own > left) options.handshakeTimeout = left;
    }
    this._inFlight = true;
    if (sync) {
      initAsClient(this, url, protocols, options);
      return;
    }
    try {
      initAsClient(this, url, protocols, options);
    } catch (err) {
      // An invalid URL or subprotocol from a function, or a bad option: a failed attempt.
      this._inFlight = false;
      this._failAttempt(err);
    }
  }

  /**
   * Fails the current attempt before it has a connection (its `url` or `protocols` function
   * threw, rejected or gave an invalid value, or took too long): 'error' then 'close', as a
   * failed handshake, on the next tick (never inside the constructor).
   *
   * @param {Error} err The error
   * @private
   */
  _failAttempt(err) {
    const token = ++this._attemptToken;
    process.nextTick(() => {
      if (token === this._attemptToken) emitErrorAndClose(this, err);
    });
  }

  /**
   * The connection is open (engine handshake).
   *
   * @param {Array} f The OPEN event's fields
   * @private
   */
  _onOpen(f) {
    super._onOpen(f);
    if (this._readyState === OPEN) this._onConnected();
  }

  /**
   * The connection is open (a handshake made by Node's http client, then handed to the
   * engine): ws's code emits 'open' right after this returns; what follows an open runs
   * once that is done.
   *
   * @private
   */
  _attach(id, bridge, socket) {
    super._attach(id, bridge, socket);
    queueMicrotask(() => {
      if (this._id === id && this._readyState === OPEN) this._onConnected();
    });
  }

  /**
   * What follows each open: the queued messages go out (before anything sent later, see
   * `send`), `minUptime` starts, and a re-open is announced with 'reconnect'.
   *
   * @private
   */
  _onConnected() {
    if (this._connectedId === this._id) return;
    this._connectedId = this._id;
    this._debug('open', this._url);
    this._flushQueue();
    const uptime = this._reconnectOptions.minUptime;
    if (uptime !== Infinity) {
      this._uptimeTimer = setTimeout(() => {
        this._uptimeTimer = null;
        this._retryCount = 0;
      }, uptime);
      this._uptimeTimer.unref();
    }
    const reopened = this._everOpened;
    this._everOpened = true;
    if (reopened) this.emit('reconnect', this._retryCount);
  }

  /**
   * A protocol error (or, with the engine's heartbeat, a timeout): ws's code closes the
   * connection itself before emitting 'error'; that close() is not the user's.
   *
   * @private
   */
  _onError(f) {
    this._internalClose = true;
    try {
      super._onError(f);
    } finally {
      this._internalClose = false;
    }
  }

  /**
   * Whether a close() or terminate() call comes from ws's own code rather than the user's:
   * the answer to the server's close frame (the first call after it arrived: nothing else
   * runs in between), or the close that `_onError` makes before user code runs. Code in
   * lib/websocket.js that ends a connection elsewhere must call `WebSocket.prototype.close`
   * or `terminate` directly, or the reconnecting socket takes it for the user's and stops.
   *
   * @return {Boolean}
   * @private
   */
  _internalCall() {
    if (this._internalClose) {
      this._internalClose = false;
      return true;
    }
    if ((this._state & CLOSE_RECEIVED) !== 0 && !this._sawCloseFrame) {
      this._sawCloseFrame = true;
      return true;
    }
    return false;
  }

  /**
   * Emit the `'close'` event of a connection, then start the wait for the next one unless
   * this close is the last: after close() or terminate(), a close code from the server that
   * `stopOnClose` accepts, or `maxRetries` failed attempts (with an 'error' first, as a
   * failed connection has).
   *
   * @private
   */
  emitClose() {
    this._inFlight = false;
    this._clearTimer('_uptimeTimer');
    let giveUp = null;
    if (!this._stopped && !this._reconnectNow) {
      if ((this._state & CLOSE_RECEIVED) !== 0 && this._serverStops()) {
        this._debug('closed by the server with', this._rare.closeCode, ': not reconnecting');
        this._stopped = true;
      } else if (this._retryCount >= this._reconnectOptions.maxRetries) {
        this._stopped = true;
        const attempts = this._retryCount + 1;
        giveUp = codedError(
          `Gave up reconnecting: ${attempts} attempt${attempts === 1 ? '' : 's'} in a row failed ` +
            `(maxRetries is ${this._reconnectOptions.maxRetries})`,
          'WS_ERR_RECONNECT_RETRIES'
        );
      }
    }
    if (this._stopped) this._dropQueue();
    this._emittingClose = true;
    try {
      if (giveUp !== null) this._emitError(giveUp);
    } finally {
      try {
        super.emitClose();
      } finally {
        this._emittingClose = false;
        if (!this._stopped) this._scheduleRetry();
      }
    }
  }

  /**
   * Whether the server's close code (and reason) ends the reconnecting (`stopOnClose`). A
   * function that throws ends it too, and its error is rethrown on the next tick (uncaught,
   * as an exception in a listener is).
   *
   * @return {Boolean}
   * @private
   */
  _serverStops() {
    const rare = this._rare;
    try {
      return !!this._stopOnClose(rare.closeCode, rare.closeMessage.toString());
    } catch (err) {
      process.nextTick(() => {
        throw err;
      });
      return true;
    }
  }

  /**
   * Waits before the next attempt: announces it with 'reconnecting' (attempt number and
   * delay), during which `readyState` is CONNECTING and sends are queued.
   *
   * @private
   */
  _scheduleRetry() {
    this._retryCount++;
    const attempt = this._retryCount;
    // Bytes of messages dropped at a last close, which reconnect() leaves behind.
    if (this._queue === null) this._queuedBytes = 0;
    const delay = this._reconnectNow ? 0 : this._nextDelay(attempt);
    this._reconnectNow = false;
    this._resetConnection();
    this._backoffTimer = setTimeout(() => {
      this._backoffTimer = null;
      this._connect(false);
    }, delay);
    this._debug('reconnecting, attempt', attempt, 'in', delay, 'ms');
    this.emit('reconnecting', attempt, delay);
  }

  /**
   * The wait before retry `attempt` (1, 2...): a random time between
   * `minReconnectionDelay × growFactor^(attempt - 1)` and `minReconnectionDelay ×
   * growFactor^attempt`, both capped at `maxReconnectionDelay` (once capped, between
   * `maxReconnectionDelay / growFactor` and `maxReconnectionDelay`), never below
   * `minReconnectionDelay`. reconnecting-websocket waits the lower bound exactly; the
   * random part spreads out the clients of a server that restarts.
   *
   * @param {Number} attempt The retry number
   * @return {Number} The delay in ms
   * @private
   */
  _nextDelay(attempt) {
    const o = this._reconnectOptions;
    const min = o.minReconnectionDelay;
    const grow = o.reconnectionDelayGrowFactor;
    const hi = Math.min(o.maxReconnectionDelay, min * Math.pow(grow, attempt));
    const lo = Math.min(hi, Math.max(min, hi / grow));
    return Math.round(lo + Math.random() * (hi - lo));
  }

  /**
   * Send a data message; while disconnected (and a connection is to follow), it is queued and
   * sent, in order, once connected. Past `maxEnqueuedMessages` or `maxEnqueuedBytes` the
   * send fails with `WS_ERR_RECONNECT_QUEUE_FULL`: the callback gets the error, else it is
   * emitted as 'error' (thrown by send() when nothing listens to 'error').
   *
   * @param {*} data The message to send
   * @param {Object} [options] ws's send options
   * @param {Function} [cb] Called when the message is written out, or with an error
   * @public
   */
  send(data, options, cb) {
    if (this._readyState === OPEN && this._queue === null) {
      super.send(data, options, cb);
      return;
    }
    this._sendOrQueue(data, options, cb);
  }

  /**
   * `send()` while a queue exists or the connection is not open.
   *
   * @private
   */
  _sendOrQueue(data, options, cb) {
    if (this._readyState === OPEN) {
      // Opened, and its 'open' listeners run before the queue is flushed: the queue first.
      this._flushQueue();
      super.send(data, options, cb);
      return;
    }
    if (this._stopped) {
      // No connection follows: ws's behaviour on a closed socket.
      super.send(data, options, cb);
      return;
    }
    if (typeof options === 'function') {
      cb = options;
      options = undefined;
    }
    if (typeof data === 'number') data = data.toString();
    let bytes = 0;
    if (typeof data === 'string') {
      bytes = Buffer.byteLength(data);
    } else if (isBlob(data)) {
      bytes = data.size;
    } else if (data !== undefined && data !== null) {
      // A copy: the caller may reuse its buffer before the message goes out.
      data = Buffer.from(toBuffer(data));
      bytes = data.length;
    }
    const o = this._reconnectOptions;
    let full = null;
    if (this._queuedCount + 1 > o.maxEnqueuedMessages) {
      full = `maxEnqueuedMessages (${o.maxEnqueuedMessages}) messages are queued`;
    } else if (this._queuedBytes + bytes > o.maxEnqueuedBytes) {
      full = `the message's ${bytes} bytes would take the queue past maxEnqueuedBytes (${o.maxEnqueuedBytes})`;
    }
    if (full !== null) {
      const err = codedError(`The message cannot be queued until the connection opens: ${full}`, 'WS_ERR_RECONNECT_QUEUE_FULL');
      if (cb) process.nextTick(cb, err);
      else this._emitError(err);
      return;
    }
    if (this._queue === null) this._queue = [];
    this._queue.push(data, options, cb);
    this._queuedCount++;
    this._queuedBytes += bytes;
  }

  /**
   * Sends the queued messages on the open connection, in order.
   *
   * @private
   */
  _flushQueue() {
    const q = this._queue;
    if (q === null) return;
    this._queue = null;
    this._queuedCount = 0;
    this._queuedBytes = 0;
    for (let i = 0; i < q.length; i += 3) super.send(q[i], q[i + 1], q[i + 2]);
  }

  /**
   * The last connection has closed: the queued messages will not be sent. Their callbacks
   * get `WS_ERR_RECONNECT_UNSENT`; their bytes stay in `bufferedAmount`, as a closed
   * WebSocket counts the bytes it never wrote.
   *
   * @private
   */
  _dropQueue() {
    const q = this._queue;
    if (q === null) return;
    this._queue = null;
    this._queuedCount = 0;
    let err = null;
    for (let i = 2; i < q.length; i += 3) {
      if (!q[i]) continue;
      if (err === null) err = codedError('The connection closed for good before the queued message was sent', 'WS_ERR_RECONNECT_UNSENT');
      process.nextTick(q[i], err);
    }
  }

  /**
   * Emits an error meant for the user: to the user's 'error' listeners, or thrown when there
   * is none (as EventEmitter throws an 'error' nobody listens to).
   *
   * @param {Error} err The error
   * @private
   */
  _emitError(err) {
    if (this.rawListeners('error').some((l) => l !== errorGuard)) this.emit('error', err);
    else throw err;
  }

  /**
   * Start a closing handshake, and reconnect no more. During the wait between attempts, the
   * wait ends and 'close' is emitted.
   *
   * @param {Number} [code] Status code explaining why the connection is closing
   * @param {(String|Buffer)} [data] The reason why the connection is closing
   * @public
   */
  close(code, data) {
    if (this._internalCall()) {
      super.close(code, data);
      return;
    }
    this._end(() => super.close(code, data));
  }

  /**
   * Forcibly close the connection, and reconnect no more.
   *
   * @public
   */
  terminate() {
    if (this._internalCall()) {
      super.terminate();
      return;
    }
    this._end(() => super.terminate());
  }

  /**
   * The user's close() or terminate().
   *
   * @param {Function} end ws's close() or terminate()
   * @private
   */
  _end(end) {
    if (this._readyState === CLOSED) {
      // The last close was emitted, or this is a 'close' listener: nothing follows it.
      this._stop();
      this._dropQueue();
      return;
    }
    if (this._readyState === CONNECTING && !this._inFlight) {
      // Waiting between attempts, or for the url function: no connection to close.
      this._stop();
      this._readyState = CLOSING;
      process.nextTick(() => this.emitClose());
      return;
    }
    // Sends made before close() go out before the close frame, as in ws.
    if (this._readyState === OPEN) this._flushQueue();
    end();
    this._stop();
  }

  /**
   * No reconnection from now on: the timers stop (the process may exit), a pending attempt
   * is abandoned.
   *
   * @private
   */
  _stop() {
    this._debug('stopped by the user');
    this._stopped = true;
    this._reconnectNow = false;
    this._attemptToken++;
    this._clearTimer('_backoffTimer');
    this._clearTimer('_urlTimer');
    this._clearTimer('_uptimeTimer');
  }

  /**
   * Closes the current connection (with a close handshake if open, else at once) and connects
   * again without waiting, the retry count reset (reconnecting-websocket's `reconnect()`).
   * After the last close (or with `startClosed`), starts connecting again.
   *
   * @param {Number} [code=1000] The close code for the current connection
   * @param {(String|Buffer)} [reason] The close reason
   * @public
   */
  reconnect(code, reason) {
    const state = this._readyState;
    if (state === OPEN) {
      this._flushQueue();
      super.close(code === undefined ? 1000 : code, reason);
    } else if (state === CLOSING || (state === CONNECTING && this._inFlight)) {
      super.terminate();
    }
    this._debug('reconnect()');
    this._stopped = false;
    this._reconnectNow = true;
    this._retryCount = -1;
    this._clearTimer('_uptimeTimer');
    if (this._emittingClose || state === OPEN || state === CLOSING || this._inFlight) return;
    // Nothing to close: waiting between attempts, or after the last close.
    this._attemptToken++;
    this._clearTimer('_backoffTimer');
    this._clearTimer('_urlTimer');
    this._scheduleRetry();
  }

  /**
   * Stops one of the timers.
   *
   * @param {String} name `_backoffTimer`, `_urlTimer` or `_uptimeTimer`
   * @private
   */
  _clearTimer(name) {
    if (this[name] !== null) {
      clearTimeout(this[name]);
      this[name] = null;
    }
  }

  /**
   * With the `debug` option, logs what the reconnect loop does (never per message).
   *
   * @private
   */
  _debug(...args) {
    const o = this._reconnectOptions;
    if (!o.debug) return;
    (o.debugLogger || console.log)('RWS>', ...args);
  }
}

['bufferedAmount', 'retryCount', 'shouldReconnect'].forEach((property) => {
  Object.defineProperty(ReconnectingWebSocket.prototype, property, { enumerable: true });
});

ReconnectingWebSocket.defaultStopOnClose = defaultStopOnClose;

module.exports = ReconnectingWebSocket;
