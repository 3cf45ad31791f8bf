'use strict';

// Argument checks of the JS API, as ws makes them. Frames are validated in Rust.

const { hasBlob } = require('./constants');

/**
 * Checks a close code an application may send (ws's `isValidStatusCode`).
 *
 * @param {Number} code The code
 * @return {Boolean} `true` if valid
 */
function isValidStatusCode(code) {
  return (
    (code >= 1000 && code <= 1014 && code !== 1004 && code !== 1005 && code !== 1006) ||
    (code >= 3000 && code <= 4999)
  );
}

/**
 * Checks whether a value is a `Blob`.
 *
 * @param {*} value The value
 * @return {Boolean} `true` if it is a Blob
 */
function isBlob(value) {
  return (
    hasBlob &&
    typeof value === 'object' &&
    value !== null &&
    typeof value.arrayBuffer === 'function' &&
    typeof value.type === 'string' &&
    typeof value.stream === 'function' &&
    (value[Symbol.toStringTag] === 'Blob' || value[Symbol.toStringTag] === 'File')
  );
}

// RFC 7230 token characters, for subprotocol names.
const tokenChars = new Uint8Array(128);
for (const c of "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz") {
  tokenChars[c.charCodeAt(0)] = 1;
}

/**
 * Checks a subprotocol name (a non-empty token).
 *
 * @param {String} s The name
 * @return {Boolean} `true` if valid
 */
function isValidSubprotocol(s) {
  if (typeof s !== 'string' || s.length === 0) return false;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c > 127 || tokenChars[c] !== 1) return false;
  }
  return true;
}

/**
 * Turns send data into a Buffer without copying where possible (ws's `toBuffer`).
 *
 * @param {*} data The data
 * @return {Buffer} The buffer
 */
function toBuffer(data) {
  if (Buffer.isBuffer(data)) return data;
  if (data instanceof ArrayBuffer) return Buffer.from(data);
  if (ArrayBuffer.isView(data)) return Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  return Buffer.from(data);
}

module.exports = { isBlob, isValidStatusCode, isValidSubprotocol, toBuffer };
