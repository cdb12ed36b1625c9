"""Checks before ``switchboard controller`` starts: one daemon per bridge, OVSDB answers, the
OpenFlow port is free. Each failure is a :class:`StartError` whose text is one line.

The bridge lock is an ``fcntl.flock`` on ``<run dir>/controller-<bridge>.lock`` holding the
owner's PID. The kernel releases it when the process dies, however it dies (SIGKILL too), so
a lock is never stale.
"""

from __future__ import annotations

import errno
import fcntl
import ipaddress
import os
import socket
from pathlib import Path

from sbcore.state import reach

DEFAULT_RUN_DIR = Path("/run/switchboard")
# ovsdb.bridge.DEFAULT_DB, not imported from there: ovsdbapp is slow and noisy to import, and
# a refusal should be one line, at once.
DEFAULT_OVSDB = "unix:/var/run/openvswitch/db.sock"
DEFAULT_METRICS = "127.0.0.1:9469"  # /metrics and /healthz (controller.daemon.monitor)


class StartError(RuntimeError):
    """The daemon must not start; the message says why and what to do."""


def lock_bridge(bridge: str, run_dir: Path = DEFAULT_RUN_DIR) -> int:
    """Take the bridge's lock for the life of this process; its fd (keep it open).

    StartError naming the bridge and the PID holding it when another daemon runs on it.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / f"controller-{bridge}.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        if exc.errno not in (errno.EAGAIN, errno.EACCES):
            raise StartError(f"cannot lock {path}: {exc.strerror}") from None
        raise StartError(f"a switchboard controller already runs for bridge {bridge} "
                         f"(pid {holder}, lock {path}); not starting a second one") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def check_of_port(host: str, port: int) -> None:
    """StartError when something already listens on the OpenFlow port (os-ken would fail
    silently in its listener thread)."""
    if why := bind_error(host, port):
        raise StartError(
            f"the OpenFlow port {host}:{port} is in use ({why}); another controller or "
            "program listens there: choose another with --of-port (SWITCHBOARD_OF_PORT)"
        )


def bind_error(host: str, port: int) -> str | None:
    """Why a TCP listener cannot bind ``host:port`` now (lower case), None when it can."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            return (exc.strerror or str(exc)).lower()
    return None


def parse_metrics(text: str) -> tuple[str, int] | None:
    """``IP:PORT`` or ``[V6]:PORT`` -> (ip, port); None for ``off``. StartError naming the
    value when it is neither."""
    if text.strip().lower() in ("", "off", "none", "no"):
        return None
    host, sep, port = text.strip().rpartition(":")
    bracketed = host.startswith("[") and host.endswith("]")
    host = host[1:-1] if bracketed else host
    try:
        number = int(port)
        ipaddress.ip_address(host)
        if not sep or not 0 <= number <= 65535 or (":" in host and not bracketed):
            raise ValueError
    except ValueError:
        raise StartError(f"--metrics {text!r}: expected IP:PORT (e.g. {DEFAULT_METRICS}, "
                         "[::1]:9469, 0.0.0.0:9469) or off") from None
    return host, number


def check_metrics(text: str) -> None:
    """StartError when the --metrics address is malformed or something listens there."""
    address = parse_metrics(text)
    if address is None:
        return
    if why := bind_error(*address):
        raise StartError(
            f"the metrics address {text} cannot be used ({why}); another daemon or "
            "program listens there: choose another with --metrics (SWITCHBOARD_METRICS), "
            "or --metrics off"
        )


def consul_warning(address: str, timeout: float = 2.0) -> str | None:
    """The line to warn with when the Consul agent does not answer (the daemon starts all
    the same: it leaves the data path as it is and catches up when the agent answers)."""
    client = reach.consul_client(address)
    client.http.connections_timeout = timeout
    try:
        client.status.leader()
    except reach.Unreachable as exc:
        return (f"{exc}; the controller runs meanwhile, leaves the data path as it is and "
                "catches up when the agent answers")
    except Exception:  # noqa: BLE001 - it answers (an error, no leader): the daemon says more
        return None
    return None


def preflight(bridge: str, ovsdb: str, of_host: str, of_port: int,
              run_dir: Path = DEFAULT_RUN_DIR) -> int:
    """Every check, in order; the bridge lock's fd. StartError or reach.Unreachable."""
    fd = lock_bridge(bridge, run_dir)
    try:
        reach.check_ovsdb(ovsdb)
        check_of_port(of_host, of_port)
    except Exception:
        os.close(fd)
        raise
    return fd


def underlay_mtu(tunnel_ip: str) -> int:
    """The MTU of the interface that holds ``tunnel_ip``: what the tunnel's packets may be.

    StartError when no interface of this host has that address (a typo, or the set-up that
    gives the host its underlay address has not run).
    """
    import ipaddress
    import json
    import subprocess

    try:
        ipaddress.IPv4Address(tunnel_ip)
    except ValueError:
        raise StartError(f"--tunnel-ip {tunnel_ip!r} is not an IPv4 address") from None
    out = subprocess.run(["ip", "-j", "-4", "addr", "show"], capture_output=True, text=True,
                         check=False).stdout
    for link in json.loads(out or "[]"):
        if any(a.get("local") == tunnel_ip for a in link.get("addr_info", [])):
            return int(link.get("mtu") or 1500)
    raise StartError(f"--tunnel-ip {tunnel_ip}: no interface of this host has that address; "
                     "give the host its underlay address first (see docs/many-hosts.md)")
