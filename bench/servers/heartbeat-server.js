#!/usr/bin/env node
'use strict';

// A server whose clients only idle, kept alive by a heartbeat, for bench/heartbeat.js.
//
//   WS_IMPL=<ws|path to ws-native> node bench/servers/heartbeat-server.js --mode builtin|pattern
//       [--interval MS] [--port P]
//
// --mode pattern: ws's README pattern (an `isAlive` flag, a setInterval that terminates the
// silent and pings the others, a 'pong' listener). --mode builtin: ws-native's `heartbeat`
// option, no JS.
//
// stdout: `LISTENING <port>`; then, for each line `mark` on stdin, `MARKED`; for `measure`,
// `MEASURE <json>`: since the mark, CPU (user + system, all threads) in microseconds, the
// event loop's delay (p50, p99, max in ms), wall time, RSS and its growth since `base`,
// clients. `base` notes the RSS before the clients come.

const { monitorEventLoopDelay } = require('perf_hooks');

const args = process.argv.slice(2);
const arg = (name, dflt) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : dflt;
};
const mode = arg('mode', 'pattern');
const interval = Number(arg('interval', 1000));
const impl = require(process.env.WS_IMPL || 'ws');
const WebSocketServer = impl.WebSocketServer || impl.Server;

const options = { port: Number(arg('port', 0)), host: '127.0.0.1', perMessageDeflate: false };
if (mode === 'builtin') options.heartbeat = { interval, timeout: 30000 };
const wss = new WebSocketServer(options);

if (mode === 'pattern') {
  // ws's README, unchanged.
  const heartbeat = function () {
    this.isAlive = true;
  };
  wss.on('connection', (ws) => {
    ws.isAlive = true;
    ws.on('pong', heartbeat);
  });
  const timer = setInterval(() => {
    wss.clients.forEach((ws) => {
      if (ws.isAlive === false) return ws.terminate();
      ws.isAlive = false;
      ws.ping();
    });
  }, interval);
  wss.on('close', () => clearInterval(timer));
}

const eld = monitorEventLoopDelay({ resolution: 1 });
let mark = null;
let base = process.memoryUsage().rss;
wss.on('listening', () => process.stdout.write(`LISTENING ${wss.address().port}\n`));
process.stdin.setEncoding('utf8');
process.stdin.on('data', (chunk) => {
  for (const cmd of chunk.split('\n').map((l) => l.trim()).filter(Boolean)) {
    if (cmd === 'base') {
      base = process.memoryUsage().rss;
      process.stdout.write('BASED\n');
    } else if (cmd === 'mark') {
      eld.reset();
      eld.enable();
      mark = { cpu: process.cpuUsage(), at: process.hrtime.bigint() };
      process.stdout.write('MARKED\n');
    } else if (cmd === 'measure') {
      const cpu = process.cpuUsage(mark.cpu);
      eld.disable();
      const rss = process.memoryUsage().rss;
      process.stdout.write(
        `MEASURE ${JSON.stringify({
          cpuUs: cpu.user + cpu.system,
          wallMs: Number(process.hrtime.bigint() - mark.at) / 1e6,
          eldP50: eld.percentile(50) / 1e6,
          eldP99: eld.percentile(99) / 1e6,
          eldMax: eld.max / 1e6,
          rss,
          rssGrowth: rss - base,
          clients: wss.clients.size
        })}\n`
      );
    } else if (cmd === 'exit') {
      process.exit(0);
    }
  }
});
process.on('SIGTERM', () => process.exit(0));
