#!/usr/bin/env node
'use strict';

// Benchmark driver for ws-native.
//
//   node bench/run.js [--quick] [--only latency,small,...] [--impls ws,ws-native]
//                     [--rounds N] [--duration S] [--warmup S] [--pin] [--nice N]
//                     [--no-build] [--out FILE]
//
// For every workload, runs every implementation in interleaved rounds
// (A B C D, A B C D, ...), each server in a fresh process on a fresh port and
// the load in its own process, then prints a markdown table of medians with
// ratios vs plain `ws`, and writes all raw numbers to bench/results/latest.json.
// Loopback only; every child is bounded in time and killed by its pid.

const { spawnSync } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');

const {
  anonBytes, cleanupAndExit, freePort, killTree, log, median, onLines, procCpuSeconds, rssBytes, sleep, spawnRaised, stop, sysCpu,
} = require('./proc');

const BENCH = __dirname;
const ROOT = path.resolve(BENCH, '..');
const LOADGEN_DIR = path.join(BENCH, 'loadgen');
const RUST_ECHO_DIR = path.join(BENCH, 'rust-echo');
const LOADGEN = path.join(LOADGEN_DIR, 'target/release/loadgen');
const RUST_ECHO = path.join(RUST_ECHO_DIR, 'target/release/rust-echo');
const WS_ECHO = path.join(BENCH, 'servers/ws-echo.js');
const ECHO_CLIENT = path.join(BENCH, 'clients/echo-client.js');
const WS_PATH = path.join(BENCH, 'node_modules/ws');

// ---------------------------------------------------------------------------
// options

function usage(code) {
  const ids = WORKLOADS.map((w) => `${w.id}${w.alias ? `(${w.alias.join(',')})` : ''}`).join(', ');
  (code ? console.error : console.log)(`usage: node bench/run.js [options]
  --quick            1 round, short durations (~a few seconds per implementation and workload)
  --smoke            keeps the code from rotting, measures nothing: 1 round of 0.3 s, at most
                     32 connections per workload (what __test__/bench-smoke.test.js runs)
  --only LIST        comma-separated workloads: ${ids}
  --impls LIST       comma-separated implementations: ${Object.keys(IMPLS).join(', ')}
  --rounds N         rounds per workload (default 3, --quick: 1)
  --duration S       measured seconds per run (default 10, --quick: 2)
  --warmup S         warm-up seconds per run (default 2, --quick: 0.5)
  --idle S           idle seconds in the connections workload (default 5, --quick: 2)
  --pin              pin the server to CPU 1 and the load generator to CPU 0 (taskset)
  --nice N           run server and load at nice N (negative needs root) to shield them from other work
  --no-build         do not run cargo / npm even if something is missing or stale
  --out FILE         JSON results file (default bench/results/latest.json)
  -v, --verbose      echo children's stderr`);
  process.exit(code);
}

// ---------------------------------------------------------------------------
// implementations

const NO_HELPERS = { WS_NO_BUFFER_UTIL: '1', WS_NO_UTF_8_VALIDATE: '1' };
const IMPLS = {
  'rust-echo': { label: 'rust-echo', rust: true, env: {} },
  ws: { label: 'ws', env: { WS_IMPL: WS_PATH, ...NO_HELPERS } },
  'ws+native-helpers': { label: 'ws+native-helpers', env: { WS_IMPL: WS_PATH } },
  // nativeTls: the wss workload uses the engine's own TLS (`tls` option), not an https server.
  'ws-native': { label: 'ws-native', env: { WS_IMPL: ROOT }, nativeTls: true },
  // Attached to an http.Server ({ server }), as behind Express: only with --impls.
  'ws-attached': { label: 'ws (http.Server)', env: { WS_IMPL: WS_PATH, ...NO_HELPERS }, args: ['--attach'], optional: true },
  'ws-native-attached': { label: 'ws-native (http.Server)', env: { WS_IMPL: ROOT }, args: ['--attach'], optional: true },
  // Another checkout of ws-native (WS_NATIVE_OTHER=/path), to compare two versions in one run.
  'ws-native-other': { label: 'ws-native (other checkout)', env: { WS_IMPL: process.env.WS_NATIVE_OTHER || ROOT }, nativeTls: true, optional: true },
  // The engine with two I/O threads (WS_NATIVE_THREADS=2): only with --impls.
  'ws-native-t2': { label: 'ws-native (2 threads)', env: { WS_IMPL: ROOT, WS_NATIVE_THREADS: '2' }, nativeTls: true, optional: true },
  // One engine thread for everything, compressing servers included (WS_NATIVE_THREADS=1):
  // only with --impls, and in the deflate workloads' variants.
  'ws-native-t1': { label: 'ws-native (1 thread)', env: { WS_IMPL: ROOT, WS_NATIVE_THREADS: '1' }, nativeTls: true, optional: true },
  // Every read on the engine's thread, none served by the JS thread (WS_NATIVE_JS_READS=0).
  'ws-native-engine-reads': { label: 'ws-native (engine reads only)', env: { WS_IMPL: ROOT, WS_NATIVE_JS_READS: '0' }, nativeTls: true, optional: true },
  // Reads on the JS thread without the event loop's spin (WS_NATIVE_SPIN_US=0).
  'ws-native-no-spin': { label: 'ws-native (no spin)', env: { WS_IMPL: ROOT, WS_NATIVE_SPIN_US: '0' }, nativeTls: true, optional: true },
  // Topics: every connection subscribes to one topic and each message goes out with
  // wss.publish() (servers/ws-echo.js --publish) instead of the clients.forEach loop. It has
  // no meaning for the other workloads, so it runs for the broadcast workloads only.
  'ws-native+publish': { label: 'ws-native (wss.publish)', env: { WS_IMPL: ROOT }, args: ['--publish'], broadcastOnly: true },
};
/** whether implementation `n` runs workload `w` */
const implRuns = (n, w) => !IMPLS[n].broadcastOnly || w.kind === 'broadcast';
const BASELINE = 'ws';

