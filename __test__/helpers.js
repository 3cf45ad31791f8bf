'use strict';

// Small helpers shared by the tests that use Node's http stack.

const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { execFileSync } = require('node:child_process');

/** Listens on an ephemeral port of 127.0.0.1; resolves with the port. */
function listen(server) {
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server.address().port)));
}

/** Closes a server; resolves when it has closed. */
function closeServer(server) {
  return new Promise((resolve) => server.close(() => resolve()));
}

/** Resolves with the arguments of the next `event`. */
function once(emitter, event) {
  return new Promise((resolve) => emitter.once(event, (...args) => resolve(args)));
}

/** A self-signed certificate for localhost and 127.0.0.1, made with openssl. */
function selfSigned() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ws-native-tls-'));
  const key = path.join(dir, 'key.pem');
  const cert = path.join(dir, 'cert.pem');
  execFileSync('openssl', [
    'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=localhost',
    '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1', '-days', '1', '-keyout', key, '-out', cert
  ], { stdio: 'ignore' });
  const out = { key: fs.readFileSync(key), cert: fs.readFileSync(cert) };
  fs.rmSync(dir, { recursive: true, force: true });
  return out;
}

/**
 * Starts `new Server({ host: 127.0.0.1, port: 0, ...options })`, resolves once it listens, and
 * closes it (terminating its clients) after the test `t`.
 */
async function startWss(t, Server, options = {}) {
  const wss = new Server({ host: '127.0.0.1', port: 0, ...options });
  await new Promise((resolve, reject) => {
    wss.once('listening', resolve);
    wss.once('error', reject);
  });
  t.after(
    () =>
      new Promise((resolve) => {
        for (const c of wss.clients) c.terminate();
        wss.close(() => resolve());
      })
  );
  return wss;
}

module.exports = { closeServer, listen, once, selfSigned, startWss };
