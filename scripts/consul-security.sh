#!/usr/bin/env bash
# Consul's security for Switchboard: ACLs (default deny), gossip encryption and TLS for RPC.
#
#   consul-security.sh secrets DIR [--servers N] [--clients M]
#       Once per cluster, on one machine: make what the hosts need, in DIR (0700; files 0600),
#       keeping what is there: gossip.key (consul keygen), the CA (consul tls ca create),
#       a certificate per server (consul tls cert create -server) and per client (-client),
#       and the ACL secrets: management.token, agent.token, token (Switchboard's).
#       Then one bundle per host: DIR/server-K/ (K = 0..N-1) and DIR/client-K/, each with
#       ca.pem, cert.pem, key.pem, gossip.key, agent.token and token (servers also
#       management.token). Copy a host's bundle to it (root only) and pass it to
#       start-host.sh --secrets. The CA's key (consul-agent-ca-key.pem) stays in DIR.
#   consul-security.sh config BUNDLE [--acl-only] > FILE.hcl
#       The agent's configuration for a bundle: encrypt, TLS with verify_incoming,
#       verify_outgoing and verify_server_hostname, ACLs default deny with the agent token
#       (and on servers the management token, which bootstraps the ACL system).
#       --acl-only: ACLs only (one host on loopback: start-services.sh).
#   consul-security.sh acl BUNDLE [PREFIX]
#       With the management token, after the servers elected a leader: make the policies
#       switchboard (for KV prefix PREFIX, default switchboard), agent and dns, the agent and
#       Switchboard tokens with the bundle's secrets, and give the anonymous token the dns
#       policy (Consul DNS answers without a token). Safe to run again and on every server.
#   consul-security.sh wait-token BUNDLE [SECONDS]
#       Wait until the agent knows Switchboard's token (made by a server's `acl`).
#   consul-security.sh policy [PREFIX]
#       Print Switchboard's policy (docs/security.md, Consul ACLs).
#
# CONSUL_HTTP_ADDR is the agent (default 127.0.0.1:8500).
set -euo pipefail
ANONYMOUS=00000000-0000-0000-0000-000000000002

switchboard_policy() {
  local prefix=${1:-switchboard}
  cat <<HCL
# Switchboard's keys: desired state, reports, hosts, events, the rescheduler's lock
key_prefix "${prefix%/}/" { policy = "write" }
# the topologies' service instances (their names are the topologies') and switchboard-host
service_prefix "" { policy = "write" }
# health and catalog answers name nodes; the daemon reads its own agent's node name
node_prefix "" { policy = "read" }
agent_prefix "" { policy = "read" }
# the rescheduler's lock: a session on the daemon's node (and reading the holder's)
session_prefix "" { policy = "write" }
HCL
}
AGENT_POLICY='node_prefix "" { policy = "write" }
service_prefix "" { policy = "read" }'
DNS_POLICY='node_prefix "" { policy = "read" }
service_prefix "" { policy = "read" }'

private_file() { (umask 077 && cat >"$1") && chmod 600 "$1"; }
uuid() { cat /proc/sys/kernel/random/uuid; }

