// Type definitions for ws-native.
//
// ws-native implements the public API of the npm package `ws` 8.x, so these
// typings follow the structure of `@types/ws` 8.18.1 (MIT, DefinitelyTyped
// contributors): code that type-checks against `@types/ws` must type-check
// unchanged when `ws` is replaced by `ws-native`. Deliberate differences are
// limited to widenings that cannot reject code accepted by `@types/ws`, plus
// the options listed in the "ws-native additions" section at the end of the
// `WebSocket` namespace.

/// <reference types="node" />

import { EventEmitter } from "events";
import {
    Agent,
    ClientRequest,
    ClientRequestArgs,
    IncomingMessage,
    OutgoingHttpHeaders,
    Server as HTTPServer,
} from "http";
import { Server as HTTPSServer } from "https";
import { createConnection } from "net";
import { Duplex, DuplexOptions } from "stream";
import { SecureContextOptions } from "tls";
import { URL } from "url";
import { ZlibOptions } from "zlib";

// Everything `Buffer.from()` accepts (the overloads of BufferConstructor['from']
// can not be extracted, see https://github.com/microsoft/TypeScript/issues/32164).
type BufferLike =
    | string
    | Buffer
    | DataView
    | number
    | ArrayBufferView
    | Uint8Array
    | ArrayBuffer
    | SharedArrayBuffer
    | Blob
    | readonly any[]
    | readonly number[]
    | { valueOf(): ArrayBuffer }
    | { valueOf(): SharedArrayBuffer }
    | { valueOf(): Uint8Array }
    | { valueOf(): readonly number[] }
    | { valueOf(): string }
    | { [Symbol.toPrimitive](hint: string): string };

/**
 * A WebSocket connection, either a client created with `new WebSocket(url)` or
 * the server side of a connection accepted by a `WebSocketServer`.
 * It extends `EventEmitter`.
 */
declare class WebSocket extends EventEmitter {
    /** The connection is not yet open. */
    static readonly CONNECTING: 0;
    /** The connection is open and ready to communicate. */
    static readonly OPEN: 1;
    /** The connection is in the process of closing. */
    static readonly CLOSING: 2;
    /** The connection is closed. */
    static readonly CLOSED: 3;

    /**
     * The type of binary data delivered to `'message'` listeners:
     * `"nodebuffer"` (default, a `Buffer`), `"arraybuffer"` (an `ArrayBuffer`),
     * `"fragments"` (a `Buffer[]` of the received fragments, without
     * concatenation) or `"blob"` (a `Blob`).
     */
    binaryType: "nodebuffer" | "arraybuffer" | "fragments" | "blob";
    /**
     * The number of bytes queued by `send()` and not yet written to the
     * network. Framing bytes are included; `0` if data was sent immediately.
     */
    readonly bufferedAmount: number;
    /** The extensions negotiated with the peer (the `Sec-WebSocket-Extensions` value). */
    readonly extensions: string;
    /** Indicates whether the websocket is paused */
    readonly isPaused: boolean;
    /** The subprotocol selected by the server. */
    readonly protocol: string;
    /** The current state of the connection */
    readonly readyState:
        | typeof WebSocket.CONNECTING
        | typeof WebSocket.OPEN
        | typeof WebSocket.CLOSING
        | typeof WebSocket.CLOSED;
    /** The URL of the WebSocket server. Server-side connections don't have it. */
    readonly url: string;

    /** The connection is not yet open. */
    readonly CONNECTING: 0;
    /** The connection is open and ready to communicate. */
    readonly OPEN: 1;
    /** The connection is in the process of closing. */
    readonly CLOSING: 2;
    /** The connection is closed. */
    readonly CLOSED: 3;

    /** Listener called with an `Event` named "open" when the connection is established. */
    onopen: ((event: WebSocket.Event) => void) | null;
    /** Listener called with an `ErrorEvent` named "error" when an error occurs. */
    onerror: ((event: WebSocket.ErrorEvent) => void) | null;
    /** Listener called with a `CloseEvent` named "close" when the connection is closed. */
    onclose: ((event: WebSocket.CloseEvent) => void) | null;
    /** Listener called with a `MessageEvent` named "message" when a message is received. */
    onmessage: ((event: WebSocket.MessageEvent) => void) | null;

    constructor(address: null);
    /**
     * Open a client connection.
     *
     * @param address The URL to connect to (`ws:`, `wss:`, `http:`, `https:`
     *     or `ws+unix:`)
     * @param options Connection options, and any option of `http.request()`
     */
    constructor(address: string | URL, options?: WebSocket.ClientOptions | ClientRequestArgs);
    /**
     * Open a client connection.
     *
     * @param address The URL to connect to (`ws:`, `wss:`, `http:`, `https:`
     *     or `ws+unix:`)
     * @param protocols The subprotocol(s) to request
     * @param options Connection options, and any option of `http.request()`
     */
    constructor(
        address: string | URL,
        protocols?: string | string[],
        options?: WebSocket.ClientOptions | ClientRequestArgs,
    );

    /**
     * Start the closing handshake.
     *
     * @param code The status code explaining why the connection is closing
     * @param data The reason why the connection is closing
     */
    close(code?: number, data?: string | Buffer): void;
    /**
     * Send a ping. Throws if the ready state is `CONNECTING`.
     *
     * @param data The data to send in the ping frame
     * @param mask Whether to mask `data` (defaults to `true` for clients)
     * @param cb Called when the frame is written out, or with an error
     */
    ping(data?: any, mask?: boolean, cb?: (err: Error) => void): void;
    /**
     * Send a pong. Throws if the ready state is `CONNECTING`.
     *
     * @param data The data to send in the pong frame
     * @param mask Whether to mask `data` (defaults to `true` for clients)
     * @param cb Called when the frame is written out, or with an error
     */
    pong(data?: any, mask?: boolean, cb?: (err: Error) => void): void;
    // https://github.com/websockets/ws/issues/2076#issuecomment-1250354722
    /**
     * Send a message. Throws if the ready state is `CONNECTING`.
     *
     * @param data The data to send
     * @param cb Called when the data is written out, or with an error
     */
    send(data: BufferLike, cb?: (err?: Error) => void): void;
    /**
     * Send a message (or a fragment of a message). Throws if the ready state is
     * `CONNECTING`.
     *
     * @param data The data to send
     * @param options `binary` (autodetected by default), `compress`, `fin`
     *     (`false` to send a fragment), `mask` (defaults to `true` for clients)
     * @param cb Called when the data is written out, or with an error
     */
    send(
        data: BufferLike,
        options: {
            mask?: boolean | undefined;
            binary?: boolean | undefined;
            compress?: boolean | undefined;
            fin?: boolean | undefined;
        },
        cb?: (err?: Error) => void,
    ): void;
    /** Forcibly close the connection. */
    terminate(): void;

