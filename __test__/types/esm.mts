// ESM usage of ws-native, as written against `ws` with @types/ws 8.18.1.
// Type-checked against ws-native (tsconfig.json) and @types/ws's index.d.mts
// (tsconfig.ws-esm.json). Never executed.

import WebSocket, { WebSocketServer, createWebSocketStream } from 'ws-native';
import type { RawData, ServerOptions } from 'ws-native';

const options: ServerOptions = { port: 0, perMessageDeflate: { threshold: 0 } };
const wss = new WebSocketServer(options);

wss.on('connection', (ws: WebSocket, req) => {
    console.log(req.url);
    ws.on('message', (data: RawData, isBinary: boolean) => {
        ws.send(data, { binary: isBinary });
    });
    const stream = createWebSocketStream(ws);
    stream.end();
});

const client = new WebSocket('ws://127.0.0.1:8080');
client.on('open', () => client.send('hello'));
client.addEventListener('message', (event) => console.log(event.data));
if (client.readyState === WebSocket.OPEN) client.close(1000);

console.log(WebSocket.CONNECTING, client.OPEN);

// @ts-expect-error readyState is read-only
client.readyState = WebSocket.CLOSED;
