// ws-native-specific typings (additions to what @types/ws 8.18.1 declares).
// Only type-checked against ws-native (tsconfig.json). Never executed.

import WebSocket, { ReconnectingWebSocket, WebSocketServer, type ClientOptions, type ServerOptions } from 'ws-native';
import WebSocketCjs = require('ws-native');
import { IncomingMessage } from 'node:http';

// closeTimeout / maxFragments / maxBufferedChunks
const serverOptions: ServerOptions = {
    port: 0,
    closeTimeout: 5000,
    maxFragments: 1024,
    maxBufferedChunks: 4096,
    maxPayload: 0,
};
const clientOptions: ClientOptions = {
    closeTimeout: 1000,
    maxFragments: 0,
    maxBufferedChunks: 0,
};
const wss = new WebSocketServer(serverOptions);
const ws = new WebSocket('ws://127.0.0.1', clientOptions);
new WebSocket('ws://127.0.0.1', ['a'], { closeTimeout: 10 });
new WebSocketServer({ noServer: true, closeTimeout: 10, maxFragments: 1, maxBufferedChunks: 1 });

// The native TLS server and the client's proxy option
new WebSocketServer({ port: 0, tls: { cert: '-----BEGIN CERTIFICATE-----', key: Buffer.from(''), ca: ['x', Buffer.from('y')], requestCert: true } });
const tlsOptions: WebSocketCjs.ServerTlsOptions = { cert: [Buffer.from('')], key: [{ pem: 'k' }], rejectUnauthorized: false };
new WebSocketServer({ port: 0, tls: tlsOptions });
new WebSocket('wss://example.com', { proxy: 'socks5h://user:pass@127.0.0.1:1080', ca: 'pem', servername: 'example.com' });
new WebSocket('wss://example.com', { proxy: 'env' });
new WebSocket('ws://example.com', { proxy: new URL('http://127.0.0.1:3128') });

// The server's handshake limits, and permessage-deflate window bits as booleans
new WebSocketServer({ port: 0, handshakeTimeout: 10000, maxHeaderSize: 8192, maxHeadersCount: 64 });
new WebSocketServer({ port: 0, perMessageDeflate: { serverMaxWindowBits: 10, clientMaxWindowBits: true, threshold: 0, zlibDeflateOptions: { level: 1 } } });
new WebSocket('ws://127.0.0.1', { perMessageDeflate: { clientMaxWindowBits: false, clientNoContextTakeover: true } });
// @ts-expect-error handshakeTimeout is a number
new WebSocketServer({ port: 0, handshakeTimeout: '10s' });

// binaryType 'blob' (supported by ws >= 8.18)
ws.binaryType = 'blob';
const bt: 'nodebuffer' | 'arraybuffer' | 'fragments' | 'blob' = ws.binaryType;

// isPaused is a read-only boolean
const paused: boolean = ws.isPaused;
// @ts-expect-error isPaused is read-only
ws.isPaused = true;

// WebSocketServer is generic as a type too
class MyWebSocket extends WebSocket {
    room = 'lobby';
}
const custom: WebSocketServer<typeof MyWebSocket> = new WebSocketServer<typeof MyWebSocket>({
    noServer: true,
    WebSocket: MyWebSocket,
});
custom.clients.forEach((client) => console.log(client.room));
const plain: WebSocketServer<typeof WebSocket, typeof IncomingMessage> = wss;

// `import = require()` form
const wsCjs: WebSocketCjs = new WebSocketCjs('ws://127.0.0.1');
const serverCjs = new WebSocketCjs.WebSocketServer({ port: 0, closeTimeout: 1 });

// @ts-expect-error closeTimeout is a number
new WebSocketServer({ noServer: true, closeTimeout: '1s' });
// @ts-expect-error maxFragments is a number
const badClient: ClientOptions = { maxFragments: true };

console.log(bt, paused, plain, wsCjs, serverCjs, badClient);