    /**
     * Pause the websocket causing it to stop emitting events. Some events can still be
     * emitted after this is called, until all buffered data is consumed. This method
     * is a noop if the ready state is `CONNECTING` or `CLOSED`.
     */
    pause(): void;
    /**
     * Make a paused socket resume emitting events. This method is a noop if the ready
     * state is `CONNECTING` or `CLOSED`.
     */
    resume(): void;

    // HTML5 WebSocket events
    /**
     * Register an event listener emulating the `EventTarget` interface. Does
     * nothing if `type` is not `'close'`, `'error'`, `'message'` or `'open'`.
     */
    addEventListener<K extends keyof WebSocket.WebSocketEventMap>(
        type: K,
        listener:
            | ((event: WebSocket.WebSocketEventMap[K]) => void)
            | { handleEvent(event: WebSocket.WebSocketEventMap[K]): void },
        options?: WebSocket.EventListenerOptions,
    ): void;
    /** Remove a listener added with `addEventListener()`. */
    removeEventListener<K extends keyof WebSocket.WebSocketEventMap>(
        type: K,
        listener:
            | ((event: WebSocket.WebSocketEventMap[K]) => void)
            | { handleEvent(event: WebSocket.WebSocketEventMap[K]): void },
    ): void;

    // Events
    on(event: "close", listener: (this: WebSocket, code: number, reason: Buffer) => void): this;
    on(event: "error", listener: (this: WebSocket, error: Error) => void): this;
    on(event: "upgrade", listener: (this: WebSocket, request: IncomingMessage) => void): this;
    on(event: "message", listener: (this: WebSocket, data: WebSocket.RawData, isBinary: boolean) => void): this;
    on(event: "open", listener: (this: WebSocket) => void): this;
    on(event: "ping" | "pong", listener: (this: WebSocket, data: Buffer) => void): this;
    on(event: "redirect", listener: (this: WebSocket, url: string, request: ClientRequest) => void): this;
    on(
        event: "unexpected-response",
        listener: (this: WebSocket, request: ClientRequest, response: IncomingMessage) => void,
    ): this;
    on(event: string | symbol, listener: (this: WebSocket, ...args: any[]) => void): this;

    once(event: "close", listener: (this: WebSocket, code: number, reason: Buffer) => void): this;
    once(event: "error", listener: (this: WebSocket, error: Error) => void): this;
    once(event: "upgrade", listener: (this: WebSocket, request: IncomingMessage) => void): this;
    once(event: "message", listener: (this: WebSocket, data: WebSocket.RawData, isBinary: boolean) => void): this;
    once(event: "open", listener: (this: WebSocket) => void): this;
    once(event: "ping" | "pong", listener: (this: WebSocket, data: Buffer) => void): this;
    once(event: "redirect", listener: (this: WebSocket, url: string, request: ClientRequest) => void): this;
    once(
        event: "unexpected-response",
        listener: (this: WebSocket, request: ClientRequest, response: IncomingMessage) => void,
    ): this;
    once(event: string | symbol, listener: (this: WebSocket, ...args: any[]) => void): this;

    off(event: "close", listener: (this: WebSocket, code: number, reason: Buffer) => void): this;
    off(event: "error", listener: (this: WebSocket, error: Error) => void): this;
    off(event: "upgrade", listener: (this: WebSocket, request: IncomingMessage) => void): this;
    off(event: "message", listener: (this: WebSocket, data: WebSocket.RawData, isBinary: boolean) => void): this;
    off(event: "open", listener: (this: WebSocket) => void): this;
    off(event: "ping" | "pong", listener: (this: WebSocket, data: Buffer) => void): this;
    off(event: "redirect", listener: (this: WebSocket, url: string, request: ClientRequest) => void): this;
    off(
        event: "unexpected-response",
        listener: (this: WebSocket, request: ClientRequest, response: IncomingMessage) => void,
    ): this;
    off(event: string | symbol, listener: (this: WebSocket, ...args: any[]) => void): this;

    addListener(event: "close", listener: (code: number, reason: Buffer) => void): this;
    addListener(event: "error", listener: (error: Error) => void): this;
    addListener(event: "upgrade", listener: (request: IncomingMessage) => void): this;
    addListener(event: "message", listener: (data: WebSocket.RawData, isBinary: boolean) => void): this;
    addListener(event: "open", listener: () => void): this;
    addListener(event: "ping" | "pong", listener: (data: Buffer) => void): this;
    addListener(event: "redirect", listener: (url: string, request: ClientRequest) => void): this;
    addListener(
        event: "unexpected-response",
        listener: (request: ClientRequest, response: IncomingMessage) => void,
    ): this;
    addListener(event: string | symbol, listener: (...args: any[]) => void): this;

    removeListener(event: "close", listener: (code: number, reason: Buffer) => void): this;
    removeListener(event: "error", listener: (error: Error) => void): this;
    removeListener(event: "upgrade", listener: (request: IncomingMessage) => void): this;
    removeListener(event: "message", listener: (data: WebSocket.RawData, isBinary: boolean) => void): this;
    removeListener(event: "open", listener: () => void): this;
    removeListener(event: "ping" | "pong", listener: (data: Buffer) => void): this;
    removeListener(event: "redirect", listener: (url: string, request: ClientRequest) => void): this;
    removeListener(
        event: "unexpected-response",
        listener: (request: ClientRequest, response: IncomingMessage) => void,
    ): this;
    removeListener(event: string | symbol, listener: (...args: any[]) => void): this;
}

