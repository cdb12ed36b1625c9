"""Network namespaces, veths and addresses, in batches.

Namespaces and veths are made by one ``ip -batch`` run; what lives inside a namespace is set
by one worker thread that enters each namespace in turn (setns) and talks netlink there.
"""

from __future__ import annotations

import array
import contextlib
import ctypes
import fcntl
import os
import random
import socket
import struct
import subprocess
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from plumbing.netlinkbatch import IfaceConfig
from plumbing.netlinkbatch import netlink_batch as _netlink

NETNS_DIR = Path("/var/run/netns")
PREFIX = "sb-"  # every namespace Switchboard names starts with this
_CLONE_NEWNET = 0x40000000
ARP_RETRY_MS = 100  # on our interfaces (the switch answers ARP: see _fast_arp_retry)
_libc = ctypes.CDLL(None, use_errno=True)


class NetnsError(RuntimeError):
    """A namespace, link or address could not be set up or removed."""


@dataclass(frozen=True)
class Veth:
    """A veth pair: ``port`` in the root namespace, ``ifname`` inside ``netns``."""

    port: str
    netns: str
    ifname: str
    mtu: int


# -- observing ---------------------------------------------------------------------------


def list_namespaces(prefix: str = PREFIX) -> set[str]:
    """Names ``ip netns list`` would show that start with ``prefix`` (read, no command)."""
    try:
        return {n for n in os.listdir(NETNS_DIR) if n.startswith(prefix)}
    except FileNotFoundError:
        return set()


def link_exists(name: str) -> bool:
    """Whether a link of that name exists in the root namespace."""
    return os.path.exists(f"/sys/class/net/{name}")


def netns_inode(name: str) -> tuple[int, int] | None:
    """(device, inode) identifying the namespace behind a name, None if no such name."""
    try:
        st = os.stat(NETNS_DIR / name)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


# -- ip -batch ---------------------------------------------------------------------------


def _ip_batch(steps: Sequence[tuple[str, str]]) -> None:
    """Run (ip command, what it does) lines in one ``ip -batch``; name the step that failed."""
    if not steps:
        return
    script = "".join(line + "\n" for line, _ in steps)
    proc = subprocess.run(
        ["ip", "-batch", "-"], input=script, capture_output=True, text=True, check=False
    )
    if proc.returncode == 0:
        return
    err = proc.stderr.strip()
    failed = ""
    marker = "Command failed -:"
    if marker in err:
        with contextlib.suppress(ValueError, IndexError):
            lineno = int(err.rsplit(marker, 1)[1].split()[0])
            failed = f" while {steps[lineno - 1][1]}"
    raise NetnsError(f"ip -batch failed{failed}: {err}")


def create(
    namespaces: Iterable[str] = (),
    attach: Iterable[tuple[str, int | str]] = (),
    veths: Iterable[Veth] = (),
) -> None:
    """Create namespaces, name the namespaces of running processes (a pid) or at a path (a
    bind mount, as ``ip netns attach`` makes), and make veths: one batch.

    Host ends come up with no IPv6 address and with ARP off: on the userspace datapath the
    host kernel also sees every frame on them, and must not answer a container's ARP for one
    of the host's own addresses with the veth's MAC (that would bypass the switch).
    """
    attach = list(attach)
    for ns, source in attach:
        if isinstance(source, str):
            bind_netns(ns, source)
    steps = [(f"netns add {ns}", f"creating namespace {ns}") for ns in namespaces]
    steps += [
        (f"netns attach {ns} {pid}", f"attaching namespace {ns} to pid {pid}")
        for ns, pid in attach if isinstance(pid, int)
    ]
    for v in veths:
        what = f"creating veth {v.port} <-> {v.netns}/{v.ifname}"
        steps.append(
            (
                f"link add {v.port} mtu {v.mtu} type veth "
                f"peer name {v.ifname} mtu {v.mtu} netns {v.netns}",
                what,
            )
        )
        steps.append(
            (f"link set {v.port} addrgenmode none arp off up", f"bringing up {v.port}")
        )
    _ip_batch(steps)


def bind_netns(netns: str, path: str) -> None:
    """Name the network namespace at ``path`` (a CNI runtime's) ``netns``: bind-mount it on
    ``/run/netns/<netns>``. NetnsError when ``path`` is no network namespace."""
    target = NETNS_DIR / netns
    try:
        os.stat(path)
    except OSError as exc:
        raise NetnsError(f"attaching namespace {netns} to {path}: {exc.strerror}") from None
    NETNS_DIR.mkdir(parents=True, exist_ok=True)
    target.touch(exist_ok=True)
    proc = subprocess.run(["mount", "--bind", path, str(target)], capture_output=True,
                          text=True, check=False)
    if proc.returncode != 0:
        target.unlink(missing_ok=True)
        raise NetnsError(f"attaching namespace {netns} to {path}: {proc.stderr.strip()}")


def attach_pid(netns: str, pid: int) -> None:
    """Give the network namespace of process ``pid`` the name ``netns``."""
    create(attach=[(netns, pid)])


def delete(links: Iterable[str] = (), namespaces: Iterable[str] = ()) -> None:
    """Delete root-namespace links that exist (a veth's peer goes with it), then namespace
    names (a namespace a process still holds lives on, unnamed): one batch.

    The links are put in a scratch link group and deleted as a group: the kernel then removes
    them together instead of waiting for each one (400 veths: 0.2 s instead of 8 s).
    """
    present = [n for n in links if link_exists(n)]
    group = random.randint(0x5B000000, 0x5BFFFFFF)
    steps = [(f"link set {n} group {group}", f"marking link {n} for deletion") for n in present]
    if present:
        steps.append((f"link del group {group}", f"deleting links {', '.join(present[:5])}"))
    steps += [(f"netns del {n}", f"deleting namespace {n}") for n in namespaces]
    _ip_batch(steps)


