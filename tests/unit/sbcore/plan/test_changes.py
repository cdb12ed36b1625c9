"""The plan's diff: what `up` would change between the stored desired state and a file."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from sbcore.model import Topology, ipam, load_topology
from sbcore.plan.changes import diff, field_changes, render

SHOP = (Path(__file__).resolve().parents[4] / "topologies" / "shop.yaml").read_text()


@dataclass
class Side:
    topology: Topology
    allocation: ipam.Allocation
    placement: dict[str, str] = field(default_factory=dict)


def side(text: str, previous: Side | None = None, host: str = "h1") -> Side:
    topology = load_topology(text)
    allocation = ipam.allocate(topology, previous.allocation if previous else None)
    placement = dict(previous.placement) if previous else {}
    placement = {c: placement.get(c, host) for c in topology.containers}
    return Side(topology, allocation, placement)


STORED = side(SHOP)


def test_the_same_file_changes_nothing() -> None:
    found = diff(STORED, side(SHOP, STORED))
    assert found.is_empty()
    assert render(found)[0].startswith("topology shop: no changes")


def test_a_new_topology_adds_everything_and_allocates_its_addresses() -> None:
    found = diff(None, STORED)
    added = {(c.kind, c.name) for c in found.changes if c.action == "add"}
    assert added == {("network", "front"), ("network", "back"), ("router", "core"),
                     ("container", "web"), ("container", "api-1"), ("container", "api-2"),
                     ("service", "api"), ("service", "web")}
    assert [(a.container, a.new, a.fixed) for a in found.addresses] == [
        ("api-1", "10.10.2.2", False), ("api-2", "10.10.2.3", False),
        ("web", "10.10.1.10", True)]
    assert not found.effects


def test_an_added_container_gets_the_address_ipam_gives_it_after_the_kept_ones() -> None:
    edited = SHOP.replace("  api-2:", "  api-0:\n    networks: [back]\n  api-2:")
    new = side(edited, STORED)
    found = diff(STORED, new)
    assert [(c.kind, c.name, c.action) for c in found.changes] == [
        ("container", "api-0", "add")]
    # api-0 comes before api-2 in the file, yet api-2 keeps 10.10.2.3: api-0 gets .4
    assert [(a.container, a.network, a.old, a.new) for a in found.addresses] == [
        ("api-0", "back", None, "10.10.2.4")]
    assert new.allocation[("api-0", "back")].exploded == "10.10.2.4"


def test_a_changed_command_restarts_that_container_only() -> None:
    edited = SHOP.replace("command: python3 -m http.server 80\n",
                          "command: python3 -m http.server 81\n")
    found = diff(STORED, side(edited, STORED))
    [change] = found.changes
    assert (change.kind, change.name, change.action) == ("container", "web", "change")
    assert change.details == ('command: "python3 -m http.server 80" -> '
                              '"python3 -m http.server 81"',)
    assert [(e.container, e.effect) for e in found.effects] == [("web", "restart")]
    assert "containers that restart:" in render(found)


def test_a_removed_container_releases_its_address_and_stops_its_command() -> None:
    edited = SHOP[:SHOP.index("  api-2:")] + SHOP[SHOP.index("services:\n  api:"):]
    found = diff(STORED, side(edited, STORED))
    assert ("container", "api-2", "remove") in [(c.kind, c.name, c.action)
                                               for c in found.changes]
    assert [(a.container, a.old, a.new) for a in found.addresses] == [
        ("api-2", "10.10.2.3", None)]
    api = next(c for c in found.changes if c.kind == "service")
    assert (api.name, api.details) == ("api", ("instance api-2 removed",))


def test_a_network_mtu_change_replugs_its_containers_without_restarting_them() -> None:
    edited = SHOP.replace("subnet: 10.10.2.0/24", "subnet: 10.10.2.0/24\n    mtu: 1400")
    found = diff(STORED, side(edited, STORED))
    assert [(c.kind, c.name, c.details) for c in found.changes] == [
        ("network", "back", ("mtu: 1400 (new)",))]
    assert {(e.container, e.effect) for e in found.effects} == {("api-1", "replug"),
                                                                ("api-2", "replug")}
    assert not found.restarts()


def test_a_fixed_address_change_is_shown_and_replugs() -> None:
    edited = SHOP.replace("ip: 10.10.1.10", "ip: 10.10.1.20")
    found = diff(STORED, side(edited, STORED))
    assert [(a.container, a.old, a.new, a.fixed) for a in found.addresses] == [
        ("web", "10.10.1.10", "10.10.1.20", True)]
    [effect] = found.effects
    assert effect.effect == "replug" and "front ip" in effect.reasons[0]


def test_policies_are_compared_as_rules_not_by_position() -> None:
    one = SHOP + "policies:\n  - {from: front, to: back, ports: [tcp/80]}\n"
    two = SHOP + ("policies:\n  - {from: back, to: front}\n"
                  "  - {from: front, to: back, ports: [tcp/80]}\n")
    found = diff(side(one), side(two, side(one)))
    assert [(c.kind, c.name, c.action) for c in found.changes] == [
        ("policy", "back -> front (all ports)", "add")]


def test_a_vip_change_is_a_service_change() -> None:
    edited = SHOP.replace("vip: 10.10.2.100", "vip: 10.10.2.200")
    found = diff(STORED, side(edited, STORED))
    [change] = found.changes
    assert (change.kind, change.name, change.action) == ("service", "api", "change")
    assert change.details == ('vip: "10.10.2.100" -> "10.10.2.200"',)


def test_a_host_change_moves_and_restarts_the_container() -> None:
    moved = Side(STORED.topology, STORED.allocation, {**STORED.placement, "web": "h2"})
    found = diff(STORED, moved)
    [change] = found.changes
    assert change.details == ("host: h1 -> h2",)
    [effect] = found.effects
    assert (effect.effect, effect.reasons) == ("restart", ("it moves from host h1 to host h2",))


def test_field_changes_name_each_leaf() -> None:
    assert field_changes({"a": {"b": 1, "c": 2}}, {"a": {"b": 1, "c": 3, "d": 4}}) == [
        "a.c: 2 -> 3", "a.d: 4 (new)"]


def test_a_new_instance_of_a_service_is_shown_with_its_address() -> None:
    edited = SHOP.replace("services:\n  api:", "  api-3:\n    networks: [back]\n"
                          "    services: [{name: api, port: 8080}]\nservices:\n  api:")
    found = diff(STORED, side(edited, STORED))
    api = next(c for c in found.changes if c.kind == "service")
    assert api.details == ("instance api-3 added (10.10.2.4:8080)",)


def test_json_output_says_whether_anything_changes() -> None:
    assert diff(STORED, side(SHOP, STORED)).to_json()["changed"] is False
    data = diff(None, STORED).to_json()
    assert data["changed"] is True and data["new"] is True


IMAGE_SHOP = SHOP.replace("command: python3 -m http.server 80\n",
                          "image: localhost/switchboard/demo:1\n"
                          "    command: httpd -f -p 80\n")


def test_a_changed_image_or_env_recreates_that_container() -> None:
    stored = side(IMAGE_SHOP)
    for old, new, reason in (
        ("demo:1", "demo:2", "its image changes (the runtime's container is made again)"),
        ("    command: httpd -f -p 80\n", "    command: httpd -f -p 80\n    env: {A: b}\n",
         "its env changes (the runtime's container is made again)"),
    ):
        found = diff(stored, side(IMAGE_SHOP.replace(old, new), stored))
        assert [(e.container, e.effect, e.reasons) for e in found.effects] == [
            ("web", "restart", (reason,))]
        assert "containers that restart:" in render(found)
    added = diff(None, stored)
    web = next(c for c in added.changes if c.name == "web")
    assert "image localhost/switchboard/demo:1" in web.details
