#!/usr/bin/env bash
# Make this machine a host of a Switchboard cluster: Open vSwitch, a Consul agent that joins
# the cluster, and `switchboard controller` with this host's id and tunnel address.
#
#   scripts/start-host.sh [--join ADDR]... [--bind ADDR] [--tunnel-ip ADDR[/LEN]]
#                         [--tunnel-port IFACE] [--server] [--bootstrap-expect N]
#                         [--host-id NAME] [--secrets DIR] [--prefix P] [--no-install]
#
# --join       a Consul agent to join (repeat it; the first three servers, usually)
# --bind       this host's address for Consul's gossip and RPC (default: Consul picks one)
# --tunnel-ip  this host's underlay address for the VXLAN overlay (default /24)
# --tunnel-port  on the userspace datapath, the interface that carries the tunnel: it goes on
#              a netdev OVS bridge `sb-ul` whose internal port holds the tunnel address
#              (userspace tunnels send through OVS's own routing). Without it, the tunnel
#              address must already be on an interface (the kernel datapath's case).
# --server     run a Consul server (default: a client); --bootstrap-expect N (default 3)
# --host-id    the name this host reports under (default: the host name)
# --secrets    this host's bundle from `scripts/consul-security.sh secrets` (ca.pem, cert.pem,
#              key.pem, gossip.key, agent.token, token; a server's also management.token):
#              Consul then encrypts gossip, uses TLS for RPC (verify_incoming, _outgoing,
#              verify_server_hostname) and ACLs with default deny. A server sets up the
#              policies and tokens (--prefix, the KV prefix, default switchboard); every host
#              waits for its token and installs it as $SWITCHBOARD_STATE/token (0600).
#              Without a Consul leader after --leader-wait seconds (20; servers started
#              one by one), the rest (ACLs, token, controller) finishes in the background
#              once there is one: $SWITCHBOARD_LOGS/start-host-finish.log.
# --no-install skip scripts/install-deps.sh
#
# Open vSwitch uses the kernel datapath (system) where the openvswitch module is loaded, and
# the userspace one (netdev) otherwise. Where systemd runs, everything runs as services
# (openvswitch-switch, switchboard-consul, switchboard-controller); otherwise as background
# processes with PID files. Running it again leaves running parts alone.
#
# Where things go (environment; `switchboard lab` sets them per simulated host):
#   SWITCHBOARD_STATE (/var/lib/switchboard)  controller state, consul data, consul.pid
#   SWITCHBOARD_LOGS  (/var/log/switchboard)  controller.log, consul.log
#   SWITCHBOARD_RUN   (/run/switchboard)      the controller's bridge lock
#   OVS_RUNDIR, OVS_DBDIR, OVS_LOGDIR, OVS_SYSCONFDIR: when OVS_RUNDIR is set, a private
#   ovsdb-server and ovs-vswitchd run with these directories (no systemd, no ovs-ctl).
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '5,7p' "$0" | sed 's/^# *//' >&2; exit 2; }
ARGS=("$@")
leader_wait=20
joins=() bind="" tunnel_ip="" tunnel_port="" server=0 expect=3 host_id="" install=1 secrets=""
prefix=${SWITCHBOARD_PREFIX:-switchboard}
while [ $# -gt 0 ]; do
  case $1 in
    --join) joins+=("${2:?--join needs an address}"); shift 2 ;;
    --bind) bind=${2:?--bind needs an address}; shift 2 ;;
    --tunnel-ip) tunnel_ip=${2:?--tunnel-ip needs an address}; shift 2 ;;
    --tunnel-port) tunnel_port=${2:?--tunnel-port needs an interface}; shift 2 ;;
    --server) server=1; shift ;;
    --bootstrap-expect) expect=${2:?--bootstrap-expect needs a number}; shift 2 ;;
    --host-id) host_id=${2:?--host-id needs a name}; shift 2 ;;
    --secrets) secrets=$(realpath "${2:?--secrets needs a directory}"); shift 2 ;;
    --prefix) prefix=${2:?--prefix needs a KV prefix}; shift 2 ;;
    --leader-wait) leader_wait=${2:?--leader-wait needs seconds}; shift 2 ;;
    --no-install) install=0; shift ;;
    -h|--help) sed -n '2,38p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "start-host.sh: unknown argument $1" >&2; usage ;;
  esac
