'use strict';

// The client's opening handshake: the options and URL checked as ws checks them, then the
// handshake made by the engine, or by Node's http client when an option or a listener needs
// Node's objects (`agent`, `createConnection`, `finishRequest`, listeners for `upgrade`,
// `unexpected-response` or `redirect`); once upgraded, Node's socket is handed to the engine.
// Refusals, redirects and failures end here too.

const http = require('http');
const https = require('https');
const net = require('net');
const { URL } = require('url');

const native = require('./native');
const { adoptSocket } = require('./adopt');
const { CLOSE_TIMEOUT, EMPTY_BUFFER, READY_STATE } = require('./constants');
const { parseExtensionNames } = require('./extension');
const { requestStub } = require('./http-shims');
const { engineDeflate } = require('./permessage-deflate');
const { clientTls } = require('./tls-options');
const { isValidSubprotocol } = require('./validation');

const { CONNECTING, CLOSING, CLOSED } = READY_STATE;
const protocolVersions = [8, 13];
const NODE_OBJECT_EVENTS = ['upgrade', 'unexpected-response', 'redirect'];

/**
 * A non-101 answer: follow a redirect, or hand it to `unexpected-response`, or fail.
 *
 * @param {WebSocket} websocket The client
 * @param {Object} req The request (Node's, or a stand-in)
 * @param {Object} res The response (Node's, or a stand-in)
 */
function handleResponse(websocket, req, res) {
  const opts = websocket._options;
  const location = res.headers.location;
  if (location && opts.followRedirects && res.statusCode >= 300 && res.statusCode < 400) {
    if (++websocket._redirects > opts.maxRedirects) {
      abortHandshake(websocket, 'Maximum redirects exceeded');
      return;
    }
    if (typeof req.destroy === 'function') req.destroy();
    let addr;
    try {
      addr = new URL(location, websocket._address);
    } catch {
      emitErrorAndClose(websocket, new SyntaxError(`Invalid URL: ${location}`));
      return;
    }
    initAsClient(websocket, addr, websocket._protocols, websocket._userOptions);
    return;
  }
  if (!websocket.emit('unexpected-response', req, res)) {
    abortHandshake(websocket, `Unexpected server response: ${res.statusCode}`);
  }
}

/**
 * The opening handshake through Node's http client, for `agent`, `createConnection`,
 * `finishRequest` and `wss:` URLs; once upgraded, the socket is handed to the engine.
 *
 * @param {WebSocket} websocket The client
 * @param {Object} p What initAsClient worked out
 */
function nodeHandshake(websocket, p) {
  const opts = p.opts;
  if (opts.proxy && !p.isIpcUrl) {
    // The proxy is the engine's; Node's http client would silently bypass it.
    const err = new Error(
      'The proxy option cannot be combined with agent, createConnection, finishRequest, ' +
        "or listeners for 'upgrade', 'unexpected-response' or 'redirect'"
    );
    err.code = 'ERR_WS_PROXY_UNSUPPORTED';
    process.nextTick(emitErrorAndClose, websocket, err);
    return;
  }
  const key = native.binding.generateKey();
  const headers = {};
  const list = p.list.concat('Sec-WebSocket-Key', key);
  if (p.conn.deflate) list.push('Sec-WebSocket-Extensions', native.binding.deflateOffer(p.conn.deflate));
  for (let i = 0; i < list.length; i += 2) {
    const name = list[i];
    const prev = headers[name];
    if (prev === undefined) headers[name] = list[i + 1];
    else headers[name] = [].concat(prev, list[i + 1]);
  }
  const requestOptions = {
    ...opts,
    protocol: p.isSecure ? 'https:' : 'http:',
    host: p.host,
    hostname: undefined,
    port: p.port,
    path: p.path,
    socketPath: p.socketPath,
    method: 'GET',
    headers,
    timeout: opts.handshakeTimeout,
    defaultPort: opts.defaultPort || (p.isSecure ? 443 : 80),
    createConnection: opts.createConnection,
    servername: opts.servername !== undefined ? opts.servername : net.isIP(p.host) ? '' : p.host
  };
  const req = (p.isSecure ? https : http).request(requestOptions);
  websocket._req = req;

  if (opts.handshakeTimeout) {
    req.on('timeout', () => abortHandshake(websocket, 'Opening handshake has timed out'));
  }
  req.on('error', (err) => {
    if (websocket._req !== req) return;
    websocket._req = null;
    emitErrorAndClose(websocket, err);
  });
  req.on('response', (res) => {
    if (websocket._req !== req) return;
    handleResponse(websocket, req, res);
  });
  req.on('upgrade', (res, socket, head) => {
    websocket.emit('upgrade', res);
    if (websocket.readyState !== CONNECTING || websocket._req !== req) {
      socket.destroy();
      return;
    }
    websocket._req = null;
    const checked = native.binding.checkResponse(key, res.rawHeaders, p.protocols, p.conn.deflate);
    if (checked[0]) {
      socket.destroy();
      emitErrorAndClose(websocket, new Error(checked[0]));
      return;
    }
    websocket._agree(checked[1], checked[2] ? parseExtensionNames(checked[2]) : null);
    adoptSocket(socket, head, EMPTY_BUFFER, p.conn, true, checked[2] || undefined, (id, bridged) => {
      if (id === 0) {
        emitErrorAndClose(websocket, new Error('The socket was closed during the handshake'));
        return;
      }
      websocket._attach(id, bridged);
      websocket.emit('open');
    });
  });

  if (opts.finishRequest) opts.finishRequest(req, websocket);
  else req.end();
}

