// Real-world usage of `ws` as written against @types/ws 8.18.1, with the
// module name replaced by 'ws-native'. This file is type-checked twice:
// against ws-native's index.d.ts (tsconfig.json) and against @types/ws
// (tsconfig.ws.json), to show that the same code compiles with both.
// It is never executed.

import WebSocket, {
    WebSocketServer,
    createWebSocketStream,
    type RawData,
    type ClientOptions,
    type ServerOptions,
    type PerMessageDeflateOptions,
    type VerifyClientCallbackAsync,
    type VerifyClientCallbackSync,
} from 'ws-native';
import * as http from 'node:http';
import * as https from 'node:https';
import type { Duplex } from 'node:stream';
import { pipeline } from 'node:stream';
import { URL } from 'node:url';

// ---------------------------------------------------------------------------
// Server with a port, broadcast, heartbeat
// ---------------------------------------------------------------------------

const wss = new WebSocketServer({ port: 8080 }, () => {
    console.log('listening');
});

function heartbeat(this: WebSocket) {
    (this as WebSocket & { isAlive?: boolean }).isAlive = true;
}

wss.on('connection', (ws, req) => {
    const ip: string | undefined = req.socket.remoteAddress;
    const forwarded = req.headers['x-forwarded-for'];
    console.log(ip, forwarded, req.url);

    ws.on('error', console.error);
    ws.on('pong', heartbeat);

    ws.on('message', (data, isBinary) => {
        const raw: RawData = data;
        const bin: boolean = isBinary;
        wss.clients.forEach((client) => {
            if (client !== ws && client.readyState === WebSocket.OPEN) {
                client.send(data, { binary: isBinary });
            }
        });
        console.log(raw, bin);
    });

    ws.on('message', function message(data: RawData) {
        if (Buffer.isBuffer(data)) {
            const text: string = data.toString('utf8');
            console.log(text);
        } else if (Array.isArray(data)) {
            const joined: Buffer = Buffer.concat(data);
            console.log(joined.length);
        } else {
            const ab: ArrayBuffer = data;
            console.log(ab.byteLength);
        }
        this.send(`echo: ${data}`);
    });

    ws.on('close', (code, reason) => {
        const c: number = code;
        const r: string = reason.toString();
        console.log(c, r);
    });

    ws.once('ping', (data: Buffer) => ws.pong(data));

    ws.send('something');
    ws.send(Buffer.from([1, 2, 3]));
    ws.send(new Uint8Array(4));
    ws.send(new ArrayBuffer(8));
    ws.send(JSON.stringify({ hello: 'world' }), (err) => {
        if (err) console.error(err.message);
    });
    ws.send('fragment', { fin: false, compress: false });
    ws.send('end', { fin: true, binary: false, mask: false }, (err?: Error) => {
        void err;
    });
});

const interval = setInterval(() => {
    wss.clients.forEach((ws) => {
        const alive = ws as WebSocket & { isAlive?: boolean };
        if (alive.isAlive === false) return ws.terminate();
        alive.isAlive = false;
        ws.ping();
    });
}, 30000);

wss.on('close', function close() {
    clearInterval(interval);
});

wss.on('error', (err: Error) => console.error(err));
wss.on('listening', () => console.log(wss.address()));
wss.on('headers', (headers: string[], req: http.IncomingMessage) => {
    headers.push('Set-Cookie: a=b');
    void req;
});
wss.on('wsClientError', (error: Error, socket: Duplex, req) => {
    socket.end(`HTTP/1.1 400 Bad Request\r\n\r\n${error.message}${req.url}`);
});

const addr = wss.address();
if (addr !== null && typeof addr !== 'string') {
    const port: number = addr.port;
    const family: string = addr.family;
    console.log(port, family, addr.address);
}

console.log(wss.clients.size, wss.options.port, wss.path);
wss.close((err) => {
    if (err) console.error(err);
});
wss.close();

// The WebSocket.Server / WebSocket.WebSocketServer spellings.
const wss2 = new WebSocket.Server({ noServer: true, clientTracking: false });
const wss3: WebSocket.Server = new WebSocket.WebSocketServer({ port: 0, host: '127.0.0.1', backlog: 511 });
const wss4: WebSocketServer = wss3;
console.log(wss2, wss4);

