#!/usr/bin/env node
'use strict';

// Topics across processes: the broadcast load of bench/run.js (1,000 subscribers, 64 B binary
// messages, 1 or 16 broadcasts in flight) against these setups, interleaved over rounds:
//
//   ws                     ws, one process, the clients.forEach loop (the reference)
//   publish, 1 process     ws-native, one process, wss.publish() to 1,000 subscribers
//   publish+redis, 1 proc  the same with the `redis` option: every message also goes to Redis
//                          and comes back (dropped as the process's own), the link's cost alone
//   publish+redis, 2 procs two ws-native processes sharing a Redis, 500 subscribers each: the
//                          publisher's server delivers to its 500 and to Redis, the other
//                          process gets it from Redis and delivers to its 500
//
// A broadcast completes when all 1,000 subscribers have it (both processes for the last setup:
// the load generator's --url2 puts half the subscribers on the second server), so deliveries/s
// and the fan-out latency (publish -> last subscriber) compare directly.
//
//   node bench/pubsub-redis.js [--quick] [--rounds N] [--duration S] [--warmup S]
//                              [--only broadcast,broadcast16] [--out FILE] [-v]
//
// Starts redis-server on a free loopback port (--save '' --appendonly no) for the whole run and
// stops it at the end; every server is a fresh process on a fresh port, the load generator
// (bench/loadgen, built beforehand) runs in its own process. Every child is bounded in time and
// stopped by its pid. Prints a markdown table, writes bench/results/pubsub-redis.json.

const { spawn, spawnSync } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');

const {
  cleanupAndExit, freePort, killTree, log, median, onLines, procCpuSeconds, sleep, spawnRaised, stop, sysCpu, track,
} = require('./proc');

const BENCH = __dirname;
const ROOT = path.resolve(BENCH, '..');
const LOADGEN = path.join(BENCH, 'loadgen/target/release/loadgen');
const WS_ECHO = path.join(BENCH, 'servers/ws-echo.js');
const WS_PATH = path.join(BENCH, 'node_modules/ws');
const REDIS_SERVER = process.env.REDIS_SERVER || 'redis-server';

const SETUPS = [
  { name: 'ws', label: 'ws, 1 process, clients.forEach', procs: 1, impl: WS_PATH, args: [] },
  { name: 'publish', label: 'ws-native, 1 process, wss.publish', procs: 1, impl: ROOT, args: ['--publish'] },
  { name: 'publish+redis-1', label: 'ws-native, 1 process, wss.publish + redis', procs: 1, impl: ROOT, args: ['--publish'], redis: true },
  { name: 'publish+redis-2', label: 'ws-native, 2 processes × 500, wss.publish + redis', procs: 2, impl: ROOT, args: ['--publish'], redis: true },
];
const WORKLOADS = [
  { id: 'broadcast', inflight: 1, title: '1,000 subscribers, 64 B, 1 broadcast in flight' },
  { id: 'broadcast16', inflight: 16, title: '1,000 subscribers, 64 B, 16 broadcasts in flight' },
];
const CONNS = 1000;
const SIZE = 64;