/**
 * Initialize a WebSocket client.
 *
 * @param {WebSocket} websocket The client to initialize
 * @param {(String|URL)} address The URL to which to connect
 * @param {Array} protocols The subprotocols
 * @param {Object} [options] Connection options
 * @private
 */
function initAsClient(websocket, address, protocols, options) {
  const opts = {
    allowSynchronousEvents: true,
    autoPong: true,
    closeTimeout: CLOSE_TIMEOUT,
    protocolVersion: protocolVersions[1],
    maxPayload: 100 * 1024 * 1024,
    skipUTF8Validation: false,
    perMessageDeflate: true,
    followRedirects: false,
    maxRedirects: 10,
    ...options
  };

  websocket._options = opts;
  websocket._userOptions = options;
  websocket._protocols = protocols;

  if (!protocolVersions.includes(opts.protocolVersion)) {
    throw new RangeError(
      `Unsupported protocol version: ${opts.protocolVersion} ` +
        `(supported versions: ${protocolVersions.join(', ')})`
    );
  }

  let parsedUrl;

  if (address instanceof URL) {
    parsedUrl = address;
  } else {
    try {
      parsedUrl = new URL(address);
    } catch {
      throw new SyntaxError(`Invalid URL: ${address}`);
    }
  }

  if (parsedUrl.protocol === 'http:') {
    parsedUrl.protocol = 'ws:';
  } else if (parsedUrl.protocol === 'https:') {
    parsedUrl.protocol = 'wss:';
  }

  websocket._url = parsedUrl.href;
  websocket._address = parsedUrl;

  const isSecure = parsedUrl.protocol === 'wss:';
  const isIpcUrl = parsedUrl.protocol === 'ws+unix:';
  let invalidUrlMessage;

  if (parsedUrl.protocol !== 'ws:' && !isSecure && !isIpcUrl) {
    invalidUrlMessage =
      'The URL\'s protocol must be one of "ws:", "wss:", ' + '"http:", "https:", or "ws+unix:"';
  } else if (isIpcUrl && !parsedUrl.pathname) {
    invalidUrlMessage = "The URL's pathname is empty";
  } else if (parsedUrl.hash) {
    invalidUrlMessage = 'The URL contains a fragment identifier';
  }

  if (invalidUrlMessage) {
    const err = new SyntaxError(invalidUrlMessage);

    if (websocket._redirects === 0) {
      throw err;
    } else {
      emitErrorAndClose(websocket, err);
      return;
    }
  }

  const protocolSet = new Set();
  for (const protocol of protocols) {
    if (!isValidSubprotocol(protocol) || protocolSet.has(protocol)) {
      throw new SyntaxError('An invalid or duplicated subprotocol was specified');
    }
    protocolSet.add(protocol);
  }

  const defaultPort = isSecure ? 443 : 80;
  const port = parsedUrl.port ? Number(parsedUrl.port) : defaultPort;
  const host = parsedUrl.hostname.startsWith('[') ? parsedUrl.hostname.slice(1, -1) : parsedUrl.hostname;
  let path = parsedUrl.pathname + parsedUrl.search;
  let socketPath;

  if (isIpcUrl) {
    const parts = path.split(':');
    socketPath = parts[0];
    path = parts[1] || '/';
  }

  // Headers as Node's http client would send them: Host first, then the user's, then ws's.
  const headers = {};
  const userHeaders = opts.headers || {};
  if (opts.followRedirects && websocket._redirects > 0 && websocket.listenerCount('redirect') === 0) {
    const sameHost = isIpcUrl
      ? websocket._originalIpc && socketPath === websocket._originalHostOrSocketPath
      : !websocket._originalIpc && parsedUrl.host === websocket._originalHostOrSocketPath;
    if (!sameHost || (websocket._originalSecure && !isSecure)) {
      for (const k of Object.keys(userHeaders)) {
        const lk = k.toLowerCase();
        if (lk === 'authorization' || lk === 'cookie' || (!sameHost && lk === 'host')) continue;
        headers[k] = userHeaders[k];
      }
    } else {
      Object.assign(headers, userHeaders);
    }
  } else {
    Object.assign(headers, userHeaders);
  }
  if (opts.followRedirects && websocket._redirects === 0) {
    websocket._originalIpc = isIpcUrl;
    websocket._originalSecure = isSecure;
    websocket._originalHostOrSocketPath = isIpcUrl ? socketPath : parsedUrl.host;
  }

  const list = [];
  const has = (name) => Object.keys(headers).some((k) => k.toLowerCase() === name);
  if (!has('host')) {
    const h = host.includes(':') ? `[${host}]` : host;
    list.push('Host', isIpcUrl ? 'localhost' : port === defaultPort ? h : `${h}:${port}`);
  }
  if ((parsedUrl.username || parsedUrl.password) && !has('authorization')) {
    const auth = `${decodeURIComponent(parsedUrl.username)}:${decodeURIComponent(parsedUrl.password)}`;
    list.push('Authorization', 'Basic ' + Buffer.from(auth).toString('base64'));
  }
  const managed = new Set(['sec-websocket-version', 'sec-websocket-key', 'connection', 'upgrade']);
  if (protocols.length) managed.add('sec-websocket-protocol');
  for (const k of Object.keys(headers)) {
    if (managed.has(k.toLowerCase())) continue;
    const v = headers[k];
    if (v === undefined) continue;
    if (Array.isArray(v)) {
      for (const item of v) list.push(k, String(item));
    } else {
      list.push(k, String(v));
    }
  }
  list.push('Sec-WebSocket-Version', String(opts.protocolVersion), 'Connection', 'Upgrade', 'Upgrade', 'websocket');
  if (protocols.length) list.push('Sec-WebSocket-Protocol', protocols.join(','));
  if (opts.origin) {
    list.push(opts.protocolVersion < 13 ? 'Sec-WebSocket-Origin' : 'Origin', String(opts.origin));
  }
  for (let i = 0; i < list.length; i++) {
    if (/[\r\n\0]/.test(list[i])) {
      throw new TypeError(`Invalid character in header content ["${list[i - (i % 2)]}"]`);
    }
  }

  websocket._path = path;

  if (opts.followRedirects && websocket._redirects > 0) {
    websocket.emit('redirect', websocket.url, requestStub(websocket._path));
    if (websocket._readyState !== CONNECTING) return;
  }

  const conn = {
    maxPayload: opts.maxPayload,
    maxFragments: opts.maxFragments,
    skipUtf8Validation: !!opts.skipUTF8Validation,
    autoPong: !!opts.autoPong,
    closeTimeout: opts.closeTimeout,
    handshakeTimeout: opts.handshakeTimeout,
    deflate: engineDeflate(opts.perMessageDeflate),
    maxHeaderSize: opts.maxHeaderSize,
    maxHeadersCount: opts.maxHeadersCount
  };

  const p = { opts, isSecure, isIpcUrl, host, port, path, socketPath, list, protocols, conn };
  if (opts.agent || opts.createConnection || opts.finishRequest) {
    nodeHandshake(websocket, p);
    return;
  }
  // Listeners for 'upgrade', 'unexpected-response' and 'redirect' are added after the
  // constructor returns: the path is chosen on the next tick, when they are known.
  process.nextTick(startHandshake, websocket, p);
}

