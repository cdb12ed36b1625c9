#!/usr/bin/env bash
# Start `switchboard controller` in the background unless it already runs (PID file).
set -euo pipefail
STATE=${SWITCHBOARD_STATE:-/var/lib/switchboard}
LOGS=${SWITCHBOARD_LOGS:-/var/log/switchboard}
mkdir -p "$STATE" "$LOGS"
pidfile="$STATE/controller.pid"
if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
  exit 0
fi
nohup switchboard controller -v >>"$LOGS/controller.log" 2>&1 </dev/null &
echo $! > "$pidfile"
echo "switchboard controller started (pid $(cat "$pidfile"), log $LOGS/controller.log)"
