// ESM entry point of ws-native. Mirrors ws's wrapper.mjs: the named exports
// are the static properties that index.js puts on the WebSocket class (a
// name whose property is not (yet) defined is exported as `undefined`).
import WebSocket from './index.js';

export const { createWebSocketStream, ReconnectingWebSocket, Receiver, Sender, WebSocketServer } =
  WebSocket;

export { WebSocket };

export default WebSocket;
