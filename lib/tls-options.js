'use strict';

// Adapts ws's (Node's) TLS options to what the engine takes: PEM text as Buffers. The TLS
// work itself (parsing, verification, Node's error codes) is in src/engine/tls.rs.

/**
 * @param {*} v A string or Buffer (or typed array)
 * @return {Buffer}
 */
function toBuffer(v) {
  if (Buffer.isBuffer(v)) return v;
  if (typeof v === 'string') return Buffer.from(v);
  if (ArrayBuffer.isView(v)) return Buffer.from(v.buffer, v.byteOffset, v.byteLength);
  if (v instanceof ArrayBuffer) return Buffer.from(v);
  throw new TypeError('TLS certificates and keys must be strings or Buffers');
}

/** `ca`: a string, a Buffer, or an array of them. */
function caList(ca) {
  if (ca === undefined || ca === null) return undefined;
  const list = (Array.isArray(ca) ? ca : [ca]).map(toBuffer);
  return list.length ? list : undefined;
}

/** `cert`: one PEM chain, or an array of them (joined). */
function certChain(cert) {
  if (cert === undefined || cert === null) return undefined;
  if (!Array.isArray(cert)) return toBuffer(cert);
  const parts = [];
  for (const c of cert) parts.push(toBuffer(c), Buffer.from('\n'));
  return parts.length ? Buffer.concat(parts) : undefined;
}

/**
 * The key entry used: `key` itself, or the first of an array of keys or `{ pem, passphrase }`.
 *
 * @param {*} key The `key` option
 * @return {*}
 */
function keyEntry(key) {
  return Array.isArray(key) ? key[0] : key;
}

/**
 * @param {*} k A key entry
 * @return {Boolean} Whether it is the `{ pem, passphrase }` form
 */
function isPemObject(k) {
  return !!k && typeof k === 'object' && !ArrayBuffer.isView(k) && 'pem' in k;
}

/** `key`: a PEM key, or an array of keys or `{ pem, passphrase }` (the first is used). */
function firstKey(key) {
  if (key === undefined || key === null) return undefined;
  let k = keyEntry(key);
  if (isPemObject(k)) k = k.pem;
  return k === undefined ? undefined : toBuffer(k);
}

/**
 * The passphrase for the key: the `{ pem, passphrase }` entry's own, else the option's.
 *
 * @param {*} key The `key` option
 * @param {*} passphrase The `passphrase` option
 * @return {(String|undefined)}
 */
function passphraseOf(key, passphrase) {
  const k = keyEntry(key);
  if (isPemObject(k) && typeof k.passphrase === 'string') return k.passphrase;
  return passphrase === undefined || passphrase === null ? undefined : String(passphrase);
}

/**
 * The client's TLS options for a `wss:` URL.
 *
 * @param {Object} opts The WebSocket options
 * @return {Object}
 */
function clientTls(opts) {
  const rejectUnauthorized =
    opts.rejectUnauthorized !== undefined
      ? opts.rejectUnauthorized !== false
      : process.env.NODE_TLS_REJECT_UNAUTHORIZED !== '0';
  return {
    ca: caList(opts.ca),
    cert: certChain(opts.cert),
    key: firstKey(opts.key),
    passphrase: passphraseOf(opts.key, opts.passphrase),
    rejectUnauthorized,
    servername: opts.servername === undefined || opts.servername === null ? undefined : String(opts.servername),
    minVersion: opts.minVersion === undefined ? undefined : String(opts.minVersion),
    maxVersion: opts.maxVersion === undefined ? undefined : String(opts.maxVersion)
  };
}

/**
 * The server's `tls` option (an addition over ws).
 *
 * @param {Object} tls `{ cert, key, ca, requestCert, rejectUnauthorized }`
 * @return {Object}
 */
function serverTls(tls) {
  if (typeof tls !== 'object' || tls === null) {
    throw new TypeError('The "tls" option must be an object with "cert" and "key"');
  }
  const cert = certChain(tls.cert);
  const key = firstKey(tls.key);
  if (!cert || !key) {
    throw new TypeError('The "tls" option needs both "cert" and "key" (PEM)');
  }
  return {
    cert,
    key,
    ca: caList(tls.ca),
    passphrase: passphraseOf(tls.key, tls.passphrase),
    requestCert: !!tls.requestCert,
    rejectUnauthorized: tls.rejectUnauthorized !== false
  };
}

module.exports = { clientTls, serverTls };
