"""Hairpin on real OVS: an instance that connects to its own service's VIP, with real curl.

Each instance runs an HTTP server answering with its name. From inside each instance, curl
opens 60 new connections to the VIP: the switch balances some of them to the instance
itself (the chance that it never does is (2/3)^60), and every one must be answered.
"""

from __future__ import annotations

import subprocess
from collections import Counter
from collections.abc import Iterator

import pytest

from tests.harness import Switchboard, wait_until
from tests.integration.host.test_vip import SERVER, SERVER_FILE

pytestmark = pytest.mark.integration

TOPO, SERVICE, VIP = "sbt-hp", "sbt-hpweb", "10.243.2.100"
INSTANCES = ("hp-1", "hp-2", "hp-3")
TRIES = 60


def topology(server: str) -> str:
    instances = "".join(f"""
  {name}:
    networks: {{back: {{ip: 10.243.2.1{i}}}}}
    command: python3 {server} {name} 8080
    services: [{{name: {SERVICE}, port: 8080, check: {{tcp: 8080, interval: 1s}}}}]"""
                        for i, name in enumerate(INSTANCES, start=1))
    return f"""
name: {TOPO}
networks:
  front: {{subnet: 10.243.1.0/24}}
  back: {{subnet: 10.243.2.0/24}}
routers:
  core: {{networks: [front, back]}}
policies:
  - {{from: front, to: "service:{SERVICE}"}}
containers:
  client: {{networks: {{front: {{ip: 10.243.1.10}}}}}}{instances}
services:
  {SERVICE}: {{vip: {VIP}, port: 80}}
"""


def curl_vip(netns: str, tries: int = TRIES) -> list[str]:
    """The answer of each of ``tries`` curl runs to the VIP from ``netns`` (``error N``: curl
    failed with exit status N)."""
    script = (f'for i in $(seq {tries}); do out=$(curl -s -m 2 http://{VIP}/) '
              f'&& echo "$out" || echo "error $?"; done')
    out = subprocess.run(["ip", "netns", "exec", netns, "sh", "-c", script],
                         capture_output=True, text=True, timeout=tries * 3 + 30, check=True)
    return out.stdout.split("\n")[:tries]


@pytest.fixture(scope="module")
def hairpin(switchboard: Switchboard, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[Switchboard]:
    tmp = tmp_path_factory.mktemp("hairpin")
    server = tmp / SERVER_FILE
    server.write_text(SERVER)
    try:
        switchboard.up(tmp, topology(str(server)))

        def all_serve() -> bool:
            return set(curl_vip(f"sb-{TOPO}-client", 20)) == set(INSTANCES)
        assert wait_until(all_serve, 30, interval=0.5), switchboard.log_tail()
        yield switchboard
    finally:
        switchboard.cli("down", TOPO, check=False)


@pytest.mark.parametrize("instance", INSTANCES)
def test_instance_reaches_its_own_vip_whichever_instance_is_chosen(hairpin, instance):
    seen = Counter(curl_vip(f"sb-{TOPO}-{instance}"))
    assert sum(seen[name] for name in INSTANCES) == TRIES, seen  # no error at all
    assert seen[instance] > 0, f"never balanced to itself: {seen}"