done

STATE=${SWITCHBOARD_STATE:-/var/lib/switchboard}
LOGS=${SWITCHBOARD_LOGS:-/var/log/switchboard}
RUN=${SWITCHBOARD_RUN:-/run/switchboard}
host_id=${host_id:-$(hostname -s)}
tunnel_addr=${tunnel_ip%/*}
[ -z "$tunnel_ip" ] || [[ $tunnel_ip == */* ]] || tunnel_ip=$tunnel_ip/24
private_ovs=0
[ -n "${OVS_RUNDIR:-}" ] && private_ovs=1
systemd=0
[ -d /run/systemd/system ] && [ "$private_ovs" = 0 ] && systemd=1
# A real host loads the module if it has one (ovs-ctl would, too); the lab never does.
[ "$private_ovs" = 0 ] && { modprobe -q openvswitch 2>/dev/null || true; }
datapath=netdev
[ -e /sys/module/openvswitch ] && datapath=system
# Consul's data (the desired state; keys and tokens once set) and the logs are root's only.
install -d -m 0700 "$STATE" "$STATE/consul" "$LOGS"
mkdir -p "$RUN"
(umask 077 && : >>"$LOGS/consul.log") && chmod 600 "$LOGS/consul.log"

[ "$install" = 1 ] && bash scripts/install-deps.sh

# is_running PIDFILE NAME: the PID file names a live process whose command line holds NAME.
is_running() {
  local pid
  pid=$(head -c 32 "$1" 2>/dev/null | tr -dc 0-9) || return 1
  [ -n "$pid" ] && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$2"
}

# --- Open vSwitch ---------------------------------------------------------------------------
# A tunnel on the userspace datapath needs userspace TSO off: with it on, OVS 3.1 drops
# tunnelled TCP ("Tunneling packets with HW offload flags is not supported").
tso=true
[ -n "$tunnel_ip" ] && tso=false
if [ "$private_ovs" = 1 ]; then
  OVS_DBDIR=${OVS_DBDIR:-$OVS_RUNDIR}
  OVS_LOGDIR=${OVS_LOGDIR:-$LOGS}
  export OVS_RUNDIR OVS_DBDIR OVS_LOGDIR
  mkdir -p "$OVS_RUNDIR" "$OVS_DBDIR" "$OVS_LOGDIR" ${OVS_SYSCONFDIR:+"$OVS_SYSCONFDIR"}
  db=$OVS_DBDIR/conf.db
  [ -f "$db" ] || ovsdb-tool create "$db" /usr/share/openvswitch/vswitch.ovsschema
  if ! is_running "$OVS_RUNDIR/ovsdb-server.pid" ovsdb-server; then
    ovsdb-server "$db" --remote="punix:$OVS_RUNDIR/db.sock" \
      --pidfile="$OVS_RUNDIR/ovsdb-server.pid" --log-file="$OVS_LOGDIR/ovsdb-server.log" \
      --unixctl="$OVS_RUNDIR/ovsdb-server.ctl" -vconsole:off --no-chdir --detach
  fi
  ovs-vsctl --no-wait init -- set Open_vSwitch . external_ids:system-id="$host_id" \
    external_ids:hostname="$host_id" other_config:userspace-tso-enable=$tso
  if ! is_running "$OVS_RUNDIR/ovs-vswitchd.pid" ovs-vswitchd; then
    ovs-vswitchd "unix:$OVS_RUNDIR/db.sock" --pidfile="$OVS_RUNDIR/ovs-vswitchd.pid" \
      --log-file="$OVS_LOGDIR/ovs-vswitchd.log" -vconsole:off --no-chdir --detach
  fi