// ---------------------------------------------------------------------------
// workloads (from the issue)

const KiB = 1024;
const MiB = 1024 * 1024;
const HI = 'higher';
const LO = 'lower';

/**
 * A deflate echo workload (64 connections × 16 in flight, 1 KiB messages) with payloads
 * `payload` (the loadgen's `--json` or `--words`).
 */
function deflateEcho(id, what, payload) {
  return {
    id, alias: ['9'], title: `${id}: 64 conns × 16 in flight, ${what}, permessage-deflate both sides`,
    kind: 'echo', p: { conns: 64, inflight: 16, size: 1 * KiB, binary: false, ...payload },
    defaults: { warmup: 2, duration: 6 },
    variants: [
      { name: 'ws-native +deflate', impl: 'ws-native', server: ['--deflate'], load: ['--deflate'], vs: 'ws +deflate' },
      { name: 'ws-native +deflate, 1 engine thread', impl: 'ws-native-t1', server: ['--deflate'], load: ['--deflate'], vs: 'ws +deflate' },
      { name: 'ws-native (other checkout) +deflate', impl: 'ws-native-other', server: ['--deflate'], load: ['--deflate'], vs: 'ws +deflate' },
      { name: 'ws +deflate', impl: 'ws', server: ['--deflate'], load: ['--deflate'] },
      { name: 'ws (no deflate)', impl: 'ws', server: [], load: [], ref: true },
      { name: 'ws-native (no deflate)', impl: 'ws-native', server: [], load: [], vs: 'ws (no deflate)' },
    ],
    metrics: [['msgs_per_sec', 'msg/s', HI], ['p50_us', 'p50 µs', LO], ['p99_us', 'p99 µs', LO], ['rss_end_mib', 'server RSS MiB', LO]],
  };
}

const WORKLOADS = [
  {
    id: 'latency', alias: ['1'], title: '1 latency: 1 conn, 1 in flight, 32 B',
    kind: 'echo', p: { conns: 1, inflight: 1, size: 32, binary: true, spin: true },
    metrics: [['p50_us', 'p50 µs', LO], ['p99_us', 'p99 µs', LO], ['msgs_per_sec', 'msg/s', HI]],
  },
  {
    id: 'small', alias: ['2'], title: '2 small: 64 conns × 16 in flight, 32 B',
    kind: 'echo', p: { conns: 64, inflight: 16, size: 32, binary: true },
    metrics: [['msgs_per_sec', 'msg/s', HI], ['p99_us', 'p99 µs', LO]],
  },
  {
    id: 'text1k', alias: ['3'], title: '3 text1k: 64 conns × 16 in flight, 1 KiB text',
    kind: 'echo', p: { conns: 64, inflight: 16, size: 1 * KiB, binary: false },
    metrics: [['msgs_per_sec', 'msg/s', HI], ['p99_us', 'p99 µs', LO]],
  },
  {
    id: 'bulk16k', alias: ['4', 'bulk'], title: '4 bulk: 16 conns × 4 in flight, 16 KiB binary',
    kind: 'echo', p: { conns: 16, inflight: 4, size: 16 * KiB, binary: true },
    metrics: [['msgs_per_sec', 'msg/s', HI], ['mbytes_per_sec', 'MB/s', HI]],
  },
  {
    id: 'bulk1m', alias: ['4', 'bulk'], title: '4 bulk: 4 conns × 1 in flight, 1 MiB binary',
    kind: 'echo', p: { conns: 4, inflight: 1, size: 1 * MiB, binary: true },
    metrics: [['msgs_per_sec', 'msg/s', HI], ['mbytes_per_sec', 'MB/s', HI]],
  },
  {
    id: 'broadcast', alias: ['5'], title: '5 broadcast: 1000 conns, 64 B, 1 broadcast in flight',
    kind: 'broadcast', p: { conns: 1000, inflight: 1, size: 64 },
    metrics: [['deliveries_per_sec', 'deliveries/s', HI], ['fanout_p50_us', 'fan-out p50 µs', LO], ['fanout_p99_us', 'fan-out p99 µs', LO]],
  },
  {
    id: 'broadcast16', alias: ['5'], title: '5 broadcast: 1000 conns, 64 B, 16 broadcasts in flight',
    kind: 'broadcast', p: { conns: 1000, inflight: 16, size: 64 },
    metrics: [['deliveries_per_sec', 'deliveries/s', HI], ['fanout_p50_us', 'fan-out p50 µs', LO], ['fanout_p99_us', 'fan-out p99 µs', LO]],
  },
  {
    id: 'connections', alias: ['6', 'connect'], title: '6 connections: 10,000 clients connect, idle, close',
    kind: 'connect', p: { conns: 10000 },
    metrics: [['connections_per_sec', 'conn/s', HI], ['rss_per_conn_kib', 'RSS KiB/conn', LO], ['anon_per_conn_kib', 'private KiB/conn', LO]],
  },
  {
    // ws-native terminates TLS in its engine (`tls` server option); ws and the others run on
    // a Node https server. The load generator speaks TLS with rustls (ring), any certificate.
    id: 'wss', alias: ['8', 'tls'], title: '8 wss echo: 64 conns × 16 in flight, 1 KiB binary, TLS',
    kind: 'echo', tls: true, p: { conns: 64, inflight: 16, size: 1 * KiB, binary: true },
    metrics: [['msgs_per_sec', 'msg/s', HI], ['p99_us', 'p99 µs', LO]],
  },
  {
    id: 'client', alias: ['7'], title: '7 client side: Node client, 64 conns × 16 in flight, 32 B → rust-echo',
    kind: 'client', p: { conns: 64, inflight: 16, size: 32, binary: true },
    metrics: [['msgs_per_sec', 'msg/s', HI], ['p99_us', 'p99 µs', LO]],
  },
  // Deflate workloads: each row is a variant = an implementation with its server flags
  // (servers/ws-echo.js) and loadgen flags; `vs` = the variant its ratios are taken against
  // (the same implementation family with the same settings: ws), `ref` = the row compared
  // with ws without deflate. Per-workload default durations
  // (used unless --quick or given on the command line) keep each workload under ~2 minutes.
  deflateEcho('deflate', '1 KiB JSON text', { json: true }),
  deflateEcho('deflate-words', '1 KiB text of random English words', { words: true }),
  {
    id: 'deflate-idle', alias: ['9'], title: 'deflate-idle: 2,000 conns with deflate, one 1 KiB JSON echo each, then idle',
    kind: 'connect', p: { conns: 2000, sendOne: true, size: 1 * KiB, json: true },
    defaults: { idle: 3 },
    variants: [
      { name: 'ws-native takeover', impl: 'ws-native', server: ['--deflate'], load: ['--deflate'], vs: 'ws takeover' },
      { name: 'ws-native takeover, 1 engine thread', impl: 'ws-native-t1', server: ['--deflate'], load: ['--deflate'], vs: 'ws takeover' },
      { name: 'ws-native (other checkout) takeover', impl: 'ws-native-other', server: ['--deflate'], load: ['--deflate'], vs: 'ws takeover' },
      { name: 'ws takeover', impl: 'ws', server: ['--deflate'], load: ['--deflate'] },
      { name: 'ws-native no takeover', impl: 'ws-native', server: ['--deflate-no-context-takeover'], load: ['--deflate'], vs: 'ws no takeover' },
      { name: 'ws no takeover', impl: 'ws', server: ['--deflate-no-context-takeover'], load: ['--deflate'] },
      { name: 'ws-native no deflate', impl: 'ws-native', server: [], load: [], vs: 'ws no deflate' },
      { name: 'ws no deflate', impl: 'ws', server: [], load: [] },
    ],
    metrics: [['rss_per_conn_kib', 'RSS KiB/conn', LO], ['rss_idle_mib', 'server RSS MiB', LO], ['connections_per_sec', 'conn/s', HI]],
  },
];