secrets() {
  local dir=${1:?secrets needs a directory} servers=3 clients=0
  shift
  while [ $# -gt 0 ]; do
    case $1 in
      --servers) servers=${2:?}; shift 2 ;;
      --clients) clients=${2:?}; shift 2 ;;
      *) echo "consul-security.sh secrets: unknown argument $1" >&2; exit 2 ;;
    esac
  done
  install -d -m 0700 "$dir"
  (
    cd "$dir"
    umask 077
    [ -s gossip.key ] || consul keygen | private_file gossip.key
    [ -s consul-agent-ca.pem ] || consul tls ca create >/dev/null
    for f in management.token agent.token token; do [ -s $f ] || uuid | private_file $f; done
    local kind k
    for kind in server client; do
      local n=$servers
      [ $kind = client ] && n=$clients
      for ((k = 0; k < n; k++)); do
        local b=$kind-$k
        [ -s "$b/cert.pem" ] && continue
        install -d -m 0700 "$b"
        consul tls cert create -$kind >/dev/null
        local cert
        cert=$(ls -t dc1-$kind-consul-*.pem | grep -v -- '-key.pem' | head -n 1)
        mv "$cert" "$b/cert.pem"
        mv "${cert%.pem}-key.pem" "$b/key.pem"
        cp consul-agent-ca.pem "$b/ca.pem"
        cp gossip.key agent.token token "$b/"
        [ $kind = server ] && cp management.token "$b/"
        chmod 600 "$b"/*
      done
    done
    chmod 600 ./*.pem ./*.key ./*.token token
  )
  echo "Consul secrets in $dir: $servers server and $clients client bundles"
}

config() {
  local b=${1:?config needs a bundle directory} acl_only=0
  [ "${2:-}" = --acl-only ] && acl_only=1
  if [ "$acl_only" = 0 ]; then
    cat <<HCL
encrypt = "$(cat "$b/gossip.key")"
encrypt_verify_incoming = true
encrypt_verify_outgoing = true
ca_file = "$b/ca.pem"
cert_file = "$b/cert.pem"
key_file = "$b/key.pem"
verify_incoming = true
verify_outgoing = true
verify_server_hostname = true
HCL
  fi
  local master=""
  [ -s "$b/management.token" ] && master="master = \"$(cat "$b/management.token")\""
  cat <<HCL
acl {
  enabled = true
  default_policy = "deny"
  down_policy = "extend-cache"
  enable_token_persistence = true
  tokens {
    agent = "$(cat "$b/agent.token")"
    $master
  }
}
HCL
}

# ensure_policy NAME RULES: made unless it exists (another server may make it meanwhile).
ensure_policy() {
  consul acl policy read -name "$1" >/dev/null 2>&1 && return 0
  consul acl policy create -name "$1" -rules "$2" >/dev/null 2>&1 ||
    consul acl policy read -name "$1" >/dev/null
}

# ensure_token SECRET POLICY DESCRIPTION
ensure_token() {
  CONSUL_HTTP_TOKEN=$1 consul acl token read -self >/dev/null 2>&1 && return 0
  consul acl token create -secret "$1" -policy-name "$2" -description "$3" >/dev/null 2>&1 ||
    CONSUL_HTTP_TOKEN=$1 consul acl token read -self >/dev/null
}

acl() {
  local b=${1:?acl needs a bundle directory} prefix=${2:-switchboard}
  CONSUL_HTTP_TOKEN=$(cat "$b/management.token")
  export CONSUL_HTTP_TOKEN
  local ok=0
  for _ in $(seq 1 300); do  # the leader must have set up ACLs (legacy mode ends)
    consul acl policy list >/dev/null 2>&1 && { ok=1; break; }
    sleep 0.2
  done
  [ "$ok" = 1 ] || { echo "Consul's ACL system did not come up (no leader?)" >&2; exit 1; }
  ensure_policy switchboard "$(switchboard_policy "$prefix")"
  ensure_policy agent "$AGENT_POLICY"
  ensure_policy dns "$DNS_POLICY"
  ensure_token "$(cat "$b/agent.token")" agent "Consul agents (node registration)"
  ensure_token "$(cat "$b/token")" switchboard "Switchboard: daemon, CLI, API"
  consul acl token update -id "$ANONYMOUS" -policy-name dns \
    -description "Anonymous Token: DNS and catalog reads" >/dev/null
}

wait_token() {
  local b=${1:?wait-token needs a bundle directory} seconds=${2:-60}
  for _ in $(seq 1 $((seconds * 5))); do
    CONSUL_HTTP_TOKEN=$(cat "$b/token") consul acl token read -self >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  echo "Consul does not know Switchboard's token after ${seconds} s: has a server run" \
    "\`consul-security.sh acl\`? (see the Consul log)" >&2
  return 1
}

cmd=${1:-}
shift || true
case $cmd in
  secrets) secrets "$@" ;;
  config) config "$@" ;;
  acl) acl "$@" ;;
  wait-token) wait_token "$@" ;;
  policy) switchboard_policy "$@" ;;
  *) sed -n '2,27p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