declare const WebSocketAlias: typeof WebSocket;
interface WebSocketAlias extends WebSocket {} // eslint-disable-line @typescript-eslint/no-empty-interface

// ws-native additions to the WebSocket class (merged into the class above).
interface WebSocket {
    /**
     * Whether the buffered output is past the high-water mark (`highWaterMark`, 64 KiB by
     * default); `'drain'` follows once it is back at the low-water mark.
     */
    readonly isBackpressured: boolean;
    /**
     * Subscribe to `topic`: what is published to it on this socket's server
     * (`wss.publish()`, or another socket's `publish()`) is sent to this socket. Does
     * nothing unless the socket is open.
     */
    subscribe(topic: string | ArrayBufferView): void;
    unsubscribe(topic: string | ArrayBufferView): void;
    isSubscribed(topic: string | ArrayBufferView): boolean;
    /** The topics this socket is subscribed to, in subscription order. */
    readonly topics: string[];
    /** Publish to every subscriber of `topic` on this socket's server but this socket. */
    publish(topic: string | ArrayBufferView, data: WebSocket.PublishData, cb?: (err: Error | null) => void): void;
    publish(
        topic: string | ArrayBufferView,
        data: WebSocket.PublishData,
        options: WebSocket.PublishOptions,
        cb?: (err: Error | null) => void,
    ): void;

    on(event: "drain", listener: (this: WebSocket) => void): this;
    once(event: "drain", listener: (this: WebSocket) => void): this;
    off(event: "drain", listener: (this: WebSocket) => void): this;
    addListener(event: "drain", listener: () => void): this;
    removeListener(event: "drain", listener: () => void): this;
}

declare namespace WebSocket {
    /**
     * Data represents the raw message payload received over the WebSocket.
     */
    type RawData = Buffer | ArrayBuffer | Buffer[];

    /**
     * Data represents the message payload received over the WebSocket.
     */
    type Data = string | Buffer | ArrayBuffer | Buffer[];

    /**
     * CertMeta represents the accepted types for certificate & key data.
     */
    type CertMeta = string | string[] | Buffer | Buffer[];

    /**
     * VerifyClientCallbackSync is a synchronous callback used to inspect the
     * incoming message. The return value (boolean) of the function determines
     * whether or not to accept the handshake.
     */
    type VerifyClientCallbackSync<Request extends IncomingMessage = IncomingMessage> = (info: {
        origin: string;
        secure: boolean;
        req: Request;
    }) => boolean;

    /**
     * VerifyClientCallbackAsync is an asynchronous callback used to inspect the
     * incoming message. The return value (boolean) of the function determines
     * whether or not to accept the handshake.
     */
    type VerifyClientCallbackAsync<Request extends IncomingMessage = IncomingMessage> = (
        info: { origin: string; secure: boolean; req: Request },
        callback: (res: boolean, code?: number, message?: string, headers?: OutgoingHttpHeaders) => void,
    ) => void;

    /**
     * FinishRequestCallback is a callback for last minute customization of the
     * headers. If finishRequest is set, then it has the responsibility to call
     * request.end() once it is done setting request headers.
     */
    type FinishRequestCallback = (request: ClientRequest, websocket: WebSocket) => void;

    /**
     * Options of `new WebSocket(address[, protocols][, options])`. Any option of
     * `http.request()` / `https.request()` is accepted too.
     * (More options: see "ws-native additions" below.)
     */
    interface ClientOptions extends SecureContextOptions {
        /** Value of the `Sec-WebSocket-Protocol` header. */
        protocol?: string | undefined;
        /** Whether or not to follow redirects. Defaults to `false`. */
        followRedirects?: boolean | undefined;
        /**
         * The function used to generate the masking key. It must fill `mask`
         * synchronously; by default it is filled with random bytes.
         */
        generateMask?(mask: Buffer): void;
        /** Timeout in milliseconds for the handshake request (reset on every redirect). */
        handshakeTimeout?: number | undefined;
        /** The maximum number of redirects allowed. Defaults to 10. */
        maxRedirects?: number | undefined;
        /** Enable/disable permessage-deflate. Defaults to `true` on clients. */
        perMessageDeflate?: boolean | PerMessageDeflateOptions | undefined;
        localAddress?: string | undefined;
        /** Value of the `Sec-WebSocket-Version` header. */
        protocolVersion?: number | undefined;
        headers?: { [key: string]: string } | undefined;
        /** Value of the `Origin` (or `Sec-WebSocket-Origin`) header. */
        origin?: string | undefined;
        agent?: Agent | undefined;
        host?: string | undefined;
        family?: number | undefined;
        checkServerIdentity?(servername: string, cert: CertMeta): boolean;
        rejectUnauthorized?: boolean | undefined;
        /**
         * Whether `'message'`, `'ping'` and `'pong'` can be emitted multiple
         * times in the same tick. Defaults to `true`.
         */
        allowSynchronousEvents?: boolean | undefined;
        /** Whether to automatically answer pings with pongs. Defaults to `true`. */
        autoPong?: boolean | undefined;
        /** The maximum allowed message size in bytes. Defaults to 100 MiB; 0 disables the limit. */
        maxPayload?: number | undefined;
        /** Skip UTF-8 validation of text and close messages. Defaults to `false`. */
        skipUTF8Validation?: boolean | undefined;
        createConnection?: typeof createConnection | undefined;
        /** Customize each HTTP request before it is sent; must call `request.end()`. */
        finishRequest?: FinishRequestCallback | undefined;
    }

