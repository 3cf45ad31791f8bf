// The ESM typings of ws-native: the shape of @types/ws's index.d.mts (what
// `import WebSocket, { WebSocketServer } from 'ws'` gets), with the types of
// index.d.ts. As there, the default export is the WebSocket class with its
// readyState constants only: `WebSocket.Server` and the other properties the
// CommonJS export carries are reached through the named exports.

/// <reference types="node" />

import type { ClientRequestArgs } from "http";
import type { URL } from "url";
import CJS = require("./index.js");

declare const WebSocket: {
    prototype: CJS;
    new (address: null): CJS;
    new (address: string | URL, options?: CJS.ClientOptions | ClientRequestArgs): CJS;
    new (address: string | URL, protocols?: string | string[], options?: CJS.ClientOptions | ClientRequestArgs): CJS;
    /** The connection is not yet open. */
    readonly CONNECTING: 0;
    /** The connection is open and ready to communicate. */
    readonly OPEN: 1;
    /** The connection is in the process of closing. */
    readonly CLOSING: 2;
    /** The connection is closed. */
    readonly CLOSED: 3;
};
type WebSocket = CJS;

declare namespace WebSocket {
    type RawData = CJS.RawData;
    type Data = CJS.Data;
    type CertMeta = CJS.CertMeta;
    type VerifyClientCallbackSync<Request extends import("http").IncomingMessage = import("http").IncomingMessage> =
        CJS.VerifyClientCallbackSync<Request>;
    type VerifyClientCallbackAsync<Request extends import("http").IncomingMessage = import("http").IncomingMessage> =
        CJS.VerifyClientCallbackAsync<Request>;
    type FinishRequestCallback = CJS.FinishRequestCallback;
    type ClientOptions = CJS.ClientOptions;
    type PerMessageDeflateOptions = CJS.PerMessageDeflateOptions;
    type Event = CJS.Event;
    type ErrorEvent = CJS.ErrorEvent;
    type CloseEvent = CJS.CloseEvent;
    type MessageEvent = CJS.MessageEvent;
    type WebSocketEventMap = CJS.WebSocketEventMap;
    type EventListenerOptions = CJS.EventListenerOptions;
    type ServerOptions<
        U extends typeof CJS.WebSocket = typeof CJS.WebSocket,
        V extends typeof import("http").IncomingMessage = typeof import("http").IncomingMessage,
    > = CJS.ServerOptions<U, V>;
    type AddressInfo = CJS.AddressInfo;
    type ServerTlsOptions = CJS.ServerTlsOptions;
    type ReconnectingOptions = CJS.ReconnectingOptions;
    type HeartbeatOptions = CJS.HeartbeatOptions;
    type PublishData = CJS.PublishData;
    type PublishOptions = CJS.PublishOptions;
    type RedisOptions = CJS.RedisOptions;
    type RedisEvent = CJS.RedisEvent;
    type RedisStatus = CJS.RedisStatus;
    type UrlProvider = CJS.UrlProvider;
    type ProtocolsProvider = CJS.ProtocolsProvider;
}

export type AddressInfo = WebSocket.AddressInfo;
export type CertMeta = WebSocket.CertMeta;
export type ClientOptions = WebSocket.ClientOptions;
export type CloseEvent = WebSocket.CloseEvent;
export type Data = WebSocket.Data;
export type ErrorEvent = WebSocket.ErrorEvent;
export type Event = WebSocket.Event;
export type EventListenerOptions = WebSocket.EventListenerOptions;
export type FinishRequestCallback = WebSocket.FinishRequestCallback;
export type MessageEvent = WebSocket.MessageEvent;
export type PerMessageDeflateOptions = WebSocket.PerMessageDeflateOptions;
export type RawData = WebSocket.RawData;
export type ServerOptions<
    U extends typeof CJS.WebSocket = typeof CJS.WebSocket,
    V extends typeof import("http").IncomingMessage = typeof import("http").IncomingMessage,
> = WebSocket.ServerOptions<U, V>;
export type VerifyClientCallbackAsync = WebSocket.VerifyClientCallbackAsync;
export type VerifyClientCallbackSync = WebSocket.VerifyClientCallbackSync;
export type ServerTlsOptions = WebSocket.ServerTlsOptions;
export type ReconnectingOptions = WebSocket.ReconnectingOptions;
export type UrlProvider = WebSocket.UrlProvider;
export type ProtocolsProvider = WebSocket.ProtocolsProvider;
export type HeartbeatOptions = WebSocket.HeartbeatOptions;
export type PublishData = WebSocket.PublishData;
export type PublishOptions = WebSocket.PublishOptions;
export type RedisOptions = WebSocket.RedisOptions;
export type RedisEvent = WebSocket.RedisEvent;
export type RedisStatus = WebSocket.RedisStatus;

export type Server<
    T extends typeof CJS.WebSocket = typeof CJS.WebSocket,
    U extends typeof import("http").IncomingMessage = typeof import("http").IncomingMessage,
> = CJS.Server<T, U>;

export const WebSocketServer: typeof CJS.Server;
export type WebSocketServer<
    T extends typeof CJS.WebSocket = typeof CJS.WebSocket,
    U extends typeof import("http").IncomingMessage = typeof import("http").IncomingMessage,
> = CJS.WebSocketServer<T, U>;

export const createWebSocketStream: typeof CJS.createWebSocketStream;

export const ReconnectingWebSocket: typeof CJS.ReconnectingWebSocket;
export type ReconnectingWebSocket = CJS.ReconnectingWebSocket;

export default WebSocket;
export { WebSocket };
