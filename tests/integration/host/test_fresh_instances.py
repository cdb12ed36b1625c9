"""An instance is in other containers' answers once it answers, never before, with real
parts: the daemon, OVS, the Consul agent, ``dig`` inside a container. The readiness probe
runs inside the container's namespace and leaves the caller in its own."""

from __future__ import annotations

import contextlib
import os
import threading
import time

import consul
import pytest

from discovery.catalognames import CatalogNames, consul_services
from discovery.instances import CheckSpec
from discovery.readiness import check_passes, passes_in_netns
from tests.harness import Switchboard, in_ns, wait_until

pytestmark = pytest.mark.integration

TOPOLOGY = "sbt-fresh"
NET = "10.237.40"
SERVICE = "sbtfresh-api"
TOPO = f"""
name: {TOPOLOGY}
networks:
  lan: {{subnet: {NET}.0/24}}
containers:
  api-1:
    networks: {{lan: {{ip: {NET}.11}}}}
    command: python3 -m http.server 8080
    services: [{{name: {SERVICE}, port: 8080, check: {{tcp: 8080, interval: 1s}}}}]
  api-2:
    networks: {{lan: {{ip: {NET}.12}}}}
    command: sleep 600
    services: [{{name: {SERVICE}, port: 8080, check: {{tcp: 8080, interval: 1s}}}}]
  client:
    networks: {{lan: {{ip: {NET}.10}}}}
"""


def dig(name: str = SERVICE) -> set[str]:
    out = in_ns(f"sb-{TOPOLOGY}-client", f"dig +short +time=1 +tries=1 {name}.service.consul")
    return {line.strip() for line in out.stdout.splitlines() if line.strip()}


def own_netns() -> tuple[int, int]:
    """The network namespace of the calling thread."""
    st = os.stat(f"/proc/self/task/{threading.get_native_id()}/ns/net")
    return st.st_dev, st.st_ino


@pytest.fixture(scope="module")
def fresh_topology(switchboard: Switchboard, tmp_path_factory: pytest.TempPathFactory):
    switchboard.up(tmp_path_factory.mktemp("fresh"), TOPO)
    try:
        yield switchboard
    finally:
        switchboard.cli("down", TOPOLOGY, check=False, timeout=120)


def test_an_instance_that_does_not_answer_is_never_announced(fresh_topology):
    assert wait_until(lambda: dig() == {f"{NET}.11"}, 15), dig()
    sid = f"sb.{TOPOLOGY}.api-2.{SERVICE}"
    checks = consul.Consul().agent.checks()
    assert checks[f"service:{sid}"]["Status"] == "critical"  # registered, not passing
    deadline = time.monotonic() + 3  # a few check intervals: it never shows up
    while time.monotonic() < deadline:
        assert f"{NET}.12" not in dig()
        time.sleep(0.2)


def test_the_readiness_probe_runs_in_the_container_and_comes_back(fresh_topology):
    assert wait_until(lambda: dig() == {f"{NET}.11"}, 15)
    listening = CheckSpec("tcp", f"{NET}.11:8080", "1s")
    silent = CheckSpec("tcp", f"{NET}.12:8080", "1s")
    loopback = CheckSpec("tcp", "127.0.0.1:8080", "1s")  # only the container's own loopback
    home = own_netns()
    assert passes_in_netns(f"sb-{TOPOLOGY}-api-1", listening)
    assert passes_in_netns(f"sb-{TOPOLOGY}-api-1", loopback)  # api-1's own loopback...
    assert not passes_in_netns(f"sb-{TOPOLOGY}-api-2", loopback)  # ...not the host's
    assert not passes_in_netns(f"sb-{TOPOLOGY}-api-2", silent)
    assert not passes_in_netns(f"sb-{TOPOLOGY}-no-such-container", listening)
    assert own_netns() == home  # the calling thread is back in the host's namespace
    assert check_passes(listening)  # from the host too, through the switch


def test_the_catalog_names_follow_the_real_agent():
    """The set the forwarder skips health reads by: a name is absent only while Consul's
    catalog holds no service of that name, and seen within a blocking query's round trip."""
    agent = consul.Consul()
    name = f"sbt-catalog-{os.getpid()}"
    names = CatalogNames(consul_services(agent))
    names.start()
    try:
        assert wait_until(lambda: names.lacks(name) and not names.lacks("consul"), 5)
        agent.agent.service.register(name, service_id=name, address="127.0.0.1", port=1)
        assert wait_until(lambda: not names.lacks(name.upper()), 10)
        agent.agent.service.deregister(name)
        assert wait_until(lambda: names.lacks(name), 10)
    finally:
        names.stop()
        with contextlib.suppress(consul.ConsulException):  # gone already when it passed
            agent.agent.service.deregister(name)
