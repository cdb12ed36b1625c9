#!/usr/bin/env bash
# The test suite must leave a user's running Switchboard alone (CI runs the suite beside the
# demo that the README's first command starts).
#
#   check-untouched.sh snapshot DIR   record sb-int's flows, the applied topologies' keys and
#                                     the controller log's length in DIR
#   check-untouched.sh check DIR      compare: flows and keys as recorded (waiting up to 60 s
#                                     for the demo's own health changes to settle), and no
#                                     foreign datapath named in the log since
set -euo pipefail
BRIDGE=${SWITCHBOARD_BRIDGE:-sb-int}
PREFIX=${SWITCHBOARD_PREFIX:-switchboard}
LOG=${SWITCHBOARD_LOGS:-/var/log/switchboard}/controller.log
TOKEN_FILE=/var/lib/switchboard/consul-secrets/management.token
cmd=${1:?usage: check-untouched.sh snapshot|check DIR}
dir=${2:?usage: check-untouched.sh snapshot|check DIR}

flows() { ovs-ofctl -O OpenFlow13 --no-stats dump-flows "$BRIDGE" | grep cookie= | sort; }
keys() {  # the applied topologies: what `up` wrote, with each key's modify index
  local token=""
  [ -r "$TOKEN_FILE" ] && token=$(cat "$TOKEN_FILE")
  curl -sS --max-time 5 -H "X-Consul-Token: $token" \
    "http://127.0.0.1:8500/v1/kv/$PREFIX/topologies/?recurse=true" |
    python3 -c 'import json, sys
for e in json.load(sys.stdin) or []:
    if e["Key"].endswith("/applied"):
        print(e["Key"], e["ModifyIndex"])'
}

case $cmd in
  snapshot)
    mkdir -p "$dir"
    flows >"$dir/flows"
    keys >"$dir/keys"
    stat -c %s "$LOG" >"$dir/log-offset"
    echo "recorded $(wc -l <"$dir/flows") flows of $BRIDGE and $(wc -l <"$dir/keys") topologies"
    ;;
  check)
    failed=0
    for _ in $(seq 60); do
      flows >"$dir/flows.after"
      cmp -s "$dir/flows" "$dir/flows.after" && break
      sleep 1
    done
    if ! cmp -s "$dir/flows" "$dir/flows.after"; then
      echo "the test suite changed the flows of the running $BRIDGE:"
      diff "$dir/flows" "$dir/flows.after" | head -20
      failed=1
    fi
    keys >"$dir/keys.after"
    if ! cmp -s "$dir/keys" "$dir/keys.after"; then
      echo "the test suite changed the running Switchboard's topologies under $PREFIX/:"
      diff "$dir/keys" "$dir/keys.after" | head -20
      failed=1
    fi
    foreign=$(tail -c +"$(($(cat "$dir/log-offset") + 1))" "$LOG" | grep -c "is not its bridge" || true)
    if [ "$foreign" -gt 0 ]; then
      echo "a bridge of the test suite connected to the running controller ($LOG):"
      tail -c +"$(($(cat "$dir/log-offset") + 1))" "$LOG" | grep "is not its bridge" | head -5
      failed=1
    fi
    [ "$failed" = 0 ] && echo "the running Switchboard was left alone: $(wc -l <"$dir/flows") flows, $(wc -l <"$dir/keys") topologies as before"
    exit "$failed"
    ;;
  *) echo "usage: check-untouched.sh snapshot|check DIR" >&2; exit 2 ;;
esac
