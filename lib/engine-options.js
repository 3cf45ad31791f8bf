'use strict';

// The per-connection options the engine applies, from a client's or a server's options
// (ws's, with ws's defaults already set, and ws-native's additions).

const { engineDeflate } = require('./permessage-deflate');

/**
 * Checks the `heartbeat` option: `{ interval, timeout }`, milliseconds, both positive.
 *
 * @param {*} heartbeat The option
 * @return {(Object|undefined)} The heartbeat, or undefined when off
 */
function heartbeatOf(heartbeat) {
  if (heartbeat === undefined || heartbeat === null || heartbeat === false) return undefined;
  const { interval, timeout } = heartbeat;
  if (!(interval > 0) || !(timeout > 0) || !Number.isFinite(interval) || !Number.isFinite(timeout)) {
    throw new RangeError('The heartbeat option must be { interval, timeout } with positive numbers of milliseconds');
  }
  return { interval, timeout };
}

/**
 * @param {Object} o The client's or server's options
 * @param {(Number|undefined)} handshakeTimeout The handshake's limit (ms), if any
 * @return {Object} The engine's connection options (`ConnOptions` in src/binding/options.rs)
 */
function engineOptions(o, handshakeTimeout) {
  const heartbeat = heartbeatOf(o.heartbeat);
  return {
    maxPayload: o.maxPayload,
    maxFragments: o.maxFragments,
    skipUtf8Validation: !!o.skipUTF8Validation,
    autoPong: !!o.autoPong,
    maxPendingAutoPongs: o.maxPendingAutoPongs,
    closeTimeout: o.closeTimeout,
    handshakeTimeout,
    deflate: engineDeflate(o.perMessageDeflate),
    maxHeaderSize: o.maxHeaderSize,
    maxHeadersCount: o.maxHeadersCount,
    heartbeatInterval: heartbeat && heartbeat.interval,
    heartbeatTimeout: heartbeat && heartbeat.timeout,
    highWaterMark: o.highWaterMark,
    lowWaterMark: o.lowWaterMark,
    maxBackpressure: o.maxBackpressure,
    closeOnBackpressureLimit: o.closeOnBackpressureLimit
  };
}

module.exports = { engineOptions };
