#!/usr/bin/env bash
# Runs the Autobahn testsuite against ws-native as server and as client.
#   autobahn/run.sh [server|client|both] [CASES]     (CASES as in shared/autobahn: all, quick, 1,2,...)
# Needs ../shared/autobahn (installs wstest on first use). Reports go to autobahn-reports/.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
harness=${AUTOBAHN_HARNESS:-$repo/../shared/autobahn}
mode=${1:-both}
cases=${2:-all}
bash "$harness/install.sh"
rc=0
if [ "$mode" = server ] || [ "$mode" = both ]; then
  "$harness/server.sh" -o "$repo/autobahn-reports/server" -a ws-native-server "node $here/echo-server.js \$PORT" 9002 "$cases" || rc=1
fi
if [ "$mode" = client ] || [ "$mode" = both ]; then
  "$harness/client.sh" -o "$repo/autobahn-reports/client" -a ws-native-client "node $here/client.js" "$cases" || rc=1
fi
exit $rc