// ---------------------------------------------------------------------------
// small helpers

function cleanEnv(extra) {
  const env = { ...process.env };
  delete env.WS_IMPL;
  delete env.WS_NO_BUFFER_UTIL;
  delete env.WS_NO_UTF_8_VALIDATE;
  return { ...env, ...extra };
}

function have(cmd) {
  return spawnSync('bash', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;
}

/** command prefix for --pin / --nice */
function prefix(opts, cpu) {
  const p = [];
  if (opts.pin && have('taskset')) p.push('taskset', '-c', String(cpu));
  if (opts.nice !== null) p.push('nice', '-n', String(opts.nice));
  return p;
}

/** Spawns `argv` for a run, with the --pin / --nice prefix for `cpu` (see proc.js). */
function spawnFor(argv, env, opts, cpu) {
  return spawnRaised(argv, env, prefix(opts, cpu));
}

function newestMtime(dir) {
  let newest = 0;
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) newest = Math.max(newest, newestMtime(p));
    else newest = Math.max(newest, fs.statSync(p).mtimeMs);
  }
  return newest;
}

function ensureBuilt(crateDir, bin, opts) {
  let stale = !fs.existsSync(bin);
  if (!stale) {
    const binM = fs.statSync(bin).mtimeMs;
    const srcM = Math.max(newestMtime(path.join(crateDir, 'src')), fs.statSync(path.join(crateDir, 'Cargo.toml')).mtimeMs);
    stale = srcM > binM;
  }
  if (!stale) return;
  if (opts.noBuild) {
    if (!fs.existsSync(bin)) throw new Error(`${bin} missing and --no-build given`);
    log(`warning: ${path.relative(ROOT, bin)} is older than its sources (--no-build)`);
    return;
  }
  log(`building ${path.relative(ROOT, crateDir)} (cargo build --release)...`);
  const r = spawnSync('cargo', ['build', '--release', '--manifest-path', path.join(crateDir, 'Cargo.toml')], { stdio: ['ignore', 'inherit', 'inherit'] });
  if (r.status !== 0) throw new Error(`cargo build failed for ${crateDir}`);
}

function ensureNodeDeps(opts) {
  const ok = ['ws', 'bufferutil', 'utf-8-validate'].every((m) => fs.existsSync(path.join(BENCH, 'node_modules', m, 'package.json')));
  if (ok) return;
  if (opts.noBuild) throw new Error('bench/node_modules missing; run: npm --prefix bench install');
  log('installing bench dependencies (npm --prefix bench install)...');
  const r = spawnSync('npm', ['--prefix', BENCH, 'install', '--no-audit', '--no-fund'], { stdio: ['ignore', 'inherit', 'inherit'] });
  if (r.status !== 0) throw new Error('npm --prefix bench install failed');
}

// ---------------------------------------------------------------------------
// running one measurement

/** A self-signed certificate for the TLS workload, made once per run. */
let certDir = null;
function tlsCertDir() {
  if (certDir) return certDir;
  certDir = fs.mkdtempSync(path.join(os.tmpdir(), 'ws-native-bench-tls-'));
  spawnSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-subj', '/CN=localhost',
    '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1', '-days', '2', '-keyout', path.join(certDir, 'key.pem'),
    '-out', path.join(certDir, 'cert.pem')], { stdio: 'ignore' });
  process.on('exit', () => fs.rmSync(certDir, { recursive: true, force: true }));
  return certDir;
}

