#!/usr/bin/env bash
# Connections per second against two cluster workers on one port (10,000 clients, 64
# handshakes at a time, the Rust load generator in its own process), interleaved over rounds:
# ws (Node's shared listening socket), ws-native with the shared socket (its default in a
# worker), ws-native with reusePort, and one ws-native process for reference.
# Usage: bench/cluster.sh [rounds]   (needs bench/loadgen built: node bench/run.js builds it)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
port=47123
loadgen=bench/loadgen/target/release/loadgen
fixture=__test__/fixtures/cluster-server.js
ws_fixture=$(mktemp --suffix=.js)
trap 'rm -f "$ws_fixture"' EXIT
sed "s#require('../..')#require('$PWD/node_modules/ws')#" "$fixture" > "$ws_fixture"
for round in $(seq "$rounds"); do
  for mode in ws shared reusePort single; do
    out=$(mktemp)
    case $mode in
      ws) node "$ws_fixture" $port > "$out" & ;;
      shared) node "$fixture" $port > "$out" & ;;
      reusePort) node "$fixture" $port reusePort > "$out" & ;;
      single) node -e "const { WebSocketServer } = require('./'); new WebSocketServer({ port: $port, host: '127.0.0.1' }).on('listening', () => console.log('READY'))" > "$out" & ;;
    esac
    pid=$!
    for _ in $(seq 100); do grep -q READY "$out" && break; sleep 0.1; done
    rate=$(timeout 120 "$loadgen" connect --url "ws://127.0.0.1:$port/" --conns 10000 --concurrency 64 --idle 1 2>/dev/null |
      grep -o '"connections_per_sec":[0-9.]*' | cut -d: -f2)
    printf 'round %s %-10s %s conn/s\n' "$round" "$mode" "$rate"
    kill -TERM $pid 2>/dev/null; wait $pid 2>/dev/null || true
    rm -f "$out"
    sleep 1
  done
done
