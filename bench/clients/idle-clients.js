#!/usr/bin/env node
'use strict';

// N clients of the `ws` package (bench/node_modules) that connect and then only idle,
// answering pings (ws's auto-pong), for bench/heartbeat.js.
//
//   node bench/clients/idle-clients.js --url ws://127.0.0.1:P/ --conns N
//
// stdout: `CONNECTED <n>` once all are open (`FAILED <n>` if some could not connect), then
// `PINGS <total>` on each line `pings` on stdin. Exits on `exit` or SIGTERM.

const WebSocket = require('ws');

const args = process.argv.slice(2);
const arg = (name, dflt) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : dflt;
};
const url = arg('url');
const conns = Number(arg('conns', 10000));
const clients = [];
let pings = 0;
let failed = 0;

async function main() {
  for (let i = 0; i < conns; i += 250) {
    await Promise.all(
      Array.from({ length: Math.min(250, conns - i) }, () => new Promise((resolve) => {
        const ws = new WebSocket(url, { perMessageDeflate: false });
        clients.push(ws);
        ws.on('ping', () => pings++);
        ws.on('open', resolve);
        ws.on('error', () => {
          failed++;
          resolve();
        });
      }))
    );
  }
  process.stdout.write(failed ? `FAILED ${failed}\n` : `CONNECTED ${clients.length}\n`);
}

process.stdin.setEncoding('utf8');
process.stdin.on('data', (chunk) => {
  for (const cmd of chunk.split('\n').map((l) => l.trim()).filter(Boolean)) {
    if (cmd === 'pings') process.stdout.write(`PINGS ${pings}\n`);
    else if (cmd === 'exit') process.exit(0);
  }
});
process.on('SIGTERM', () => process.exit(0));
main();
