'use strict';
// Autobahn fuzzingserver driver for the ws-native client.
//   AUTOBAHN_URL=ws://127.0.0.1:9001 AUTOBAHN_AGENT=ws-native node autobahn/client.js
const WebSocket = require('..');

const base = (process.env.AUTOBAHN_URL || 'ws://127.0.0.1:9001').replace(/\/+$/, '');
const agent = process.env.AUTOBAHN_AGENT || 'ws-native';

function connect(path, onMessage) {
  return new Promise((resolve) => {
    const ws = new WebSocket(base + path, { maxFragments: 0 });
    let text = null;
    ws.on('message', (data, isBinary) => {
      if (onMessage) onMessage(ws, data, isBinary);
      else if (text === null) text = data.toString();
    });
    ws.on('error', () => {}); // expected in many cases; the close event follows
    ws.on('close', () => resolve(text));
  });
}

const echo = (ws, data, isBinary) => ws.send(data, { binary: isBinary });

async function main() {
  const a = encodeURIComponent(agent);
  const count = parseInt(await connect('/getCaseCount'), 10);
  if (!(count > 0)) throw new Error(`bad case count from ${base}/getCaseCount`);
  console.log(`ws-native client driver: ${count} cases, agent ${agent}`);
  for (let n = 1; n <= count; n++) {
    await connect(`/runCase?case=${n}&agent=${a}`, echo);
  }
  await connect(`/updateReports?agent=${a}`);
  console.log('reports updated');
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