/** `extraArgs`: more servers/ws-echo.js flags (deflate variants); `tls`: serve wss:// */
async function startServer(implName, broadcast, opts, { extraArgs = [], tls = false } = {}) {
  const impl = IMPLS[implName];
  const port = await freePort();
  let argv;
  let env;
  if (impl.rust && tls) {
    return { error: 'rust-echo has no TLS mode' };
  } else if (impl.rust) {
    argv = [RUST_ECHO, '--port', String(port), ...(broadcast ? ['--broadcast'] : [])];
    env = cleanEnv({});
  } else {
    argv = [process.execPath, WS_ECHO, '--port', String(port), ...(broadcast ? ['--broadcast'] : []), ...(impl.args || []), ...extraArgs];
    if (tls) argv.push('--tls', impl.nativeTls ? 'native' : 'https', '--cert-dir', tlsCertDir());
    env = cleanEnv(impl.env);
  }
  const child = spawnFor(argv, env, opts, 1);
  const stderr = [];
  onLines(child.stderr, (l) => {
    stderr.push(l);
    if (stderr.length > 50) stderr.shift();
    if (opts.verbose) log(`  [server] ${l}`);
  });
  const ready = await new Promise((resolve) => {
    const t = setTimeout(() => resolve({ error: 'no LISTENING line within 15 s' }), 15000);
    onLines(child.stdout, (l) => {
      const m = /^LISTENING (\d+)/.exec(l);
      if (m) { clearTimeout(t); resolve({ port: Number(m[1]) || port }); }
    });
    child.on('exit', (code, sig) => { clearTimeout(t); resolve({ error: `server exited (${sig || code}) before listening` }); });
    child.on('error', (e) => { clearTimeout(t); resolve({ error: `spawn: ${e.message}` }); });
  });
  const info = stderr.find((l) => l.startsWith('INFO '));
  if (ready.error) {
    await stop(child);
    const tail = stderr.filter((l) => l.trim()).slice(-3).join(' | ');
    return { error: `${ready.error}${tail ? `: ${tail}` : ''}`.slice(0, 400) };
  }
  return { child, port: ready.port, stderr, info };
}

function loadArgs(w, port, opts, extra = []) {
  const url = `${w.tls ? 'wss' : 'ws'}://127.0.0.1:${port}/`;
  const p = w.p;
  const t = ['--duration', String(opts.duration), '--warmup', String(opts.warmup)];
  const payload = p.json ? ['--json'] : p.words ? ['--words'] : [];
  switch (w.kind) {
    case 'echo':
      return [LOADGEN, 'echo', '--url', url, '--conns', p.conns, '--inflight', p.inflight, '--size', p.size,
        p.binary ? '--binary' : '--text', ...payload, ...(p.spin ? ['--spin'] : []), ...t, ...extra].map(String);
    case 'broadcast':
      return [LOADGEN, 'broadcast', '--url', url, '--conns', p.conns, '--inflight', p.inflight, '--size', p.size, ...t, ...extra].map(String);
    case 'connect':
      return [LOADGEN, 'connect', '--url', url, '--conns', p.conns, '--idle', opts.idle, '--concurrency', 256,
        ...(p.sendOne ? ['--send-one', '--size', p.size, '--text', ...payload] : []), ...extra].map(String);
    default:
      throw new Error(w.kind);
  }
}

/**
 * One measurement: fresh server, one load process, snapshots of server CPU,
 * machine CPU and (connections workload) server RSS.
 */