function parseOpts(argv) {
  const o = { rounds: null, duration: null, warmup: null, quick: false, only: null, verbose: false,
    out: path.join(BENCH, 'results/pubsub-redis.json') };
  for (let i = 2; i < argv.length; i++) {
    const a = argv[i];
    const val = () => {
      if (i + 1 >= argv.length) throw new Error(`missing value for ${a}`);
      return argv[++i];
    };
    if (a === '--quick') o.quick = true;
    else if (a === '--rounds') o.rounds = Number(val());
    else if (a === '--duration') o.duration = Number(val());
    else if (a === '--warmup') o.warmup = Number(val());
    else if (a === '--only') o.only = val().split(',').map((s) => s.trim()).filter(Boolean);
    else if (a === '--out') o.out = path.resolve(val());
    else if (a === '-v' || a === '--verbose') o.verbose = true;
    else {
      console.error('usage: node bench/pubsub-redis.js [--quick] [--rounds N] [--duration S] [--warmup S] ' +
        '[--only broadcast,broadcast16] [--out FILE] [-v]');
      process.exit(2);
    }
  }
  o.rounds = o.rounds ?? (o.quick ? 1 : 3);
  o.duration = o.duration ?? (o.quick ? 2 : 10);
  o.warmup = o.warmup ?? (o.quick ? 0.5 : 2);
  const bad = (x, lo, hi) => !(Number.isFinite(x) && x >= lo && x <= hi);
  if (bad(o.rounds, 1, 20) || bad(o.duration, 0.2, 120) || bad(o.warmup, 0, 60)) {
    console.error('out of range: --rounds 1..20, --duration 0.2..120, --warmup 0..60');
    process.exit(2);
  }
  for (const id of o.only || []) {
    if (!WORKLOADS.some((w) => w.id === id)) {
      console.error(`unknown workload ${id} (broadcast, broadcast16)`);
      process.exit(2);
    }
  }
  return o;
}

function serverEnv(impl) {
  const env = { ...process.env, WS_IMPL: impl };
  delete env.WS_NO_BUFFER_UTIL;
  delete env.WS_NO_UTF_8_VALIDATE;
  // plain ws, as run.js's `ws` column
  if (impl === WS_PATH) Object.assign(env, { WS_NO_BUFFER_UTIL: '1', WS_NO_UTF_8_VALIDATE: '1' });
  return env;
}

// ---------------------------------------------------------------------------
// redis-server

async function startRedis(verbose) {
  const port = await freePort();
  const child = spawn(REDIS_SERVER, ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'],
    { stdio: ['ignore', 'pipe', 'pipe'] });
  track(child);
  const tail = [];
  const ready = await new Promise((resolve) => {
    const t = setTimeout(() => resolve('redis-server not ready within 10 s'), 10000);
    const look = (l) => {
      tail.push(l);
      if (tail.length > 5) tail.shift();
      if (verbose) log(`  [redis] ${l}`);
      if (/Ready to accept connections/.test(l)) { clearTimeout(t); resolve(null); }
    };
    onLines(child.stdout, look);
    onLines(child.stderr, look);
    child.on('error', (e) => { clearTimeout(t); resolve(`cannot start ${REDIS_SERVER}: ${e.message}`); });
    child.on('exit', (code) => { clearTimeout(t); resolve(`redis-server exited (${code}): ${tail.join(' | ')}`); });
  });
  if (ready) {
    await stop(child);
    throw new Error(ready);
  }
  const v = spawnSync(REDIS_SERVER, ['--version'], { encoding: 'utf8' }).stdout || '';
  return { child, port, url: `redis://127.0.0.1:${port}`, version: (/v=(\S+)/.exec(v) || [])[1] || null };
}

// ---------------------------------------------------------------------------
// one run

async function startServer(setup, redisUrl, verbose) {
  const port = await freePort();
  const argv = [process.execPath, WS_ECHO, '--port', String(port), '--broadcast', ...setup.args,
    ...(setup.redis ? ['--redis', redisUrl] : [])];
  const child = spawnRaised(argv, serverEnv(setup.impl));
  const stderr = [];
  onLines(child.stderr, (l) => {
    stderr.push(l);
    if (stderr.length > 50) stderr.shift();
    if (verbose) log(`  [server ${port}] ${l}`);
  });
  const ready = await new Promise((resolve) => {
    const t = setTimeout(() => resolve({ error: 'no LISTENING line within 15 s' }), 15000);
    onLines(child.stdout, (l) => {
      const m = /^LISTENING (\d+)/.exec(l);
      if (m) { clearTimeout(t); resolve({ port: Number(m[1]) || port }); }
    });
    child.on('exit', (code, sig) => { clearTimeout(t); resolve({ error: `server exited (${sig || code}) before listening` }); });
  });
  if (ready.error) {
    await stop(child);
    const tail = stderr.filter((l) => l.trim()).slice(-3).join(' | ');
    return { error: `${ready.error}${tail ? `: ${tail}` : ''}`.slice(0, 400) };
  }
  return { child, port: ready.port, stderr };
}

