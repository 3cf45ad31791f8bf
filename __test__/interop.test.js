'use strict';

// Interoperability with the real `ws` package, in both directions:
//   ws-native client <-> ws server, and ws client <-> ws-native server.
// Messages of many sizes (content checked with a hash), fragmentation, ping/pong, and every
// close path. Run with WS_IMPL=ws to check the expectations with ws on both ends.

const { test, describe } = require('node:test');
const assert = require('node:assert/strict');
const { once } = require('node:events');
const path = require('node:path');

const Native = require(process.env.WS_IMPL === 'ws' ? 'ws' : path.join(__dirname, '..'));
const Ws = require('ws');
const { closeEvent, openClient, quietPeriod, sha256, startWss } = require('./helpers');

const T = { timeout: 10000 };

const SETUPS = [
  { name: 'ws-native client <-> ws server', Client: Native, Server: Ws.WebSocketServer },
  { name: 'ws client <-> ws-native server', Client: Ws, Server: Native.WebSocketServer }
];

/** Opens a connection; resolves with { client, server } (the two WebSocket ends). */
async function connect(t, setup, serverOptions = {}, clientOptions = {}) {
  const wss = await startWss(t, setup.Server, serverOptions);
  const { client, server } = await openClient(t, wss, setup.Client, clientOptions);
  return { client, server, wss };
}

function textOf(size) {
  const pattern = 'abcdefghijklmnopqrstuvwxyz0123456789';
  return pattern.repeat(Math.ceil(size / pattern.length)).slice(0, size);
}

function binaryOf(size) {
  const buf = Buffer.allocUnsafe(size);
  for (let i = 0; i < size; i++) buf[i] = (i * 31 + 7) & 0xff;
  return buf;
}

const SIZES = [0, 1, 125, 126, 65535, 65536, 1024 * 1024, 16 * 1024 * 1024];

/** Sends one message and checks what the other end receives. */
async function transfer(from, to, data, binary) {
  const received = once(to, 'message');
  const sent = new Promise((resolve) => from.send(data, { binary }, resolve));
  const [msg, isBinary] = await received;
  assert.equal(isBinary, binary);
  const buf = Buffer.isBuffer(msg) ? msg : Buffer.from(msg);
  const expected = Buffer.isBuffer(data) ? data : Buffer.from(data);
  assert.equal(buf.length, expected.length, 'length');
  assert.equal(sha256(buf), sha256(expected), 'content hash');
  assert.ok((await sent) == null, 'send callback without error');
}