    /** Parameters of the permessage-deflate extension. */
    interface PerMessageDeflateOptions {
        /** Whether to use context takeover or not. */
        serverNoContextTakeover?: boolean | undefined;
        /** Acknowledge disabling of client context takeover. */
        clientNoContextTakeover?: boolean | undefined;
        /** The server's `windowBits` (8-15); `true` offers the parameter with no value, `false` refuses it. */
        serverMaxWindowBits?: number | boolean | undefined;
        /** The client's `windowBits` (8-15); `true` offers the parameter with no value, `false` refuses it. */
        clientMaxWindowBits?: number | boolean | undefined;
        /** Additional options passed to zlib on deflate. */
        zlibDeflateOptions?: {
            flush?: number | undefined;
            finishFlush?: number | undefined;
            chunkSize?: number | undefined;
            windowBits?: number | undefined;
            level?: number | undefined;
            memLevel?: number | undefined;
            strategy?: number | undefined;
            dictionary?: Buffer | Buffer[] | DataView | undefined;
            info?: boolean | undefined;
        } | undefined;
        /** Additional options passed to zlib on inflate. */
        zlibInflateOptions?: ZlibOptions | undefined;
        /** Payloads smaller than this are not compressed. Defaults to 1024 bytes. */
        threshold?: number | undefined;
        /** The number of concurrent calls to zlib. Defaults to 10. */
        concurrencyLimit?: number | undefined;
    }

    /** The event received by `open` listeners. */
    interface Event {
        type: string;
        target: WebSocket;
    }

    /** The event received by `error` listeners. */
    interface ErrorEvent {
        error: any;
        message: string;
        type: string;
        target: WebSocket;
    }

    /** The event received by `close` listeners. */
    interface CloseEvent {
        wasClean: boolean;
        code: number;
        reason: string;
        type: string;
        target: WebSocket;
    }

    /** The event received by `message` listeners (`data` is a string for text messages). */
    interface MessageEvent {
        data: Data;
        type: string;
        target: WebSocket;
    }

    interface WebSocketEventMap {
        open: Event;
        error: ErrorEvent;
        close: CloseEvent;
        message: MessageEvent;
    }

    interface EventListenerOptions {
        /** Remove the listener after its first invocation. */
        once?: boolean | undefined;
    }

    /**
     * Options of `new WebSocketServer(options[, callback])`. Exactly one of
     * `port`, `server` or `noServer` must be given.
     * (More options: see "ws-native additions" below.)
     */
    interface ServerOptions<
        U extends typeof WebSocket.WebSocket = typeof WebSocket.WebSocket,
        V extends typeof IncomingMessage = typeof IncomingMessage,
    > {
        /** The hostname where to bind the server. */
        host?: string | undefined;
        /** The port where to bind the server (an HTTP server is created). */
        port?: number | undefined;
        /** The maximum length of the queue of pending connections. */
        backlog?: number | undefined;
        /** A pre-created HTTP/S server to attach to. */
        server?: HTTPServer<V> | HTTPSServer<V> | undefined;
        /**
         * Validate incoming connections: the synchronous form `(info)` returns
         * whether to accept the handshake, the asynchronous form
         * `(info, callback)` calls `callback`. Both forms are accepted, as in
         * @types/ws; the single signature (`VerifyClientCallback`, see
         * "ws-native additions") lets TypeScript infer the parameter types of
         * an unannotated synchronous callback too.
         */
        verifyClient?: VerifyClientCallback<InstanceType<V>> | undefined;
        /**
         * Select the subprotocol; `false` omits the `Sec-WebSocket-Protocol`
         * header. By default the first requested subprotocol is used.
         */
        handleProtocols?: (protocols: Set<string>, request: InstanceType<V>) => string | false;
        /** Accept only connections matching this path. */
        path?: string | undefined;
        /** Enable no server mode (call `handleUpgrade()` yourself). */
        noServer?: boolean | undefined;
        /**
         * Whether `'message'`, `'ping'` and `'pong'` can be emitted multiple
         * times in the same tick. Defaults to `true`.
         */
        allowSynchronousEvents?: boolean | undefined;
        /** Whether to automatically answer pings with pongs. Defaults to `true`. */
        autoPong?: boolean | undefined;
        /** Whether or not to track clients in `server.clients`. Defaults to `true`. */
        clientTracking?: boolean | undefined;
        /** Enable/disable permessage-deflate. Defaults to `false` on servers. */
        perMessageDeflate?: boolean | PerMessageDeflateOptions | undefined;
        /** The maximum allowed message size in bytes. Defaults to 100 MiB; 0 disables the limit. */
        maxPayload?: number | undefined;
        /** Skip UTF-8 validation of text and close messages. Defaults to `false`. */
        skipUTF8Validation?: boolean | undefined;
        /** The `WebSocket` class to use; it must extend the original `WebSocket`. */
        WebSocket?: U | undefined;
    }

    interface AddressInfo {
        address: string;
        family: string;
        port: number;
    }

