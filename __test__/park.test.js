'use strict';

// Parked connections (src/engine/park.rs): an open plain-TCP connection idle for a second or
// two leaves its task and waits in the engine's epoll set. Everything must work on it as on
// a connection with a task: the peer's frames, sends, callbacks, pause, close, terminate and
// a dropped socket. Each case waits until its connection is parked (the engine says so), so
// the cases run concurrently.

const { describe, it } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const path = require('node:path');
const { once } = require('node:events');

const WebSocket = require(path.join(__dirname, '..'));
const PeerWebSocket = require('ws');
const native = require(path.join(__dirname, '..', 'lib', 'native.js'));
const { frame, openClient, quietPeriod, rawWebSocket, startWss, waitFor } = require('./helpers');

const HOST = '127.0.0.1';

/** Resolves once engine connection `ws` is parked (fails after 6 s). */
function parked(ws) {
  return waitFor(() => native.binding.parked(ws._id), { timeout: 6000, interval: 50, what: `connection ${ws._id} to park` });
}

/** A ws-native server, a `ws` client, and the server side of their connection. */
async function pair(t, serverOptions = {}, clientOptions = {}) {
  const wss = await startWss(t, WebSocket.Server, serverOptions);
  const { client, server } = await openClient(t, wss, PeerWebSocket, clientOptions);
  return { wss, client, server };
}