async function runOne(w, implName, opts, variant = null) {
  const isClient = w.kind === 'client';
  // client workload: the server is always rust-echo; the implementation is the client
  const srv = await startServer(isClient ? 'rust-echo' : implName, w.kind === 'broadcast', opts,
    { extraArgs: variant ? variant.server : [], tls: !!w.tls });
  if (srv.error) return { error: srv.error, startFailed: true };
  const { child: server, port } = srv;
  const spid = server.pid;
  await sleep(300);
  const rssBefore = rssBytes(spid);
  const anonBefore = anonBytes(spid);

  let argv;
  let env = cleanEnv({});
  if (isClient) {
    const url = `ws://127.0.0.1:${port}/`;
    const p = w.p;
    if (implName === 'rust-echo') {
      // reference client: the Rust load generator itself
      argv = [LOADGEN, 'echo', '--url', url, '--conns', p.conns, '--inflight', p.inflight, '--size', p.size, '--binary',
        '--duration', opts.duration, '--warmup', opts.warmup].map(String);
    } else {
      argv = [process.execPath, ECHO_CLIENT, '--url', url, '--conns', p.conns, '--inflight', p.inflight, '--size', p.size,
        p.binary ? '--binary' : '--text', '--duration', opts.duration, '--warmup', opts.warmup].map(String);
      env = cleanEnv(IMPLS[implName].env);
    }
  } else {
    argv = loadArgs(w, port, opts, variant ? variant.load : []);
  }

  const snaps = {};
  const snap = () => ({ t: process.hrtime.bigint(), srv: procCpuSeconds(spid), sys: sysCpu() });
  const rssIdle = [];
  const anonIdle = [];
  let rssEnd = null;
  let stdout = '';
  const lgErr = [];
  const load = spawnFor(argv, env, opts, 0);
  const limit = (w.kind === 'connect' ? 60 + opts.idle : 45 + opts.warmup + opts.duration) * 1000;
  const result = await new Promise((resolve) => {
    const timer = setTimeout(() => { killTree(load, 'SIGKILL'); resolve({ error: `load process timed out after ${limit / 1000} s` }); }, limit);
    load.stdout.setEncoding('utf8');
    load.stdout.on('data', (d) => { stdout += d; });
    onLines(load.stderr, (l) => {
      if (opts.verbose) log(`  [load] ${l}`);
      if (l === 'PHASE measure' || l.startsWith('CONNECTING')) snaps.a = snap();
      else if (l === 'PHASE done') {
        if (!snaps.b) snaps.b = snap();
        // server RSS at the end of the measured window, before the load closes its connections
        if (rssEnd === null) rssEnd = rssBytes(spid);
      } else if (l.startsWith('IDLE')) {
        // connections workload: CPU figures cover the connect phase
        snaps.b = snap();
        // RSS: sampled half-way through and near the end of the idle period
        for (const f of [0.5, 0.9]) {
          setTimeout(() => {
            const r = rssBytes(spid);
            const a = anonBytes(spid);
            if (r) rssIdle.push(r);
            if (a) anonIdle.push(a);
          }, opts.idle * 1000 * f);
        }
      } else if (l.trim() && !l.startsWith('CLOSING')) {
        lgErr.push(l);
      }
    });
    load.on('error', (e) => { clearTimeout(timer); resolve({ error: `spawn load: ${e.message}` }); });
    load.on('exit', () => {
      clearTimeout(timer);
      const line = stdout.trim().split('\n').filter(Boolean).pop();
      try {
        resolve(JSON.parse(line));
      } catch (_) {
        resolve({ error: `load produced no JSON: ${(lgErr.slice(-3).join(' | ') || stdout).slice(0, 300)}` });
      }
    });
  });
  const serverDied = server.exitCode !== null || server.signalCode !== null;
  const serverErr = srv.stderr.filter((l) => !l.startsWith('INFO ')).slice(-3).join(' | ');
  await stop(server);

  const r = { ...result };
  r.server_info = srv.info || null;
  r.loadavg1 = os.loadavg()[0]; // machine load (1-min average) at the end of the run
  if (serverDied) r.error = r.error || `server died during the run${serverErr ? `: ${serverErr}` : ''}`;
  if (snaps.a && snaps.b) {
    const wall = Number(snaps.b.t - snaps.a.t) / 1e9;
    if (snaps.a.srv !== null && snaps.b.srv !== null) r.server_cpu_pct = ((snaps.b.srv - snaps.a.srv) / wall) * 100;
    if (snaps.a.sys && snaps.b.sys) {
      const busy = snaps.b.sys[0] - snaps.a.sys[0];
      const total = snaps.b.sys[1] - snaps.a.sys[1];
      const soft = snaps.b.sys[2] - snaps.a.sys[2];
      const scale = os.cpus().length * 100;
      r.machine_busy_pct = total > 0 ? (busy / total) * scale : null;
      r.softirq_pct = total > 0 ? (soft / total) * scale : null;
      const lg = (w.kind === 'connect' ? r.connect_cpu_pct : r.cpu_pct) || 0;
      if (r.machine_busy_pct !== null && r.server_cpu_pct !== undefined) {
        // whatever is neither the server nor the load: other processes (and softirq work
        // that ran outside their context, e.g. in ksoftirqd). softirq_pct is informational:
        // with tick accounting, softirq run in a process's context is in that process's time too.
        r.other_cpu_pct = Math.max(0, r.machine_busy_pct - r.server_cpu_pct - lg);
      }
    }
  }
  if (w.kind === 'echo' && rssEnd) {
    r.rss_before_bytes = rssBefore;
    r.rss_end_bytes = rssEnd;
    r.rss_end_mib = rssEnd / MiB;
  }
  if (w.kind === 'connect') {
    r.rss_before_bytes = rssBefore;
    r.rss_idle_bytes = rssIdle.length ? rssIdle[rssIdle.length - 1] : null;
    if (r.rss_idle_bytes) r.rss_idle_mib = r.rss_idle_bytes / MiB;
    // with --send-one, only the connections whose echo came back stay open
    const held = Number.isFinite(r.idle_conns) ? r.idle_conns : r.connected;
    if (rssBefore && r.rss_idle_bytes && held) {
      r.rss_per_conn_kib = (r.rss_idle_bytes - rssBefore) / held / 1024;
    }
    // the same without file-backed pages (code paged in once per process)
    r.anon_before_bytes = anonBefore;
    r.anon_idle_bytes = anonIdle.length ? anonIdle[anonIdle.length - 1] : null;
    if (anonBefore && r.anon_idle_bytes && held) r.anon_per_conn_kib = (r.anon_idle_bytes - anonBefore) / held / 1024;
  }
  if (!r.error && r.errors > 0 && w.kind !== 'connect') {
    // errors reported by the load itself: keep the numbers but flag them
    r.warning = `${r.errors} error(s)${r.first_error ? `: ${r.first_error}` : ''}`;
  }
  if (!r.error && (w.kind === 'echo' || w.kind === 'client') && !(r.msgs > 0)) r.error = r.first_error || 'no messages echoed';
  if (!r.error && w.kind === 'broadcast' && !(r.deliveries > 0)) r.error = r.first_error || 'no broadcast delivered';
  if (!r.error && w.kind === 'connect' && !(r.connected > 0)) r.error = r.first_error || 'no connection';
  if (!r.error && w.kind === 'connect' && r.connected < r.conns) r.warning = `only ${r.connected}/${r.conns} connected: ${r.first_error || ''}`;
  if (!r.error && w.kind === 'connect' && r.send_one_errors > 0) r.warning = `${r.send_one_errors} connection(s) without an echo: ${r.first_error || ''}`;
  if (!r.error && w.kind === 'connect' && w.p.sendOne && !(r.idle_conns > 0)) r.error = r.first_error || 'no connection echoed its message';
  return r;
}

// ---------------------------------------------------------------------------
// formatting

function fmtNum(v, key) {
  if (v === null || v === undefined || !Number.isFinite(v)) return 'n/a';
  if (/_us$/.test(key)) return v >= 1000 ? Math.round(v).toLocaleString('en-US') : v.toFixed(1);
  if (/kib$/.test(key)) return v.toFixed(2);
  if (/mbytes/.test(key)) return v.toFixed(0);
  if (Math.abs(v) >= 100) return Math.round(v).toLocaleString('en-US');
  return v.toFixed(1);
}

