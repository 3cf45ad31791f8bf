'use strict';

// Node's HTTP objects where the engine made the handshake and Node's http client did not:
// the response handed to `upgrade` and `unexpected-response`, and the request handed to
// `unexpected-response` and `redirect`, built from what the engine read.

const EventEmitter = require('events');
const { Readable } = require('stream');

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

/**
 * A stand-in for the `http.ClientRequest` of `unexpected-response` and `redirect`.
 *
 * @param {String} path The request's path
 * @return {Object} The request
 */
function requestStub(path) {
  const req = new EventEmitter();
  req.path = path;
  req.method = 'GET';
  req.abort = req.destroy = () => {};
  return req;
}

module.exports = { headersFromRaw, requestStub, responseFromFields };