    // WebSocket Server
    /**
     * A WebSocket server. It extends `EventEmitter`.
     *
     * @typeParam T The `WebSocket` class used for accepted connections (the
     *     `WebSocket` option)
     * @typeParam U The `IncomingMessage` class of the HTTP server's requests
     */
    class Server<
        T extends typeof WebSocket.WebSocket = typeof WebSocket.WebSocket,
        U extends typeof IncomingMessage = typeof IncomingMessage,
    > extends EventEmitter {
        options: ServerOptions<T, U>;
        path: string;
        /** The connected clients (only when the `clientTracking` option is truthy). */
        clients: Set<InstanceType<T>>;

        constructor(options?: ServerOptions<T, U>, callback?: () => void);

        /** The bound address, as reported by the operating system, of the HTTP server. */
        address(): AddressInfo | string | null;
        /**
         * Stop accepting new connections and close the HTTP server if it was
         * created internally. Existing connections are not closed.
         */
        close(cb?: (err?: Error) => void): void;
        /** Handle an HTTP upgrade request (to be called manually in `noServer` mode). */
        handleUpgrade(
            request: InstanceType<U>,
            socket: Duplex,
            upgradeHead: Buffer,
            callback: (client: InstanceType<T>, request: InstanceType<U>) => void,
        ): void;
        /** Whether the request should be handled by this server (checks `path` by default). */
        shouldHandle(request: InstanceType<U>): boolean | Promise<boolean>;

        // Events
        on(
            event: "connection",
            cb: (this: Server<T>, websocket: InstanceType<T>, request: InstanceType<U>) => void,
        ): this;
        on(event: "error", cb: (this: Server<T>, error: Error) => void): this;
        on(event: "headers", cb: (this: Server<T>, headers: string[], request: InstanceType<U>) => void): this;
        on(event: "close" | "listening", cb: (this: Server<T>) => void): this;
        on(
            event: "wsClientError",
            cb: (this: Server<T>, error: Error, socket: Duplex, request: InstanceType<U>) => void,
        ): this;
        on(event: string | symbol, listener: (this: Server<T>, ...args: any[]) => void): this;

        once(
            event: "connection",
            cb: (this: Server<T>, websocket: InstanceType<T>, request: InstanceType<U>) => void,
        ): this;
        once(event: "error", cb: (this: Server<T>, error: Error) => void): this;
        once(event: "headers", cb: (this: Server<T>, headers: string[], request: InstanceType<U>) => void): this;
        once(event: "close" | "listening", cb: (this: Server<T>) => void): this;
        once(
            event: "wsClientError",
            cb: (this: Server<T>, error: Error, socket: Duplex, request: InstanceType<U>) => void,
        ): this;
        once(event: string | symbol, listener: (this: Server<T>, ...args: any[]) => void): this;

        off(
            event: "connection",
            cb: (this: Server<T>, socket: InstanceType<T>, request: InstanceType<U>) => void,
        ): this;
        off(event: "error", cb: (this: Server<T>, error: Error) => void): this;
        off(event: "headers", cb: (this: Server<T>, headers: string[], request: InstanceType<U>) => void): this;
        off(event: "close" | "listening", cb: (this: Server<T>) => void): this;
        off(
            event: "wsClientError",
            cb: (this: Server<T>, error: Error, socket: Duplex, request: InstanceType<U>) => void,
        ): this;
        off(event: string | symbol, listener: (this: Server<T>, ...args: any[]) => void): this;

        addListener(event: "connection", cb: (websocket: InstanceType<T>, request: InstanceType<U>) => void): this;
        addListener(event: "error", cb: (error: Error) => void): this;
        addListener(event: "headers", cb: (headers: string[], request: InstanceType<U>) => void): this;
        addListener(event: "close" | "listening", cb: () => void): this;
        addListener(event: "wsClientError", cb: (error: Error, socket: Duplex, request: InstanceType<U>) => void): this;
        addListener(event: string | symbol, listener: (...args: any[]) => void): this;

        removeListener(event: "connection", cb: (websocket: InstanceType<T>, request: InstanceType<U>) => void): this;
        removeListener(event: "error", cb: (error: Error) => void): this;
        removeListener(event: "headers", cb: (headers: string[], request: InstanceType<U>) => void): this;
        removeListener(event: "close" | "listening", cb: () => void): this;
        removeListener(
            event: "wsClientError",
            cb: (error: Error, socket: Duplex, request: InstanceType<U>) => void,
        ): this;
        removeListener(event: string | symbol, listener: (...args: any[]) => void): this;
    }

    /** Alias of `Server`. */
    const WebSocketServer: typeof Server;
    // Generic, unlike in @types/ws, so that `WebSocketServer<typeof MyWS>` can
    // be used as a type; without type arguments it is the same as there.
    interface WebSocketServer<
        T extends typeof WebSocket.WebSocket = typeof WebSocket.WebSocket,
        U extends typeof IncomingMessage = typeof IncomingMessage,
    > extends Server<T, U> {} // eslint-disable-line @typescript-eslint/no-empty-interface
    const WebSocket: typeof WebSocketAlias;
    interface WebSocket extends WebSocketAlias {} // eslint-disable-line @typescript-eslint/no-empty-interface

    // WebSocket stream
    /**
     * Return a `Duplex` stream that allows to use the Node.js streams API on
     * top of the given `WebSocket`.
     *
     * @param websocket The `WebSocket` to wrap
     * @param options Options passed to the `Duplex` constructor
     */
    function createWebSocketStream(websocket: WebSocket, options?: DuplexOptions): Duplex;

    // ---------------------------------------------------------------------
    // ws-native additions
    //
    // Options and members that ws-native supports but @types/ws 8.18.1 does
    // not declare. They are merged into the interfaces declared above (the
    // type parameters must stay identical to the ones above). Add new
    // ws-native-specific declarations here.
    // ---------------------------------------------------------------------

    /**
     * The type of the `verifyClient` server option: either form of
     * `VerifyClientCallbackSync` or `VerifyClientCallbackAsync` (both are
     * assignable to it). ws calls it with `callback` only when the function
     * declares two parameters; the synchronous form returns the decision.
     */
    type VerifyClientCallback<Request extends IncomingMessage = IncomingMessage> = (
        info: { origin: string; secure: boolean; req: Request },
        callback: (res: boolean, code?: number, message?: string, headers?: OutgoingHttpHeaders) => void,
    ) => boolean | void;

    /**
     * Options of `new ReconnectingWebSocket(url, protocols?, options?)`: reconnecting-websocket's
     * (same names and defaults), ws-native's queue bound and `stopOnClose`, and every
     * WebSocket option, passed to each connection. See docs/reconnect.md.
     */
    interface ReconnectingOptions extends ClientOptions {
        /** The longest wait between attempts (ms). Defaults to 10000. */
        maxReconnectionDelay?: number | undefined;
        /** The first wait (ms). Defaults to 1000 plus a random part up to 4000, drawn per socket. */
        minReconnectionDelay?: number | undefined;
        /** How much each wait grows over the previous one. Defaults to 1.3. */
        reconnectionDelayGrowFactor?: number | undefined;
        /** How long (ms) a connection must stay up for the waits to start over. Defaults to 5000. */
        minUptime?: number | undefined;
        /** How long (ms) an attempt may take, `url` and `protocols` functions included. Defaults to 4000. */
        connectionTimeout?: number | undefined;
        /** Failed attempts in a row after which it gives up (`WS_ERR_RECONNECT_RETRIES`). Defaults to `Infinity`. */
        maxRetries?: number | undefined;
        /** The most messages queued while disconnected. Defaults to `Infinity`. */
        maxEnqueuedMessages?: number | undefined;
        /** The most bytes queued while disconnected. Defaults to 16 MiB (16777216). */
        maxEnqueuedBytes?: number | undefined;
        /** Do not connect until `reconnect()` is called. Defaults to `false`. */
        startClosed?: boolean | undefined;
        /** Log what the reconnect loop does. Defaults to `false`. */
        debug?: boolean | undefined;
        /** Where `debug` logs (partysocket's option). Defaults to `console.log`. */
        debugLogger?: ((...args: any[]) => void) | undefined;
        /** reconnecting-websocket's choice of WebSocket class: accepted, and not used. */
        WebSocket?: any;
        /**
         * Whether a close code from the server ends the reconnecting. Defaults to
         * `ReconnectingWebSocket.defaultStopOnClose`: 1000, 1001 and 4000-4999.
         */
        stopOnClose?: ((code: number, reason: string) => boolean) | undefined;
    }