// ---------------------------------------------------------------------------
// External HTTP(S) server, noServer + handleUpgrade, shouldHandle, path
// ---------------------------------------------------------------------------

const server = http.createServer();
const wssA = new WebSocketServer({ server, path: '/a' });
const wssB = new WebSocketServer({ noServer: true });

server.on('upgrade', (request, socket, head) => {
    const { pathname } = new URL(request.url ?? '/', 'http://localhost');
    if (pathname === '/b' && wssB.shouldHandle(request)) {
        wssB.handleUpgrade(request, socket, head, (ws, req) => {
            wssB.emit('connection', ws, req);
        });
    } else {
        socket.destroy();
    }
});
server.listen(8081);
console.log(wssA.path);

const httpsServer = https.createServer({ cert: 'x', key: 'y' });
const wssS = new WebSocketServer({ server: httpsServer });
wssS.on('connection', (ws) => ws.close(1000, 'bye'));

// ---------------------------------------------------------------------------
// Options: perMessageDeflate, verifyClient (sync and async), handleProtocols
// ---------------------------------------------------------------------------

const deflate: PerMessageDeflateOptions = {
    zlibDeflateOptions: { chunkSize: 1024, memLevel: 7, level: 3 },
    zlibInflateOptions: { chunkSize: 10 * 1024 },
    clientNoContextTakeover: true,
    serverNoContextTakeover: true,
    serverMaxWindowBits: 10,
    concurrencyLimit: 10,
    threshold: 1024,
};

const wssDeflate = new WebSocketServer({ port: 8082, perMessageDeflate: deflate, maxPayload: 1024 * 1024 });
const wssNoDeflate = new WebSocketServer({ port: 8083, perMessageDeflate: false, skipUTF8Validation: true });
console.log(wssDeflate, wssNoDeflate);

const wssVerifySync = new WebSocketServer({
    port: 8084,
    verifyClient: (info: { origin: string; secure: boolean; req: http.IncomingMessage }) =>
        info.origin === 'https://example.com' && info.secure && !!info.req.headers.cookie,
});

const wssVerifyAsync = new WebSocketServer({
    port: 8085,
    verifyClient: (info, cb) => {
        if (!info.req.headers.authorization) {
            cb(false, 401, 'Unauthorized', { 'WWW-Authenticate': 'Basic' });
            return;
        }
        cb(true);
    },
});

const verifySync: VerifyClientCallbackSync = ({ req }) => req.headers.host !== undefined;
const verifyAsync: VerifyClientCallbackAsync = (_info, done) => done(true);
const serverOpts: ServerOptions = {
    noServer: true,
    verifyClient: verifySync,
    handleProtocols: (protocols: Set<string>, _request: http.IncomingMessage) => {
        if (protocols.has('chat')) return 'chat';
        const [first] = protocols;
        return first ?? false;
    },
    autoPong: true,
    allowSynchronousEvents: false,
};
const serverOpts2: ServerOptions = { noServer: true, verifyClient: verifyAsync };
console.log(wssVerifySync, wssVerifyAsync, new WebSocketServer(serverOpts), new WebSocketServer(serverOpts2));

// ---------------------------------------------------------------------------
// Custom WebSocket subclass and custom IncomingMessage
// ---------------------------------------------------------------------------

class MyWebSocket extends WebSocket {
    isAlive = true;
    userId?: string;
}

const wssCustom = new WebSocketServer<typeof MyWebSocket>({ WebSocket: MyWebSocket, port: 8086 });
wssCustom.on('connection', (ws) => {
    const mine: MyWebSocket = ws;
    mine.isAlive = true;
    ws.userId = 'u1';
    ws.on('pong', function () {
        this.ping();
    });
});
wssCustom.clients.forEach((ws) => {
    const alive: boolean = ws.isAlive;
    console.log(alive);
});
const typedServer: WebSocket.Server<typeof MyWebSocket> = wssCustom;
console.log(typedServer);

class MyRequest extends http.IncomingMessage {
    user?: { id: string };
}

