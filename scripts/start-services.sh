#!/usr/bin/env bash
# Start what Switchboard runs on: ovsdb-server and ovs-vswitchd (userspace datapath) and a
# single-server Consul agent with a data directory. Leaves running daemons alone.
set -euo pipefail
STATE=${SWITCHBOARD_STATE:-/var/lib/switchboard}
LOGS=${SWITCHBOARD_LOGS:-/var/log/switchboard}
# Consul's data (the desired state; keys and tokens once set) and the logs are root's only.
install -d -m 0700 "$STATE" "$STATE/consul" "$LOGS"
(umask 077 && : >>"$LOGS/consul.log") && chmod 600 "$LOGS/consul.log"

if ! ovs-vsctl --timeout=2 show >/dev/null 2>&1; then
  /usr/share/openvswitch/scripts/ovs-ctl start --system-id=random --no-ovs-vswitchd >/dev/null
  # Userspace TSO keeps TCP over veths fast on the netdev datapath (see README, Troubleshooting).
  ovs-vsctl --no-wait set Open_vSwitch . other_config:userspace-tso-enable=true
  /usr/share/openvswitch/scripts/ovs-ctl start --no-ovsdb-server >/dev/null
fi
if ! pgrep -x ovs-vswitchd >/dev/null; then
  ovs-vsctl --no-wait set Open_vSwitch . other_config:userspace-tso-enable=true
  /usr/share/openvswitch/scripts/ovs-ctl start --no-ovsdb-server >/dev/null
fi

consul_up() { curl -fsS --max-time 1 http://127.0.0.1:8500/v1/status/leader 2>/dev/null | grep -q ':'; }
if ! consul_up; then
  if ! curl -fsS --max-time 1 http://127.0.0.1:8500/v1/agent/self >/dev/null 2>&1; then
    nohup consul agent -server -bootstrap-expect=1 -node="$(hostname -s)" \
      -data-dir="$STATE/consul" -bind=127.0.0.1 -client=127.0.0.1 \
      >>"$LOGS/consul.log" 2>&1 </dev/null &
    echo $! > "$STATE/consul.pid"
  fi
  for _ in $(seq 1 60); do consul_up && break; sleep 0.5; done
  consul_up || { echo "Consul did not elect a leader; see $LOGS/consul.log" >&2; exit 1; }
fi