    /** The URL of each attempt: a value, or a function (possibly async) called before each attempt. */
    type UrlProvider = string | URL | (() => string | URL | Promise<string | URL>);
    /** The subprotocols of each attempt: a value, or a function (possibly async) called before each attempt. */
    type ProtocolsProvider =
        | string
        | string[]
        | (() => string | string[] | null | undefined | Promise<string | string[] | null | undefined>);

    /**
     * A client that reconnects by itself, with reconnecting-websocket's options and events.
     * It is a `WebSocket`: each connection runs on the same object.
     */
    class ReconnectingWebSocket extends WebSocketAlias {
        /** The default of the `stopOnClose` option: 1000, 1001 and 4000-4999 stop the reconnecting. */
        static defaultStopOnClose(code: number): boolean;

        /**
         * @param url The URL, or a function (possibly async) called before each attempt
         * @param protocols The subprotocols, or a function (possibly async) called before each attempt
         * @param options reconnecting-websocket's options and any WebSocket option
         */
        constructor(
            url: UrlProvider,
            protocols?: ProtocolsProvider,
            options?: ReconnectingOptions | (ReconnectingOptions & ClientRequestArgs),
        );
        constructor(url: UrlProvider, options?: ReconnectingOptions | (ReconnectingOptions & ClientRequestArgs));

        /** Failed attempts since the last connection that stayed up `minUptime`. */
        readonly retryCount: number;
        /** Whether another connection follows when the current one closes. */
        readonly shouldReconnect: boolean;

        /**
         * Close the current connection (with a close handshake if open) and connect again at
         * once, the retry count reset; after the last close, start again.
         */
        reconnect(code?: number, reason?: string | Buffer): void;

        on(event: "close", listener: (this: ReconnectingWebSocket, code: number, reason: Buffer) => void): this;
        on(event: "error", listener: (this: ReconnectingWebSocket, error: Error) => void): this;
        on(event: "upgrade", listener: (this: ReconnectingWebSocket, request: IncomingMessage) => void): this;
        on(event: "message", listener: (this: ReconnectingWebSocket, data: WebSocket.RawData, isBinary: boolean) => void): this;
        on(event: "open", listener: (this: ReconnectingWebSocket) => void): this;
        on(event: "ping" | "pong", listener: (this: ReconnectingWebSocket, data: Buffer) => void): this;
        on(event: "redirect", listener: (this: ReconnectingWebSocket, url: string, request: ClientRequest) => void): this;
        on(
            event: "unexpected-response",
            listener: (this: ReconnectingWebSocket, request: ClientRequest, response: IncomingMessage) => void,
        ): this;
        on(event: "reconnecting", listener: (this: ReconnectingWebSocket, attempt: number, delay: number) => void): this;
        on(event: "reconnect", listener: (this: ReconnectingWebSocket, attempt: number) => void): this;
        on(event: string | symbol, listener: (this: ReconnectingWebSocket, ...args: any[]) => void): this;

        once(event: "close", listener: (this: ReconnectingWebSocket, code: number, reason: Buffer) => void): this;
        once(event: "error", listener: (this: ReconnectingWebSocket, error: Error) => void): this;
        once(event: "upgrade", listener: (this: ReconnectingWebSocket, request: IncomingMessage) => void): this;
        once(event: "message", listener: (this: ReconnectingWebSocket, data: WebSocket.RawData, isBinary: boolean) => void): this;
        once(event: "open", listener: (this: ReconnectingWebSocket) => void): this;
        once(event: "ping" | "pong", listener: (this: ReconnectingWebSocket, data: Buffer) => void): this;
        once(event: "redirect", listener: (this: ReconnectingWebSocket, url: string, request: ClientRequest) => void): this;
        once(
            event: "unexpected-response",
            listener: (this: ReconnectingWebSocket, request: ClientRequest, response: IncomingMessage) => void,
        ): this;
        once(event: "reconnecting", listener: (this: ReconnectingWebSocket, attempt: number, delay: number) => void): this;
        once(event: "reconnect", listener: (this: ReconnectingWebSocket, attempt: number) => void): this;
        once(event: string | symbol, listener: (this: ReconnectingWebSocket, ...args: any[]) => void): this;

        off(event: "close", listener: (this: ReconnectingWebSocket, code: number, reason: Buffer) => void): this;
        off(event: "error", listener: (this: ReconnectingWebSocket, error: Error) => void): this;
        off(event: "upgrade", listener: (this: ReconnectingWebSocket, request: IncomingMessage) => void): this;
        off(event: "message", listener: (this: ReconnectingWebSocket, data: WebSocket.RawData, isBinary: boolean) => void): this;
        off(event: "open", listener: (this: ReconnectingWebSocket) => void): this;
        off(event: "ping" | "pong", listener: (this: ReconnectingWebSocket, data: Buffer) => void): this;
        off(event: "redirect", listener: (this: ReconnectingWebSocket, url: string, request: ClientRequest) => void): this;
        off(
            event: "unexpected-response",
            listener: (this: ReconnectingWebSocket, request: ClientRequest, response: IncomingMessage) => void,
        ): this;
        off(event: "reconnecting", listener: (this: ReconnectingWebSocket, attempt: number, delay: number) => void): this;
        off(event: "reconnect", listener: (this: ReconnectingWebSocket, attempt: number) => void): this;
        off(event: string | symbol, listener: (this: ReconnectingWebSocket, ...args: any[]) => void): this;

