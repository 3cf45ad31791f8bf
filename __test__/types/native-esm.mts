// ws-native-specific ESM typings: the default import is the same object as
// the CommonJS export, so its static properties are typed (@types/ws's
// index.d.mts declares the default export without them). Never executed.

import WebSocket, { WebSocketServer, createWebSocketStream } from 'ws-native';

const Same: typeof WebSocket = WebSocket.WebSocket;
const server: WebSocketServer = new WebSocket.Server({ noServer: true, closeTimeout: 100 });
const server2: WebSocket.WebSocketServer = new WebSocket.WebSocketServer({ noServer: true });
const stream = WebSocket.createWebSocketStream(new Same('ws://127.0.0.1'));
console.log(server, server2, stream, createWebSocketStream === WebSocket.createWebSocketStream);
