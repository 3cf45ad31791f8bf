#!/usr/bin/env node
'use strict';

// Client-side benchmark: N connections of the `ws` client API (WS_IMPL), each
// keeping K messages in flight against an echo server (normally rust-echo).
//
//   WS_IMPL=ws|/work/main node bench/clients/echo-client.js --url ws://127.0.0.1:P/ \
//     [--conns 64] [--inflight 16] [--size 32] [--binary|--text] [--duration 5] [--warmup 1]
//
// Prints one JSON line on stdout; `PHASE measure` / `PHASE done` on stderr.
// Bounded: exits by itself after warmup + duration (+ connect timeout).

const { performance } = require('perf_hooks');

function parseArgs(argv) {
  const o = {
    url: 'ws://127.0.0.1:8080/', conns: 64, inflight: 16, size: 32, binary: true,
    duration: 5, warmup: 1, connectTimeout: 10,
  };
  for (let i = 2; i < argv.length; i++) {
    const a = argv[i];
    const num = () => {
      const v = Number(argv[++i]);
      if (!Number.isFinite(v)) throw new Error(`bad value for ${a}`);
      return v;
    };
    if (a === '--url') o.url = argv[++i];
    else if (a === '--conns') o.conns = num();
    else if (a === '--inflight') o.inflight = num();
    else if (a === '--size') o.size = num();
    else if (a === '--binary') o.binary = true;
    else if (a === '--text') o.binary = false;
    else if (a === '--duration') o.duration = num();
    else if (a === '--warmup') o.warmup = num();
    else if (a === '--connect-timeout') o.connectTimeout = num();
    else throw new Error(`unknown flag ${a}`);
  }
  const host = new URL(o.url).hostname;
  if (!['127.0.0.1', 'localhost', '[::1]', '::1'].includes(host) && !host.startsWith('127.')) {
    throw new Error(`refusing non-loopback target ${host}`);
  }
  if (o.duration <= 0 || o.duration > 3600 || o.warmup < 0 || o.warmup > 600) throw new Error('bad duration/warmup');
  return o;
}

// log-linear histogram of nanoseconds (u32 range, ~0.8% precision)
class Hist {
  constructor() { this.counts = new Float64Array(25 * 128 + 256); this.total = 0; this.max = 0; this.sum = 0; }
  record(ns) {
    let v = ns < 0 ? 0 : Math.round(ns);
    if (v > 0xffffffff) v = 0xffffffff;
    let idx;
    if (v < 256) idx = v;
    else {
      const e = 31 - Math.clz32(v);
      const shift = e - 7;
      idx = shift * 128 + (v >>> shift);
    }
    this.counts[idx]++;
    this.total++;
    this.sum += v;
    if (v > this.max) this.max = v;
  }
  static value(idx) {
    if (idx < 256) return idx;
    const shift = Math.floor(idx / 128) - 1;
    const m = idx - shift * 128;
    return m * 2 ** shift + (2 ** shift - 1) / 2;
  }
  pctUs(p) {
    if (this.total === 0) return null;
    const rank = Math.max(1, Math.ceil((p / 100) * this.total));
    let acc = 0;
    for (let i = 0; i < this.counts.length; i++) {
      acc += this.counts[i];
      if (acc >= rank) return Math.round(Math.min(Hist.value(i), this.max) / 1e3 * 1000) / 1000;
    }
    return this.max / 1e3;
  }
}

function main() {
  let o;
  try {
    o = parseArgs(process.argv);
  } catch (e) {
    console.error(String(e.message || e));
    process.exit(2);
  }
  const impl = process.env.WS_IMPL || 'ws';
  const out = { mode: 'node-echo-client', impl, conns: o.conns, inflight: o.inflight, size: o.size, binary: o.binary };
  const finish = (extra, code = 0) => {
    process.stdout.write(JSON.stringify({ ...out, ...extra }) + '\n', () => process.exit(code));
  };
  let WebSocket;
  try {
    WebSocket = require(impl);
  } catch (e) {
    finish({ error: `cannot load ${impl}: ${e.message}`, errors: 1 }, 1);
    return;
  }
  // hard stop, whatever happens
  setTimeout(() => finish({ error: 'hard timeout', errors: 1 }, 1),
    (o.connectTimeout + o.warmup + o.duration + 15) * 1000).unref();

  const payload = o.binary ? Buffer.alloc(o.size, 'a') : 'a'.repeat(o.size);
  const K = o.inflight;
  const conns = [];
  let opened = 0;
  let errors = 0;
  let firstError = null;
  let phase = 'connect'; // connect -> warmup -> measure -> done
  let msgs = 0;
  let bad = 0;
  const hist = new Hist();
  const noteError = (e) => { errors++; if (!firstError) firstError = String(e && e.message ? e.message : e); };

  const connectTimer = setTimeout(() => {
    if (phase === 'connect') finish({ error: `only ${opened}/${o.conns} connected`, first_error: firstError, errors: errors + 1 }, 1);
  }, o.connectTimeout * 1000);

  for (let i = 0; i < o.conns; i++) {
    let ws;
    try {
      ws = new WebSocket(o.url, { perMessageDeflate: false });
    } catch (e) {
      finish({ error: `constructor: ${e.message}`, errors: 1 }, 1);
      return;
    }
    const c = { ws, sent: new Float64Array(K), head: 0, tail: 0 };
    conns.push(c);
    ws.on('error', noteError);
    ws.on('close', () => { if (phase !== 'done') noteError('closed early'); });
    ws.on('open', () => {
      opened++;
      if (opened === o.conns) start();
    });
    ws.on('message', (data) => {
      const now = performance.now();
      const t0 = c.sent[c.tail % K];
      c.tail++;
      if ((data.length === undefined ? data.byteLength : data.length) !== o.size) bad++;
      if (phase === 'measure') {
        msgs++;
        hist.record((now - t0) * 1e6);
      }
      if (phase !== 'done') {
        c.sent[c.head % K] = performance.now();
        c.head++;
        ws.send(payload, { binary: o.binary });
      }
    });
  }

  let cpu0;
  let t0;
  function start() {
    clearTimeout(connectTimer);
    phase = 'warmup';
    for (const c of conns) {
      for (let k = 0; k < K; k++) {
        c.sent[c.head % K] = performance.now();
        c.head++;
        c.ws.send(payload, { binary: o.binary });
      }
    }
    setTimeout(() => {
      phase = 'measure';
      process.stderr.write('PHASE measure\n');
      cpu0 = process.cpuUsage();
      t0 = performance.now();
      setTimeout(stop, o.duration * 1000);
    }, o.warmup * 1000);
  }

  function stop() {
    phase = 'done';
    const wall = (performance.now() - t0) / 1e3;
    const cpu = process.cpuUsage(cpu0);
    process.stderr.write('PHASE done\n');
    for (const c of conns) {
      try { c.ws.close(1000); } catch (_) { /* ignore */ }
    }
    finish({
      duration_s: Math.round(wall * 1000) / 1000,
      msgs,
      msgs_per_sec: Math.round(msgs / wall * 1000) / 1000,
      p50_us: hist.pctUs(50),
      p90_us: hist.pctUs(90),
      p99_us: hist.pctUs(99),
      p999_us: hist.pctUs(99.9),
      max_us: hist.total ? hist.max / 1e3 : null,
      bad_msgs: bad,
      errors: errors + bad,
      first_error: firstError,
      cpu_pct: Math.round((cpu.user + cpu.system) / 1e4 / wall * 1000) / 1000,
    });
  }
}

main();