const customServer = http.createServer<typeof MyRequest>({ IncomingMessage: MyRequest });
const wssReq = new WebSocketServer<typeof WebSocket, typeof MyRequest>({
    server: customServer,
    verifyClient: ({ req }: { req: MyRequest }) => req.user !== undefined,
});
wssReq.on('connection', (ws, req) => {
    const user: { id: string } | undefined = req.user;
    ws.send(user?.id ?? 'anonymous');
});

const wssBoth = new WebSocket.Server<typeof MyWebSocket, typeof MyRequest>({ noServer: true, WebSocket: MyWebSocket });
wssBoth.handleUpgrade(new MyRequest(null as any), null as unknown as Duplex, Buffer.alloc(0), (ws, req) => {
    ws.userId = req.user?.id;
});

// ---------------------------------------------------------------------------
// Client
// ---------------------------------------------------------------------------

const ws = new WebSocket('ws://www.host.com/path');
const ws2 = new WebSocket(new URL('wss://example.com'), ['chat', 'superchat']);
const ws3 = new WebSocket('ws://localhost:8080', 'chat', { handshakeTimeout: 5000 });

const clientOptions: ClientOptions = {
    perMessageDeflate: false,
    headers: { Authorization: 'Bearer token' },
    origin: 'https://example.com',
    protocolVersion: 13,
    followRedirects: true,
    maxRedirects: 5,
    maxPayload: 1 << 20,
    rejectUnauthorized: false,
    skipUTF8Validation: false,
    autoPong: false,
    generateMask(mask: Buffer) {
        mask.fill(0);
    },
    finishRequest(request, websocket) {
        request.setHeader('X-Custom', websocket.url);
        request.end();
    },
};
const ws4 = new WebSocket('wss://example.com', clientOptions);
const ws5 = new WebSocket('wss://example.com', { agent: new https.Agent(), timeout: 1000 });
console.log(ws2, ws3, ws4, ws5);

ws.on('open', function open() {
    this.send('hello');
    ws.send(new Float32Array([1, 2]), { binary: true });
});
ws.on('message', (data: WebSocket.Data) => console.log(data));
ws.on('message', (data: Buffer) => console.log(data.length));
ws.on('upgrade', (res: http.IncomingMessage) => console.log(res.headers['set-cookie']));
ws.on('unexpected-response', (req: http.ClientRequest, res: http.IncomingMessage) => {
    console.log(req.path, res.statusCode);
});
ws.on('redirect', (url: string, req: http.ClientRequest) => req.removeHeader(url));
ws.on('close', function close(code: number, reason: Buffer) {
    console.log('disconnected', code, reason.toString());
});
ws.on('custom-event', (...args: any[]) => console.log(args));
ws.once('open', () => undefined);
ws.addListener('ping', (d) => console.log(d.byteLength));
const onErr = (err: Error) => console.error(err);
ws.addListener('error', onErr);
ws.removeListener('error', onErr);
ws.off('error', onErr);
ws.removeAllListeners('message');

// Ready state
if (ws.readyState === WebSocket.OPEN) ws.send('x');
if (ws.readyState === ws.CONNECTING || ws.readyState === WebSocket.CLOSING) ws.terminate();
if (ws.readyState !== WebSocket.CLOSED) ws.close();
const state: 0 | 1 | 2 | 3 = ws.readyState;
const open1: 1 = WebSocket.OPEN;
const open2: 1 = ws.OPEN;
const closedNum: number = WebSocket.CLOSED;
switch (ws.readyState) {
    case WebSocket.CONNECTING:
    case WebSocket.OPEN:
    case WebSocket.CLOSING:
    case WebSocket.CLOSED:
        break;
    default: {
        const never: never = ws.readyState;
        void never;
    }
}
console.log(state, open1, open2, closedNum);

// Properties
const buffered: number = ws.bufferedAmount;
const extensions: string = ws.extensions;
const protocol: string = ws.protocol;
const url: string = ws.url;
const paused: boolean = ws.isPaused;
console.log(buffered, extensions, protocol, url, paused);
ws.binaryType = 'arraybuffer';
ws.binaryType = 'nodebuffer';
ws.binaryType = 'fragments';
const binaryType: string = ws.binaryType;
console.log(binaryType);
ws.pause();
ws.resume();

