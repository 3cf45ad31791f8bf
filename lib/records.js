'use strict';

// Readers of the engine's records (their format: src/engine/wire.rs): length-prefixed fields,
// read in place, and the UPGRADE record's fields read into one reused object.

/**
 * Reads a record's length-prefixed fields (`[len u32 LE][bytes]` each) in order, in place:
 * one reader, reused (no Buffer view or array per record).
 */
class FieldReader {
  constructor() {
    this.buf = null;
    this.pos = 0;
  }

  /** Starts at `pos` of `buf`. */
  at(buf, pos) {
    this.buf = buf;
    this.pos = pos;
    return this;
  }

  /** Steps over the next field; returns where its bytes start (they end at `this.pos`). */
  skip() {
    const start = this.pos + 4;
    this.pos = start + this.buf.readUInt32LE(this.pos);
    return start;
  }

  /** The next field as text. */
  text() {
    const start = this.skip();
    return this.buf.utf8Slice(start, this.pos);
  }

  /** The next field as text, from `cache` when it holds the same bytes. */
  cached(cache) {
    const start = this.skip();
    return cache.get(this.buf, start, this.pos);
  }

  /** Lets go of the record (the reader must not keep a batch alive). */
  done() {
    this.buf = null;
  }
}

const reader = new FieldReader();

/**
 * All of a record's fields, as views of it.
 *
 * @param {Buffer} buf The record payload
 * @return {Buffer[]} The fields
 */
function fields(buf) {
  const out = [];
  const r = reader.at(buf, 0);
  while (r.pos + 4 <= buf.length) {
    const start = r.skip();
    out.push(buf.subarray(start, r.pos));
  }
  r.done();
  return out;
}

/**
 * A field's text, or the string made for the same bytes last time: most connections share
 * their method, path and addresses, and each new string is garbage for V8's young
 * generation to copy (short ones only: up to 64 bytes are remembered).
 */
class TextCache {
  constructor() {
    this.bytes = Buffer.alloc(64);
    this.length = -1;
    this.text = '';
  }

  get(buf, start, end) {
    const n = end - start;
    if (n === 0) return '';
    if (n === this.length && this.same(buf, start, n)) return this.text;
    const text = buf.utf8Slice(start, end);
    if (n <= this.bytes.length) {
      buf.copy(this.bytes, 0, start, end);
      this.length = n;
      this.text = text;
    }
    return text;
  }

  /** Whether `buf[start, start + n)` holds the remembered bytes (a loop: Buffer#compare
   * with ranges makes views). */
  same(buf, start, n) {
    const bytes = this.bytes;
    for (let i = 0; i < n; i++) {
      if (buf[start + i] !== bytes[i]) return false;
    }
    return true;
  }
}

const methods = new TextCache();
const paths = new TextCache();
const remoteAddresses = new TextCache();
const localAddresses = new TextCache();
const HTTP_VERSIONS = ['1.0', '1.1'];

/**
 * The fields of the last UPGRADE record read: one object, filled again by each record (an
 * object per request would be one more for V8's young generation to copy). Whoever gets it
 * reads what it keeps before the next record is read.
 */
const upgrade = {
  server: 0,
  status: 0,
  wsVersion: 0,
  method: '',
  url: '',
  httpVersion: '',
  raw: '',
  remoteAddress: '',
  remotePort: 0,
  remoteFamily: '',
  localAddress: '',
  localPort: 0,
  message: '',
  rejectHeaders: '',
  accept: '',
  protocols: '',
  extensions: ''
};

/**
 * Reads an UPGRADE record (`Records::upgrade` in src/engine/wire.rs): its fixed field of
 * numbers, then the text fields. Text that most requests leave empty or share is not made
 * again; what the handshake cannot go on without is read now (the batch is not kept).
 *
 * @param {Buffer} buf The batch (or the record)
 * @param {Number} start Where the record starts
 * @return {Object} `upgrade`, filled with the request's fields
 */
function upgradeRecord(buf, start) {
  const r = reader.at(buf, start);
  const f = r.skip();
  const u = upgrade;
  u.server = buf.readUInt32LE(f);
  u.status = buf.readUInt16LE(f + 4);
  u.remotePort = buf.readUInt16LE(f + 6);
  u.localPort = buf.readUInt16LE(f + 8);
  u.wsVersion = buf[f + 10];
  const minor = buf[f + 11];
  u.httpVersion = HTTP_VERSIONS[minor] || `1.${minor}`;
  u.remoteFamily = buf[f + 12] === 1 ? 'IPv6' : 'IPv4';
  u.method = r.cached(methods);
  u.url = r.cached(paths);
  u.raw = r.text();
  u.remoteAddress = r.cached(remoteAddresses);
  u.localAddress = r.cached(localAddresses);
  u.message = r.text();
  u.rejectHeaders = r.text();
  u.accept = r.text();
  u.protocols = r.text();
  u.extensions = r.text();
  r.done();
  return u;
}

module.exports = { fields, upgradeRecord };