function ratio(v, base, dir) {
  if (!Number.isFinite(v) || !Number.isFinite(base) || v <= 0 || base <= 0) return null;
  return dir === HI ? v / base : base / v;
}

function table(summary, implNames) {
  const lines = [];
  lines.push(`| workload | metric | ${implNames.join(' | ')} |`);
  lines.push(`|---|---|${implNames.map(() => '---:').join('|')}|`);
  for (const w of summary) {
    w.metrics.forEach(([key, label, dir], i) => {
      const base = w.impls[BASELINE] ? w.impls[BASELINE].median[key] : null;
      const cells = implNames.map((n) => {
        const s = w.impls[n];
        if (!s) return '';
        if (s.error) return 'n/a';
        const v = s.median[key];
        const r = n === BASELINE ? null : ratio(v, base, dir);
        return `${fmtNum(v, key)}${r ? ` (${r.toFixed(2)}×)` : ''}${s.warning ? ' ⚠' : ''}`;
      });
      lines.push(`| ${i === 0 ? w.title : ''} | ${label} | ${cells.join(' | ')} |`);
    });
  }
  return lines.join('\n');
}

/** deflate workloads: one row per variant; ratios vs the variant's `vs` row, and vs the `ref` row */
function variantTable(w) {
  const names = Object.keys(w.impls);
  const ref = (w.variants.find((v) => v.ref && w.impls[v.name]) || {}).name;
  const main0 = w.metrics[0];
  const lines = [];
  lines.push(`| ${w.title} | ${w.metrics.map((m) => m[1]).join(' | ')}${ref ? ` | ${main0[1]} ÷ ${ref}` : ''} | CPU load / server / rest |`);
  lines.push(`|---|${w.metrics.map(() => '---:').join('|')}${ref ? '|---:' : ''}|---:|`);
  for (const n of names) {
    const s = w.impls[n];
    const v = w.variants.find((x) => x.name === n);
    const base = v.vs && w.impls[v.vs] && !w.impls[v.vs].error ? w.impls[v.vs].median : null;
    if (s.error) {
      lines.push(`| ${n} | ${w.metrics.map(() => 'n/a').join(' | ')}${ref ? ' | n/a' : ''} | n/a |`);
      continue;
    }
    const cells = w.metrics.map(([key, , dir]) => {
      const val = s.median[key];
      const r = base ? ratio(val, base[key], dir) : null;
      return `${fmtNum(val, key)}${r ? ` (${r.toFixed(2)}× ${v.vs})` : ''}${s.warning ? ' ⚠' : ''}`;
    });
    if (ref) {
      const rr = n === ref || w.impls[ref].error ? null : ratio(s.median[main0[0]], w.impls[ref].median[main0[0]], main0[2]);
      cells.push(rr ? `${rr.toFixed(2)}×` : '–');
    }
    const f = (k) => (Number.isFinite(s.median[k]) ? Math.round(s.median[k]) : '–');
    cells.push(`${w.kind === 'connect' ? f('connect_cpu_pct') : f('cpu_pct')} / ${f('server_cpu_pct')} / ${f('other_cpu_pct')}`);
    lines.push(`| ${n} | ${cells.join(' | ')} |`);
  }
  return lines.join('\n');
}

/** the options of one workload: its own default durations unless --quick or given explicitly */
function workloadOpts(w, opts) {
  const o = { ...opts };
  if (!opts.quick && w.defaults) {
    for (const k of ['duration', 'warmup', 'idle']) if (w.defaults[k] !== undefined && !opts.given[k]) o[k] = w.defaults[k];
  }
  return o;
}

function cpuTable(summary, implNames) {
  const lines = [];
  lines.push(`| workload | ${implNames.join(' | ')} |`);
  lines.push(`|---|${implNames.map(() => '---:').join('|')}|`);
  for (const w of summary) {
    const cells = implNames.map((n) => {
      const s = w.impls[n];
      if (!s) return '';
      if (s.error) return 'n/a';
      const f = (k) => (Number.isFinite(s.median[k]) ? Math.round(s.median[k]) : '–');
      const lg = w.kind === 'connect' ? f('connect_cpu_pct') : f('cpu_pct');
      return `${lg} / ${f('server_cpu_pct')} / ${f('other_cpu_pct')}`;
    });
    lines.push(`| ${w.id} | ${cells.join(' | ')} |`);
  }
  return lines.join('\n');
}

// ---------------------------------------------------------------------------

