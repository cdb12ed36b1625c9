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
  # Userspace TSO keeps TCP over veths fast on the netdev datapath (see docs/troubleshooting.md).
  ovs-vsctl --no-wait set Open_vSwitch . other_config:userspace-tso-enable=true
  /usr/share/openvswitch/scripts/ovs-ctl start --no-ovsdb-server >/dev/null
fi
if ! pgrep -x ovs-vswitchd >/dev/null; then
  ovs-vsctl --no-wait set Open_vSwitch . other_config:userspace-tso-enable=true
  /usr/share/openvswitch/scripts/ovs-ctl start --no-ovsdb-server >/dev/null
fi

# Consul with ACLs, default deny (docs/security.md, Consul ACLs). The secrets (management,
# agent and Switchboard tokens) are made once in $SECRETS; Switchboard's token is installed
# as $STATE/token, where the daemon and the CLI find it. All root's only.
SECURITY=$(dirname "$0")/consul-security.sh
# An answer Consul trims over UDP (more than 3 records without EDNS, or more than fit) says so
# (TC), and resolvers ask again over TCP for every instance.
CONSUL_DNS_CONFIG='dns_config { enable_truncate = true }'
SECRETS=$STATE/consul-secrets
BUNDLE=$SECRETS/server-0
[ -s "$BUNDLE/token" ] || bash "$SECURITY" secrets "$SECRETS" --servers 1 >/dev/null
(umask 077 && bash "$SECURITY" config "$BUNDLE" --acl-only >"$STATE/consul-acl.hcl")
chmod 600 "$STATE/consul-acl.hcl"

consul_up() { curl -fsS --max-time 1 http://127.0.0.1:8500/v1/status/leader 2>/dev/null | grep -q ':'; }
answers() { curl -sS --max-time 1 http://127.0.0.1:8500/v1/status/leader >/dev/null 2>&1; }
acl_off() { curl -sS --max-time 1 http://127.0.0.1:8500/v1/acl/token/self 2>/dev/null |
              grep -q 'ACL support disabled'; }
own_agent() {  # the PID of the agent this script started, if it runs
  local pid
  pid=$(head -c 32 "$STATE/consul.pid" 2>/dev/null | tr -dc 0-9)
  [ -n "$pid" ] && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "consul agent" &&
    echo "$pid"
}
old_dns_config() { local pid; pid=$(own_agent) &&
                     ! tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q enable_truncate; }
# an agent this script started before ACLs, or before its DNS settings: start it again
if answers && { acl_off || old_dns_config; }; then
  pid=$(own_agent || true)
  if [ -n "$pid" ]; then
    echo "restarting the Consul agent (pid $pid) with ACLs on and its DNS settings"
    kill "$pid"
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  else
    echo "a Consul agent without ACLs answers on 127.0.0.1:8500 and was not started here;" \
      "stop it, then run this again" >&2
    exit 1
  fi
fi
if ! consul_up; then
  if ! answers; then
    # its own session: ending the caller's process group (a CI job, a terminal) leaves it running
    setsid nohup consul agent -server -bootstrap-expect=1 -node="$(hostname -s)" \
      -data-dir="$STATE/consul" -bind=127.0.0.1 -client=127.0.0.1 \
      -config-file="$STATE/consul-acl.hcl" -hcl "$CONSUL_DNS_CONFIG" \
      >>"$LOGS/consul.log" 2>&1 </dev/null &
    echo $! > "$STATE/consul.pid"
  fi
  for _ in $(seq 1 60); do consul_up && break; sleep 0.5; done
  consul_up || { echo "Consul did not elect a leader; see $LOGS/consul.log" >&2; exit 1; }
fi
# policies switchboard (KV prefix $SWITCHBOARD_PREFIX), agent and dns; the tokens (idempotent)
known=$(curl -sS -o /dev/null -w '%{http_code}' --max-time 2 \
  -H "X-Consul-Token: $(cat "$BUNDLE/management.token")" \
  http://127.0.0.1:8500/v1/acl/token/self 2>/dev/null || true)
if [ "$known" = 403 ]; then  # ACLs set up from another state directory: leave them alone
  echo "the Consul agent on 127.0.0.1:8500 has ACLs from another state directory" \
    "(not $STATE); its tokens are left as they are"
else
  bash "$SECURITY" acl "$BUNDLE" "${SWITCHBOARD_PREFIX:-switchboard}"
  (umask 077 && cp "$BUNDLE/token" "$STATE/token") && chmod 600 "$STATE/token"
fi
