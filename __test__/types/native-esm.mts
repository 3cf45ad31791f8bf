// ws-native's ESM typings have @types/ws's ESM shape: the default import is the
// WebSocket class with its readyState constants, and WebSocketServer and
// createWebSocketStream are named exports. Never executed.

import WebSocket, { ReconnectingWebSocket, WebSocketServer, createWebSocketStream } from 'ws-native';
import type { ReconnectingOptions, ServerOptions } from 'ws-native';

const server: WebSocketServer = new WebSocketServer({ noServer: true, closeTimeout: 100 });
const options: ServerOptions = { port: 0, reusePort: true, tls: { pfx: Buffer.alloc(0), passphrase: 'x' } };
const ws: WebSocket = new WebSocket('ws://127.0.0.1', { proxy: 'env', maxPendingAutoPongs: 10 });
const stream = createWebSocketStream(ws);
console.log(server, options, stream, WebSocket.OPEN);

// @ts-expect-error as with @types/ws's index.d.mts, the default export has no WebSocket property
new WebSocket.WebSocket('ws://127.0.0.1');
// @ts-expect-error nor Server
new WebSocket.Server({ noServer: true });

// ReconnectingWebSocket is a named export, with its options type.
const rwsOptions: ReconnectingOptions = { maxRetries: 3, maxEnqueuedBytes: 1024, perMessageDeflate: false };
const rws: ReconnectingWebSocket = new ReconnectingWebSocket('ws://127.0.0.1', rwsOptions);
const base: WebSocket = rws;
console.log(base, rws.shouldReconnect);
