'use strict';

// A real browser as the peer: Debian's Chromium driven by playwright-core.
//   A. a test page's WebSocket against a ws-native server: text and binary both ways, close
//      codes and reasons both ways, subprotocol and Origin.
//   B. the chat example (examples/chat/server.js) in two tabs; with UPDATE_SCREENSHOT=1 it
//      saves examples/chat/screenshot.png (otherwise a screenshot in a temporary file, so that
//      a test run leaves the checkout as it was).
// Skipped when /usr/bin/chromium or playwright-core is missing (CI installs both).

const { test, describe, before, after } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const fs = require('node:fs');
const http = require('node:http');
const os = require('node:os');
const path = require('node:path');
const { spawn } = require('node:child_process');
const { once } = require('node:events');

const WebSocket = require('..');

const HOST = '127.0.0.1';
const T = { timeout: 30000 };
const CHROMIUM = '/usr/bin/chromium';
const ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync'
];

let playwright = null;
let skip = false;
try {
  playwright = require('playwright-core');
} catch {
  skip = 'playwright-core is not installed (npm install --no-save playwright-core@1)';
}
if (!skip && !fs.existsSync(CHROMIUM)) {
  skip = `${CHROMIUM} is missing (apt-get install chromium)`;
}

// The test page: a harness of two functions the test calls with page.evaluate.
const TEST_PAGE = `<!doctype html>
<meta charset="utf-8"><title>ws-native browser test</title>
<script>
'use strict';
const pattern = (n) => { const a = new Uint8Array(n); for (let i = 0; i < n; i++) a[i] = (i * 7 + 3) & 255; return a; };

// Sends text and binary, echoes what the server sends, then closes with 4001.
function exchange(url) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url);
    ws.binaryType = 'arraybuffer';
    const received = [];
    ws.onopen = () => {
      ws.send('browser text \\u00e9\\u00e8 \\ud83c\\udf0d');
      ws.send(pattern(256).buffer);
      ws.send(pattern(300 * 1024).buffer);
      ws.send(new Uint8Array(0));
    };
    ws.onmessage = (event) => {
      if (typeof event.data === 'string') {
        received.push({ type: 'text', data: event.data });
        ws.send('echo:' + event.data);
      } else {
        received.push({ type: event.data.constructor.name, length: event.data.byteLength });
        ws.send(event.data);
      }
      if (received.length === 4) ws.close(4001, 'browser bye');
    };
    ws.onerror = () => received.push({ type: 'error' });
    ws.onclose = (e) => resolve({ received, code: e.code, reason: e.reason, wasClean: e.wasClean, extensions: ws.extensions });
    setTimeout(() => reject(new Error('page: exchange timed out')), 15000);
  });
}

// Opens with two subprotocols, says 'ready', reports how the server closed the connection.
function awaitServerClose(url) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, ['v2.test', 'v1.test']);
    let protocol = null;
    ws.onopen = () => { protocol = ws.protocol; ws.send('ready'); };
    ws.onclose = (e) => resolve({ protocol, code: e.code, reason: e.reason, wasClean: e.wasClean });
    setTimeout(() => reject(new Error('page: no close from the server')), 15000);
  });
}
</script>
<body>ws-native browser test</body>
`;

const pattern = (n) => {
  const a = Buffer.alloc(n);
  for (let i = 0; i < n; i++) a[i] = (i * 7 + 3) & 255;
  return a;
};

