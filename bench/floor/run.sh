#!/usr/bin/env bash
# The machine's floors, for reading the benchmarks' ratios: builds the two C programs of this
# directory and runs each three times (a minute in all).
#   heartbeat-floor: CPU per connection per heartbeat round (one ping sent, one pong read)
#   broadcast-floor: deliveries/s of a broadcast to 1,000 connections, one in flight
set -euo pipefail
cd "$(dirname "$0")"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for p in heartbeat-floor broadcast-floor; do
  cc -O2 -o "$tmp/$p" "$p.c"
  for i in 1 2 3; do
    if [ "$p" = heartbeat-floor ]; then "$tmp/$p" 10000 10; else "$tmp/$p" 1000 5; fi
  done
done