elif [ "$systemd" = 1 ]; then
  systemctl enable --now openvswitch-switch >/dev/null
  ovs-vsctl set Open_vSwitch . other_config:userspace-tso-enable=$tso
else
  ovs-vsctl --timeout=2 show >/dev/null 2>&1 ||
    /usr/share/openvswitch/scripts/ovs-ctl start --system-id=random --no-ovs-vswitchd >/dev/null
  ovs-vsctl --no-wait set Open_vSwitch . other_config:userspace-tso-enable=$tso
  is_running /var/run/openvswitch/ovs-vswitchd.pid ovs-vswitchd ||
    /usr/share/openvswitch/scripts/ovs-ctl start --no-ovsdb-server >/dev/null
fi
if [ "$(ovs-vsctl get Open_vSwitch . other_config:userspace-tso-enable 2>/dev/null)" != \
     "\"$tso\"" ]; then
  echo "warning: ovs-vswitchd was already running; restart it for userspace-tso-enable=$tso" >&2
fi
echo "Open vSwitch runs (datapath $datapath)"

# The tunnel address. On the userspace datapath it sits on a netdev bridge's internal port.
if [ -n "$tunnel_ip" ] && [ -n "$tunnel_port" ] && [ "$datapath" = netdev ]; then
  ovs-vsctl --may-exist add-br sb-ul -- set bridge sb-ul datapath_type=netdev \
    -- --may-exist add-port sb-ul "$tunnel_port"
  ovs-ofctl del-flows sb-ul && ovs-ofctl add-flow sb-ul priority=0,actions=NORMAL
  ip link set "$tunnel_port" up
  # The port is OVS's now, but the kernel still sees its frames: it must not answer ARP for
  # the tunnel address there with the port's own MAC. (OVS learns a peer's underlay MAC from
  # whichever reply comes last; a wrong one cut traffic to that host until OVS asked again.)
  echo 1 >"/proc/sys/net/ipv4/conf/$tunnel_port/arp_ignore"
  ip addr replace "$tunnel_ip" dev sb-ul  # the tap goes when ovs-vswitchd does: set it again
  ip link set sb-ul up
  echo "tunnel address $tunnel_ip on OVS bridge sb-ul (port $tunnel_port)"
elif [ -n "$tunnel_ip" ] && ! ip -o addr show | grep -q " ${tunnel_addr}/"; then
  echo "start-host.sh: no interface holds the tunnel address $tunnel_addr" >&2
  exit 1
fi

# --- Consul ---------------------------------------------------------------------------------
# An answer Consul trims over UDP (more than 3 records without EDNS, or more than fit) says
# so (TC), and resolvers ask again over TCP for every instance.
consul_args=(agent -node="$host_id" -data-dir="$STATE/consul" -client=127.0.0.1
             -hcl 'dns_config { enable_truncate = true }')
[ -n "$bind" ] && consul_args+=(-bind="$bind")
[ "$server" = 1 ] && consul_args+=(-server -bootstrap-expect="$expect"
                                   -hcl 'performance { raft_multiplier = 1 }')
for j in "${joins[@]}"; do consul_args+=(-retry-join="$j"); done
if [ -n "$secrets" ]; then
  for f in ca.pem cert.pem key.pem gossip.key agent.token token; do
    [ -s "$secrets/$f" ] || { echo "start-host.sh: $secrets/$f is missing (see --secrets)" >&2; exit 1; }
  done
  # encrypt key, TLS and ACL settings with tokens: root's only, like Consul's data
  (umask 077 && bash scripts/consul-security.sh config "$secrets" >"$STATE/consul-security.hcl")
  chmod 600 "$STATE/consul-security.hcl"
  consul_args+=(-config-file="$STATE/consul-security.hcl")
