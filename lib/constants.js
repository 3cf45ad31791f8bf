'use strict';

const BINARY_TYPES = ['nodebuffer', 'arraybuffer', 'fragments'];
const hasBlob = typeof Blob !== 'undefined';

if (hasBlob) BINARY_TYPES.push('blob');

module.exports = {
  BINARY_TYPES,
  CLOSE_TIMEOUT: 30000,
  EMPTY_BUFFER: Buffer.alloc(0),
  GUID: '258EAFA5-E914-47DA-95CA-C5AB0DC85B11',
  hasBlob,
  kWebSocket: Symbol('websocket'),
  // Emitted by a WebSocket when its write side has ended (both close frames are out): the
  // moment ws's socket emits 'finish'. createWebSocketStream waits for it.
  kWriteEnded: Symbol('write-ended'),
  // The booleans of a WebSocket, and the index of its binaryType in BINARY_TYPES, as bits of
  // its `_state` (one field, not nine, in every idle connection's object).
  STATE: {
    CLOSE_RECEIVED: 1,
    CLOSE_SENT: 2,
    ERROR_EMITTED: 4,
    PAUSED: 8,
    DRAINING_BLOBS: 16,
    REPLAY_SCHEDULED: 32,
    WRITE_ENDED: 64,
    CLOSED_WHILE_PAUSED: 128,
    BINARY_TYPE: 256 | 512,
    BINARY_TYPE_SHIFT: 8,
    // The engine reported buffered output past the high-water mark (a 'drain' follows), and
    // past `maxBackpressure` (sends are dropped until then).
    BACKPRESSURED: 1024,
    OVER_LIMIT: 2048,
    // isBackpressured counted the sends of this tick past the high-water mark: the engine
    // was asked for a 'drain'.
    DRAIN_WANTED: 4096
  },
  // `highWaterMark` and `lowWaterMark` (the 'drain' event's marks) when not given.
  HIGH_WATER_MARK: 64 * 1024,
  LOW_WATER_MARK: 16 * 1024,
  NOOP: () => {},
  // `readyState` values, as ws defines them on WebSocket.
  READY_STATE: { CONNECTING: 0, OPEN: 1, CLOSING: 2, CLOSED: 3 }
};