async function runOne(setup, w, redis, opts) {
  const servers = [];
  try {
    for (let i = 0; i < setup.procs; i++) {
      const s = await startServer(setup, redis.url, opts.verbose);
      if (s.error) return { error: s.error, startFailed: true };
      servers.push(s);
    }
    await sleep(300);
    const argv = [LOADGEN, 'broadcast', '--url', `ws://127.0.0.1:${servers[0].port}/`,
      ...(servers[1] ? ['--url2', `ws://127.0.0.1:${servers[1].port}/`] : []),
      '--conns', CONNS, '--inflight', w.inflight, '--size', SIZE,
      '--duration', opts.duration, '--warmup', opts.warmup].map(String);
    const load = spawnRaised(argv, { ...process.env });
    const pids = { servers: servers.map((s) => s.child.pid), redis: redis.child.pid };
    const snap = () => ({
      t: process.hrtime.bigint(),
      servers: pids.servers.map(procCpuSeconds),
      redis: setup.redis ? procCpuSeconds(pids.redis) : null,
      sys: sysCpu(),
    });
    const snaps = {};
    let stdout = '';
    const lgErr = [];
    const limit = (45 + opts.warmup + opts.duration) * 1000;
    const result = await new Promise((resolve) => {
      const timer = setTimeout(() => { killTree(load, 'SIGKILL'); resolve({ error: `load timed out after ${limit / 1000} s` }); }, limit);
      load.stdout.setEncoding('utf8');
      load.stdout.on('data', (d) => { stdout += d; });
      onLines(load.stderr, (l) => {
        if (opts.verbose) log(`  [load] ${l}`);
        if (l === 'PHASE measure') snaps.a = snap();
        else if (l === 'PHASE done') snaps.b = snaps.b || snap();
        else if (l.trim()) lgErr.push(l);
      });
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
    const r = { ...result };
    const died = servers.find((s) => s.child.exitCode !== null || s.child.signalCode !== null);
    if (died) r.error = r.error || `server died: ${died.stderr.filter((l) => !l.startsWith('INFO ')).slice(-3).join(' | ')}`;
    if (snaps.a && snaps.b) {
      const wall = Number(snaps.b.t - snaps.a.t) / 1e9;
      const pct = (a, b) => (a !== null && b !== null ? ((b - a) / wall) * 100 : null);
      const each = snaps.a.servers.map((a, i) => pct(a, snaps.b.servers[i]) || 0);
      r.server_cpu_pct = each.reduce((sum, x) => sum + x, 0);
      // with two servers: the publisher's first, then the one fed by Redis alone
      if (each.length > 1) [r.server1_cpu_pct, r.server2_cpu_pct] = each;
      r.redis_cpu_pct = setup.redis ? pct(snaps.a.redis, snaps.b.redis) : null;
      if (snaps.a.sys && snaps.b.sys) {
        const total = snaps.b.sys[1] - snaps.a.sys[1];
        const busy = total > 0 ? ((snaps.b.sys[0] - snaps.a.sys[0]) / total) * os.cpus().length * 100 : null;
        if (busy !== null) r.other_cpu_pct = Math.max(0, busy - r.server_cpu_pct - (r.redis_cpu_pct || 0) - (r.cpu_pct || 0));
      }
    }
    // the Redis link's own reports: anything but `connect` during a run is worth seeing
    const events = servers.flatMap((s) => s.stderr.filter((l) => l.startsWith('REDIS ') && l !== 'REDIS connect'));
    if (events.length) r.redis_events = events.slice(0, 10);
    if (!r.error && !(r.deliveries > 0)) r.error = r.first_error || 'no broadcast delivered';
    if (!r.error && r.connected < CONNS) r.warning = `only ${r.connected}/${CONNS} subscribers connected`;
    if (!r.error && r.errors > 0) r.warning = `${r.errors} error(s)${r.first_error ? `: ${r.first_error}` : ''}`;
    if (!r.error && events.length) r.warning = `redis events: ${events.slice(0, 2).join(' ')}`;
    return r;
  } finally {
    for (const s of servers) await stop(s.child);
  }
}

// ---------------------------------------------------------------------------
// table

function fmt(v, digits = 0) {
  if (!Number.isFinite(v)) return 'n/a';
  return v >= 1000 ? Math.round(v).toLocaleString('en-US') : v.toFixed(digits);
}

function table(summary) {
  const lines = [];
  lines.push('| workload | setup | deliveries/s | vs ws | vs 1 process (publish) | fan-out p50 µs | fan-out p99 µs | CPU % load / servers / redis / rest |');
  lines.push('|---|---|---:|---:|---:|---:|---:|---:|');
  for (const w of summary) {
    const base = w.setups.ws && w.setups.ws.median;
    const single = w.setups.publish && w.setups.publish.median;
    SETUPS.forEach((setup, i) => {
      const s = w.setups[setup.name];
      if (!s) return;
      const head = `| ${i === 0 ? w.title : ''} | ${setup.label} |`;
      if (s.error) {
        lines.push(`${head} n/a | | | | | |`);
        return;
      }
      const m = s.median;
      const r = (b) => (b && Number.isFinite(b.deliveries_per_sec) && b !== m ? `${(m.deliveries_per_sec / b.deliveries_per_sec).toFixed(2)}×` : '–');
      const c = (k) => (Number.isFinite(m[k]) ? Math.round(m[k]) : '–');
      lines.push(`${head} ${fmt(m.deliveries_per_sec)}${s.warning ? ' ⚠' : ''} | ${r(base)} | ${setup.name === 'ws' ? '–' : r(single)} | ` +
        `${fmt(m.fanout_p50_us, 1)} | ${fmt(m.fanout_p99_us, 1)} | ${c('cpu_pct')} / ${c('server_cpu_pct')} / ${setup.redis ? c('redis_cpu_pct') : '–'} / ${c('other_cpu_pct')} |`);
    });
  }
  return lines.join('\n');
}

// ---------------------------------------------------------------------------

async function main() {
  const opts = parseOpts(process.argv);
  if (!fs.existsSync(LOADGEN)) {
    console.error(`${path.relative(process.cwd(), LOADGEN)} is missing: cargo build --release --manifest-path bench/loadgen/Cargo.toml`);
    process.exit(1);
  }
  if (!fs.existsSync(path.join(WS_PATH, 'package.json'))) {
    console.error('bench/node_modules/ws is missing: npm --prefix bench install');
    process.exit(1);
  }
  const workloads = WORKLOADS.filter((w) => !opts.only || opts.only.includes(w.id));
  const redis = await startRedis(opts.verbose);
  let gitRev = null;
  try { gitRev = spawnSync('git', ['-C', ROOT, 'rev-parse', '--short', 'HEAD'], { encoding: 'utf8' }).stdout.trim() || null; } catch (_) { /* */ }
  const meta = {
    date: new Date().toISOString(), node: process.version, git: gitRev, redis: redis.version,
    ws: JSON.parse(fs.readFileSync(path.join(WS_PATH, 'package.json'), 'utf8')).version,
    cpus: os.cpus().length, cpu_model: (os.cpus()[0] || {}).model, loadavg_start: os.loadavg(),
    rounds: opts.rounds, warmup_s: opts.warmup, duration_s: opts.duration, conns: CONNS, size: SIZE,
  };
  log(`pubsub-redis: ${workloads.map((w) => w.id).join(', ')} × ${SETUPS.map((s) => s.name).join(', ')}; ` +
    `${opts.rounds} round(s) × ${opts.warmup}+${opts.duration} s; redis-server ${redis.version} on port ${redis.port}`);
  const summary = [];
  try {
    for (const w of workloads) {
      const runs = Object.fromEntries(SETUPS.map((s) => [s.name, []]));
      const failed = new Map();
      for (let round = 1; round <= opts.rounds; round++) {
        for (const setup of SETUPS) {
          const r = failed.has(setup.name) ? { error: failed.get(setup.name), skipped: true } : await runOne(setup, w, redis, opts);
          // a server that does not start will not start in the next rounds either
          if (r.startFailed) failed.set(setup.name, r.error);
          runs[setup.name].push(r);
          if (!r.skipped) {
            log(`[${w.id}] round ${round}/${opts.rounds} ${setup.name}: ${r.error ? `n/a (${r.error})` :
              `${fmt(r.deliveries_per_sec)} deliveries/s, fan-out p99 ${fmt(r.fanout_p99_us, 1)} µs, ` +
              `cpu load ${Math.round(r.cpu_pct)}% servers ${Math.round(r.server_cpu_pct)}%` +
              `${setup.redis ? ` redis ${Math.round(r.redis_cpu_pct)}%` : ''}${r.warning ? ` [${r.warning}]` : ''}`}`);
          }
          await sleep(200);
        }
      }
      const setups = {};
      for (const s of SETUPS) {
        const ok = runs[s.name].filter((r) => !r.error);
        if (ok.length === 0) {
          setups[s.name] = { error: (runs[s.name][0] || {}).error || 'no run', runs: runs[s.name] };
          continue;
        }
        const med = {};
        for (const k of ['deliveries_per_sec', 'broadcasts_per_sec', 'fanout_p50_us', 'fanout_p90_us', 'fanout_p99_us',
          'fanout_p999_us', 'delivery_p99_us', 'cpu_pct', 'server_cpu_pct', 'server1_cpu_pct', 'server2_cpu_pct', 'redis_cpu_pct',
          'other_cpu_pct', 'incomplete']) {
          med[k] = median(ok.map((r) => r[k]));
        }
        setups[s.name] = { label: s.label, procs: s.procs, median: med, ok_runs: ok.length,
          warning: ok.map((r) => r.warning).find(Boolean) || null, runs: runs[s.name] };
      }
      summary.push({ id: w.id, title: w.title, inflight: w.inflight, setups });
    }
  } finally {
    await stop(redis.child);
  }

  meta.loadavg_end = os.loadavg();
  const md = [];
  md.push(`### Topics across processes through Redis — ${meta.date}`);
  md.push('');
  md.push(`node ${meta.node}, ws ${meta.ws}, redis ${meta.redis}, ${meta.cpus} CPU (${meta.cpu_model}), ` +
    `${opts.rounds} round(s) × ${opts.warmup} s warm-up + ${opts.duration} s, medians; 1,000 subscribers, 64 B binary; ` +
    `load average ${meta.loadavg_start.map((x) => x.toFixed(2)).join(' ')} at the start, ${meta.loadavg_end.map((x) => x.toFixed(2)).join(' ')} at the end.`);
  md.push('');
  md.push(table(summary));
  const notes = [];
  for (const w of summary) {
    const a = w.setups['publish+redis-2'];
    const b = w.setups.publish;
    if (a && b && !a.error && !b.error) {
      const r = a.median.deliveries_per_sec / b.median.deliveries_per_sec;
      w.redis2_vs_single = r;
      notes.push(`- ${w.id}: 2 processes through Redis ÷ 1 process = ${r.toFixed(2)} (target ≥ 0.5)`);
    }
    for (const [name, s] of Object.entries(w.setups)) {
      if (s.error) notes.push(`- ${w.id} / ${name}: n/a — ${s.error}`);
      else if (s.warning) notes.push(`- ${w.id} / ${name}: ⚠ ${s.warning}`);
      if (s.median && s.median.server2_cpu_pct !== null) {
        notes.push(`- ${w.id} / ${name}: CPU % of the publisher's server ${Math.round(s.median.server1_cpu_pct)}, of the other ${Math.round(s.median.server2_cpu_pct)}`);
      }
      if (s.median && s.median.other_cpu_pct > 25) {
        notes.push(`- ${w.id} / ${name}: the rest of the machine (other processes, softirq) used ${Math.round(s.median.other_cpu_pct)}% CPU during the run — numbers may be noisy`);
      }
    }
  }
  if (notes.length) md.push('', ...notes);
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
