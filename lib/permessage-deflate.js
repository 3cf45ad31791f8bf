'use strict';

// permessage-deflate runs in the engine (src/protocol/deflate.rs): negotiation, compression
// and decompression. This only turns ws's `perMessageDeflate` option into the engine's
// settings, with JS truthiness applied the way ws's checks apply it.

/**
 * `true`, `false` or `undefined`, as ws tells them apart (`=== false` vs truthy).
 *
 * @param {*} v The option value
 * @return {(Boolean|undefined)}
 */
function flag(v) {
  if (v === false) return false;
  return v ? true : undefined;
}

/**
 * A window bits option: a number, `true`, `false`, or `undefined`.
 *
 * @param {*} v The option value
 * @return {(Number|Boolean|undefined)}
 */
function bits(v) {
  if (typeof v === 'number' || typeof v === 'boolean') return v;
  return v == null ? undefined : Boolean(v);
}

/**
 * The engine's settings for a `perMessageDeflate` option.
 *
 * @param {(Boolean|Object)} option `perMessageDeflate` as given
 * @return {(Object|undefined)} undefined when disabled
 */
function engineDeflate(option) {
  if (!option) return undefined;
  const o = option === true ? {} : option;
  const z = o.zlibDeflateOptions || {};
  return {
    serverNoContextTakeover: flag(o.serverNoContextTakeover),
    clientNoContextTakeover: flag(o.clientNoContextTakeover),
    serverMaxWindowBits: bits(o.serverMaxWindowBits),
    clientMaxWindowBits: bits(o.clientMaxWindowBits),
    threshold: o.threshold !== undefined ? Number(o.threshold) : undefined,
    level: typeof z.level === 'number' ? z.level : undefined,
    memLevel: typeof z.memLevel === 'number' ? z.memLevel : undefined,
    strategy: typeof z.strategy === 'number' ? z.strategy : undefined
  };
}

module.exports = { engineDeflate, extensionName: 'permessage-deflate' };
