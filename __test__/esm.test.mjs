// The ESM entry: ws's named exports and the default export, used for real.
import test from 'node:test';
import assert from 'node:assert/strict';
import WebSocket, { WebSocketServer, createWebSocketStream } from '../wrapper.mjs';
import * as all from '../wrapper.mjs';

test('wrapper.mjs exports what ws\'s does, and they work', { timeout: 10000 }, async () => {
  assert.equal(typeof WebSocket, 'function');
  assert.equal(all.WebSocket, WebSocket);
  assert.equal(WebSocketServer, WebSocket.WebSocketServer);
  assert.equal(typeof createWebSocketStream, 'function');
  const wss = new WebSocketServer({ port: 0, host: '127.0.0.1' });
  await new Promise((resolve) => wss.once('listening', resolve));
  wss.on('connection', (ws) => ws.send('from esm'));
  const ws = new WebSocket(`ws://127.0.0.1:${wss.address().port}`);
  const [data] = await new Promise((resolve) => ws.once('message', (...a) => resolve(a)));
  assert.equal(data.toString(), 'from esm');
  ws.close();
  await new Promise((resolve) => ws.once('close', resolve));
  await new Promise((resolve) => wss.close(resolve));
});