describe('browser (Chromium via playwright-core)', { timeout: 120000 }, () => {
  let context;
  let userDataDir;

  before(async () => {
    if (skip) return;
    userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'ws-native-chromium-'));
    context = await playwright.chromium.launchPersistentContext(userDataDir, {
      executablePath: CHROMIUM,
      headless: true,
      args: ARGS,
      viewport: { width: 640, height: 420 },
      timeout: 20000
    });
    // Below the test's own timeout, so that a missing element fails with playwright's message.
    context.setDefaultTimeout(10000);
  });

  after(async () => {
    if (context) await context.close();
    if (userDataDir) fs.rmSync(userDataDir, { recursive: true, force: true });
  });

  test('page WebSocket <-> ws-native server: permessage-deflate, text, binary, close codes both ways', { ...T, skip }, async (t) => {
    const wss = new WebSocket.WebSocketServer({
      host: HOST,
      port: 0,
      perMessageDeflate: true,
      handleProtocols: (protocols) => (protocols.has('v1.test') ? 'v1.test' : false)
    });
    await once(wss, 'listening');
    const pageServer = http.createServer((req, res) => {
      res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8' });
      res.end(TEST_PAGE);
    });
    pageServer.listen(0, HOST);
    await once(pageServer, 'listening');
    const page = await context.newPage();
    t.after(async () => {
      await page.close();
      for (const ws of wss.clients) ws.terminate();
      await new Promise((resolve) => wss.close(resolve));
      pageServer.closeAllConnections();
      await new Promise((resolve) => pageServer.close(resolve));
    });

    const origin = `http://${HOST}:${pageServer.address().port}`;
    const wsUrl = `ws://${HOST}:${wss.address().port}`;
    const big = crypto.randomBytes(200 * 1024);

    // Server side of both connections, told apart by the request path.
    const serverA = new Promise((resolve, reject) => {
      wss.on('connection', (ws, req) => {
        if (req.url !== '/a') return;
        ws.on('error', reject);
        const messages = [];
        ws.on('message', (data, isBinary) => messages.push({ data, isBinary }));
        ws.on('close', (code, reason) =>
          resolve({ messages, code, reason: reason.toString(), origin: req.headers.origin, extensions: ws.extensions })
        );
        ws.send('server text \u2713 \u00fcn\u00efc\u00f6d\u00e9');
        ws.send(Buffer.from([0, 1, 2, 253, 254, 255]));
        ws.send(big);
        ws.send(Buffer.alloc(0), { binary: true });
      });
    });
    const serverB = new Promise((resolve, reject) => {
      wss.on('connection', (ws, req) => {
        if (req.url !== '/b') return;
        ws.on('error', reject);
        let first = null;
        ws.once('message', (data) => {
          first = data.toString();
          ws.close(4002, 'server bye');
        });
        ws.on('close', (code, reason) =>
          resolve({ first, code, reason: reason.toString(), protocol: ws.protocol })
        );
      });
    });

    await page.goto(`${origin}/`);

    // A: exchange, then the page closes with 4001.
    const pageA = await page.evaluate((url) => exchange(url), `${wsUrl}/a`);
    const a = await serverA;
    assert.equal(a.origin, origin);
    // Chromium offers permessage-deflate; both ends agree on it.
    assert.equal(a.extensions, 'permessage-deflate');
    assert.match(pageA.extensions, /^permessage-deflate/);
    assert.deepEqual(pageA.received, [
      { type: 'text', data: 'server text \u2713 \u00fcn\u00efc\u00f6d\u00e9' },
      { type: 'ArrayBuffer', length: 6 },
      { type: 'ArrayBuffer', length: big.length },
      { type: 'ArrayBuffer', length: 0 }
    ]);
    const got = a.messages;
    assert.equal(got.length, 8);
    assert.deepEqual(
      got.map((m) => m.isBinary),
      [false, true, true, true, false, true, true, true]
    );
    assert.equal(got[0].data.toString(), 'browser text \u00e9\u00e8 \ud83c\udf0d');
    assert.ok(got[1].data.equals(pattern(256)));
    assert.ok(got[2].data.equals(pattern(300 * 1024)), 'the 300 KiB message from the page');
    assert.equal(got[3].data.length, 0);
    assert.equal(got[4].data.toString(), 'echo:server text \u2713 \u00fcn\u00efc\u00f6d\u00e9');
    assert.ok(got[5].data.equals(Buffer.from([0, 1, 2, 253, 254, 255])));
    assert.ok(got[6].data.equals(big), 'the 200 KiB message echoed by the page');
    assert.equal(got[7].data.length, 0);
    assert.equal(a.code, 4001);
    assert.equal(a.reason, 'browser bye');
    assert.deepEqual(
      { code: pageA.code, reason: pageA.reason, wasClean: pageA.wasClean },
      { code: 4001, reason: 'browser bye', wasClean: true }
    );

    // B: the server closes with 4002.
    const pageB = await page.evaluate((url) => awaitServerClose(url), `${wsUrl}/b`);
    const b = await serverB;
    assert.deepEqual(pageB, {
      protocol: 'v1.test',
      code: 4002,
      reason: 'server bye',
      wasClean: true
    });
    assert.deepEqual(b, { first: 'ready', code: 4002, reason: 'server bye', protocol: 'v1.test' });
  });

  test('chat example: a message typed in one tab appears in the other', { ...T, skip }, async (t) => {
    const child = spawn(process.execPath, [path.join(__dirname, '..', 'examples', 'chat', 'server.js')], {
      env: { ...process.env, PORT: '0', HOST },
      stdio: ['ignore', 'pipe', 'pipe']
    });
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    const pages = [];
    t.after(async () => {
      for (const p of pages) await p.close();
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        await once(child, 'exit');
      }
    });

    const port = await new Promise((resolve, reject) => {
      let out = '';
      child.stdout.on('data', (d) => {
        out += d;
        const m = /chat example on http:\/\/localhost:(\d+)/.exec(out);
        if (m) resolve(Number(m[1]));
      });
      child.on('exit', (code) => reject(new Error(`chat server exited (${code}): ${stderr}`)));
    });
    const url = `http://${HOST}:${port}/`;

    const alice = await context.newPage();
    pages.push(alice);
    await alice.goto(url);
    await alice.locator('#status', { hasText: 'connected' }).waitFor();
    await alice.fill('#name', 'alice');
    await alice.press('#name', 'Enter');
    await alice.locator('#users', { hasText: 'alice' }).waitFor();

    const bob = await context.newPage();
    pages.push(bob);
    await bob.goto(url);
    await bob.locator('#status', { hasText: 'connected' }).waitFor();
    await bob.fill('#name', 'bob');
    await bob.press('#name', 'Enter');
    await bob.locator('#users', { hasText: 'online: alice, bob' }).waitFor();
    await alice.locator('#users', { hasText: 'online: alice, bob' }).waitFor();

    await alice.fill('#message', 'Hello Bob, this came through ws-native!');
    await alice.press('#message', 'Enter');
    const line = bob.locator('#messages li', { hasText: 'Hello Bob, this came through ws-native!' });
    await line.waitFor();
    assert.equal(await line.locator('.name').textContent(), 'alice');

    await bob.fill('#message', 'Gr\u00fc\u00dfe, Alice \u2014 got it!');
    await bob.click('#submit');
    await alice.locator('#messages li', { hasText: 'Gr\u00fc\u00dfe, Alice \u2014 got it!' }).waitFor();
    await bob.locator('#messages li.mine', { hasText: 'got it!' }).waitFor();

    // The same picture on every run: fixed clock times instead of the server's.
    await bob.evaluate(() => {
      for (const el of document.querySelectorAll('#messages .time')) el.textContent = '10:30 AM';
    });
    const shot = process.env.UPDATE_SCREENSHOT === '1'
      ? path.join(__dirname, '..', 'examples', 'chat', 'screenshot.png')
      : path.join(os.tmpdir(), `ws-native-chat-${process.pid}.png`);
    await bob.screenshot({ path: shot });
    assert.ok(fs.statSync(shot).size > 1000, 'the screenshot has a picture');
    if (process.env.UPDATE_SCREENSHOT !== '1') fs.rmSync(shot, { force: true });

    // The server reports leaves to the remaining tab.
    await bob.close();
    pages.splice(pages.indexOf(bob), 1);
    await alice.locator('#messages li.info', { hasText: 'bob left' }).waitFor();
    await alice.locator('#users', { hasText: /^online: alice$/ }).waitFor();
  });
});
