'use strict';

// ws-native: the API of the `ws` package on a Rust engine. This file only assembles the
// exports, as ws's index.js does.

const WebSocket = require('./lib/websocket');

WebSocket.createWebSocketStream = require('./lib/stream');
WebSocket.Server = require('./lib/websocket-server');
WebSocket.ReconnectingWebSocket = require('./lib/reconnecting-websocket');

WebSocket.WebSocket = WebSocket;
WebSocket.WebSocketServer = WebSocket.Server;

module.exports = WebSocket;
