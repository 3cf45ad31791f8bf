'use strict';

// The `Sec-WebSocket-Extensions` header, as far as JS reads it: the engine negotiates the
// extensions (src/protocol/extension.rs) and JS only lists what was agreed.

/**
 * Parses the extension names of a `Sec-WebSocket-Extensions` value for `ws.extensions`.
 *
 * @param {String} header The header value
 * @return {Object} Names as keys
 */
function parseExtensionNames(header) {
  const out = {};
  for (const part of header.split(',')) {
    const name = part.split(';')[0].trim();
    if (name) out[name] = true;
  }
  return out;
}

module.exports = { parseExtensionNames };