/**
 * Starts the opening handshake: in the engine, or through Node's http client when a listener
 * expects Node's request and response objects.
 *
 * @param {WebSocket} websocket The client
 * @param {Object} p What initAsClient worked out
 */
function startHandshake(websocket, p) {
  if (websocket._readyState !== CONNECTING) return;
  if (NODE_OBJECT_EVENTS.some((e) => websocket.listenerCount(e) > 0)) {
    nodeHandshake(websocket, p);
    return;
  }
  const id = native.binding.connect({
    host: p.isIpcUrl ? undefined : p.host,
    port: p.port,
    socketPath: p.socketPath,
    path: p.path,
    headers: p.list,
    protocols: p.protocols,
    conn: p.conn,
    tls: p.isSecure ? clientTls(p.opts) : undefined,
    proxy: p.opts.proxy ? String(p.opts.proxy) : undefined
  });
  websocket._id = id;
  native.connections.set(id, websocket);
}

/**
 * Emit the `'error'` and `'close'` events.
 *
 * @param {WebSocket} websocket The WebSocket instance
 * @param {Error} err The error to emit
 * @private
 */
function emitErrorAndClose(websocket, err) {
  if (websocket._readyState === CLOSED) return;
  websocket._readyState = CLOSING;
  websocket.emit('error', err);
  websocket.emitClose();
}

/**
 * Abort the handshake and emit an error.
 *
 * @param {WebSocket} websocket The WebSocket instance
 * @param {String} message The error message
 * @private
 */
function abortHandshake(websocket, message) {
  websocket._readyState = CLOSING;
  const err = new Error(message);
  Error.captureStackTrace(err, abortHandshake);
  if (websocket._req) {
    const req = websocket._req;
    websocket._req = null;
    req.destroy();
  }
  if (websocket._id !== 0) {
    native.queue(native.OP.TERMINATE, 0, websocket._id, null);
    native.connections.delete(websocket._id);
  }
  process.nextTick(emitErrorAndClose, websocket, err);
}

module.exports = { abortHandshake, emitErrorAndClose, handleResponse, initAsClient };
