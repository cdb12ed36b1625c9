"""The lab's network: the underlay namespace with its Linux bridge, each host's namespace and
the veths that join them. Nothing is added to the root namespace."""

from __future__ import annotations

import subprocess

from lab.config import NETNS_DIR, UNDERLAY_BRIDGE, Host, Lab, LabError


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``ip ARGS``; a failure raises LabError with ip's own message."""
    out = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and out.returncode != 0:
        raise LabError(f"`ip {' '.join(args)}` failed: {out.stderr.strip()}")
    return out


def netns_exists(name: str) -> bool:
    return (NETNS_DIR / name).exists()


def lab_namespaces(lab_name: str) -> list[str]:
    """Every named namespace of the lab: the underlay, the hosts and their containers."""
    if not NETNS_DIR.is_dir():
        return []
    return sorted(p.name for p in NETNS_DIR.iterdir() if p.name.startswith(f"{lab_name}-"))


def _add_netns(name: str) -> None:
    ip("netns", "add", name)
    ip("-n", name, "link", "set", "lo", "up")


def create_underlay(lab: Lab) -> None:
    """The underlay namespace and its bridge (no address: it only switches)."""
    ns = lab.underlay_netns
    _add_netns(ns)
    ip("-n", ns, "link", "add", UNDERLAY_BRIDGE, "type", "bridge", "stp_state", "0")
    ip("-n", ns, "link", "set", UNDERLAY_BRIDGE, "up")


def uplinks(host: Host) -> tuple[str, str]:
    """The underlay-side ends of the host's control and tunnel veths."""
    return f"{host.name}-c", f"{host.name}-t"


def create_host(lab: Lab, host: Host) -> None:
    """The host's namespace, joined to the bridge by ``ul0`` (control) and ``ul1`` (tunnel).

    ``ul0`` holds the control address. The tunnel address goes on ``ul1`` itself only on the
    kernel datapath; on the userspace one start-host.sh puts ``ul1`` into OVS bridge ``sb-ul``,
    whose internal port holds it."""
    _add_netns(host.netns)
    ul = lab.underlay_netns
    for inside, outside in zip(("ul0", "ul1"), uplinks(host), strict=True):
        ip("-n", ul, "link", "add", outside, "type", "veth", "peer", "name", inside,
           "netns", host.netns)
        ip("-n", ul, "link", "set", outside, "master", UNDERLAY_BRIDGE, "up")
        ip("-n", host.netns, "link", "set", inside, "up")
    ip("-n", host.netns, "addr", "add", f"{host.control_ip}/{host.prefixlen_control}",
       "dev", "ul0")
    # ul0 shares the underlay's segment with the tunnels: it answers ARP only for its own
    # address, never for the tunnel address with its MAC (a peer's OVS takes the last reply)
    subprocess.run(["ip", "netns", "exec", host.netns, "sh", "-c",
                    "echo 1 >/proc/sys/net/ipv4/conf/ul0/arp_ignore"], check=True)
    if lab.datapath == "system":
        ip("-n", host.netns, "addr", "add", f"{host.tunnel_ip}/{host.prefixlen_tunnel}",
           "dev", "ul1")


def set_uplinks(lab: Lab, host: Host, up: bool) -> None:
    """Plug the host into the underlay or unplug it (its links on the bridge side)."""
    for outside in uplinks(host):
        ip("-n", lab.underlay_netns, "link", "set", outside, "up" if up else "down",
           check=up)


def uplinks_up(lab: Lab, host: Host) -> bool:
    """True when the host's control uplink is administratively up (plugged in)."""
    out = ip("-n", lab.underlay_netns, "-o", "link", "show", uplinks(host)[0], check=False)
    if out.returncode != 0 or "<" not in out.stdout:
        return False
    flags = out.stdout.split("<", 1)[1].split(">", 1)[0].split(",")
    return "UP" in flags


def delete_namespaces(lab_name: str) -> list[str]:
    """Delete every namespace of the lab (veths and bridges inside go with them)."""
    gone = []
    for ns in lab_namespaces(lab_name):
        ip("netns", "del", ns, check=False)
        gone.append(ns)
    return gone
