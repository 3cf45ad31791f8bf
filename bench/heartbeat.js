#!/usr/bin/env node
'use strict';

// The heartbeat benchmark: 10,000 idle clients of the `ws` package (their own process) on a
// server kept alive by one ping round a second, measured over 10 s: the server's CPU per
// connection per round (all its threads), its event loop's delay, and its RSS per connection.
// Variants, interleaved over rounds:
//   ws + pattern            ws with ws's README pattern (setInterval, ping(), 'pong', isAlive)
//   ws-native + pattern     the same code on ws-native
//   ws-native + heartbeat   ws-native's built-in `heartbeat: { interval: 1000, timeout }`
// and, when a C compiler is found, the floor: bench/floor/heartbeat-floor.c, a C server that
// only sends one ping and reads one pong per connection per round.
//
//   node bench/heartbeat.js [--rounds N] [--conns N] [--measure S] [--out FILE]
//
// Prints a table and writes bench/results/heartbeat.json (or --out). Every run is bounded:
// a child that does not answer within 60 s fails the run.

const { spawn } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');

const ROOT = path.join(__dirname, '..');
const args = process.argv.slice(2);
const arg = (name, dflt) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : dflt;
};
const rounds = Number(arg('rounds', 3));
const conns = Number(arg('conns', 10000));
const measureS = Number(arg('measure', 10));
const out = arg('out', path.join(__dirname, 'results', 'heartbeat.json'));

const VARIANTS = [
  { name: 'ws + pattern', impl: 'ws', mode: 'pattern' },
  { name: 'ws-native + pattern', impl: ROOT, mode: 'pattern' },
  { name: 'ws-native + heartbeat', impl: ROOT, mode: 'builtin' }
];

/** A child with a line protocol on stdout: `ask(cmd, prefix)` writes cmd, resolves with the line. */
function child(file, argv, env) {
  const p = spawn(process.execPath, [file, ...argv], { cwd: __dirname, env: { ...process.env, ...env }, stdio: ['pipe', 'pipe', 'inherit'] });
  const lines = [];
  const waiters = [];
  let buf = '';
  p.stdout.setEncoding('utf8');
  p.stdout.on('data', (d) => {
    buf += d;
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      lines.push(buf.slice(0, i));
      buf = buf.slice(i + 1);
    }
    for (const w of waiters.splice(0)) w();
  });
  const next = (prefixes) =>
    new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${path.basename(file)}: no ${prefixes.join('/')} within 60 s`)), 60000);
      const look = () => {
        const k = lines.findIndex((l) => prefixes.some((x) => l.startsWith(x)));
        if (k >= 0) {
          clearTimeout(timer);
          resolve(lines.splice(k, 1)[0]);
        } else {
          waiters.push(look);
        }
      };
      look();
    });
  return {
    proc: p,
    ask: (cmd, ...prefixes) => {
      if (cmd) p.stdin.write(`${cmd}\n`);
      return next(prefixes);
    },
    stop: () => {
      p.kill('SIGTERM');
      return new Promise((resolve) => (p.exitCode !== null ? resolve() : p.once('exit', resolve)));
    }
  };
}

async function run(variant) {
  const server = child(path.join(__dirname, 'servers', 'heartbeat-server.js'), ['--mode', variant.mode, '--interval', '1000'], {
    WS_IMPL: variant.impl,
    // Plain ws, without its optional native helpers.
    WS_NO_BUFFER_UTIL: '1',
    WS_NO_UTF_8_VALIDATE: '1'
  });
  try {
    const port = Number((await server.ask(null, 'LISTENING ')).split(' ')[1]);
    await server.ask('base', 'BASED');
    const clients = child(path.join(__dirname, 'clients', 'idle-clients.js'), ['--url', `ws://127.0.0.1:${port}/`, '--conns', String(conns)], {});
    try {
      const ok = await clients.ask(null, 'CONNECTED ', 'FAILED ');
      if (ok.startsWith('FAILED')) throw new Error(ok);
      // Two rounds to settle (connections parked, the first pings answered), then measure.
      await new Promise((resolve) => setTimeout(resolve, 2500));
      const before = Number((await clients.ask('pings', 'PINGS ')).split(' ')[1]);
      await server.ask('mark', 'MARKED');
      const idle = bystander(measureS * 1000);
      await new Promise((resolve) => setTimeout(resolve, measureS * 1000));
      const m = JSON.parse((await server.ask('measure', 'MEASURE ')).slice('MEASURE '.length));
      m.idleEldP99 = await idle;
      const after = Number((await clients.ask('pings', 'PINGS ')).split(' ')[1]);
      const pingRounds = (after - before) / conns;
      return {
        ...m,
        pingRounds,
        cpuUsPerConnRound: m.cpuUs / conns / pingRounds,
        rssPerConn: m.rssGrowth / conns
      };
    } finally {
      await clients.stop();
    }
  } finally {
    await server.stop();
  }
}