for (const setup of SETUPS) {
  describe(setup.name, () => {
    // --- messages -------------------------------------------------------------------------

    for (const size of SIZES) {
      test(`text message of ${size} B, both directions`, T, async (t) => {
        const { client, server } = await connect(t, setup);
        const data = textOf(size);
        await transfer(client, server, data, false);
        await transfer(server, client, data, false);
      });

      test(`binary message of ${size} B, both directions`, T, async (t) => {
        const { client, server } = await connect(t, setup);
        const data = binaryOf(size);
        await transfer(client, server, data, true);
        await transfer(server, client, data, true);
      });
    }

    test('multi-byte UTF-8 text, both directions', T, async (t) => {
      const { client, server } = await connect(t, setup);
      const data = 'héllo wörld — 日本語 — 🎉'.repeat(1000);
      for (const [from, to] of [
        [client, server],
        [server, client]
      ]) {
        const received = once(to, 'message');
        from.send(data);
        const [msg, isBinary] = await received;
        assert.equal(isBinary, false);
        assert.equal(msg.toString(), data);
      }
    });

    test('many messages in a burst keep their order', T, async (t) => {
      const { client, server } = await connect(t, setup);
      for (const [from, to] of [
        [client, server],
        [server, client]
      ]) {
        const got = [];
        const all = new Promise((resolve) => {
          const onMessage = (d) => {
            got.push(d.toString());
            if (got.length === 1000) {
              to.off('message', onMessage);
              resolve();
            }
          };
          to.on('message', onMessage);
        });
        for (let i = 0; i < 1000; i++) from.send(String(i), { binary: i % 2 === 1 });
        await all;
        assert.deepEqual(got, Array.from({ length: 1000 }, (_, i) => String(i)));
      }
    });

    test('fragmented messages (send with fin: false), both directions', T, async (t) => {
      const { client, server } = await connect(t, setup);
      for (const [from, to] of [
        [client, server],
        [server, client]
      ]) {
        const messages = [];
        const two = new Promise((resolve) => {
          const onMessage = (d, isBinary) => {
            messages.push([Buffer.from(d).toString(), isBinary]);
            if (messages.length === 2) {
              to.off('message', onMessage);
              resolve();
            }
          };
          to.on('message', onMessage);
        });
        from.send('ab', { fin: false });
        from.send('cd', { fin: false });
        from.send('', { fin: false });
        from.send('ef', { fin: true });
        from.send(Buffer.from('12'), { fin: false });
        from.send(binaryOf(70000), { fin: false });
        from.send(Buffer.from('34'));
        await two;
        assert.deepEqual(messages[0], ['abcdef', false]);
        assert.equal(messages[1][1], true);
        const expected = Buffer.concat([Buffer.from('12'), binaryOf(70000), Buffer.from('34')]);
        assert.equal(messages[1][0], expected.toString());
      }
    });

    test('control frames between fragments', T, async (t) => {
      const { client, server } = await connect(t, setup);
      for (const [from, to] of [
        [client, server],
        [server, client]
      ]) {
        const events = [];
        const onPing = (d) => events.push(['ping', d.toString()]);
        to.on('ping', onPing);
        const msg = once(to, 'message');
        from.send('first ', { fin: false });
        from.ping('between');
        from.send('second');
        const [d] = await msg;
        events.push(['message', d.toString()]);
        to.off('ping', onPing);
        assert.deepEqual(events, [
          ['ping', 'between'],
          ['message', 'first second']
        ]);
      }
    });

    // --- ping / pong ----------------------------------------------------------------------

    test('ping with payload: ping event, auto-pong, pong event (both directions)', T, async (t) => {
      const { client, server } = await connect(t, setup);
      for (const [from, to] of [
        [client, server],
        [server, client]
      ]) {
        const ping = once(to, 'ping');
        const pong = once(from, 'pong');
        const cb = new Promise((resolve) => from.ping(Buffer.from('payload-123'), undefined, resolve));
        const [pd] = await ping;
        assert.equal(pd.toString(), 'payload-123');
        const [po] = await pong;
        assert.equal(po.toString(), 'payload-123');
        assert.ok((await cb) == null);
      }
    });

    test('ping without payload and 125-byte ping', T, async (t) => {
      const { client, server } = await connect(t, setup);
      for (const [from, to] of [
        [client, server],
        [server, client]
      ]) {
        let pong = once(from, 'pong');
        let ping = once(to, 'ping');
        from.ping();
        assert.equal((await ping)[0].length, 0);
        assert.equal((await pong)[0].length, 0);
        const big = binaryOf(125);
        pong = once(from, 'pong');
        ping = once(to, 'ping');
        from.ping(big);
        assert.deepEqual((await ping)[0], big);
        assert.deepEqual((await pong)[0], big);
      }
    });

    test('unsolicited pong with payload', T, async (t) => {
      const { client, server } = await connect(t, setup);
      for (const [from, to] of [
        [client, server],
        [server, client]
      ]) {
        const pong = once(to, 'pong');
        from.pong('unsolicited');
        assert.equal((await pong)[0].toString(), 'unsolicited');
      }
    });

    test('autoPong: false on the receiving side (both directions)', T, async (t) => {
      const { client, server } = await connect(t, setup, { autoPong: false }, { autoPong: false });
      for (const [from, to] of [
        [client, server],
        [server, client]
      ]) {
        let pongs = 0;
        const onPong = () => pongs++;
        from.on('pong', onPong);
        const ping = once(to, 'ping');
        from.ping('x');
        await ping;
        // No pong may come back in this time.
        await quietPeriod(100);
        from.off('pong', onPong);
        assert.equal(pongs, 0);
      }
    });

    // --- close paths ----------------------------------------------------------------------

    for (const side of ['client', 'server']) {
      test(`close() from the ${side} without a code: 1005 on both sides`, T, async (t) => {
        const ends = await connect(t, setup);
        const a = closeEvent(ends.client);
        const b = closeEvent(ends.server);
        ends[side].close();
        assert.equal(ends[side].readyState, Native.CLOSING);
        const [ca, cb] = await Promise.all([a, b]);
        assert.deepEqual([ca.code, ca.reason, ca.errors], [1005, '', []]);
        assert.deepEqual([cb.code, cb.reason, cb.errors], [1005, '', []]);
      });

      test(`close(code, reason) from the ${side}: both sides see them`, T, async (t) => {
        const ends = await connect(t, setup);
        const a = closeEvent(ends.client);
        const b = closeEvent(ends.server);
        ends[side].close(4000 + (side === 'client' ? 1 : 2), `${side} says bye ✓`);
        const [ca, cb] = await Promise.all([a, b]);
        const code = 4000 + (side === 'client' ? 1 : 2);
        assert.deepEqual([ca.code, ca.reason, ca.errors], [code, `${side} says bye ✓`, []]);
        assert.deepEqual([cb.code, cb.reason, cb.errors], [code, `${side} says bye ✓`, []]);
      });

      test(`close(1000) from the ${side} without a reason`, T, async (t) => {
        const ends = await connect(t, setup);
        const a = closeEvent(ends.client);
        const b = closeEvent(ends.server);
        ends[side].close(1000);
        const [ca, cb] = await Promise.all([a, b]);
        assert.deepEqual([ca.code, ca.reason], [1000, '']);
        assert.deepEqual([cb.code, cb.reason], [1000, '']);
      });

      test(`terminate() from the ${side}: the other side sees 1006`, T, async (t) => {
        const ends = await connect(t, setup);
        const a = closeEvent(ends.client);
        const b = closeEvent(ends.server);
        ends[side].terminate();
        const [ca, cb] = await Promise.all([a, b]);
        assert.equal(ca.code, 1006);
        assert.equal(cb.code, 1006);
        assert.equal(ca.reason, '');
        assert.equal(cb.reason, '');
        const other = side === 'client' ? cb : ca;
        assert.deepEqual(other.errors, []);
      });

      test(`close during a large send from the ${side}: data then close arrive`, T, async (t) => {
        const ends = await connect(t, setup);
        const other = side === 'client' ? ends.server : ends.client;
        const data = binaryOf(16 * 1024 * 1024);
        const received = [];
        other.on('message', (d) => received.push(sha256(d)));
        const a = closeEvent(ends.client);
        const b = closeEvent(ends.server);
        let sendErr = 'not called';
        ends[side].send(data, (err) => (sendErr = err));
        ends[side].close(1000, 'after data');
        const [ca, cb] = await Promise.all([a, b]);
        assert.deepEqual(received, [sha256(data)]);
        assert.deepEqual([ca.code, ca.reason], [1000, 'after data']);
        assert.deepEqual([cb.code, cb.reason], [1000, 'after data']);
        assert.ok(sendErr == null, `send callback: ${sendErr}`);
      });

      test(`messages sent after close() by the ${side} fail, the peer's still arrive`, T, async (t) => {
        const ends = await connect(t, setup);
        const other = side === 'client' ? ends.server : ends.client;
        const a = closeEvent(ends.client);
        const b = closeEvent(ends.server);
        const got = [];
        ends[side].on('message', (d) => got.push(d.toString()));
        other.send('before close');
        ends[side].close(1000);
        const err = await new Promise((resolve) => ends[side].send('late', resolve));
        assert.equal(err.message, 'WebSocket is not open: readyState 2 (CLOSING)');
        await Promise.all([a, b]);
        assert.ok(got.length <= 1);
      });
    }

    test('the receiver closes while a large message is in flight', T, async (t) => {
      const { client, server } = await connect(t, setup);
      const a = closeEvent(client);
      const b = closeEvent(server);
      client.send(binaryOf(16 * 1024 * 1024));
      server.close(4321, 'enough');
      const [ca, cb] = await Promise.all([a, b]);
      assert.deepEqual([ca.code, ca.reason, ca.errors], [4321, 'enough', []]);
      assert.deepEqual([cb.code, cb.reason, cb.errors], [4321, 'enough', []]);
    });

    test('both sides close at the same time', T, async (t) => {
      const { client, server } = await connect(t, setup);
      const a = closeEvent(client);
      const b = closeEvent(server);
      client.close(4100, 'c');
      server.close(4200, 's');
      const [ca, cb] = await Promise.all([a, b]);
      // Each side reports the code it received.
      assert.deepEqual([ca.code, ca.reason], [4200, 's']);
      assert.deepEqual([cb.code, cb.reason], [4100, 'c']);
    });

    test('messages sent right before close() are delivered', T, async (t) => {
      const { client, server } = await connect(t, setup);
      const got = [];
      server.on('message', (d) => got.push(d.toString()));
      const b = closeEvent(server);
      const a = closeEvent(client);
      for (let i = 0; i < 100; i++) client.send(`m${i}`);
      client.close(1000);
      await Promise.all([a, b]);
      assert.equal(got.length, 100);
      assert.equal(got[99], 'm99');
    });
  });
}
