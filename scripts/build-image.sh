#!/usr/bin/env bash
# Build the demo's and the tests' image without a registry: a root file system made from
# Debian's busybox-static (a shell, ip, ping, wget, nc and an HTTP server, httpd), imported
# into Podman as localhost/switchboard/demo:latest (first argument: another reference).
# Also into Docker when its daemon answers. Idempotent: an image already there is kept
# (SWITCHBOARD_REBUILD=1 builds it again).
#
# --iperf3 [REF]: the same with Debian's iperf3 added (the host's /usr/bin/iperf3 from the
# iperf3 package, with the shared libraries it links), as localhost/switchboard/iperf3:latest
# by default; the TCP benchmark of image containers (bench/images_tcp.py) runs it.
set -euo pipefail
IPERF3=0
if [ "${1:-}" = --iperf3 ]; then
  IPERF3=1
  shift
fi
if [ "$IPERF3" = 1 ]; then
  REF=${1:-localhost/switchboard/iperf3:latest}
else
  REF=${1:-localhost/switchboard/demo:latest}
fi

have() { "$1" image inspect "$REF" >/dev/null 2>&1; }
runtimes=()
command -v podman >/dev/null && runtimes+=(podman)
command -v docker >/dev/null && docker info >/dev/null 2>&1 && runtimes+=(docker)
if [ ${#runtimes[@]} -eq 0 ]; then
  echo "build-image.sh: neither podman nor a running docker found (run scripts/install-deps.sh)" >&2
  exit 1
fi
todo=()
for rt in "${runtimes[@]}"; do
  if [ "${SWITCHBOARD_REBUILD:-0}" = 1 ] || ! have "$rt"; then todo+=("$rt"); fi
done
[ ${#todo[@]} -eq 0 ] && exit 0

need=()
dpkg -s busybox-static >/dev/null 2>&1 || need+=(busybox-static)
[ "$IPERF3" = 1 ] && ! dpkg -s iperf3 >/dev/null 2>&1 && need+=(iperf3)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,etc,srv,tmp,root,proc,sys,dev,run,var/log}
chmod 1777 "$root/tmp"
cp /bin/busybox "$root/bin/busybox"
for applet in $("$root/bin/busybox" --list); do
  [ "$applet" = busybox ] || ln -s busybox "$root/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' \
  > "$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' > "$root/etc/group"
printf 'hello from the switchboard demo image\n' > "$root/srv/index.html"
if [ "$IPERF3" = 1 ]; then  # the binary, every library ldd names, and the loader
  install -D /usr/bin/iperf3 "$root/usr/bin/iperf3"
  for lib in $(ldd /usr/bin/iperf3 | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}'); do
    install -D "$(readlink -f "$lib")" "$root$lib"
  done
fi

path=/bin
[ "$IPERF3" = 1 ] && path=/bin:/usr/bin
tar -C "$root" -cf "$root.tar" .
trap 'rm -rf "$root" "$root.tar"' EXIT
for rt in "${todo[@]}"; do
  "$rt" import --change 'CMD ["httpd", "-f", "-p", "80", "-h", "/srv"]' \
    --change "ENV PATH=$path" "$root.tar" "$REF" >/dev/null
  echo "built $REF ($rt)"
done
