"""The image benchmarks' baseline: Podman on a bridge network of its own, through netavark
(Podman's own network stack), the same image as Switchboard runs.

Podman is given a containers.conf of the benchmark's own (``CONTAINERS_CONF``): the settings
scripts/install-deps.sh writes for this kind of host, with ``network_backend = "netavark"``
and the network's definition in the run's own directory, so the host's Podman settings (its
default backend, CNI, included) are left as they are. Everything netavark changes on the
host is put back when the network goes: the containers and the network (with its bridge),
the iptables and ip6tables chains it adds (those named ``NETAVARK...`` and the rules that
jump to them; other rules, added meanwhile by others, stay) and ``ip_forward``.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType

FORWARD_SYSCTL = Path("/proc/sys/net/ipv4/ip_forward")
TABLES = ("filter", "nat", "mangle")
SAVERS = {"iptables": "iptables-save", "ip6tables": "ip6tables-save"}

CONF = """# the image benchmarks' Podman: netavark's bridge (bench/netavark.py)
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]

[network]
network_backend = "netavark"
network_config_dir = "{networks}"

[engine]
cgroup_manager = "cgroupfs"
runtime = "runc"
events_logger = "file"
"""


def _save(tool: str, table: str) -> list[str]:
    done = subprocess.run([SAVERS[tool], "-t", table], capture_output=True, text=True,
                          check=False)
    return [line for line in done.stdout.splitlines() if line and not line.startswith("#")]


def netavark_lines(lines: Iterable[str]) -> tuple[list[str], list[str]]:
    """The chains named NETAVARK... and the rules in or to them, of ``*-save`` lines. Pure."""
    lines = list(lines)
    chains = [line[1:].split()[0] for line in lines
              if line.startswith(":") and line[1:].startswith("NETAVARK")]
    rules = [line for line in lines if line.startswith("-A ") and "NETAVARK" in line]
    return chains, rules


class Firewall:
    """The host's forwarding flag and netavark's chains, to put back as they were."""

    def __init__(self) -> None:
        self.forwarding = FORWARD_SYSCTL.read_text()
        self.before = {(tool, table): set(_save(tool, table))
                       for tool in SAVERS for table in TABLES}

    def restore(self) -> None:
        """Remove the netavark rules and chains made since, then set ``ip_forward`` back."""
        for (tool, table), before in self.before.items():
            chains, rules = netavark_lines(line for line in _save(tool, table)
                                           if line not in before)
            for rule in reversed(rules):
                subprocess.run([tool, "-t", table, "-D", *shlex.split(rule)[1:]],
                               capture_output=True, check=False)
            for flag in ("-F", "-X"):
                for chain in chains:
                    subprocess.run([tool, "-t", table, flag, chain], capture_output=True,
                                   check=False)
        FORWARD_SYSCTL.write_text(self.forwarding)


class NetavarkPodman:
    """Podman with netavark, and one bridge network of its own for the run (a context)."""

    def __init__(self, base: Path, network: str, subnet: str, label: str) -> None:
        self.base, self.network, self.subnet, self.label = base, network, subnet, label
        networks = base / "networks"
        networks.mkdir(parents=True, exist_ok=True)
        conf = base / "containers.conf"
        conf.write_text(CONF.format(networks=networks))
        self.env = {**os.environ, "CONTAINERS_CONF": str(conf)}
        self.firewall: Firewall | None = None

    def __call__(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["podman", *args], env=self.env, capture_output=True, text=True,
                              timeout=timeout, check=False)

    def __enter__(self) -> NetavarkPodman:
        self.firewall = Firewall()
        backend = self("info", "--format", "{{.Host.NetworkBackend}}").stdout.strip()
        if backend != "netavark":
            raise RuntimeError(f"Podman's network backend is {backend or 'unknown'}, not "
                               "netavark (is netavark installed? scripts/install-deps.sh)")
        made = self("network", "create", "--driver", "bridge", "--subnet", self.subnet,
                    "--disable-dns", self.network)
        if made.returncode != 0:
            self.__exit__(None, None, None)
            raise RuntimeError(f"podman network create: {made.stderr.strip()}")
        return self

    def run(self, names: list[str], image: str, args: tuple[str, ...] = (),
            parallel: int = 16) -> list[str]:
        """``podman run -d`` a container of ``image`` on the network for each name,
        ``parallel`` at a time; their IDs."""
        def one(name: str) -> str:
            done = self("run", "-d", "--rm", "--label", self.label, "--name", name,
                        "--network", self.network, image, *args)
            if done.returncode != 0:
                raise RuntimeError(f"podman run {name}: {done.stderr.strip()}")
            return done.stdout.strip()
        with ThreadPoolExecutor(parallel) as pool:
            return list(pool.map(one, names))

    def addresses(self, ids: list[str]) -> list[str]:
        """The address of each container on the network."""
        found = json.loads(self("inspect", *ids).stdout)
        return [c["NetworkSettings"]["Networks"][self.network]["IPAddress"] for c in found]

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            left = self("ps", "-aq", "--filter", f"label={self.label}").stdout.split()
            if left:
                self("rm", "--force", "--time", "0", *left)
            info = self("network", "inspect", self.network)
            bridge = ""
            if info.returncode == 0:
                bridge = json.loads(info.stdout or "[{}]")[0].get("network_interface") or ""
            self("network", "rm", "--force", self.network)
            if bridge:
                subprocess.run(["ip", "link", "del", bridge], capture_output=True, check=False)
        finally:
            if self.firewall is not None:
                self.firewall.restore()
