#!/usr/bin/env bash
# Start `switchboard controller` in the background unless it already runs.
#
# The PID file ($SWITCHBOARD_STATE/controller.pid) is trusted only when its process is alive,
# not a zombie, and is a `switchboard controller`: a stale file (dead process, zombie, PID
# reused by another program) is replaced. The daemon itself refuses a second instance for
# the same bridge (a lock in $SWITCHBOARD_RUN, /run/switchboard by default), so a race
# between two starts leaves one daemon. Every SWITCHBOARD_* variable reaches the daemon;
# SWITCHBOARD_CMD overrides the command (default: switchboard).
set -euo pipefail
STATE=${SWITCHBOARD_STATE:-/var/lib/switchboard}
LOGS=${SWITCHBOARD_LOGS:-/var/log/switchboard}
read -r -a CMD <<<"${SWITCHBOARD_CMD:-switchboard}"
install -d -m 0700 "$STATE" "$LOGS"  # container logs and commands, Consul data: root's only
pidfile="$STATE/controller.pid"
log="$LOGS/controller.log"
(umask 077 && : >>"$log") && chmod 600 "$log"

# is_alive PID: true when PID exists and is not a zombie (killed but not yet reaped).
is_alive() {
  local stat state
  [[ $1 =~ ^[0-9]+$ ]] || return 1
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  state=${stat##*) }  # the field after "(comm)"; comm may hold spaces and parentheses
  [[ ${state:0:1} != Z && ${state:0:1} != X ]]
}

# is_controller PID: true when PID is a live `switchboard controller` (not a reused PID).
is_controller() {
  local pid=$1
  is_alive "$pid" || return 1
  tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | awk '
    /(^|\/)switchboard(\.cli)?$/ { sb = 1 } $0 == "controller" && sb { found = 1 }
    END { exit !found }'
}

if [ -f "$pidfile" ]; then
  old=$(head -c 32 "$pidfile" | tr -dc 0-9)
  if is_controller "$old"; then
    echo "switchboard controller already runs (pid $old, log $log)"
    exit 0
  fi
  echo "removing stale PID file $pidfile (pid ${old:-?} is not a running switchboard controller)"
  rm -f "$pidfile"
fi

offset=$(stat -c %s "$log" 2>/dev/null || echo 0)
setsid nohup "${CMD[@]}" controller -v >>"$log" 2>&1 </dev/null &  # own session
pid=$!
# Wait until it runs (its start line in the log) or exits (it says why in one line).
for _ in $(seq 1 100); do
  if ! is_alive "$pid"; then
    wait "$pid" 2>/dev/null || true
    why=$(grep -m1 '^error:' < <(tail -c +"$((offset + 1))" "$log") || tail -n 1 "$log")
    echo "switchboard controller did not start: ${why#error: }" >&2
    exit 1
  fi
  grep -q 'controller for bridge' < <(tail -c +"$((offset + 1))" "$log") && break
  sleep 0.1
done
echo "$pid" >"$pidfile"
echo "switchboard controller started (pid $pid, log $log)"

# Wait until its health endpoint (SWITCHBOARD_METRICS, 127.0.0.1:9469 by default;
# docs/monitoring.md) says healthy: OVS connected, Consul reachable, a reconcile pass done. After
# SWITCHBOARD_HEALTH_WAIT seconds (10) it says what is missing; the daemon runs on either way.
metrics=${SWITCHBOARD_METRICS:-127.0.0.1:9469}
case ${metrics,,} in off | none | no | "") exit 0 ;; esac
body=$(mktemp)
trap 'rm -f "$body"' EXIT
code=000
for _ in $(seq 1 $((${SWITCHBOARD_HEALTH_WAIT:-10} * 5))); do
  is_alive "$pid" || { echo "switchboard controller exited; see $log" >&2; exit 1; }
  code=$(curl -s -o "$body" -w '%{http_code}' --max-time 2 "http://$metrics/healthz" || true)
  [ "$code" = 200 ] && break
  sleep 0.2
done
if [ "$code" = 200 ]; then
  echo "switchboard controller is healthy (http://$metrics/healthz)"
else
  why=$(python3 -c 'import json, sys; print("; ".join(json.load(sys.stdin)["problems"]))' \
    <"$body" 2>/dev/null || echo "no answer from http://$metrics/healthz")
  echo "switchboard controller runs but is not healthy yet: $why" >&2
fi
