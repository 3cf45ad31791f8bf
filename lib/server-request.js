'use strict';

// The request a standalone server hands to `connection`, `verifyClient`, `handleProtocols`,
// `headers` and `wsClientError`, and its socket: made from the engine's UPGRADE record.

const http = require('http');
const { Readable } = require('stream');

const { EngineSocket } = require('./engine-socket');
const { headersFromRaw } = require('./http-shims');

/**
 * The request handed to `connection`, `verifyClient`, `handleProtocols`, `headers` and
 * `wsClientError`: an `http.IncomingMessage` (its prototype chain is Node's, so `instanceof`,
 * Node's methods and stream behaviour are there) made without running Node's constructor:
 * what most servers never read (the header lists, the socket, the stream state) is made on
 * first use, and what every request shares is on the prototype. Like an upgrade request
 * Node's server receives, it has no body: read as a stream, it ends at once.
 *
 * @param {EngineLink} link Where the connection is
 * @param {Object} f The UPGRADE record's fields (see `upgradeRecord` in records.js)
 * @constructor
 */
function IncomingRequest(link, f) {
  this._link = link;
  this.method = f.method;
  this.url = f.url;
  this.httpVersion = f.httpVersion;
  this.httpVersionMinor = f.httpVersion === '1.0' ? 0 : 1;
  this._raw = f.raw;
  this._remoteAddress = f.remoteAddress;
  this._remotePort = f.remotePort;
  this._remoteFamily = f.remoteFamily;
  this._localAddress = f.localAddress;
  this._localPort = f.localPort;
}

Object.setPrototypeOf(IncomingRequest.prototype, http.IncomingMessage.prototype);
Object.setPrototypeOf(IncomingRequest, http.IncomingMessage);

/**
 * Defines an accessor whose value is made on first use and kept by the request (assigning
 * it sets the request's own value).
 *
 * @param {String} name The property
 * @param {Function} make Makes the value from the request
 */
function lazy(name, make) {
  Object.defineProperty(IncomingRequest.prototype, name, {
    configurable: true,
    enumerable: false,
    get() {
      const value = make(this);
      own(this, name, value);
      return value;
    },
    set(value) {
      own(this, name, value);
    }
  });
}

function own(req, name, value) {
  Object.defineProperty(req, name, { value, writable: true, configurable: true, enumerable: true });
}

lazy('socket', (req) => {
  const a = {
    remoteAddress: req._remoteAddress,
    remotePort: req._remotePort,
    remoteFamily: req._remoteFamily,
    localAddress: req._localAddress,
    localPort: req._localPort
  };
  const socket = new EngineSocket(req._link, a, req._tls);
  req._link.engineSocket = socket;
  return socket;
});
lazy('client', (req) => req.socket);
lazy('rawHeaders', (req) => (req._raw ? req._raw.split('\0').slice(0, -1) : []));
lazy('headers', (req) => headersFromRaw(req.rawHeaders));
lazy('headersDistinct', (req) => {
  const out = {};
  const raw = req.rawHeaders;
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = raw[i].toLowerCase();
    (out[name] || (out[name] = [])).push(raw[i + 1]);
  }
  return out;
});
lazy('trailers', () => ({}));
lazy('trailersDistinct', () => ({}));
lazy('_readableState', (req) => {
  const state = new Readable.ReadableState({}, req, false);
  // No body follows an upgrade request: the stream has ended.
  own(req, '_readableState', state);
  Readable.prototype.push.call(req, null);
  return state;
});

// What every request shares, as Node's constructor would set it for an upgrade request.
Object.assign(IncomingRequest.prototype, {
  _tls: undefined,
  httpVersionMajor: 1,
  complete: true,
  upgrade: true,
  aborted: false,
  statusCode: null,
  statusMessage: null,
  rawTrailers: Object.freeze([]),
  joinDuplicateHeaders: undefined,
  _consuming: false,
  _dumped: false
});

module.exports = { IncomingRequest };
