"""A VIP with no passing instance refuses new connections at once, with policies present.

Real OVS, Consul, namespaces and curl. The only instance runs no server, so its check never
passes; its namespace also blackholes every client subnet and the host legs, so a refusal can
only come from the switch (through the host's closed port), never from the instance's kernel.

curl's exit status tells the outcome: 7 is a refused connection (a reset came back), 28 a
time-out (nothing came back).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import Switchboard, sh, wait_until

pytestmark = pytest.mark.integration

REFUSED, TIMED_OUT = 7, 28
TOPO, SERVICE, VIP = "sbt-vref", "sbt-vrefapi", "10.232.81.100"
HOST_ONLY, HOST_VIP = "sbt-vrefh", "10.232.91.100"  # only `to: host` policies

POLICED = f"""
name: {TOPO}
networks:
  n: {{subnet: 10.232.81.0/24}}
  m: {{subnet: 10.232.82.0/24}}
  s: {{subnet: 10.232.83.0/24}}
routers:
  r: {{networks: [n, m, s]}}
policies:
  - {{from: m, to: "service:{SERVICE}", ports: [tcp/8080]}}
  - {{from: s, to: m}}
  - {{from: n, to: host, ports: [tcp/9]}}
containers:
  cl: {{networks: {{n: {{ip: 10.232.81.10}}}}}}
  cl2: {{networks: {{m: {{ip: 10.232.82.10}}}}}}
  cl3: {{networks: {{s: {{ip: 10.232.83.10}}}}}}
  api-1:
    networks: {{n: {{ip: 10.232.81.20}}}}
    command: exec sleep infinity
    services: [{{name: {SERVICE}, port: 8080, check: {{tcp: 8080, interval: 1s}}}}]
services:
  {SERVICE}: {{vip: {VIP}, port: 80}}
"""

TO_HOST_ONLY = f"""
name: {HOST_ONLY}
networks:
  n: {{subnet: 10.232.91.0/24}}
  m: {{subnet: 10.232.92.0/24}}
routers:
  r: {{networks: [n, m]}}
policies:
  - {{from: m, to: host, ports: [tcp/9]}}
containers:
  cl: {{networks: {{n: {{ip: 10.232.91.10}}}}}}
  cl2: {{networks: {{m: {{ip: 10.232.92.10}}}}}}
  api-1:
    networks: {{n: {{ip: 10.232.91.20}}}}
    command: exec sleep infinity
    services: [{{name: {SERVICE}h, port: 8080, check: {{tcp: 8080, interval: 1s}}}}]
services:
  {SERVICE}h: {{vip: {HOST_VIP}, port: 80}}
"""


def curl_status(netns: str | None, vip: str) -> int:
    """curl's exit status for one connection to ``vip``:80 from ``netns`` (None: the host)."""
    where = ["ip", "netns", "exec", netns] if netns else []
    return subprocess.run([*where, "curl", "-s", "-o", "/dev/null", "-m", "3",
                           f"http://{vip}/"], timeout=30).returncode


def blackhole(netns: str, destinations: tuple[str, ...]) -> None:
    for dst in destinations:
        sh(f"ip netns exec {netns} ip route add blackhole {dst}", check=True)


def bring_up(sb: Switchboard, tmp: Path, text: str, topology: str,
             blackholed: tuple[str, ...]) -> None:
    sb.up(tmp, text, name=f"{topology}.yaml")
    blackhole(f"sb-{topology}-api-1", blackholed)


@pytest.fixture(scope="module")
def policed(switchboard: Switchboard, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[Switchboard]:
    tmp = tmp_path_factory.mktemp("vip-refusal")
    try:
        bring_up(switchboard, tmp, POLICED, TOPO,
                 ("10.232.82.0/24", "10.232.83.0/24", "10.232.81.10", "10.232.81.254"))
        yield switchboard
    finally:
        switchboard.cli("down", TOPO, check=False)


@pytest.fixture(scope="module")
def host_only(switchboard: Switchboard, tmp_path_factory: pytest.TempPathFactory
              ) -> Iterator[Switchboard]:
    tmp = tmp_path_factory.mktemp("vip-refusal-host")
    try:
        bring_up(switchboard, tmp, TO_HOST_ONLY, HOST_ONLY,
                 ("10.232.92.0/24", "10.232.91.10", "10.232.91.254"))
        yield switchboard
    finally:
        switchboard.cli("down", HOST_ONLY, check=False)


def refused_from(netns: str | None, vip: str, deadline: float = 20) -> bool:
    """True once a connection from ``netns`` to ``vip`` is refused (the instance's check
    must first be known to fail: until then the VIP sends to the instance itself)."""
    return wait_until(lambda: curl_status(netns, vip) == REFUSED, deadline, interval=0.5)


def test_vip_refuses_its_own_network_with_policies_present(policed):
    assert refused_from(f"sb-{TOPO}-cl", VIP), policed.log_tail()


def test_vip_refuses_a_routed_network_a_policy_lets_in(policed):
    assert refused_from(f"sb-{TOPO}-cl2", VIP), policed.log_tail()


def test_vip_refuses_the_host_with_policies_present(policed):
    assert refused_from(None, VIP), policed.log_tail()


def test_vip_refuses_its_own_instance_connecting_to_it(policed):
    """Hairpin: the failing instance itself, connecting to its own VIP."""
    assert refused_from(f"sb-{TOPO}-api-1", VIP), policed.log_tail()


def test_vip_stays_silent_to_a_routed_network_no_policy_lets_in(policed):
    """A network no policy lets reach the service learns nothing, not even 'refused'."""
    assert refused_from(f"sb-{TOPO}-cl", VIP)  # the switch already refuses the others
    assert curl_status(f"sb-{TOPO}-cl3", VIP) == TIMED_OUT


def test_vip_refuses_every_network_with_only_to_host_policies(host_only):
    for netns in (f"sb-{HOST_ONLY}-cl", f"sb-{HOST_ONLY}-cl2", None):
        assert refused_from(netns, HOST_VIP), f"from {netns or 'the host'}"
