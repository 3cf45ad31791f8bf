'use strict';
// The server's zlib work per echoed message with Node's own zlib, the library ws compresses
// with: the counterpart of `loadgen codec`'s server floor, on the same payloads (taken from
// `loadgen payloads`). No network.
//
//   node bench/zlib-codec.js [--json | --words] [--size 1024] [--conns N] [--seconds S]
//
// Per message, in the order a server does it: inflate the client's message (compressed at
// level 1, as the loadgen sends it; not timed) and compress the reply at ws's defaults (level
// 6, memLevel 8, 15 window bits), with context takeover both ways. N connections' contexts are
// taken in turn, one message each. zlib runs synchronously on this thread through the handle
// ws's streams drive (ws's own path adds its threadpool hand-offs, which are not counted).
// Prints one JSON line like `loadgen codec`: `server_floor_cpu_us_per_msg` is the CPU time of
// this process split in proportion to the wall time of the timed calls.

const { execFileSync } = require('child_process');
const path = require('path');
const zlib = require('zlib');

function parseArgs(argv) {
  const o = { payload: '--json', size: 1024, conns: 1, seconds: 3 };
  for (let i = 2; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--json' || a === '--words') o.payload = a;
    else if (a === '--size') o.size = Number(argv[++i]);
    else if (a === '--conns') o.conns = Number(argv[++i]);
    else if (a === '--seconds') o.seconds = Number(argv[++i]);
    else {
      console.error('usage: zlib-codec.js [--json | --words] [--size B] [--conns N] [--seconds S]');
      process.exit(2);
    }
  }
  if (!(o.conns >= 1 && o.conns <= 4096) || !(o.seconds > 0 && o.seconds <= 60)) {
    console.error('--conns must be 1..4096 and --seconds 0..60');
    process.exit(2);
  }
  return o;
}

const opts = parseArgs(process.argv);
const loadgen = path.join(__dirname, 'loadgen/target/release/loadgen');
const texts = execFileSync(loadgen, ['payloads', '--size', String(opts.size), opts.payload], { encoding: 'latin1' })
  .split('\n').filter((t) => t.length > 0).map((t) => Buffer.from(t, 'latin1'));
const tsOff = texts[0].indexOf('0000000000000000');

const out = Buffer.alloc(opts.size * 2 + 1024);
/** One synchronous zlib call with Z_SYNC_FLUSH; the output is a copy (ws keeps its chunks). */
function run(stream, input) {
  stream._handle.writeSync(zlib.constants.Z_SYNC_FLUSH, input, 0, input.length, out, 0, out.length);
  const [availOut, availIn] = stream._writeState;
  if (availIn !== 0 || availOut === 0) throw new Error('output buffer too small');
  return Buffer.from(out.subarray(0, out.length - availOut));
}

const deflate = (level) => zlib.createDeflateRaw({ level, memLevel: 8, windowBits: 15 });
const ctx = Array.from({ length: opts.conns }, (_, i) => ({
  client: deflate(1), server: deflate(6), serverInflate: zlib.createInflateRaw({ windowBits: 15 }), sent: i,
}));

let n = 0;
let timed = 0n;
let plainBytes = 0;
let wireBytes = 0;
const c0 = process.cpuUsage();
const w0 = process.hrtime.bigint();
const end = w0 + BigInt(Math.round(opts.seconds * 1e9));
while (process.hrtime.bigint() < end && n < 10_000_000) {
  for (let k = 0; k < 64; k++, n++) {
    const c = ctx[n % opts.conns];
    const msg = Buffer.from(texts[c.sent++ % texts.length]);
    if (tsOff >= 0) msg.write(n.toString(16).padStart(16, '0'), tsOff, 'latin1');
    const wire = run(c.client, msg);
    const t0 = process.hrtime.bigint();
    const got = run(c.serverInflate, wire);
    const reply = run(c.server, got);
    timed += process.hrtime.bigint() - t0;
    plainBytes += got.length;
    wireBytes += reply.length;
  }
}
const wall = Number(process.hrtime.bigint() - w0);
const cpu = process.cpuUsage(c0);
const cpuNs = (cpu.user + cpu.system) * 1000;
const serverNs = cpuNs * Number(timed) / wall;
console.log(JSON.stringify({
  mode: 'node-zlib-codec', node: process.version, zlib: process.versions.zlib, size: opts.size,
  payload: opts.payload.slice(2), conns: opts.conns, messages: n,
  server_floor_cpu_us_per_msg: +(serverNs / n / 1000).toFixed(3),
  server_floor_max_msgs_per_sec: +(n / (serverNs / 1e9)).toFixed(1),
  server_tx_ratio: +(wireBytes / plainBytes).toFixed(3),
  cpu_pct: +(cpuNs / wall * 100).toFixed(1),
}));
