'use strict';

// What the benchmark drivers (run.js, pubsub-redis.js) share: child processes bounded and
// killed by pid, /proc readings, a free loopback port, medians. Requiring it installs the
// SIGINT/SIGTERM handlers that kill every child still running.

const { spawn, spawnSync } = require('child_process');
const fs = require('fs');
const net = require('net');
const path = require('path');

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const log = (...a) => console.error(...a);
const median = (xs) => {
  const v = xs.filter((x) => typeof x === 'number' && Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return null;
  const m = v.length >> 1;
  return v.length % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
};

let CLK_TCK = 100;
try {
  CLK_TCK = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout.trim()) || 100;
} catch (_) { /* default */ }

/** user + system CPU seconds of a process, from /proc */
function procCpuSeconds(pid) {
  try {
    const s = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
    // fields 14 (utime) and 15 (stime), counted from 1 => index 11, 12 after the comm field
    return (Number(f[11]) + Number(f[12])) / CLK_TCK;
  } catch (_) {
    return null;
  }
}

function statusBytes(pid, field) {
  try {
    const m = new RegExp(`${field}:\\s+(\\d+)\\s+kB`).exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : null;
  } catch (_) {
    return null;
  }
}

/** resident memory of process `pid`, everything it maps (VmRSS) */
const rssBytes = (pid) => statusBytes(pid, 'VmRSS');

/**
 * resident anonymous memory of process `pid` (RssAnon): its heaps, stacks and other private
 * memory, without the pages of files it maps (the node binary's code, shared libraries),
 * which the first run of a code path pages in once per process and every process shares.
 */
const anonBytes = (pid) => statusBytes(pid, 'RssAnon');

/** whole-machine CPU counters: [busy ticks, total ticks, irq+softirq ticks] */
function sysCpu() {
  try {
    const line = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0];
    const v = line.trim().split(/\s+/).slice(1).map(Number);
    const total = v.slice(0, 8).reduce((a, b) => a + b, 0); // user..steal
    const idle = v[3] + (v[4] || 0); // idle + iowait
    // loopback packet processing runs as softirq and is charged to no process
    return [total - idle, total, (v[5] || 0) + (v[6] || 0)];
  } catch (_) {
    return null;
  }
}

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.unref();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/** line reader for a child stream */
function onLines(stream, fn) {
  let buf = '';
  stream.setEncoding('utf8');
  stream.on('data', (d) => {
    buf += d;
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      fn(line);
    }
  });
}

/** The children still running, killed if the driver is interrupted. */
const live = new Set();

/** Counts `child` among those to kill on interruption. Returns it. */
function track(child) {
  live.add(child);
  child.on('exit', () => live.delete(child));
  return child;
}

function killTree(child, sig = 'SIGTERM') {
  if (child && child.exitCode === null && child.signalCode === null) {
    try { process.kill(child.pid, sig); } catch (_) { /* gone */ }
  }
}

function cleanupAndExit(code) {
  for (const c of live) killTree(c, 'SIGKILL');
  process.exit(code);
}
process.on('SIGINT', () => cleanupAndExit(130));
process.on('SIGTERM', () => cleanupAndExit(143));

/**
 * Spawns `argv` (after the command words of `prefix`, such as taskset or nice) under bash
 * with the soft fd limit raised to the hard limit, exec'ing so that the child's pid is the
 * program's pid.
 */
function spawnRaised(argv, env, prefix = []) {
  const script = 'ulimit -n "$(ulimit -Hn)" 2>/dev/null || ulimit -n 65536 2>/dev/null; exec "$@"';
  return track(spawn('bash', ['-c', script, 'bash', ...prefix, ...argv], {
    cwd: __dirname, env, stdio: ['pipe', 'pipe', 'pipe'],
  }));
}

/** SIGTERM, then SIGKILL after 3 s; resolves once the child has exited */
async function stop(child) {
  if (!child) return;
  const exited = new Promise((r) => {
    if (child.exitCode !== null || child.signalCode !== null) r();
    else child.once('exit', r);
  });
  killTree(child, 'SIGTERM');
  const t = setTimeout(() => killTree(child, 'SIGKILL'), 3000);
  await exited;
  clearTimeout(t);
}

/**
 * Starts servers/ws-echo.js with `args` and `env` (added to this process's), its stdout piped
 * and stderr ignored; resolves with `{ child, port }` once it prints `LISTENING <port>`,
 * rejects if it exits first or does not listen within 10 s.
 */
function startEchoServer(args, env) {
  const child = spawn(process.execPath, [path.join(__dirname, 'servers', 'ws-echo.js'), ...args], {
    env: { ...process.env, ...env },
    stdio: ['pipe', 'pipe', 'ignore'],
  });
  return new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error('the echo server did not listen within 10 s')), 10000);
    child.stdout.on('data', (d) => {
      out += d;
      const m = /LISTENING (\d+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve({ child, port: Number(m[1]) });
      }
    });
    child.on('exit', (code) => reject(new Error(`the echo server exited with ${code}`)));
  });
}

module.exports = {
  anonBytes,
  cleanupAndExit,
  freePort,
  killTree,
  log,
  median,
  onLines,
  procCpuSeconds,
  rssBytes,
  sleep,
  spawnRaised,
  startEchoServer,
  stop,
  sysCpu,
  track,
};