describe('parked connections', { concurrency: true }, () => {
  it('an idle server connection parks, and the peer\'s messages bring it back', async (t) => {
    const { client, server } = await pair(t);
    server.on('message', (data, isBinary) => server.send(data, { binary: isBinary }));
    await parked(server);
    // A large message: many reads on the task that comes back.
    const big = crypto.randomBytes(1024 * 1024 + 7);
    client.send(big);
    const [echo, isBinary] = await once(client, 'message');
    assert.equal(isBinary, true);
    assert.ok(Buffer.compare(echo, big) === 0);
    assert.equal(native.binding.parked(server._id), 0);
    // It parks again, and a text message comes through.
    await parked(server);
    client.send('after the second park');
    const [text] = await once(client, 'message');
    assert.equal(text.toString(), 'after the second park');
  });

  it('sends to a parked connection go out, with their callbacks, and it stays parked', async (t) => {
    const { client, server } = await pair(t);
    await parked(server);
    const got = [];
    client.on('message', (d) => got.push(d.toString()));
    server.send('one');
    server.send('two');
    await new Promise((resolve, reject) => server.send('three', (err) => (err ? reject(err) : resolve())));
    while (got.length < 3) await once(client, 'message');
    assert.deepEqual(got, ['one', 'two', 'three']);
    assert.equal(server.bufferedAmount, 0);
    await parked(server);
  });

  it('a ping to a parked connection gets its pong', async (t) => {
    const { client, server } = await pair(t);
    await parked(server);
    const [pingData] = await Promise.all([once(server, 'ping').then(([d]) => d), (client.ping('are you there'), null)]);
    const [pong] = await once(client, 'pong');
    assert.equal(pingData.toString(), 'are you there');
    assert.equal(pong.toString(), 'are you there');
  });

  it('ws\'s heartbeat pattern keeps a connection parked: its pings go out, the pongs come back as events', async (t) => {
    const { server } = await pair(t);
    await parked(server);
    let pongs = 0;
    server.on('pong', () => pongs++);
    for (let i = 1; i <= 6; i++) {
      server.ping();
      await waitFor(() => pongs === i, { timeout: 5000, what: `pong ${i}` });
      assert.equal(native.binding.parked(server._id), 1, `parked after pong ${i}`);
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
  });

  it('a ping and messages in the first bytes a parked connection reads all arrive, in order', async (t) => {
    const wss = await startWss(t, WebSocket.Server);
    const connected = once(wss, 'connection');
    const { socket } = await rawWebSocket(t, wss.address().port);
    const [server] = await connected;
    await parked(server);
    const got = [];
    server.on('ping', (d) => got.push(`ping ${d}`));
    server.on('message', (d) => got.push(`message ${d}`));
    // One write: a ping, then two text frames; the park thread reads them all at once.
    socket.write(Buffer.concat([frame({ opcode: 0x9, payload: 'p' }), frame({ opcode: 0x1, payload: 'one' }), frame({ opcode: 0x1, payload: 'two' })]));
    await waitFor(() => got.length === 3, { timeout: 5000, what: 'three events' });
    assert.deepEqual(got, ['ping p', 'message one', 'message two']);
  });

  it('the peer\'s close reaches a parked connection', async (t) => {
    const { client, server } = await pair(t);
    await parked(server);
    client.close(4001, 'bye');
    const [[code, reason], [clientCode]] = await Promise.all([once(server, 'close'), once(client, 'close')]);
    assert.equal(code, 4001);
    assert.equal(reason.toString(), 'bye');
    assert.equal(clientCode, 4001);
  });

  it('a parked connection whose socket drops closes with 1006', async (t) => {
    const wss = await startWss(t, WebSocket.Server);
    const accepted = once(wss, 'connection');
    const { socket } = await rawWebSocket(t, wss.address().port);
    const [server] = await accepted;
    await parked(server);
    socket.destroy();
    const [code] = await once(server, 'close');
    assert.equal(code, 1006);
  });

  it('close() and terminate() on parked connections', async (t) => {
    const a = await pair(t);
    const b = await pair(t);
    await Promise.all([parked(a.server), parked(b.server)]);
    a.server.close(4002, 'server says bye');
    b.server.terminate();
    const [[codeA, reasonA], [serverCodeA], [codeB], [serverCodeB]] = await Promise.all([
      once(a.client, 'close'),
      once(a.server, 'close'),
      once(b.client, 'close'),
      once(b.server, 'close')
    ]);
    assert.equal(codeA, 4002);
    assert.equal(reasonA.toString(), 'server says bye');
    assert.equal(serverCodeA, 4002);
    assert.equal(codeB, 1006);
    assert.equal(serverCodeB, 1006);
  });

  it('a paused connection does not park, and reads nothing until resumed', async (t) => {
    const { client, server } = await pair(t);
    await parked(server);
    server.pause();
    const got = [];
    server.on('message', (d) => got.push(d.toString()));
    client.send('held');
    // Longer than an idle connection takes to park: in this time the paused connection must
    // neither emit the message nor park.
    await quietPeriod(2500);
    assert.deepEqual(got, []);
    assert.equal(native.binding.parked(server._id), 0);
    server.resume();
    await once(server, 'message');
    assert.deepEqual(got, ['held']);
  });

  it('a ws-native client parks too, and its server\'s messages bring it back', async (t) => {
    const wss = await startWss(t, PeerWebSocket.Server);
    const client = new WebSocket(`ws://${HOST}:${wss.address().port}`);
    const [[peer]] = await Promise.all([once(wss, 'connection'), once(client, 'open')]);
    peer.on('message', (d) => peer.send(`echo ${d}`));
    await parked(client);
    peer.send('wake up');
    const [msg] = await once(client, 'message');
    assert.equal(msg.toString(), 'wake up');
    await parked(client);
    client.send('masked from a parked client');
    const [echo] = await once(client, 'message');
    assert.equal(echo.toString(), 'echo masked from a parked client');
  });

  it('200 connections park and come back four times, nothing lost or reordered', async (t) => {
    const wss = await startWss(t, WebSocket.Server);
    const N = 200;
    // The server side of each client, by the client's index (its first message).
    const servers = new Array(N);
    wss.on('connection', (ws) => {
      ws.once('message', (data) => {
        const i = Number(String(data).split(':')[1]);
        servers[i] = ws;
        ws.send(`ready:${i}`);
        ws.on('message', (d) => ws.send(d));
      });
    });
    const clients = await Promise.all(
      Array.from({ length: N }, async (_, i) => {
        const c = new PeerWebSocket(`ws://${HOST}:${wss.address().port}`);
        await once(c, 'open');
        c.send(`index:${i}`);
        const [ready] = await once(c, 'message');
        assert.equal(ready.toString(), `ready:${i}`);
        return c;
      })
    );
    t.after(() => clients.forEach((c) => c.terminate()));
    for (let round = 0; round < 4; round++) {
      await Promise.all(servers.map(parked));
      // Half the rounds the peers speak first, half the server broadcasts to parked connections.
      const got = clients.map((c, i) => {
        const want = [`${round}:${i}:a`, `${round}:${i}:b`];
        const seen = [];
        return new Promise((resolve) => {
          const onMessage = (d) => {
            seen.push(d.toString());
            if (seen.length === want.length) {
              c.off('message', onMessage);
              resolve(assert.deepEqual(seen, want));
            }
          };
          c.on('message', onMessage);
        });
      });
      if (round % 2 === 0) {
        clients.forEach((c, i) => {
          c.send(`${round}:${i}:a`);
          c.send(`${round}:${i}:b`);
        });
      } else {
        servers.forEach((ws, i) => {
          ws.send(`${round}:${i}:a`);
          ws.send(`${round}:${i}:b`);
        });
      }
      await Promise.all(got);
    }
  });

  it('permessage-deflate with context takeover carries on across parks', async (t) => {
    const { client, server } = await pair(t, { perMessageDeflate: { threshold: 0 } }, { perMessageDeflate: { threshold: 0 } });
    assert.equal(server.extensions, 'permessage-deflate');
    server.on('message', (data) => server.send(`echo ${data}`));
    const text = 'the same words, compressed against the same window '.repeat(20);
    for (let round = 0; round < 2; round++) {
      client.send(text);
      const [echo] = await once(client, 'message');
      assert.equal(echo.toString(), `echo ${text}`);
      // The zlib contexts are given up after a second, then the connection parks.
      await parked(server);
    }
    // A compressed send from the parked side: compression runs on the connection's task.
    server.send(text);
    const [pushed] = await once(client, 'message');
    assert.equal(pushed.toString(), text);
  });
});