function parseOpts(argv) {
  const o = {
    quick: false, only: null, impls: Object.keys(IMPLS).filter((n) => !IMPLS[n].optional), rounds: null, duration: null, warmup: null, idle: null,
    pin: false, nice: null, noBuild: false, out: path.join(BENCH, 'results/latest.json'), verbose: false, given: {},
  };
  for (let i = 2; i < argv.length; i++) {
    const a = argv[i];
    const val = () => { if (i + 1 >= argv.length) usage(2); return argv[++i]; };
    if (a === '--quick') o.quick = true;
    else if (a === '--smoke') { o.quick = true; o.smoke = true; }
    else if (a === '--only') o.only = val().split(',').map((s) => s.trim()).filter(Boolean);
    else if (a === '--impls') o.impls = val().split(',').map((s) => s.trim()).filter(Boolean);
    else if (a === '--rounds') o.rounds = Number(val());
    else if (a === '--duration') { o.duration = Number(val()); o.given.duration = true; } else if (a === '--warmup') { o.warmup = Number(val()); o.given.warmup = true; } else if (a === '--idle') { o.idle = Number(val()); o.given.idle = true; }
    else if (a === '--pin') o.pin = true;
    else if (a === '--nice') o.nice = Number(val());
    else if (a === '--no-build') o.noBuild = true;
    else if (a === '--out') o.out = path.resolve(val());
    else if (a === '-v' || a === '--verbose') o.verbose = true;
    else if (a === '-h' || a === '--help') usage(0);
    else { console.error(`unknown option ${a}`); usage(2); }
  }
  o.rounds = o.rounds ?? (o.quick ? 1 : 3);
  o.duration = o.duration ?? (o.smoke ? 0.3 : o.quick ? 2 : 10);
  o.warmup = o.warmup ?? (o.smoke ? 0.1 : o.quick ? 0.5 : 2);
  o.idle = o.idle ?? (o.smoke ? 0.5 : o.quick ? 2 : 5);
  const bad = (x, lo, hi) => !(Number.isFinite(x) && x >= lo && x <= hi);
  if (bad(o.rounds, 1, 20) || bad(o.duration, 0.2, 600) || bad(o.warmup, 0, 120) || bad(o.idle, 0.5, 600)) {
    console.error('out-of-range --rounds (1..20) / --duration (0.2..600) / --warmup (0..120) / --idle (0.5..600)');
    process.exit(2);
  }
  if (o.nice !== null && bad(o.nice, -20, 19)) { console.error('--nice must be -20..19'); process.exit(2); }
  for (const n of o.impls) if (!IMPLS[n]) { console.error(`unknown implementation ${n}`); usage(2); }
  if (o.only) {
    for (const id of o.only) {
      if (!WORKLOADS.some((w) => w.id === id || (w.alias || []).includes(id))) { console.error(`unknown workload ${id}`); usage(2); }
    }
  }
  return o;
}

