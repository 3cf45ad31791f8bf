'use strict';

// Interoperability with an independent implementation: Python's `websockets` package
// (asyncio API), driven through __test__/fixtures/py_ws_peer.py.
//   ws-native client -> Python server: text, binary 0 B..1 MiB, fragments both ways, pings
//     both ways, close code and reason both ways, no extension offered.
//   Python client -> ws-native server: the same, with the Python client offering
//     permessage-deflate (which ws-native must decline) and a subprotocol.
// Skipped when `python3 -c "import websockets.asyncio.server"` fails (CI: pip install websockets).

const { test, describe } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const path = require('node:path');
const readline = require('node:readline');
const { spawn, spawnSync } = require('node:child_process');
const { once } = require('node:events');

const WebSocket = require('..');
const { closeAfter, closeEvent, startWss } = require('./helpers');

const HOST = '127.0.0.1';
const T = { timeout: 30000 };
const PYTHON = process.env.PYTHON || 'python3';
const PEER = path.join(__dirname, 'fixtures', 'py_ws_peer.py');

let skip = false;
const probe = spawnSync(
  PYTHON,
  ['-c', 'import websockets, websockets.asyncio.server; print(websockets.__version__)'],
  { encoding: 'utf8', timeout: 20000 }
);
if (probe.error || probe.status !== 0) {
  skip = `Python's websockets (>= 13, asyncio API) is not importable with ${PYTHON} (pip install websockets)`;
}