// verifyClient: the synchronous form is contextually typed (with @types/ws
// its parameter would implicitly be `any`), the asynchronous form still is.
class AuthRequest extends IncomingMessage {
    token?: string;
}
new WebSocketServer({
    noServer: true,
    verifyClient: (info) => info.secure && info.origin.startsWith('https://') && !!info.req.headers.host,
});
new WebSocketServer<typeof WebSocket, typeof AuthRequest>({
    noServer: true,
    verifyClient: ({ req }) => req.token !== undefined,
});
new WebSocketServer<typeof WebSocket, typeof AuthRequest>({
    noServer: true,
    verifyClient: ({ req }, done) => done(req.token !== undefined, 401, 'Unauthorized', { 'Retry-After': 120 }),
});
new WebSocketServer({
    noServer: true,
    // @ts-expect-error verifyClient must not return a string
    verifyClient: () => 'yes',
});

// ReconnectingWebSocket: reconnecting-websocket's options, WebSocket options, url and
// protocols functions, its events, and the WebSocket API it inherits.
const rws = new ReconnectingWebSocket('ws://127.0.0.1', ['chat'], {
    minReconnectionDelay: 100,
    maxReconnectionDelay: 1000,
    reconnectionDelayGrowFactor: 2,
    minUptime: 1000,
    connectionTimeout: 2000,
    maxRetries: 10,
    maxEnqueuedMessages: 100,
    maxEnqueuedBytes: 1 << 20,
    startClosed: false,
    debug: false,
    stopOnClose: (code, reason) => code === 4401 || reason === 'banned' || ReconnectingWebSocket.defaultStopOnClose(code),
    headers: { authorization: 'Bearer x' },
    proxy: 'env',
});
new ReconnectingWebSocket(async () => 'ws://127.0.0.1', async () => ['v2']);
new ReconnectingWebSocket(() => new URL('ws://127.0.0.1'), { maxRetries: Infinity, lookup: undefined });
rws.on('reconnecting', (attempt, delay) => console.log(attempt.toFixed(), delay.toFixed()));
rws.on('reconnect', function (attempt) { console.log(attempt.toFixed(), this.retryCount, this.shouldReconnect); });
rws.on('close', (code, reason) => console.log(code.toFixed(), reason.length));
rws.onmessage = (event) => console.log(event.data);
rws.send('queued while disconnected', (err) => console.log(err?.message));
rws.reconnect(4000, 'again');
rws.close(1000);
const asWebSocket: WebSocket = rws;
console.log(asWebSocket.readyState === ReconnectingWebSocket.OPEN);
// @ts-expect-error minUptime is a number
new ReconnectingWebSocket('ws://127.0.0.1', { minUptime: '5s' });
// @ts-expect-error retryCount is read-only
rws.retryCount = 0;

// Liveness: the built-in heartbeat, flow control and its limits
new WebSocketServer({ port: 0, heartbeat: { interval: 30000, timeout: 10000 }, highWaterMark: 1 << 20, lowWaterMark: 1 << 16, maxBackpressure: 1 << 24, closeOnBackpressureLimit: true });
new WebSocket('ws://127.0.0.1', { heartbeat: { interval: 1000, timeout: 1000 }, highWaterMark: 1024 });
// @ts-expect-error the heartbeat takes both interval and timeout
new WebSocketServer({ port: 0, heartbeat: { interval: 1000 } });
const backpressured: boolean = ws.isBackpressured;
ws.on('drain', function () { this.send('more'); });

// Pub/sub topics and the Redis scale-out
ws.subscribe('news');
ws.subscribe(Buffer.from('bytes'));
ws.unsubscribe('news');
const subscribed: boolean = ws.isSubscribed('news');
const topics: string[] = ws.topics;
ws.publish('news', 'hello');
ws.publish('news', Buffer.from('x'), { binary: true, compress: false }, (err) => err && err.message);
wss.publish('news', new Uint8Array(2));
wss.publish('news', 'x', (err: Error | null) => {});
const n: number = wss.subscriberCount('news');
const status: WebSocketCjs.RedisStatus | null = wss.redisStatus();
new WebSocketServer({ port: 0, redis: 'redis://127.0.0.1:6379' });
new WebSocketServer({ noServer: true, redis: { url: 'redis://127.0.0.1:6379', prefix: 'chat:', maxBufferedMessages: 100, maxBufferedBytes: 1 << 20 } });
wss.on('redis', (event) => {
    if (event.type === 'lost') console.log(event.topic, event.error.message);
    else if (event.type !== 'connect') console.log(event.error.message);
});
// @ts-expect-error publish does not take a Blob
wss.publish('news', new Blob(['x']));