        addListener(event: "close", listener: (code: number, reason: Buffer) => void): this;
        addListener(event: "error", listener: (error: Error) => void): this;
        addListener(event: "upgrade", listener: (request: IncomingMessage) => void): this;
        addListener(event: "message", listener: (data: WebSocket.RawData, isBinary: boolean) => void): this;
        addListener(event: "open", listener: () => void): this;
        addListener(event: "ping" | "pong", listener: (data: Buffer) => void): this;
        addListener(event: "redirect", listener: (url: string, request: ClientRequest) => void): this;
        addListener(
            event: "unexpected-response",
            listener: (request: ClientRequest, response: IncomingMessage) => void,
        ): this;
        addListener(event: "reconnecting", listener: (attempt: number, delay: number) => void): this;
        addListener(event: "reconnect", listener: (attempt: number) => void): this;
        addListener(event: string | symbol, listener: (...args: any[]) => void): this;

        removeListener(event: "close", listener: (code: number, reason: Buffer) => void): this;
        removeListener(event: "error", listener: (error: Error) => void): this;
        removeListener(event: "upgrade", listener: (request: IncomingMessage) => void): this;
        removeListener(event: "message", listener: (data: WebSocket.RawData, isBinary: boolean) => void): this;
        removeListener(event: "open", listener: () => void): this;
        removeListener(event: "ping" | "pong", listener: (data: Buffer) => void): this;
        removeListener(event: "redirect", listener: (url: string, request: ClientRequest) => void): this;
        removeListener(
            event: "unexpected-response",
            listener: (request: ClientRequest, response: IncomingMessage) => void,
        ): this;
        removeListener(event: "reconnecting", listener: (attempt: number, delay: number) => void): this;
        removeListener(event: "reconnect", listener: (attempt: number) => void): this;
        removeListener(event: string | symbol, listener: (...args: any[]) => void): this;
    }

    interface ClientOptions {
        /**
         * Duration in milliseconds to wait for the closing handshake to finish
         * after `websocket.close()` is called. If the limit is reached, the
         * connection is forcibly terminated. Defaults to 30000.
         */
        closeTimeout?: number | undefined;
        /**
         * The maximum number of fragments in a message. Defaults to 16384, as
         * in ws; 0 disables the limit. Exceeding it fails the connection with
         * an error whose `code` is `'WS_ERR_TOO_MANY_BUFFERED_PARTS'`.
         */
        maxFragments?: number | undefined;
        /**
         * ws's limit on the socket chunks its parser buffers. Accepted; the
         * engine keeps no such list (each read is decoded at once, bounded by
         * `maxPayload`).
         */
        maxBufferedChunks?: number | undefined;
        /**
         * The most automatic pongs that may wait to be written: a peer that
         * sends more pings without reading the pongs is terminated, as in ws.
         * Defaults to 60; 0 disables the limit.
         */
        maxPendingAutoPongs?: number | undefined;
        /**
         * A proxy for the connection, opened by the engine: `'http://[user:pass@]host:port'`
         * (HTTP `CONNECT`, Basic auth), `'socks5://...'` (the name is resolved locally) or
         * `'socks5h://...'` (the proxy resolves it), with optional user and password; or
         * `'env'` to take it from `HTTPS_PROXY` / `HTTP_PROXY` / `ALL_PROXY`, honouring
         * `NO_PROXY`. The environment is not read otherwise. Failures reach `'error'` with
         * `code` `'ERR_PROXY_AUTH'` (407, SOCKS auth), `'ERR_PROXY_TUNNEL'` (the proxy could
         * not reach the server), `'ECONNREFUSED'`... and a message naming the proxy.
         */
        proxy?: string | URL | undefined;
        /** The TLS server name (SNI, and the name the certificate must match); `''` sends no SNI. */
        servername?: string | undefined;
        /** The built-in heartbeat (off by default). See `HeartbeatOptions`. */
        heartbeat?: HeartbeatOptions | undefined;
        /** Buffered output past this many bytes makes `isBackpressured` true. Defaults to 65536. */
        highWaterMark?: number | undefined;
        /** `'drain'` fires once the buffered output is back at this many bytes. Defaults to 16384. */
        lowWaterMark?: number | undefined;
    }

    /**
     * The built-in heartbeat, run by the engine with no JS timer: a connection silent for
     * `interval` ms is pinged, and terminated if it is still silent `timeout` ms later
     * (`'error'` with code `'WS_ERR_HEARTBEAT_TIMEOUT'`, then `'close'` with 1006). Any
     * frame from the peer counts as life; the heartbeat's own pongs are not `'pong'` events.
     */
    interface HeartbeatOptions {
        interval: number;
        timeout: number;
    }

    /** What `publish()` takes: what `send()` takes, but a Blob. */
    type PublishData = string | Buffer | ArrayBuffer | ArrayBufferView | number;

    /** `publish()`'s options, as `send()`'s. */
    interface PublishOptions {
        /** Defaults to `true` for anything but a string. */
        binary?: boolean | undefined;
        /** Compressed for subscribers that agreed permessage-deflate. Defaults to `true`. */
        compress?: boolean | undefined;
    }

    /**
     * The `redis` server option: `publish()` then reaches the subscribers of every server
     * process sharing this Redis (and prefix). See docs/pubsub.md.
     */
    interface RedisOptions {
        /** `redis://[[user]:password@]host[:port][/db]`. */
        url: string | URL;
        /** Channels are this prefix plus the topic. Defaults to `'ws-native:'`. */
        prefix?: string | undefined;
        /** Publishes buffered while Redis is unreachable, at most. Defaults to 10000. */
        maxBufferedMessages?: number | undefined;
        /** Their bytes, at most. Defaults to 16 MiB. */
        maxBufferedBytes?: number | undefined;
        /** Reconnection backoff (ms): from `backoffMin` (100) doubling up to `backoffMax` (5000). */
        backoffMin?: number | undefined;
        backoffMax?: number | undefined;
        /** How long (ms) a reconnected server waits for the others to resubscribe. Defaults to 6000. */
        rejoinWait?: number | undefined;
    }

    /** What the `'redis'` server event reports. */
    type RedisEvent =
        | { type: "connect" }
        | { type: "disconnect" | "error"; error: Error }
        | { type: "lost"; topic: string; error: Error };

