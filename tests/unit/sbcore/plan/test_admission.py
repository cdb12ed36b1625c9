"""Conflicts between topologies, and which one the daemon keeps (pure)."""

from __future__ import annotations

import pytest

from controller.daemon.daemon import realisable
from sbcore.model import Topology, TopologyError, ipam, load_topology
from sbcore.model.desired import (
    DesiredState,
    digest_of,
    encode,
    parse_desired,
    topology_objects,
)
from sbcore.plan.admission import check_against_applied, conflicts, first_come

BASE = "sb/topologies/"


def _two(name: str, subnet: str, container: str = "") -> Topology:
    text = f"name: {name}\nnetworks:\n  front: {{subnet: {subnet}}}\n"
    if container:
        text += f"containers:\n  {container}: {{networks: [front]}}\n"
    return load_topology(text)


def test_subnet_overlapping_another_applied_topology_is_rejected() -> None:
    with pytest.raises(TopologyError) as info:
        check_against_applied(_two("shop", "10.10.1.0/24"), [_two("lab", "10.10.0.0/16")])
    message = str(info.value)
    assert "network 'front'" in message and "'shop'" in message and "'lab'" in message
    assert "10.10.0.0/16" in message


def test_reapplying_the_same_topology_is_not_an_overlap() -> None:
    new, earlier = _two("shop", "10.10.1.0/24", "web"), _two("shop", "10.10.0.0/16", "web")
    assert conflicts(new, [earlier]) == []
    check_against_applied(new, [earlier])  # accepted
    # the same networks and container under another name do conflict: the name decides
    renamed = _two("lab", "10.10.0.0/16", "web")
    assert len(conflicts(new, [renamed])) == 1
    with pytest.raises(TopologyError):
        check_against_applied(new, [renamed])


def test_containers_whose_namespace_names_collide_across_topologies_conflict() -> None:
    # sb-a-b-c: container "c" of topology "a-b" and container "b-c" of topology "a"
    problems = conflicts(_two("a", "10.1.0.0/24", "b-c"), [_two("a-b", "10.2.0.0/24", "c")])
    assert len(problems) == 1
    assert "container 'b-c'" in problems[0] and "namespace (sb-a-b-c)" in problems[0]
    assert "container 'c' of applied topology 'a-b'" in problems[0]


def test_networks_whose_tunnel_keys_collide_across_topologies_conflict() -> None:
    # found by search: both networks would carry VXLAN key 9842261 between hosts
    problems = conflicts(_two("t1632", "10.1.0.0/24"), [_two("t6354", "10.2.0.0/24")])
    assert len(problems) == 1 and "tunnel key (9842261)" in problems[0]


def test_first_come_keeps_the_earlier_of_two_overlapping_topologies() -> None:
    first, second, other = (_two("one", "10.9.0.0/24"), _two("two", "10.9.0.0/25"),
                            _two("three", "10.8.0.0/24"))
    kept, rejected = first_come([(first, "1"), (second, "2"), (other, "3")])
    assert kept == ["1", "3"]
    assert list(rejected) == ["two"] and "overlaps" in rejected["two"]
    kept, rejected = first_come([(second, "2"), (first, "1")])
    assert kept == ["2"] and list(rejected) == ["one"]


def _entries(topology: Topology, index: int, seal: bool = True,
             corrupt: str | None = None) -> list[dict]:
    objects = topology_objects(topology, ipam.allocate(topology))
    digest = digest_of(objects)
    base = f"{BASE}{topology.name}/"
    entries = [{"Key": f"{base}versions/{digest}/{path}", "Value": encode(value),
                "CreateIndex": index} for path, value in objects.items()]
    if corrupt:
        entries[0]["Value"] = corrupt.encode()
    if seal:
        entries.append({"Key": f"{base}versions/{digest}/sealed", "Value": b"{}",
                        "CreateIndex": index})
    entries.append({"Key": f"{base}applied", "CreateIndex": index,
                    "Value": encode({"digest": digest, "source": "f.yaml"})})
    return entries


def test_desired_state_lists_topologies_in_the_order_they_were_applied() -> None:
    late, early = _two("aaa", "10.1.0.0/24", "web"), _two("zzz", "10.2.0.0/24", "web")
    state = parse_desired(BASE, _entries(late, 20) + _entries(early, 10))
    assert list(state.topologies) == ["zzz", "aaa"]
    assert state.topologies["aaa"].topology == late and not state.invalid


def test_a_corrupted_or_incomplete_version_is_reported_and_skipped_not_raised() -> None:
    good = _two("good", "10.1.0.0/24", "web")
    entries = (_entries(good, 5) + _entries(_two("bad", "10.2.0.0/24", "web"), 6, corrupt="x{")
               + _entries(_two("half", "10.3.0.0/24", "web"), 7, seal=False)
               + [{"Key": f"{BASE}evil/x", "Value": b"x"},  # foreign key, no marker
                  {"Key": f"{BASE}worse/applied", "Value": b"\xff\xfe"}])
    state = parse_desired(BASE, entries)
    assert list(state.topologies) == ["good"]
    assert set(state.invalid) == {"bad", "half", "worse"}
    assert "not complete" in state.invalid["half"]


def test_the_daemon_realises_the_first_of_a_conflicting_pair_and_refuses_the_other() -> None:
    first, second = _two("first", "10.91.0.0/24", "web"), _two("second", "10.91.0.0/24", "api")
    state = parse_desired(BASE, _entries(second, 30) + _entries(first, 12))
    desired, refused = realisable(state)
    assert list(desired) == ["first"]
    digest, why = refused["second"]
    assert digest == state.topologies["second"].digest
    assert "10.91.0.0/24" in why and "'first'" in why


def test_an_empty_desired_state_realises_nothing() -> None:
    assert realisable(DesiredState()) == ({}, {})
