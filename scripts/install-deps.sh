#!/usr/bin/env bash
# Install what Switchboard needs on Debian 12 (as root): Open vSwitch, Consul 1.8.7 from
# Debian 11 (pinned), Podman with runc for image containers (and its settings for this kind of
# host), test clients, and a virtualenv with the Python dependencies.
# Idempotent: what is already installed is left alone.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${SWITCHBOARD_VENV:-/opt/switchboard/venv}

need_apt=()
command -v ovs-vswitchd >/dev/null || need_apt+=(openvswitch-switch)
command -v ip >/dev/null || need_apt+=(iproute2)
command -v ping >/dev/null || need_apt+=(iputils-ping)
command -v dig >/dev/null || need_apt+=(dnsutils)
command -v nft >/dev/null || need_apt+=(nftables)  # egress: the daemon's own NAT table
command -v curl >/dev/null || need_apt+=(curl)
command -v ethtool >/dev/null || need_apt+=(ethtool)
command -v iperf3 >/dev/null || need_apt+=(iperf3)
command -v unshare >/dev/null || need_apt+=(util-linux)
command -v pgrep >/dev/null || need_apt+=(procps)
command -v dot >/dev/null || need_apt+=(graphviz)  # switchboard graph --format svg|png
python3 -c "import ensurepip" >/dev/null 2>&1 || need_apt+=(python3-venv)
# Podman runs image containers (and the CNI plugin's tests) with runc (crun refuses hybrid
# cgroups); without the recommended packages (netavark comes on its own terms, below).
# The reference CNI plugins (/usr/lib/cni); busybox-static for scripts/build-image.sh.
[ -d /usr/lib/cni ] || need_apt+=(containernetworking-plugins)
command -v podman >/dev/null || need_apt+=(podman)
command -v runc >/dev/null || need_apt+=(runc)
dpkg -s busybox-static >/dev/null 2>&1 || need_apt+=(busybox-static)
# netavark, Podman's own network stack: the baseline of bench/images.py and
# bench/images_tcp.py, which name it in a containers.conf of their own. Installed here, it
# would become Podman's default network backend where Podman has not run yet; the drop-in
# written below then names CNI, Podman's backend before it came.
netavark_added=0
if [ ! -x /usr/lib/podman/netavark ]; then
  need_apt+=(netavark)
  netavark_added=1
fi

if ! command -v consul >/dev/null; then
  # Debian 12 has no consul; Debian 11's 1.8.7 installs from the bullseye suite. Add that suite
  # beside the machine's own Debian source (same URI, same keyring) and pin it to consul only.
  src=/etc/apt/sources.list.d/debian.sources
  uri=$(awk '/^URIs:/{print $2; exit}' "$src" 2>/dev/null || true)
  key=$(awk '/^Signed-By:/{print $2; exit}' "$src" 2>/dev/null || true)
  uri=${uri:-http://deb.debian.org/debian}
  key=${key:-/usr/share/keyrings/debian-archive-keyring.gpg}
  cat > /etc/apt/sources.list.d/switchboard-bullseye.sources <<SRC
Types: deb
URIs: $uri
Suites: bullseye
Components: main
Signed-By: $key
SRC
  cat > /etc/apt/preferences.d/switchboard-bullseye <<PIN
Package: *
Pin: release n=bullseye
Pin-Priority: 1

Package: consul
Pin: release n=bullseye
Pin-Priority: 500
PIN
  need_apt+=(consul)
fi

if [ ${#need_apt[@]} -gt 0 ]; then
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

# Podman's settings for hosts without systemd, with hybrid cgroups and without
# CAP_SYS_RESOURCE (its default nofile limit of 1048576 cannot be set there), as a drop-in
# beside whatever /etc/containers/containers.conf holds.
conf=/etc/containers/containers.conf.d/50-switchboard.conf
if [ ! -f "$conf" ]; then
  install -d /etc/containers/containers.conf.d
  cat > "$conf" <<'CONF'
# Written by Switchboard's scripts/install-deps.sh (see docs/operations.md).
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]

[engine]
cgroup_manager = "cgroupfs"
runtime = "runc"
events_logger = "file"
CONF
fi

backend=/etc/containers/containers.conf.d/51-switchboard-network.conf
if [ "$netavark_added" = 1 ] && [ ! -f "$backend" ]; then
  cat > "$backend" <<'CONF'
# Written by Switchboard's scripts/install-deps.sh when it installed netavark (for the
# benchmarks' baseline): Podman's network backend stays what it was, CNI.
[network]
network_backend = "cni"
CONF
fi

if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
"$VENV/bin/pip" install -q -e '.[test]'
ln -sf "$VENV/bin/switchboard" /usr/local/bin/switchboard
# the CNI plugin, where container runtimes look for plugins (docs/cni.md)
mkdir -p /opt/cni/bin
ln -sf "$VENV/bin/switchboard-cni" /opt/cni/bin/switchboard