fi
# /v1/status/leader answers without a token (ACLs on) and before a leader is elected
agent_up() { curl -fsS --max-time 1 http://127.0.0.1:8500/v1/status/leader >/dev/null 2>&1; }
if [ "$systemd" = 1 ]; then
  cat >/etc/systemd/system/switchboard-consul.service <<UNIT
[Unit]
Description=Consul agent for Switchboard
After=network-online.target
Wants=network-online.target
[Service]
ExecStart=$(command -v consul)$(printf ' "%s"' "${consul_args[@]}")
Restart=on-failure
[Install]
WantedBy=multi-user.target
UNIT
  systemctl daemon-reload
  systemctl enable --now switchboard-consul >/dev/null
elif ! is_running "$STATE/consul.pid" consul && ! agent_up; then
  setsid nohup consul "${consul_args[@]}" >>"$LOGS/consul.log" 2>&1 </dev/null &  # own session
  echo $! >"$STATE/consul.pid"
fi
for _ in $(seq 1 100); do
  agent_up && break
  if [ "$systemd" = 0 ] && ! is_running "$STATE/consul.pid" consul; then
    echo "the Consul agent exited: $(tail -n 1 "$LOGS/consul.log" 2>/dev/null); see $LOGS/consul.log" >&2
    exit 1
  fi
  sleep 0.1
done
agent_up || { echo "the Consul agent does not answer; see $LOGS/consul.log" >&2; exit 1; }
echo "Consul agent runs (node $host_id, $([ "$server" = 1 ] && echo server || echo client))"
if [ -n "$secrets" ]; then
  leader() { curl -fsS --max-time 1 http://127.0.0.1:8500/v1/status/leader 2>/dev/null | grep -q ':'; }
  for _ in $(seq 1 $((leader_wait * 5))); do leader && break; sleep 0.2; done
  if ! leader; then
    echo "no Consul leader yet (the other servers?): ACLs, the token and the controller" \
      "finish in the background once there is one; see $LOGS/start-host-finish.log"
    (umask 077 && : >>"$LOGS/start-host-finish.log")
    setsid nohup bash "$0" "${ARGS[@]}" --leader-wait 3600 >>"$LOGS/start-host-finish.log" \
      2>&1 </dev/null &
    exit 0
  fi
  # ACL policies and tokens: made by the servers once a leader is elected (idempotent)
  if [ -s "$secrets/management.token" ]; then
    bash scripts/consul-security.sh acl "$secrets" "$prefix"
  fi
  bash scripts/consul-security.sh wait-token "$secrets" 120
  (umask 077 && cp "$secrets/token" "$STATE/token") && chmod 600 "$STATE/token"
  echo "Consul: gossip encrypted, TLS for RPC, ACLs default deny; token in $STATE/token"
fi

# --- The controller -------------------------------------------------------------------------
export SWITCHBOARD_HOST_ID=$host_id SWITCHBOARD_STATE=$STATE SWITCHBOARD_LOGS=$LOGS \
  SWITCHBOARD_RUN=$RUN SWITCHBOARD_DATAPATH=$datapath
[ -n "$tunnel_addr" ] && export SWITCHBOARD_TUNNEL_IP=$tunnel_addr
[ "$private_ovs" = 1 ] && export SWITCHBOARD_OVSDB=${SWITCHBOARD_OVSDB:-unix:$OVS_RUNDIR/db.sock}
if [ "$systemd" = 1 ]; then
  (umask 077 && env | grep '^SWITCHBOARD_' | sort >/etc/default/switchboard)
  chmod 600 /etc/default/switchboard  # the SWITCHBOARD_* settings (a token, once set)
  cp contrib/switchboard-controller.service /etc/systemd/system/
  sed -i 's/^After=.*/& switchboard-consul.service/' \
    /etc/systemd/system/switchboard-controller.service
  systemctl daemon-reload
  systemctl enable --now switchboard-controller >/dev/null
  echo "switchboard controller runs (systemd unit switchboard-controller)"
else
  bash scripts/start-controller.sh
fi
