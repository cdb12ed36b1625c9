"""A lab's names, addresses and directories: what each simulated host is called and where its
files live. Pure: nothing here touches the machine."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

DEFAULT_NAME = "sblab"  # namespaces sblab-ul, sblab-h1, ...; containers sblab-h1-*
CONTROL_SUBNET = "10.99.0.0/24"  # Consul binds here (plain kernel veth ul0)
TUNNEL_SUBNET = "10.99.1.0/24"  # VXLAN underlay (OVS bridge sb-ul, or kernel veth ul1)
MAX_SERVERS = 3  # h1..h3 are Consul servers, further hosts clients
STATE_ROOT = Path("/var/lib/switchboard/lab")
RUN_ROOT = Path("/run/switchboard/lab")
NETNS_DIR = Path("/run/netns")
UNDERLAY_BRIDGE = "br0"  # the Linux bridge inside <name>-ul
NAME_ENV = "SWITCHBOARD_LAB_NAME"


class LabError(Exception):
    """A failure the user can act on: the message is one sentence that says what to do."""


def lab_name() -> str:
    """The lab's name: ``SWITCHBOARD_LAB_NAME`` or ``sblab`` (tests use their own)."""
    return os.environ.get(NAME_ENV) or DEFAULT_NAME


@dataclass
class Host:
    """One simulated host: its namespace, underlay addresses and directories."""

    name: str  # h1, h2, ...
    index: int
    netns: str
    control_ip: str
    tunnel_ip: str
    prefixlen_control: int
    prefixlen_tunnel: int
    server: bool
    state_dir: str
    run_dir: str
    pids: dict[str, int] = field(default_factory=dict)
    killed: bool = False
    unplugged: bool = False  # links down, software running (`lab unplug`: a partition)
    reschedule_after: float | None = None  # the controller's --reschedule-after

    @property
    def log_dir(self) -> str:
        return f"{self.state_dir}/log"

    @property
    def ovs_run(self) -> str:
        return f"{self.run_dir}/ovs"

    @property
    def container_prefix(self) -> str:
        return f"{self.netns}-"

    def log(self, part: str) -> str:
        """The log file of a part: ovsdb-server, ovs-vswitchd, consul, controller, start-host."""
        return f"{self.log_dir}/{part}.log"

    def env(self) -> dict[str, str]:
        """The environment that makes OVS tools, Consul and ``switchboard`` act on this host."""
        return {
            "OVS_RUNDIR": self.ovs_run,
            "OVS_DBDIR": f"{self.state_dir}/ovs",
            "OVS_LOGDIR": self.log_dir,
            "OVS_SYSCONFDIR": f"{self.state_dir}/etc",
            "SWITCHBOARD_STATE": self.state_dir,
            "SWITCHBOARD_LOGS": self.log_dir,
            "SWITCHBOARD_RUN": self.run_dir,
            "SWITCHBOARD_OVSDB": f"unix:{self.ovs_run}/db.sock",
            "SWITCHBOARD_HOST_ID": self.name,
            "SWITCHBOARD_TUNNEL_IP": self.tunnel_ip,
            "SWITCHBOARD_NETNS_PREFIX": self.container_prefix,
        } | ({} if self.reschedule_after is None
             else {"SWITCHBOARD_RESCHEDULE_AFTER": f"{self.reschedule_after:g}"})

    def to_json(self) -> dict[str, object]:
        return asdict(self)


@dataclass
class Lab:
    """The whole lab: its name, subnets, datapath and hosts (what the state file holds)."""

    name: str
    control_subnet: str
    tunnel_subnet: str
    datapath: str  # netdev (userspace) or system (kernel module loaded)
    hosts: list[Host]
    created: float = 0.0

    @property
    def underlay_netns(self) -> str:
        return f"{self.name}-ul"

    @property
    def state_dir(self) -> Path:
        return STATE_ROOT / self.name

    @property
    def run_dir(self) -> Path:
        return RUN_ROOT / self.name

    def host(self, name: str) -> Host:
        for h in self.hosts:
            if h.name == name:
                return h
        known = ", ".join(h.name for h in self.hosts)
        raise LabError(f"lab {self.name} has no host {name!r}; its hosts are {known}")

    @property
    def servers(self) -> list[Host]:
        return [h for h in self.hosts if h.server]

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "control_subnet": self.control_subnet,
                "tunnel_subnet": self.tunnel_subnet, "datapath": self.datapath,
                "created": self.created, "hosts": [h.to_json() for h in self.hosts]}

    @classmethod
    def from_json(cls, data: dict) -> Lab:
        hosts = [Host(**h) for h in data["hosts"]]
        return cls(name=data["name"], control_subnet=data["control_subnet"],
                   tunnel_subnet=data["tunnel_subnet"], datapath=data["datapath"],
                   hosts=hosts, created=data.get("created", 0.0))


def plan_lab(name: str, count: int, control_subnet: str = CONTROL_SUBNET,
             tunnel_subnet: str = TUNNEL_SUBNET, datapath: str = "netdev",
             reschedule_after: float | None = None) -> Lab:
    """The lab ``lab up --hosts count`` makes: host K gets the K-th address of each subnet."""
    if count < 1:
        raise LabError("--hosts must be at least 1")
    try:
        control = ipaddress.IPv4Network(control_subnet)
        tunnel = ipaddress.IPv4Network(tunnel_subnet)
    except ValueError as exc:
        raise LabError(f"bad subnet: {exc}") from None
    if control.overlaps(tunnel):
        raise LabError(f"the control subnet {control} and the tunnel subnet {tunnel} overlap")
    room = min(control.num_addresses, tunnel.num_addresses) - 2
    if count > room:
        raise LabError(f"{count} hosts do not fit in {control} and {tunnel} ({room} at most)")
    hosts = []
    for k in range(1, count + 1):
        host = f"h{k}"
        hosts.append(Host(
            name=host, index=k, netns=f"{name}-{host}",
            control_ip=str(control.network_address + k), tunnel_ip=str(tunnel.network_address + k),
            prefixlen_control=control.prefixlen, prefixlen_tunnel=tunnel.prefixlen,
            server=k <= MAX_SERVERS, state_dir=str(STATE_ROOT / name / host),
            run_dir=str(RUN_ROOT / name / host), reschedule_after=reschedule_after,
        ))
    return Lab(name=name, control_subnet=str(control), tunnel_subnet=str(tunnel),
               datapath=datapath, hosts=hosts)