async function main() {
  const opts = parseOpts(process.argv);
  ensureNodeDeps(opts);
  ensureBuilt(LOADGEN_DIR, LOADGEN, opts);
  ensureBuilt(RUST_ECHO_DIR, RUST_ECHO, opts);

  const workloads = WORKLOADS.filter((w) => !opts.only || opts.only.some((id) => w.id === id || (w.alias || []).includes(id)))
    .map((w) => (opts.smoke ? { ...w, p: { ...w.p, conns: Math.min(w.p.conns, 32) } } : w));
  const implNames = Object.keys(IMPLS).filter((n) => opts.impls.includes(n));
  let wsVersion = null;
  try { wsVersion = JSON.parse(fs.readFileSync(path.join(WS_PATH, 'package.json'), 'utf8')).version; } catch (_) { /* */ }
  let gitRev = null;
  try { gitRev = spawnSync('git', ['-C', ROOT, 'rev-parse', '--short', 'HEAD'], { encoding: 'utf8' }).stdout.trim() || null; } catch (_) { /* */ }

  const meta = {
    date: new Date().toISOString(), node: process.version, ws: wsVersion, git: gitRev,
    cpus: os.cpus().length, cpu_model: (os.cpus()[0] || {}).model, mem_gib: Math.round(os.totalmem() / 2 ** 30),
    loadavg_start: os.loadavg(), quick: opts.quick, rounds: opts.rounds, duration_s: opts.duration, warmup_s: opts.warmup,
    idle_s: opts.idle, pin: opts.pin, nice: opts.nice, impls: implNames,
  };
  log(`ws-native bench: ${workloads.map((w) => w.id).join(', ')} × ${implNames.join(', ')}; ${opts.rounds} round(s), ` +
    `${opts.warmup}+${opts.duration} s per run; node ${process.version}, ws ${wsVersion}, load avg ${os.loadavg().map((x) => x.toFixed(2)).join(' ')}`);

  const startFailed = new Map(); // impl|serverMode -> error (skip the rest)
  const summary = [];
  for (const w of workloads) {
    const wopts = workloadOpts(w, opts);
    // the columns: implementations, or for the deflate workloads the variants of the allowed implementations
    const units = w.variants
      ? w.variants.filter((v) => opts.impls.includes(v.impl)).map((v) => ({ key: v.name, impl: v.impl, variant: v }))
      : implNames.filter((n) => implRuns(n, w)).map((n) => ({ key: n, impl: n, variant: null }));
    const unitNames = units.map((u) => u.key);
    const runs = Object.fromEntries(unitNames.map((n) => [n, []]));
    if (w.variants) {
      log(`[${w.id}] ${wopts.rounds} round(s) × ${w.kind === 'connect' ? `${wopts.idle} s idle` : `${wopts.warmup}+${wopts.duration} s`} per run`);
    }
    for (let round = 1; round <= opts.rounds; round++) {
      for (const { key: n, impl, variant } of units) {
        const serverKey = w.kind === 'client' ? `client:${n}`
          : `${n}|${w.kind === 'broadcast' ? 'broadcast' : 'echo'}${w.tls ? '|tls' : ''}${variant ? `|${variant.server.join(' ')}` : ''}`;
        let r;
        if (startFailed.has(serverKey)) {
          r = { error: startFailed.get(serverKey), skipped: true };
        } else {
          r = await runOne(w, impl, wopts, variant);
          if (variant) r.variant = n;
          if (r.startFailed) startFailed.set(serverKey, r.error);
          if (w.kind === 'client' && r.error && n !== 'rust-echo' && /cannot load|constructor/.test(r.error)) startFailed.set(serverKey, r.error);
        }
        runs[n].push(r);
        const main0 = w.metrics[0][0];
        const show = r.error ? `n/a (${r.error})` : `${fmtNum(r[main0], main0)} ${w.metrics[0][1]}` +
          `${Number.isFinite(r.cpu_pct) ? `, load cpu ${Math.round(r.cpu_pct)}%` : ''}` +
          `${Number.isFinite(r.server_cpu_pct) ? `, server cpu ${Math.round(r.server_cpu_pct)}%` : ''}` +
          `${Number.isFinite(r.other_cpu_pct) && r.other_cpu_pct > 25 ? `, OTHER cpu ${Math.round(r.other_cpu_pct)}%` : ''}` +
          `${r.warning ? ` [warning: ${r.warning}]` : ''}`;
        if (!r.skipped || round === 1) log(`[${w.id}] round ${round}/${opts.rounds} ${n}: ${show}`);
        await sleep(200);
      }
    }
    const impls = {};
    for (const n of unitNames) {
      const ok = runs[n].filter((r) => !r.error);
      if (ok.length === 0) {
        impls[n] = { error: (runs[n][0] && runs[n][0].error) || 'no run', runs: runs[n] };
        continue;
      }
      const keys = new Set(['cpu_pct', 'connect_cpu_pct', 'server_cpu_pct', 'softirq_pct', 'other_cpu_pct', 'machine_busy_pct', 'loadavg1', ...w.metrics.map((m) => m[0])]);
      for (const r of ok) for (const [k, v] of Object.entries(r)) if (typeof v === 'number') keys.add(k);
      const med = {};
      for (const k of keys) med[k] = median(ok.map((r) => r[k]));
      const warning = ok.map((r) => r.warning).find(Boolean) || (ok.length < runs[n].length ? `${runs[n].length - ok.length} failed run(s)` : null);
      impls[n] = { median: med, ok_runs: ok.length, warning, runs: runs[n] };
    }
    summary.push({
      id: w.id, title: w.title, kind: w.kind, params: w.p, metrics: w.metrics, impls,
      ...(w.variants ? { variants: w.variants, durations: { warmup_s: wopts.warmup, duration_s: wopts.duration, idle_s: wopts.idle } } : {}),
    });
  }

  meta.loadavg_end = os.loadavg();
  const md = [];
  md.push(`### ws-native benchmark${opts.quick ? ' (--quick)' : ''} — ${meta.date}`);
  md.push('');
  const onlyVariants = summary.length > 0 && summary.every((w) => w.variants);
  md.push(`node ${meta.node}, ws ${meta.ws}, ${meta.cpus} CPU (${meta.cpu_model}), ${opts.rounds} round(s)` +
    `${onlyVariants ? '' : ` × ${opts.warmup} s warm-up + ${opts.duration} s`}, medians; (N.NN×) = factor vs plain \`ws\`, >1 is better; ` +
    `load average ${meta.loadavg_start.map((x) => x.toFixed(2)).join(' ')} at the start, ${meta.loadavg_end.map((x) => x.toFixed(2)).join(' ')} at the end.`);
  md.push('');
  const plain = summary.filter((w) => !w.variants);
  const variantW = summary.filter((w) => w.variants);
  if (plain.length) {
    // columns: the implementations that ran at least one of these workloads
    const cols = implNames.filter((n) => plain.some((w) => w.impls[n]));
    md.push(table(plain, cols));
    md.push('');
    md.push('CPU % during the measured window (median): load generator / server / rest of the machine ' +
      '(100 = one core; for `client` the load is the Node client and the server is rust-echo; for `connections` ' +
      'all figures cover the connect phase):');
    md.push('');
    md.push(cpuTable(plain, cols));
  }
  for (const w of variantW) {
    md.push('');
    const d = w.durations;
    md.push(w.kind === 'connect'
      ? `${w.id}: ${opts.rounds} round(s), ${d.idle_s} s idle; RSS KiB/conn = (server RSS at the end of the idle period − before connecting) ÷ connections; (N.NN× X) = factor vs row X, >1 is better; CPU % of the connect phase.`
      : `${w.id}: ${opts.rounds} round(s) × ${d.warmup_s} s warm-up + ${d.duration_s} s, medians; server RSS at the end of the measured window; (N.NN× X) = factor vs row X, >1 is better; CPU % (100 = one core) over the measured window.`);
    md.push('');
    md.push(variantTable(w));
  }
  const notes = [];
  for (const w of summary) {
    for (const n of Object.keys(w.impls)) {
      const s = w.impls[n];
      if (s && s.error) notes.push(`- ${w.id} / ${n}: n/a — ${s.error}`);
      else if (s && s.warning) notes.push(`- ${w.id} / ${n}: ⚠ ${s.warning}`);
      const oc = s && s.median && s.median.other_cpu_pct;
      if (Number.isFinite(oc) && oc > 25) notes.push(`- ${w.id} / ${n}: the rest of the machine (other processes, softirq) used ${Math.round(oc)}% CPU during the run — numbers may be noisy`);
    }
  }
  for (const w of summary) {
    // topics against ws-native's own forEach loop, in the same rounds
    const a = w.impls['ws-native+publish'];
    const b = w.impls['ws-native'];
    const r = a && b && !a.error && !b.error ? ratio(a.median.deliveries_per_sec, b.median.deliveries_per_sec, HI) : null;
    if (r) notes.push(`- ${w.id}: ws-native+publish delivers ${r.toFixed(2)}× the rate of ws-native with the clients.forEach loop.`);
  }
  if (implNames.includes('rust-echo') && workloads.some((w) => w.kind === 'client')) {
    notes.push('- client: the rust-echo column is the Rust load generator itself as the client (reference).');
  }
  if (notes.length) { md.push(''); md.push('Notes:'); md.push(...notes); }
  const text = md.join('\n');
  console.log(text);

  fs.mkdirSync(path.dirname(opts.out), { recursive: true });
  fs.writeFileSync(opts.out, JSON.stringify({ meta, workloads: summary, markdown: text }, null, 2) + '\n');
  log(`\nresults written to ${path.relative(process.cwd(), opts.out) || opts.out}`);
}

main().catch((e) => {
  console.error(e && e.stack ? e.stack : e);
  cleanupAndExit(1);
});