/**
 * The floor under any heartbeat on this machine (bench/floor/heartbeat-floor.c): a C server's
 * CPU for one ping sent and one pong read per connection per round. Null without a C compiler.
 */
function runFloor() {
  const { spawnSync } = require('child_process');
  const exe = path.join(os.tmpdir(), `ws-native-heartbeat-floor-${process.pid}`);
  const cc = spawnSync('cc', ['-O2', '-o', exe, path.join(__dirname, 'floor', 'heartbeat-floor.c')], { stdio: 'ignore' });
  if (cc.status !== 0) return null;
  try {
    const run = spawnSync(exe, [String(conns), '10'], { encoding: 'utf8', timeout: 120000 });
    return run.status === 0 ? JSON.parse(run.stdout) : null;
  } finally {
    fs.rmSync(exe, { force: true });
  }
}

/**
 * The machine's own scheduling delay: the event loop delay p99 (ms) of a Node process that
 * does nothing for `ms`, run beside the server over the same window. A server's loop delay
 * cannot be lower than what the machine gives an idle process.
 */
function bystander(ms) {
  const code =
    "const h = require('perf_hooks').monitorEventLoopDelay({ resolution: 1 }); h.enable();" +
    `setTimeout(() => { h.disable(); console.log(h.percentile(99) / 1e6); }, ${ms});`;
  return new Promise((resolve) => {
    const p = spawn(process.execPath, ['-e', code], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    p.stdout.on('data', (d) => (out += d));
    p.on('exit', () => resolve(Number(out.trim())));
  });
}

function median(values) {
  const v = [...values].sort((a, b) => a - b);
  return v[Math.floor(v.length / 2)];
}

async function main() {
  if (!fs.existsSync(path.join(__dirname, 'node_modules', 'ws'))) {
    console.error('run `npm --prefix bench install` first');
    process.exit(1);
  }
  const results = Object.fromEntries(VARIANTS.map((v) => [v.name, []]));
  for (let r = 1; r <= rounds; r++) {
    for (const v of VARIANTS) {
      const m = await run(v);
      results[v.name].push(m);
      console.log(
        `[heartbeat] round ${r}/${rounds} ${v.name}: ${m.cpuUsPerConnRound.toFixed(2)} us/conn/round, ` +
          `loop delay p99 ${m.eldP99.toFixed(2)} ms (idle process ${m.idleEldP99.toFixed(2)} ms), RSS ${m.rssPerConn.toFixed(0)} B/conn, ${m.pingRounds.toFixed(1)} rounds`
      );
    }
  }
  const ws = median(results['ws + pattern'].map((m) => m.cpuUsPerConnRound));
  const rows = VARIANTS.map((v) => {
    const ms = results[v.name];
    const cpu = median(ms.map((m) => m.cpuUsPerConnRound));
    return {
      variant: v.name,
      cpuUsPerConnRound: cpu,
      vsWs: cpu / ws,
      eldP99Ms: median(ms.map((m) => m.eldP99)),
      idleEldP99Ms: median(ms.map((m) => m.idleEldP99)),
      rssPerConn: median(ms.map((m) => m.rssPerConn))
    };
  });
  const floor = runFloor();
  const date = new Date().toISOString();
  const table = [
    `### heartbeat: ${conns} idle ws clients, one ping round a second, ${measureS} s measured, median of ${rounds} rounds (${date})`,
    '',
    '| server | CPU µs per connection per round | vs ws | event loop delay p99 | same, idle Node process beside it | RSS per connection |',
    '|---|---:|---:|---:|---:|---:|',
    ...rows.map(
      (r) =>
        `| ${r.variant} | ${r.cpuUsPerConnRound.toFixed(2)} | ${r.vsWs.toFixed(2)}× | ${r.eldP99Ms.toFixed(2)} ms | ${r.idleEldP99Ms.toFixed(2)} ms | ${r.rssPerConn.toFixed(0)} B |`
    ),
    ...(floor ? [`| floor: C, one send and one receive per connection | ${floor.cpuUsPerConnRound.toFixed(2)} | ${(floor.cpuUsPerConnRound / ws).toFixed(2)}× | | | |`] : [])
  ].join('\n');
  console.log(`\n${table}\n`);
  fs.writeFileSync(
    out,
    JSON.stringify({ date, node: process.version, cpus: os.cpus().length, conns, rounds, measureS, rows, floor, runs: results, table }, null, 2) + '\n'
  );
  console.log(`results written to ${path.relative(process.cwd(), out)}`);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