// ping / pong / close / terminate
ws.ping();
ws.ping('data');
ws.ping(Buffer.from('x'), true);
ws.ping(undefined, undefined, (err: Error) => console.error(err));
ws.pong();
ws.pong('data', false, (err) => console.error(err));
ws.close();
ws.close(1000);
ws.close(4000, 'reason');
ws.close(1001, Buffer.from('going away'));
ws.terminate();

// EventTarget-style API
ws.onopen = (event: WebSocket.Event) => console.log(event.type, event.target.url);
ws.onmessage = (event: WebSocket.MessageEvent) => {
    if (typeof event.data === 'string') console.log(JSON.parse(event.data));
};
ws.onmessage = (event) => console.log(event.data);
ws.onerror = (event) => console.error(event.message, event.error);
ws.onclose = (event: WebSocket.CloseEvent) => console.log(event.code, event.reason, event.wasClean);
ws.onopen = null;
ws.onmessage = null;
const currentHandler: ((event: WebSocket.MessageEvent) => void) | null = ws.onmessage;
console.log(currentHandler);

const onMessage = (event: WebSocket.MessageEvent) => console.log(event.data, event.target.readyState);
ws.addEventListener('message', onMessage);
ws.addEventListener('message', onMessage, { once: true });
ws.removeEventListener('message', onMessage);
ws.addEventListener('open', () => ws.send('hi'));
ws.addEventListener('close', (event) => console.log(event.code));
ws.addEventListener('error', (event) => console.log(event.error));
ws.addEventListener('message', { handleEvent: (event) => console.log(event.data) });

// A null address (server-side instances) and WebSocket.WebSocket
const detached = new WebSocket(null);
const Alias = WebSocket.WebSocket;
const fromAlias: WebSocket = new Alias('ws://x');
const fromAlias2: WebSocket.WebSocket = fromAlias;
console.log(detached, fromAlias2);

// ---------------------------------------------------------------------------
// Streams
// ---------------------------------------------------------------------------

const duplex: Duplex = createWebSocketStream(ws, { encoding: 'utf8' });
duplex.pipe(process.stdout);
process.stdin.pipe(duplex);
pipeline(process.stdin, WebSocket.createWebSocketStream(ws2), process.stdout, (err) => {
    if (err) console.error(err);
});

// ---------------------------------------------------------------------------
// Helpers typed with the exported names
// ---------------------------------------------------------------------------

function broadcast(server: WebSocketServer, message: string): void {
    for (const client of server.clients) {
        if (client.readyState === WebSocket.OPEN) client.send(message);
    }
}
broadcast(wss, 'hello');

function waitOpen(socket: WebSocket): Promise<void> {
    return new Promise((resolve, reject) => {
        socket.once('open', () => resolve());
        socket.once('error', reject);
    });
}
void waitOpen(ws);

function toText(data: WebSocket.RawData): string {
    if (Array.isArray(data)) return Buffer.concat(data).toString();
    return Buffer.isBuffer(data) ? data.toString() : Buffer.from(data).toString();
}
console.log(toText(Buffer.alloc(1)));

// ---------------------------------------------------------------------------
// Things that must not compile
// ---------------------------------------------------------------------------

// @ts-expect-error readyState is read-only
ws.readyState = WebSocket.CLOSED;
// @ts-expect-error the constants are read-only
WebSocket.OPEN = 1;
// @ts-expect-error the instance constants are read-only too
ws.OPEN = 1;
// @ts-expect-error bufferedAmount is read-only
ws.bufferedAmount = 0;
// @ts-expect-error url is read-only
ws.url = 'ws://other';
// @ts-expect-error not a binaryType
ws.binaryType = 'blob2';
// @ts-expect-error unknown option
new WebSocketServer({ port: 1, bogusOption: true });
// @ts-expect-error send requires data
ws.send();
// @ts-expect-error wrong close code type
ws.close('1000');
// @ts-expect-error the readyState literal types do not include 4
const badState: typeof ws.readyState = 4;
// @ts-expect-error subclass instances are required for a custom WebSocket server
const badClient: MyWebSocket = new WebSocket('ws://x');
// @ts-expect-error addEventListener only accepts the four WebSocket event types
ws.addEventListener('ping', () => undefined);
console.log(badState, badClient);
