'use strict';

// The client's opening handshake: the options and URL checked as ws checks them, then the
// handshake made by the engine, or by Node's http client when an option or a listener needs
// Node's objects (`agent`, `createConnection`, `finishRequest`, listeners for `upgrade`,
// `unexpected-response` or `redirect`); once upgraded, Node's socket is handed to the engine.
// Refusals, redirects and failures end here too.

const http = require('http');
const https = require('https');
const net = require('net');
const tls = require('tls');
const { URL } = require('url');

const native = require('./native');
const { adoptSocket } = require('./adopt');
const { CLOSE_TIMEOUT, EMPTY_BUFFER, READY_STATE } = require('./constants');
const { parseExtensionNames } = require('./extension');
const { requestStub } = require('./http-shims');
const { engineOptions } = require('./engine-options');
const { clientTls } = require('./tls-options');
const { isValidSubprotocol } = require('./validation');

const { CONNECTING, CLOSING, CLOSED } = READY_STATE;
const protocolVersions = [8, 13];

// The options the engine's own handshake honours, or that ws itself sets or ignores. ws
// passes its whole options object to http.request(): a connection with any other option
// makes its handshake through Node's http client, which honours it as it would for ws (and
// the engine takes the socket over once upgraded). docs/client-and-tls.md lists which path
// each takes.
const ENGINE_OPTIONS = new Set([
  // ws's own
  'allowSynchronousEvents', 'autoPong', 'closeTimeout', 'followRedirects', 'generateMask',
  'handshakeTimeout', 'headers', 'maxBufferedChunks', 'maxFragments', 'maxPayload',
  'maxPendingAutoPongs', 'maxRedirects', 'origin', 'perMessageDeflate', 'protocolVersion',
  'skipUTF8Validation',
  // set from the URL by ws, whatever the user gives
  'host', 'hostname', 'method', 'path', 'port', 'protocol', 'protocols', 'socketPath', 'timeout',
  // http.request's and net.connect's that the engine honours
  'auth', 'defaultPort', 'family', 'localAddress', 'localPort', 'setHost',
  // ws-native's
  'closeOnBackpressureLimit', 'heartbeat', 'highWaterMark', 'lowWaterMark', 'maxBackpressure',
  'maxHeaderSize', 'maxHeadersCount', 'proxy'
]);

// TLS options: the first set is honoured by the engine's TLS (rustls); any other makes a
// `wss:` connection use Node's TLS. On `ws:` URLs they do nothing, as in ws.
const ENGINE_TLS_OPTIONS = new Set(['ca', 'cert', 'key', 'passphrase', 'rejectUnauthorized', 'servername']);
const TLS_OPTIONS = new Set([
  'ALPNProtocols', 'checkServerIdentity', 'ciphers', 'clientCertEngine', 'crl', 'dhparam',
  'ecdhCurve', 'enableTrace', 'honorCipherOrder', 'maxVersion', 'minDHSize', 'minVersion', 'pfx',
  'privateKeyEngine', 'privateKeyIdentifier', 'pskCallback', 'requestOCSP', 'secureContext',
  'secureOptions', 'secureProtocol', 'session', 'sessionIdContext', 'sigalgs', 'ticketKeys'
]);
// The TLS versions rustls speaks, as Node names them.
const ENGINE_TLS_VERSIONS = new Set(['TLSv1.2', 'TLSv1.3']);

/**
 * The first option that takes the handshake through Node's http client, or null.
 *
 * @param {Object} opts The options
 * @param {Boolean} isSecure A `wss:` URL
 * @return {(String|null)}
 */
function nodeOption(opts, isSecure) {
  for (const name of Object.keys(opts)) {
    if (opts[name] === undefined || ENGINE_OPTIONS.has(name)) continue;
    // Several keys or certificates (one per key type): Node's TLS picks among them.
    if (isSecure && (name === 'key' || name === 'cert') && Array.isArray(opts[name]) && opts[name].length > 1) return name;
    if (ENGINE_TLS_OPTIONS.has(name) || (!isSecure && TLS_OPTIONS.has(name))) continue;
    if (isSecure && (name === 'minVersion' || name === 'maxVersion') && ENGINE_TLS_VERSIONS.has(opts[name])) continue;
    return name;
  }
  return null;
}
const NODE_OBJECT_EVENTS = ['upgrade', 'unexpected-response', 'redirect'];

/**
 * ws's `createConnection` for `ws:` URLs.
 *
 * @param {Object} options Connection options
 * @return {net.Socket}
 */
function netConnect(options) {
  options.path = options.socketPath;
  return net.connect(options);
}

/**
 * ws's `createConnection` for `wss:` URLs (Node's TLS).
 *
 * @param {Object} options Connection options
 * @return {tls.TLSSocket}
 */
