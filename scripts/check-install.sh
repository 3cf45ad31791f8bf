#!/usr/bin/env bash
# Installs the tarballs `npm run pack` wrote to dist/ into an empty project, with cargo and
# rustc off the PATH, and checks that the install compiled nothing and ran no install script,
# that the package works (an echo through it) on each Node given, and that without its
# platform package it fails with an error naming the platform.
# Usage: scripts/check-install.sh NODE_BINARY...
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
nodes=()
for n in "$@"; do nodes+=("$(realpath "$n")"); done
dist="$repo/dist"
main=$(ls "$dist"/ws-native-[0-9]*.tgz)
platform=$(ls "$dist"/ws-native-*-*.tgz | grep -v "^$main$")
# A PATH without the Rust toolchain: the install must not need it.
clean_path=$(echo "$PATH" | tr ':' '\n' | grep -v '\.cargo/bin' | paste -sd: -)
if PATH="$clean_path" command -v cargo >/dev/null; then echo "cargo is still on the cleaned PATH"; exit 1; fi

project=$(mktemp -d)
trap 'rm -rf "$project" "$project.bare"' EXIT
cd "$project"
echo '{"name": "install-check", "private": true}' > package.json
PATH="$clean_path" npm install --no-audit --no-fund --foreground-scripts "$platform" "$main" 2>&1 | tee install.log
# Nothing compiled and no script ran: no cargo output, no build directory, one binary.
if grep -E 'Compiling|cargo|> ws-native@' install.log; then echo "the install ran a build or a script"; exit 1; fi
test ! -e node_modules/ws-native/target
test "$(find node_modules -name '*.node' | wc -l)" = 1
node -e "const s = require('./node_modules/ws-native/package.json').scripts; if (s) { console.error('scripts in the published package.json:', s); process.exit(1); }"
! npm ls @napi-rs/cli >/dev/null 2>&1 || { echo "@napi-rs/cli was installed"; exit 1; }

cat > echo.js <<'JS'
const WebSocket = require('ws-native');
const wss = new WebSocket.WebSocketServer({ port: 0, host: '127.0.0.1' });
wss.on('connection', (ws) => ws.on('message', (m, b) => ws.send(m, { binary: b })));
wss.on('listening', () => {
  const ws = new WebSocket(`ws://127.0.0.1:${wss.address().port}`);
  ws.on('open', () => ws.send('echo through the installed package'));
  ws.on('message', (m) => {
    if (String(m) !== 'echo through the installed package') process.exit(1);
    console.log(`${process.version}: ${m}`);
    ws.close();
    wss.close();
  });
});
JS
cat > echo.mjs <<'JS'
import WebSocket, { WebSocketServer } from 'ws-native';
if (typeof WebSocketServer !== 'function' || WebSocket.OPEN !== 1) process.exit(1);
JS
for node in "${nodes[@]}"; do
  PATH="$clean_path" "$node" echo.js
  PATH="$clean_path" "$node" echo.mjs
done

# Without its platform package: a clear error that names the platform.
mkdir "$project.bare" && cd "$project.bare"
echo '{"name": "install-check-bare", "private": true}' > package.json
PATH="$clean_path" npm install --no-audit --no-fund --omit=optional "$main" >/dev/null 2>&1
out=$(node -e "try { require('ws-native') } catch (e) { console.log(e.code, e.message) }")
echo "$out" | head -2
echo "$out" | grep -q "ERR_WS_NATIVE_NO_BINARY ws-native has no native binary for this platform (linux-x64-gnu"
echo "install check: ok"
