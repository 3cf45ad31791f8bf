'use strict';

// Where a server connection is while ws's decisions are made: in the engine (its own
// listener parsed the request) or in Node (an http server's 'upgrade' socket). A link refuses
// the request with ws's answer, or accepts it and hands the connection to its WebSocket.

const http = require('http');

const native = require('./native');
const { adoptSocket } = require('./adopt');

const kUpgraded = Symbol('ws-native-upgraded');

/**
 * A connection accepted by the engine's own listener, waiting for ws's decision. It holds
 * the engine's id for JS (see `release` in native.js) until it hands it to the WebSocket, or
 * releases it after a refusal: commands for the id (`req.socket`'s) go out only while JS
 * holds it.
 */
class EngineLink {
  constructor(id) {
    this.id = id;
    this.req = null;
    this.upgraded = false;
    this.held = true;
    this.ws = null;
    /** The request's socket, once made: the WebSocket's `_socket` after the upgrade. */
    this.engineSocket = null;
  }

  /** Whether the id is still JS's: this link's, or its WebSocket's until that closes. */
  holds() {
    return this.held || (this.ws !== null && native.connections.get(this.id) === this.ws);
  }

  /** The request's socket was destroyed: its WebSocket, if any, sends no more. */
  socketDestroyed() {
    if (this.ws !== null) this.ws._socketDestroyed();
  }

  /** JS is done with the id (no WebSocket took it). */
  release() {
    if (!this.held) return;
    this.held = false;
    native.release(this.id);
  }

  /** Refuses the request with ws's HTTP answer (`abortHandshake`). */
  abort(code, message, headers) {
    if (!this.held) return;
    native.binding.reject(this.id, code, message || http.STATUS_CODES[code], headerList(headers));
    this.release();
  }

  /** Answers with `response` (or the standard 101) and hands over to `server._accepted`. */
  accept(response, acceptKey, protocol, extensions, conn, server, ws, req, cb) {
    const ok = this.held && (response === null
      ? native.binding.acceptStandard(this.id, acceptKey, protocol, extensions)
      : native.binding.accept(this.id, response));
    if (ok) {
      // The WebSocket's entry in `native.connections` holds the id from now on.
      this.held = false;
      this.ws = ws;
    } else {
      this.release();
    }
    server._accepted(this, ok ? this.id : 0, ws, req, cb);
  }

  /** The `wsClientError` socket. */
  get socket() {
    return this.req.socket;
  }
}

/**
 * A socket Node's http server received: answered on the socket while refused, handed to the
 * engine once accepted.
 */
class NodeLink {
  constructor(socket, head) {
    this.socket = socket;
    this.head = head;
    this.bridged = null;
  }

  // Kept on the socket, so that a second handleUpgrade() for it is caught as in ws.
  get upgraded() {
    return this.socket[kUpgraded] === true;
  }

  set upgraded(value) {
    this.socket[kUpgraded] = value;
  }

  abort(code, message, headers) {
    const socket = this.socket;
    if (!socket.writable) {
      socket.destroy();
      return;
    }
    socket.once('finish', socket.destroy);
    socket.end(native.binding.rejection(code, message || http.STATUS_CODES[code], headerList(headers)));
  }

  accept(response, acceptKey, protocol, extensions, conn, server, ws, req, cb) {
    if (response === null) response = native.binding.head(native.binding.acceptLines(acceptKey, protocol, extensions));
    adoptSocket(this.socket, this.head, response, conn, false, extensions, (id, bridged) => {
      this.bridged = bridged;
      server._accepted(this, id, ws, req, cb);
    });
  }
}

/**
 * A flat name, value list of a refusal's extra headers.
 *
 * @param {Object} [headers] The headers
 * @return {String[]} The list
 */
function headerList(headers) {
  const list = [];
  if (headers) for (const k of Object.keys(headers)) list.push(k, String(headers[k]));
  return list;
}

module.exports = { EngineLink, NodeLink };
