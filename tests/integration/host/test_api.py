"""The Python API (the seed's shape) on the same engine as `switchboard up`."""

from __future__ import annotations

import json

import pytest

from switchboard.api import Container, Discoverer, Registry, VirtualNetwork, VirtualNIC
from tests.harness import Switchboard, sh, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture()
def vnet(switchboard: Switchboard):
    net = VirtualNetwork("sbt-api-vnet", "10.231.96.0/24", prefix=switchboard.prefix)
    yield net
    net.delete()


def test_seed_api_network_nic_container_registry_and_discoverer(switchboard, vnet):
    vnic = VirtualNIC("my-vnic", vnet)
    assert vnic.ip in vnet.subnet and vnic.ip != vnet.gateway
    server = Container("my-container", vnet, vnic, command="python3 -m http.server 8080")
    server.start()
    client_nic = VirtualNIC("client-nic", vnet)
    client = Container("client", vnet, client_nic)
    client.start()
    assert client_nic.ip != vnic.ip

    link = json.loads(server.exec("ip", "-j", "addr", "show", "eth0").stdout)[0]
    assert link["address"] == vnic.mac
    assert any(a["local"] == str(vnic.ip) for a in link["addr_info"])
    assert client.exec("ping", "-c", "1", "-W", "1", str(vnic.ip)).returncode == 0

    # It is a topology like any other: `switchboard status` shows it.
    status = switchboard.status("sbt-api-vnet")
    assert {r["container"] for r in status["containers"]} == {"my-container", "client"}

    registry = Registry("sbt-my-registry")
    discoverer = Discoverer("my-discoverer", registry)
    try:
        registry.register("sbtest-my-service", str(vnic.ip), "8080")
        services = discoverer.discover()
        endpoints = services["sbtest-my-service"]
        assert [(e.address, e.port) for e in endpoints] == [(str(vnic.ip), 8080)]
        assert wait_until(
            lambda: discoverer.resolve("sbtest-my-service") == [(str(vnic.ip), 8080)], 5)
        assert wait_until(lambda: client.exec(
            "curl", "-sf", "-m", "2", f"http://{vnic.ip}:8080/").returncode == 0, 10)
    finally:
        registry.deregister()
    assert "sbtest-my-service" not in discoverer.discover()


def test_stopping_a_container_removes_only_it(switchboard, vnet):
    a = Container("a", vnet, VirtualNIC("a-nic", vnet))
    b = Container("b", vnet, VirtualNIC("b-nic", vnet))
    a.start()
    b.start()
    b.stop()
    namespaces = sh("ip netns list").stdout
    assert a.netns in namespaces and b.netns not in namespaces


def test_a_placeholder_port_is_a_clear_error():
    with pytest.raises(ValueError, match="'my-port'"):
        Registry("sbt-my-registry").register("my-service", "my-address", "my-port")