/** Spawns the Python peer; returns { child, next(predicate) } reading its JSON lines. */
function startPeer(t, args) {
  const child = spawn(PYTHON, ['-u', PEER, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (d) => (stderr += d));
  const lines = [];
  const waiters = [];
  readline.createInterface({ input: child.stdout }).on('line', (line) => {
    let obj;
    try {
      obj = JSON.parse(line);
    } catch {
      obj = { event: 'garbage', line };
    }
    lines.push(obj);
    for (const w of [...waiters]) w();
  });
  const exited = once(child, 'exit');
  t.after(async () => {
    child.stdin.end(); // the server exits when stdin closes
    const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
    if (child.exitCode === null && child.signalCode === null) await exited;
    clearTimeout(timer);
  });
  function next(predicate, what) {
    return new Promise((resolve, reject) => {
      const check = () => {
        const i = lines.findIndex(predicate);
        if (i !== -1) {
          waiters.splice(waiters.indexOf(check), 1);
          const [obj] = lines.splice(i, 1);
          resolve(obj);
          return true;
        }
        return false;
      };
      waiters.push(check);
      if (check()) return;
      exited.then(([code]) => {
        if (!check()) reject(new Error(`python peer exited (${code}) before ${what}:\n${stderr}`));
      });
    });
  }
  return { child, next, stderr: () => stderr };
}

async function pythonServer(t) {
  const peer = startPeer(t, ['server']);
  const { port } = await peer.next((o) => o.event === 'listening', 'listening');
  return { ...peer, url: `ws://${HOST}:${port}` };
}

/** Opens a ws-native client; closes it (terminate) at the end of the test if still open. */
async function open(t, url, protocols) {
  const ws = closeAfter(t, new WebSocket(url, protocols));
  await once(ws, 'open');
  return ws;
}

/** Returns an async function giving the next message as [data, isBinary]. */
function messages(ws) {
  const queue = [];
  const waiting = [];
  ws.on('message', (data, isBinary) => {
    if (waiting.length) waiting.shift()([data, isBinary]);
    else queue.push([data, isBinary]);
  });
  return () => (queue.length ? Promise.resolve(queue.shift()) : new Promise((r) => waiting.push(r)));
}

const text = (n) => {
  // Mixed 1-, 2-, 3- and 4-byte characters, cut at a character boundary near n bytes.
  const unit = 'ab\u00e9\u2713\u{1F30D}';
  let s = unit.repeat(Math.ceil(n / Buffer.byteLength(unit)) + 1);
  while (Buffer.byteLength(s) > n) s = [...s].slice(0, -1).join('');
  return s;
};

describe('Python websockets interop', { timeout: 90000 }, () => {
  test('ws-native client -> Python server: text and binary, 0 B to 1 MiB', { ...T, skip }, async (t) => {
    const py = await pythonServer(t);
    const ws = await open(t, `${py.url}/sizes`);
    const next = messages(ws);

    for (const size of [0, 1, 125, 126, 127, 65535, 65536, 65537, 1024 * 1024]) {
      const data = crypto.randomBytes(size);
      ws.send(data);
      const [echo, isBinary] = await next();
      assert.equal(isBinary, true, `binary ${size}`);
      assert.ok(Buffer.isBuffer(echo));
      assert.equal(echo.length, size);
      assert.ok(echo.equals(data), `binary ${size}: content`);
    }
    for (const size of [0, 5, 125, 126, 65536, 1024 * 1024 - 3]) {
      const s = text(size);
      ws.send(s);
      const [echo, isBinary] = await next();
      assert.equal(isBinary, false, `text ${size}`);
      assert.equal(echo.toString(), s, `text ${size}: content`);
    }
    // ArrayBuffer and typed-array views are sent as binary too.
    const view = new Uint16Array([1, 2, 0xffff]);
    ws.send(view);
    assert.deepEqual([...(await next())[0]], [1, 0, 2, 0, 255, 255]);

    // Fragmented messages in both directions.
    ws.send('frag-', { fin: false });
    ws.send('men', { fin: false });
    ws.send('ted', { fin: true });
    assert.equal((await next())[0].toString(), 'frag-mented');
    ws.send('cmd:fragments');
    const [t1, b1] = await next();
    assert.equal(b1, false);
    assert.equal(t1.toString(), 'frag-mented \u00e9');
    const [bin, b2] = await next();
    assert.equal(b2, true);
    assert.ok(bin.equals(Buffer.concat([Buffer.from([0, 1]), Buffer.alloc(1000, 2), Buffer.from([255])])));

    const closed = closeEvent(ws);
    ws.close(1000);
    assert.deepEqual(await closed, { code: 1000, reason: '', errors: [] });
    const report = await py.next((o) => o.event === 'closed', 'the close report');
    assert.deepEqual(report, { event: 'closed', path: '/sizes', rcvd: [1000, ''], sent: [1000, ''] });
  });

  test('ws-native client -> Python server: handshake, pings, close codes both ways', { ...T, skip }, async (t) => {
    const py = await pythonServer(t);

    // The handshake as Python saw it: permessage-deflate offered (ws's client default) and
    // agreed, our subprotocol chosen. Everything below travels compressed.
    const ws = await open(t, `${py.url}/pings?x=1`, ['py.v1']);
    assert.equal(ws.protocol, 'py.v1');
    assert.equal(ws.extensions, 'permessage-deflate');
    const next = messages(ws);
    ws.send('cmd:info');
    const info = JSON.parse((await next())[0]);
    assert.equal(info.path, '/pings?x=1');
    assert.equal(info.subprotocol, 'py.v1');
    assert.equal(info.headers['sec-websocket-version'], '13');
    assert.equal(info.headers['sec-websocket-extensions'], 'permessage-deflate; client_max_window_bits');

    // Ping from ws-native: Python answers with the same payload.
    const pong = once(ws, 'pong');
    ws.ping(Buffer.from('native ping'));
    assert.equal((await pong)[0].toString(), 'native ping');
    ws.ping(); // empty payload
    assert.equal((await once(ws, 'pong'))[0].length, 0);

    // Ping from Python: ws-native emits 'ping' and answers (autoPong).
    const ping = once(ws, 'ping');
    ws.send('cmd:ping:py ping');
    assert.equal((await ping)[0].toString(), 'py ping');
    assert.equal((await next())[0].toString(), 'pong-ok:py ping');

    // Close from ws-native, with a code and a non-ASCII reason.
    const closed = closeEvent(ws);
    ws.close(4000, 'native bye \u2713');
    assert.deepEqual(await closed, { code: 4000, reason: 'native bye \u2713', errors: [] });
    assert.deepEqual(await py.next((o) => o.event === 'closed', 'close report 1'), {
      event: 'closed',
      path: '/pings?x=1',
      rcvd: [4000, 'native bye \u2713'],
      sent: [4000, 'native bye \u2713']
    });

    // Close from Python.
    const ws2 = await open(t, `${py.url}/server-close`);
    const closed2 = closeEvent(ws2);
    ws2.send('cmd:close:4001:python bye \u00e9');
    assert.deepEqual(await closed2, { code: 4001, reason: 'python bye \u00e9', errors: [] });
    assert.deepEqual(await py.next((o) => o.event === 'closed', 'close report 2'), {
      event: 'closed',
      path: '/server-close',
      rcvd: [4001, 'python bye \u00e9'],
      sent: [4001, 'python bye \u00e9']
    });

    // Close without a status code.
    const ws3 = await open(t, `${py.url}/no-status`);
    const closed3 = closeEvent(ws3);
    ws3.close();
    assert.deepEqual(await closed3, { code: 1005, reason: '', errors: [] });
    const report3 = await py.next((o) => o.event === 'closed', 'close report 3');
    // websockets reports a close frame with an empty body as code 1005.
    assert.deepEqual(report3.rcvd, [1005, '']);
  });

  test('Python client -> ws-native server', { ...T, skip }, async (t) => {
    const wss = await startWss(t, WebSocket.WebSocketServer, {
      maxPayload: 4 * 1024 * 1024,
      handleProtocols: (protocols) => (protocols.has('py.v1') ? 'py.v1' : false)
    });

    const seen = [];
    wss.on('connection', (ws, req) => {
      const conn = { url: req.url, headers: req.headers, protocol: ws.protocol, pings: [], pongs: [], count: 0 };
      seen.push(conn);
      ws.on('error', (err) => (conn.error = err));
      ws.on('ping', (data) => conn.pings.push(data.toString()));
      ws.on('pong', (data) => {
        conn.pongs.push(data.toString());
        ws.send(`pinged:${data}`);
      });
      ws.on('message', (data, isBinary) => {
        conn.count++;
        const s = isBinary ? null : data.toString();
        if (s && s.startsWith('cmd:close:')) {
          const [, , code, reason] = s.split(':');
          ws.close(Number(code), reason);
        } else if (s && s.startsWith('cmd:ping:')) {
          ws.ping(s.slice('cmd:ping:'.length));
        } else {
          ws.send(data, { binary: isBinary });
        }
      });
      conn.closed = new Promise((resolve) =>
        ws.on('close', (code, reason) => resolve([code, reason.toString()]))
      );
    });

    const py = startPeer(t, ['client', `ws://${HOST}:${wss.address().port}`]);
    const result = await py.next((o) => o.event === 'result', 'its result');

    for (const c of result.checks) assert.ok(c.ok, `python check "${c.name}" failed (${JSON.stringify(c.detail)})`);
    assert.equal(result.checks.length, 17);
    assert.equal(result.status, 101);
    assert.equal(result.subprotocol, 'py.v1');
    assert.equal(result.response_extensions, null, 'permessage-deflate must be declined');
    assert.deepEqual(result.close_rcvd, [4000, 'py bye \u2713']);
    assert.deepEqual(result.server_close_rcvd, [4003, 'native bye \u2713']);
    assert.deepEqual(result.server_close_sent, [4003, 'native bye \u2713']);

    assert.equal(seen.length, 2);
    const [echo, serverClose] = seen;
    assert.equal(echo.url, '/echo?from=python');
    assert.match(echo.headers['sec-websocket-extensions'], /permessage-deflate/, 'Python offered deflate');
    assert.equal(echo.protocol, 'py.v1');
    assert.equal(echo.count, 9 + 5 + 1 + 1);
    assert.deepEqual(echo.pings, ['py-ping']);
    assert.deepEqual(echo.pongs, ['native-ping']);
    assert.equal(echo.error, undefined);
    assert.deepEqual(await echo.closed, [4000, 'py bye \u2713']);
    assert.equal(serverClose.url, '/server-close');
    assert.equal(serverClose.protocol, '');
    assert.deepEqual(await serverClose.closed, [4003, 'native bye \u2713']);
    await once(py.child, 'exit');
    assert.equal(py.child.exitCode, 0, py.stderr());
  });
});