def delete_namespaces(names: Iterable[str]) -> None:
    """Remove namespace names."""
    delete(namespaces=names)


def delete_links(names: Iterable[str]) -> None:
    """Delete root-namespace links that exist."""
    delete(links=names)


# -- inside namespaces -------------------------------------------------------------------


def enter_netns(fd: int, what: str) -> None:
    """Move the calling thread into the network namespace open as ``fd`` (NetnsError)."""
    if _libc.setns(fd, _CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise NetnsError(f"setns into {what} failed: {os.strerror(errno)}")


def _write_sysctl(path: str, value: str) -> None:
    with open(path, "w") as f:  # opened by this thread: its namespace's /proc/sys/net
        f.write(value)


def _configure_in_namespaces(by_ns: dict[str, list[IfaceConfig]], errors: list[str]) -> None:
    """Thread body: enter each namespace, configure it, come back to where the thread began."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        for ns, configs in by_ns.items():
            try:
                fd = os.open(NETNS_DIR / ns, os.O_RDONLY)
            except OSError as err:
                errors.append(f"namespace {ns}: {err.strerror}")
                continue
            try:
                enter_netns(fd, f"namespace {ns}")
            except NetnsError as err:
                errors.append(str(err))
                continue
            finally:
                os.close(fd)
            try:
                _disable_ipv6(cfg.ifname for cfg in configs)
                _fast_arp_retry(cfg.ifname for cfg in configs)
                errors += _netlink(configs, loopback=True, where=f"namespace {ns} ")
                for cfg in configs:
                    if not cfg.tx_offload:
                        _tx_checksum_off(cfg.ifname, errors, ns)
            except Exception as err:  # keep going: report every namespace that failed
                errors.append(f"namespace {ns}: {err}")
    finally:
        try:
            enter_netns(home, "the root namespace")
        finally:
            os.close(home)


SIOCETHTOOL = 0x8946
ETHTOOL_STXCSUM = 0x17  # set transmit checksum offload (the kernel then drops TSO too)


def _tx_checksum_off(ifname: str, errors: list[str], ns: str) -> None:
    """Turn transmit checksum offload off on ``ifname`` (``ethtool -K IF tx off``), in the
    namespace the calling thread is in.

    Needed on the userspace datapath when packets leave by a tunnel: OVS 3.1 drops tunnelled
    packets that still carry offload flags (see docs/many-hosts.md).
    """
    value = array.array("I", [ETHTOOL_STXCSUM, 0])  # struct ethtool_value {cmd, data}
    request = struct.pack("16sP16x", ifname.encode(), value.buffer_info()[0])  # struct ifreq
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            fcntl.ioctl(sock.fileno(), SIOCETHTOOL, request)
    except OSError as err:
        errors.append(f"namespace {ns}: turning transmit checksum offload off on {ifname}: "
                      f"{err.strerror}")


def _disable_ipv6(ifnames: Iterable[str]) -> None:
    """No IPv6 on our interfaces (only theirs: an attached namespace keeps its own settings)."""
    for ifname in ifnames:
        # missing: no IPv6 in this kernel, or no such interface (which _netlink reports)
        with contextlib.suppress(FileNotFoundError):
            _write_sysctl(f"/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6", "1")


def _fast_arp_retry(ifnames: Iterable[str]) -> None:
    """Retry ARP every 100 ms, not every second, on our interfaces: the switch answers ARP
    itself, so only a request sent before the port's flows were in goes unanswered, and a
    container (or the host) that spoke that early must not wait a whole second."""
    for ifname in ifnames:
        with contextlib.suppress(FileNotFoundError):  # no such interface: reported elsewhere
            _write_sysctl(f"/proc/sys/net/ipv4/neigh/{ifname}/retrans_time_ms",
                          str(ARP_RETRY_MS))


def configure_namespaces(configs: Iterable[IfaceConfig]) -> None:
    """Set MAC, MTU, address, up and default route of interfaces inside their namespaces.

    Also brings ``lo`` up, disables IPv6 on the interfaces and makes ARP retry every 100 ms
    on them (see ``_fast_arp_retry``). One worker thread enters each
    namespace with setns (the calling thread never changes namespace) and sends all of its
    requests as one batch on one netlink socket, encoded with pyroute2's message classes:
    0.5 s for 400 namespaces, against 3 s with an ``IPRoute()`` per namespace.
    """
    by_ns: dict[str, list[IfaceConfig]] = {}
    for cfg in configs:
        if cfg.netns is None:
            raise NetnsError(f"interface {cfg.ifname}: no namespace given")
        by_ns.setdefault(cfg.netns, []).append(cfg)
    if not by_ns:
        return
    errors: list[str] = []
    worker = threading.Thread(
        target=_configure_in_namespaces, args=(by_ns, errors), name="switchboard-netns"
    )
    worker.start()
    worker.join()
    if errors:
        raise NetnsError(_summary("configuring namespaces", errors))


def configure_host_interfaces(configs: Iterable[IfaceConfig]) -> None:
    """MAC, MTU, address and up for interfaces of the root namespace (host legs).

    ARP is retried every 100 ms on them (see ``_fast_arp_retry``).
    """
    configs = list(configs)
    if not configs:
        return
    _fast_arp_retry(cfg.ifname for cfg in configs)
    errors = _netlink(configs, loopback=False, where="")
    if errors:
        raise NetnsError(_summary("configuring host interfaces", errors))


def _summary(what: str, errors: list[str], limit: int = 10) -> str:
    more = f" (and {len(errors) - limit} more)" if len(errors) > limit else ""
    return f"{what} failed: " + "; ".join(errors[:limit]) + more
