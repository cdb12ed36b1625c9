"""Each container's resolv.conf: ``/etc/netns/<netns>/resolv.conf``.

``ip netns exec`` bind-mounts the files of ``/etc/netns/<name>/`` over ``/etc`` for what it
runs, and container commands are started that way (see :mod:`plumbing.processes`), so a
container's resolver asks the host's address on its first network, where the daemon's DNS
forwarder listens (see :mod:`discovery.dnsproxy`). The host's own search domains and
options are kept, so names resolve as on the host, and ``service.consul`` is searched last.

Attached containers (``attach: pid``) belong to someone else: they get no file.
Contents are pure (:func:`resolv_conf`, :func:`wanted_files`); the rest is file I/O.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ipaddress import IPv4Address

    from sbcore.plan.hostplan import TopologyPlan

NETNS_ETC = Path("/etc/netns")
HOST_RESOLV_CONF = Path("/etc/resolv.conf")
MARK = "# Written by Switchboard"
SEARCH_CONSUL = "service.consul"


def resolv_conf(nameserver: IPv4Address, host_text: str, container: str) -> str:
    """A container's resolv.conf: our nameserver, the host's search list (the last ``search``
    or ``domain`` line, as glibc reads it) plus ``service.consul``, the host's options."""
    search: list[str] = []
    options: list[str] = []
    for line in host_text.splitlines():
        words = line.split()
        if not words:
            continue
        if words[0] in ("search", "domain"):
            search = [w for w in words[1:] if not w.startswith(("#", ";"))]
        elif words[0] == "options":
            options += words[1:]
    if SEARCH_CONSUL not in search:
        search.append(SEARCH_CONSUL)
    lines = [f"{MARK} for container {container}; removed with it.",
             f"nameserver {nameserver}", "search " + " ".join(search)]
    if options:
        lines.append("options " + " ".join(options))
    return "\n".join(lines) + "\n"


def wanted_files(plans: Iterable[TopologyPlan], host_text: str) -> dict[str, str]:
    """Namespace -> resolv.conf of every container Switchboard made (not the attached ones):
    the nameserver is the host's address on the container's first network."""
    files = {}
    for topo in plans:
        legs = {net.name: net.host_leg.ip for net in topo.networks}
        for c in topo.containers:
            if (c.attached and c.image is None) or not c.endpoints:
                continue
            leg = legs[c.endpoints[0].network]
            files[c.netns] = resolv_conf(leg, host_text, f"{topo.name}/{c.name}")
    return files


# --------------------------------------------------------------------------- I/O


def path_of(netns: str) -> Path:
    return NETNS_ETC / netns / "resolv.conf"


def host_text() -> str:
    """The host's resolv.conf (empty when unreadable). Only ever read."""
    try:
        return HOST_RESOLV_CONF.read_text()
    except OSError:
        return ""


def read(names: Iterable[str]) -> dict[str, str]:
    """Namespace -> its resolv.conf, for those of ``names`` that have one written by us."""
    found = {}
    for name in names:
        try:
            text = path_of(name).read_text()
        except OSError:
            continue
        if text.startswith(MARK):
            found[name] = text
    return found


def write(netns: str, text: str) -> None:
    """Write a namespace's resolv.conf in place: commands already running see the change
    (their bind mount holds the file's inode)."""
    path = path_of(netns)
    for attempt in range(2):  # another daemon may remove an empty /etc/netns meanwhile
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
            os.fchmod(fd, 0o644)  # whatever the daemon's umask: non-root commands read it
            break
        except FileNotFoundError:
            if attempt:
                raise
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.truncate()


def remove(netns: str) -> None:
    """Remove a namespace's resolv.conf and its folder (and /etc/netns when left empty)."""
    path = path_of(netns)
    path.unlink(missing_ok=True)
    for folder in (path.parent, NETNS_ETC):
        with contextlib.suppress(OSError):  # not empty, or already gone
            folder.rmdir()
