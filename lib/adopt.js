'use strict';

// Moving an upgraded socket from Node to the engine, on either side. A plain TCP socket is
// handed over by file descriptor, without losing a byte (the sequence is measured in
// shared/notes/boundary-costs.md): stop Node reading, take what it buffered, let its pending
// writes go out, then the engine dups the descriptor and Node destroys its copy. A TLS socket
// (its state lives in Node's OpenSSL) or a Duplex without a descriptor stays with Node and is
// served through the byte bridge; framing, masking and validation still run in the engine.

const native = require('./native');

const EMPTY = Buffer.alloc(0);

function NOOP() {}

/**
 * Hands `socket` to the engine.
 *
 * @param {Duplex} socket The upgraded socket
 * @param {Buffer} head Bytes already read after the HTTP head
 * @param {Buffer} response Bytes the engine writes first (the server's 101), or empty
 * @param {Object} conn Connection options for the engine
 * @param {Boolean} isClient Whether this side is the client (it masks)
 * @param {(String|undefined)} extensions The agreed `Sec-WebSocket-Extensions` value
 * @param {Function} done Called with `(id, bridgedSocket)`; `id` is 0 when the socket is gone
 */
function adoptSocket(socket, head, response, conn, isClient, extensions, done) {
  if (socket.destroyed || !socket.readable || !socket.writable) {
    socket.destroy();
    done(0, null);
    return;
  }
  const handle = socket._handle;
  const fd = handle && typeof handle.fd === 'number' ? handle.fd : -1;
  if (fd >= 0 && !socket.encrypted && typeof handle.readStop === 'function') {
    // Node caches the addresses on first read: read them now, so that `req.socket` still
    // answers remoteAddress/remotePort after the socket is handed over and destroyed.
    void socket.remoteAddress;
    void socket.localAddress;
    socket.pause();
    socket.removeAllListeners('data');
    const chunks = [head || EMPTY];
    let chunk;
    while ((chunk = socket.read()) !== null) chunks.push(chunk);
    handle.readStop();
    const adopt = () => {
      if (socket.destroyed) {
        done(0, null);
        return;
      }
      let id = 0;
      try {
        id = native.binding.adoptFd(fd, Buffer.concat(chunks), response, conn, isClient, extensions);
      } finally {
        socket.destroy();
      }
      done(id, null);
    };
    if (socket.writableLength) socket.write('', adopt);
    else adopt();
    return;
  }
  const id = native.binding.adoptBridge(head || EMPTY, response, conn, isClient, extensions);
  socket.removeAllListeners('error');
  socket.on('error', NOOP);
  socket.on('data', (data) => native.queue(native.OP.BRIDGE_IN, 0, id, data));
  socket.on('end', () => native.queue(native.OP.BRIDGE_EOF, 0, id, null));
  socket.on('close', () => native.queue(native.OP.TERMINATE, 0, id, null));
  if (socket.isPaused()) socket.resume();
  done(id, socket);
}

module.exports = { adoptSocket };