    /** `wss.redisStatus()`. */
    interface RedisStatus {
        connected: boolean;
        bufferedMessages: number;
        bufferedBytes: number;
        lost: number;
        missed: number;
        lastError?: string | undefined;
    }

    interface Server<
        T extends typeof WebSocket.WebSocket = typeof WebSocket.WebSocket,
        U extends typeof IncomingMessage = typeof IncomingMessage,
    > {
        /**
         * Publish to every subscriber of `topic` on this server (and, with `redis`, on every
         * server process sharing that Redis). `cb(err)` once the engine took it; `err` (code
         * `'WS_ERR_PUBLISH_LOST'`) when the Redis buffer was full.
         */
        publish(topic: string | ArrayBufferView, data: PublishData, cb?: (err: Error | null) => void): void;
        publish(topic: string | ArrayBufferView, data: PublishData, options: PublishOptions, cb?: (err: Error | null) => void): void;
        /** How many of this server's sockets are subscribed to `topic`. */
        subscriberCount(topic: string | ArrayBufferView): number;
        /** The state of the link to Redis; null without the `redis` option. */
        redisStatus(): RedisStatus | null;

        on(event: "redis", cb: (this: Server<T>, event: RedisEvent) => void): this;
        once(event: "redis", cb: (this: Server<T>, event: RedisEvent) => void): this;
        off(event: "redis", cb: (this: Server<T>, event: RedisEvent) => void): this;
        addListener(event: "redis", cb: (event: RedisEvent) => void): this;
        removeListener(event: "redis", cb: (event: RedisEvent) => void): this;
    }

    /**
     * The native TLS server (`new WebSocketServer({ port, tls })`), an addition over ws. The
     * engine's TLS serves these options; any other option of `https.createServer()` (`pfx`,
     * `ciphers`...), or a certificate the engine cannot read (X.509 version 1), makes Node's
     * TLS serve the connections instead.
     */
    interface ServerTlsOptions extends SecureContextOptions {
        /** The certificate chain (PEM), or several chains. */
        cert?: string | Buffer | Array<string | Buffer> | undefined;
        /** The private key (PEM: PKCS#8, PKCS#1 or SEC1; or encrypted PKCS#8 with `passphrase`). */
        key?: string | Buffer | Array<string | Buffer | { pem: string | Buffer; passphrase?: string | undefined }> | undefined;
        /** Decrypts an encrypted PKCS#8 `key` (`-----BEGIN ENCRYPTED PRIVATE KEY-----`). */
        passphrase?: string | undefined;
        /** The CAs that client certificates must chain to (with `requestCert`). */
        ca?: string | Buffer | Array<string | Buffer> | undefined;
        /** Ask clients for a certificate. Defaults to `false`. */
        requestCert?: boolean | undefined;
        /** With `requestCert`, refuse clients without a valid certificate. Defaults to `true`. */
        rejectUnauthorized?: boolean | undefined;
    }

    interface ServerOptions<
        U extends typeof WebSocket.WebSocket = typeof WebSocket.WebSocket,
        V extends typeof IncomingMessage = typeof IncomingMessage,
    > {
        /**
         * Duration in milliseconds to wait for the closing handshake to finish
         * after `websocket.close()` is called on an accepted connection. If the
         * limit is reached, the connection is forcibly terminated. Defaults to
         * 30000.
         */
        closeTimeout?: number | undefined;
        /**
         * The maximum number of fragments in a message. Defaults to 16384, as
         * in ws; 0 disables the limit. Exceeding it fails the connection with
         * an error whose `code` is `'WS_ERR_TOO_MANY_BUFFERED_PARTS'`.
         */
        maxFragments?: number | undefined;
        /**
         * ws's limit on the socket chunks its parser buffers. Accepted; the
         * engine keeps no such list (each read is decoded at once, bounded by
         * `maxPayload`).
         */
        maxBufferedChunks?: number | undefined;
        /**
         * The most automatic pongs that may wait to be written: a peer that
         * sends more pings without reading the pongs is terminated, as in ws.
         * Defaults to 60; 0 disables the limit.
         */
        maxPendingAutoPongs?: number | undefined;
        /**
         * Serve `wss://` from the engine itself (with `port` only), an addition over ws.
         * `req.socket.encrypted` is `true` on its connections.
         */
        tls?: ServerTlsOptions | undefined;
        /**
         * Node's listen option: bind with SO_REUSEPORT, so that several processes listen on
         * the same port and the kernel spreads the connections among them.
         */
        reusePort?: boolean | undefined;
        /**
         * Node's listen option: in a cluster worker, bind the port alone instead of sharing
         * the primary's listening socket.
         */
        exclusive?: boolean | undefined;
        /**
         * ws-native addition: how long (ms) a client may take to send its
         * upgrade request before it is disconnected, as Node's
         * `headersTimeout`. Defaults to 60000; 0 disables it.
         */
        handshakeTimeout?: number | undefined;
        /**
         * ws-native addition (Node's http server option of the same name):
         * the largest upgrade request head in bytes. Defaults to 16384; a
         * larger head is answered with 431.
         */
        maxHeaderSize?: number | undefined;
        /**
         * ws-native addition: the most header lines in an upgrade request.
         * Defaults to 128; more are answered with 431 (Node's server drops
         * the extra lines instead).
         */
        maxHeadersCount?: number | undefined;
        /** The built-in heartbeat of accepted connections (off by default). */
        heartbeat?: HeartbeatOptions | undefined;
        /** Buffered output past this many bytes makes `isBackpressured` true. Defaults to 65536. */
        highWaterMark?: number | undefined;
        /** `'drain'` fires once the buffered output is back at this many bytes. Defaults to 16384. */
        lowWaterMark?: number | undefined;
        /**
         * The most bytes a connection may have buffered: past it, sends fail with
         * `'WS_ERR_BACKPRESSURE_LIMIT'` and publishes skip it until it drains. No limit by
         * default, as in ws.
         */
        maxBackpressure?: number | undefined;
        /** With `maxBackpressure`: terminate such a connection instead (close code 1008). */
        closeOnBackpressureLimit?: boolean | undefined;
        /** Link the server's topics to other processes through Redis. */
        redis?: string | URL | RedisOptions | undefined;
    }
}

export = WebSocket;