function tlsConnect(options) {
  options.path = undefined;
  if (!options.servername && options.servername !== '') {
    options.servername = net.isIP(options.host) ? '' : options.host;
  }
  return tls.connect(options);
}

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
  // The request as ws makes it: its whole options object, with what ws sets itself. Node's
  // http client adds the Host header (the engine's list has it first unless the user set it).
  const headers = {};
  const list = p.list.slice(p.autoHost ? 2 : 0).concat('Sec-WebSocket-Key', key);
  if (p.conn.deflate) list.push('Sec-WebSocket-Extensions', native.binding.deflateOffer(p.conn.deflate));
  for (let i = 0; i < list.length; i += 2) {
    const name = list[i];
    const prev = headers[name];
    if (prev === undefined) headers[name] = list[i + 1];
    else headers[name] = [].concat(prev, list[i + 1]);
  }
  const defaultPort = p.isSecure ? 443 : 80;
  const requestOptions = {
    ...opts,
    socketPath: p.socketPath,
    hostname: undefined,
    protocol: undefined,
    protocols: undefined,
    timeout: opts.handshakeTimeout,
    method: 'GET',
    host: p.host,
    path: p.path,
    port: p.urlPort || defaultPort,
    auth: undefined,
    createConnection: opts.createConnection || (p.isSecure ? tlsConnect : netConnect),
    defaultPort: opts.defaultPort || defaultPort,
    headers
  };
  const req = (p.isSecure ? https.request : http.request)(requestOptions);
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
    maxBufferedChunks: 256 * 1024,
    maxFragments: 16 * 1024,
    maxPayload: 100 * 1024 * 1024,
    maxPendingAutoPongs: 60,
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

  if (parsedUrl.protocol === 'http:' || parsedUrl.protocol === 'https:') {
    parsedUrl = new URL(parsedUrl);
    parsedUrl.protocol = parsedUrl.protocol === 'http:' ? 'ws:' : 'wss:';
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
  // A redirect elsewhere (without a 'redirect' listener) drops the credentials, as curl
  // and ws do.
  let sameHost = true;
  let dropCredentials = false;
  if (opts.followRedirects && websocket._redirects > 0 && websocket.listenerCount('redirect') === 0) {
    sameHost = isIpcUrl
      ? websocket._originalIpc && socketPath === websocket._originalHostOrSocketPath
      : !websocket._originalIpc && parsedUrl.host === websocket._originalHostOrSocketPath;
    dropCredentials = !sameHost || (websocket._originalSecure && !isSecure);
  }
  if (dropCredentials) {
    for (const k of Object.keys(userHeaders)) {
      const lk = k.toLowerCase();
      if (lk === 'authorization' || lk === 'cookie' || (!sameHost && lk === 'host')) continue;
      headers[k] = userHeaders[k];
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
  // Node's http client adds Host itself unless `setHost: false` (the Node path leaves it out).
  const autoHost = !has('host') && opts.setHost !== false;
  if (autoHost) {
    const h = host.includes(':') ? `[${host}]` : host;
    list.push('Host', isIpcUrl ? 'localhost' : port === (Number(opts.defaultPort) || defaultPort) ? h : `${h}:${port}`);
  }
  // Credentials in the URL win over the `auth` option, as in ws.
  let auth;
  if (parsedUrl.username || parsedUrl.password) {
    auth = `${decodeURIComponent(parsedUrl.username)}:${decodeURIComponent(parsedUrl.password)}`;
  } else if (typeof opts.auth === 'string') {
    auth = opts.auth;
  }
  if (auth !== undefined && !dropCredentials && !has('authorization')) {
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

  const conn = engineOptions(opts, opts.handshakeTimeout);

  const p = { opts, isSecure, isIpcUrl, host, port, urlPort: parsedUrl.port, path, socketPath, list, autoHost, protocols, conn };
  if (nodeOption(opts, isSecure) !== null) {
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
  const opts = p.opts;
  const id = native.binding.connect({
    host: p.isIpcUrl ? undefined : p.host,
    port: p.port,
    socketPath: p.socketPath,
    path: p.path,
    headers: p.list,
    protocols: p.protocols,
    conn: p.conn,
    tls: p.isSecure ? clientTls(opts) : undefined,
    proxy: opts.proxy ? String(opts.proxy) : undefined,
    family: opts.family ? Number(opts.family) : undefined,
    localAddress: opts.localAddress ? String(opts.localAddress) : undefined,
    localPort: opts.localPort ? Number(opts.localPort) : undefined
  });
  if (id === 0) {
    // The engine's TLS cannot use these TLS options (a certificate or key format rustls does
    // not read): Node's TLS makes the handshake, as for ws.
    nodeHandshake(websocket, p);
    return;
  }
  websocket._id = id;
  // Kept until the handshake ends, in case the server's certificate needs Node's TLS.
  if (p.isSecure) websocket._handshake = p;
  native.connections.set(id, websocket);
}

/**
 * The engine's TLS could not read the server's certificate: Node's TLS makes the handshake
 * again (a second connection), as ws's would have.
 *
 * @param {WebSocket} websocket The client
 * @return {Boolean} Whether the handshake starts again
 */
function retryWithNodeTls(websocket) {
  const p = websocket._handshake;
  if (!p || websocket._readyState !== CONNECTING) return false;
  websocket._handshake = null;
  websocket._id = 0;
  nodeHandshake(websocket, p);
  return true;
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

module.exports = { abortHandshake, emitErrorAndClose, handleResponse, initAsClient, retryWithNodeTls };
