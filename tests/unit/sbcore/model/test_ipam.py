"""IPAM: stable, deterministic addresses that never collide with reserved ones."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest

from sbcore.model import Topology, TopologyError, load_topology
from sbcore.model.ipam import allocate, host_leg_address, reserved_addresses

A = IPv4Address

BASE = """\
name: t
networks:
  front: {subnet: 10.10.1.0/24}
  back: {subnet: 10.10.2.0/24}
"""


def topo(containers: str, services: str = "", networks: str = BASE) -> Topology:
    return load_topology(networks + "containers:\n" + containers + services)


def test_ipam_gives_lowest_free_addresses_in_file_order() -> None:
    t = topo("  a: {networks: [back]}\n  b: {networks: [back, front]}\n")
    assert allocate(t) == {
        ("a", "back"): A("10.10.2.2"),
        ("b", "back"): A("10.10.2.3"),
        ("b", "front"): A("10.10.1.2"),
    }


def test_reapplying_with_previous_allocation_changes_nothing() -> None:
    t = topo("  a: {networks: [back]}\n  b: {networks: [back, front]}\n")
    first = allocate(t)
    assert allocate(t, first) == first
    assert allocate(t, allocate(t, first)) == first


def test_removing_a_container_does_not_move_the_others() -> None:
    before = allocate(
        topo("  a: {networks: [back]}\n  b: {networks: [back]}\n  c: {networks: [back]}\n")
    )
    after = allocate(topo("  a: {networks: [back]}\n  c: {networks: [back]}\n"), before)
    assert after == {("a", "back"): before["a", "back"], ("c", "back"): before["c", "back"]}


def test_adding_a_container_does_not_move_the_others() -> None:
    before = allocate(topo("  b: {networks: [back]}\n  c: {networks: [back]}\n"))
    # A new container listed first gets a new address; the others keep theirs.
    after = allocate(
        topo("  a: {networks: [back]}\n  b: {networks: [back]}\n  c: {networks: [back]}\n"),
        before,
    )
    assert after["b", "back"] == before["b", "back"]
    assert after["c", "back"] == before["c", "back"]
    assert after["a", "back"] == A("10.10.2.4")


def test_reused_freed_address_goes_to_new_container() -> None:
    before = allocate(topo("  a: {networks: [back]}\n  b: {networks: [back]}\n"))
    after = allocate(topo("  b: {networks: [back]}\n  c: {networks: [back]}\n"), before)
    assert after == {("b", "back"): A("10.10.2.3"), ("c", "back"): A("10.10.2.2")}


def test_fixed_address_wins_over_a_previous_allocation() -> None:
    before = allocate(topo("  a: {networks: [back]}\n"))
    assert before["a", "back"] == A("10.10.2.2")
    t = topo("  a: {networks: [back]}\n  b: {networks: {back: {ip: 10.10.2.2}}}\n")
    after = allocate(t, before)
    assert after["b", "back"] == A("10.10.2.2")
    assert after["a", "back"] == A("10.10.2.3")


def test_previous_address_outside_a_changed_subnet_is_replaced() -> None:
    t = topo("  a: {networks: [back]}\n")
    assert allocate(t, {("a", "back"): A("10.99.0.7")}) == {("a", "back"): A("10.10.2.2")}


def test_previous_address_on_a_vip_or_host_leg_is_replaced() -> None:
    services = "services:\n  s: {vip: 10.10.2.2}\n"
    t = topo(
        "  a: {networks: [back], services: [{name: s, port: 80}]}\n  b: {networks: [back]}\n",
        services,
    )
    previous = {("a", "back"): A("10.10.2.2"), ("b", "back"): A("10.10.2.254")}
    assert allocate(t, previous) == {("a", "back"): A("10.10.2.3"), ("b", "back"): A("10.10.2.4")}


def test_ipam_skips_gateway_fixed_addresses_and_vips() -> None:
    networks = "name: t\nnetworks:\n  back: {subnet: 10.10.2.0/24, gateway: 10.10.2.2}\n"
    t = topo(
        "  f: {networks: {back: {ip: 10.10.2.3}}, services: [{name: s, port: 80}]}\n"
        "  a: {networks: [back]}\n  b: {networks: [back]}\n",
        "services:\n  s: {vip: 10.10.2.5}\n",
        networks,
    )
    assert allocate(t) == {
        ("f", "back"): A("10.10.2.3"),
        ("a", "back"): A("10.10.2.1"),
        ("b", "back"): A("10.10.2.4"),
    }


def test_two_containers_with_the_same_previous_address_are_separated() -> None:
    t = topo("  a: {networks: [back]}\n  b: {networks: [back]}\n")
    same = {("a", "back"): A("10.10.2.9"), ("b", "back"): A("10.10.2.9")}
    assert allocate(t, same) == {("a", "back"): A("10.10.2.9"), ("b", "back"): A("10.10.2.2")}


def test_full_subnet_raises_a_topology_error_naming_network_and_container() -> None:
    # A /29 has 6 host addresses: gateway .1, host leg .6, leaving .2 to .5.
    networks = "name: t\nnetworks:\n  front: {subnet: 10.10.1.0/29}\n"
    names = ["a", "b", "c", "d", "x"]
    t = topo("".join(f"  {n}: {{networks: [front]}}\n" for n in names), networks=networks)
    with pytest.raises(TopologyError) as info:
        allocate(t)
    assert str(info.value) == (
        "network 'front' (10.10.1.0/29) has no free address for container 'x'; use a larger subnet"
    )


def test_host_leg_is_the_highest_free_host_address() -> None:
    t = topo("  a: {networks: [back]}\n")
    assert host_leg_address(t, "back") == A("10.10.2.254")
    assert host_leg_address(t, "front") == A("10.10.1.254")


def test_host_leg_skips_fixed_addresses_gateway_and_vips() -> None:
    networks = "name: t\nnetworks:\n  back: {subnet: 10.10.2.0/24, gateway: 10.10.2.254}\n"
    t = topo(
        "  a: {networks: {back: {ip: 10.10.2.253}}, services: [{name: s, port: 80}]}\n",
        "services:\n  s: {vip: 10.10.2.252}\n",
        networks,
    )
    assert host_leg_address(t, "back") == A("10.10.2.251")
    assert A("10.10.2.251") in reserved_addresses(t, "back")


def test_host_leg_is_never_given_to_a_container() -> None:
    networks = "name: t\nnetworks:\n  front: {subnet: 10.10.1.0/29}\n"
    t = topo("".join(f"  c{i}: {{networks: [front]}}\n" for i in range(4)), networks=networks)
    leg = host_leg_address(t, "front")
    assert leg == A("10.10.1.6")
    assert leg not in allocate(t).values()


def test_allocation_is_deterministic() -> None:
    text = "  a: {networks: [back, front]}\n  b: {networks: {front: {ip: 10.10.1.2}}}\n"
    assert allocate(topo(text)) == allocate(topo(text))
    assert allocate(topo(text))["a", "front"] == A("10.10.1.3")
