"""The host inventory: records from KV joined with Consul health; bad keys skipped (pure)."""

from __future__ import annotations

import base64
import json
from typing import Any

from sbcore.model.desired import PLACEMENT, parse_desired, parse_placement
from sbcore.state.hosts import describe, parse_hosts, service_id


def record(name: str, slot: int, **extra: Any) -> dict[str, Any]:
    value = {"name": name, "slot": slot, "tunnel_ip": None, "datapath": "netdev",
             "underlay_mtu": None, "bridge": "sb-int", "version": "0.1.0", **extra}
    return {"Key": f"p/hosts/{name}", "Value": json.dumps(value).encode()}


def health(host: str, ttl: str = "passing", serf: str = "passing", prefix: str = "p",
           node: str = "n1") -> dict[str, Any]:
    sid = service_id(prefix)
    return {
        "Node": {"Node": node},
        "Service": {"ID": sid, "Service": "switchboard-host",
                    "Meta": {"switchboard-host": host, "switchboard-prefix": prefix}},
        "Checks": [
            {"CheckID": "serfHealth", "Name": "Serf Health Status", "Status": serf,
             "ServiceID": ""},
            {"CheckID": f"service:{sid}", "Name": f"Service '{sid}' check", "Status": ttl,
             "ServiceID": sid, "Output": "TTL expired" if ttl != "passing" else ""},
        ],
    }


def test_a_registered_host_with_passing_checks_is_ready():
    found = parse_hosts([record("h1", 0, tunnel_ip="192.0.2.1")], [health("h1")], "p")
    assert found["h1"].state == "ready" and found["h1"].reason == ""
    assert found["h1"].slot == 0 and found["h1"].tunnel_ip == "192.0.2.1"
    assert found.ready() == ["h1"]


def test_a_host_whose_ttl_expired_is_down_because_its_daemon_stopped():
    found = parse_hosts([record("h1", 0)], [health("h1", ttl="critical")], "p")
    assert found["h1"].state == "down"
    assert found["h1"].reason.startswith("its daemon stopped answering")
    assert "TTL expired" in found["h1"].reason


def test_a_host_whose_agent_left_the_cluster_is_down():
    found = parse_hosts([record("h1", 0)], [health("h1", serf="critical", node="n7")], "p")
    assert found["h1"].reason == "its Consul agent (node n7) is not alive in the cluster"


def test_a_record_without_registration_is_down_with_the_reason():
    found = parse_hosts([record("h1", 0)], [], "p")
    assert found["h1"].state == "down"
    assert found["h1"].reason.startswith("not registered in Consul")
    assert describe(found).startswith("no host is ready: h1 is down (not registered")


def test_registrations_of_another_prefix_do_not_count():
    found = parse_hosts([record("h1", 0)], [health("h1", prefix="other")], "p")
    assert found["h1"].state == "down"


def test_other_failing_node_checks_do_not_make_a_host_down():
    entry = health("h1")
    entry["Checks"].append({"CheckID": "disk", "Status": "critical", "ServiceID": ""})
    assert parse_hosts([record("h1", 0)], [entry], "p")["h1"].state == "ready"


def test_one_passing_registration_of_several_is_enough():
    entries = [health("h1", ttl="critical", node="old"), health("h1", node="new")]
    assert parse_hosts([record("h1", 0)], entries, "p")["h1"].state == "ready"


def test_corrupt_and_foreign_keys_are_skipped_and_reported():
    entries = [
        record("good", 0),
        {"Key": "p/hosts/junk", "Value": b"not json"},
        {"Key": "p/hosts/list", "Value": b"[1]"},
        {"Key": "p/hosts/liar", "Value": json.dumps({"name": "other", "slot": 1}).encode()},
        {"Key": "p/hosts/noslot", "Value": json.dumps({"name": "noslot"}).encode()},
        {"Key": "p/hosts/neg", "Value": json.dumps({"name": "neg", "slot": -1}).encode()},
        {"Key": "p/hosts/a/b", "Value": b"{}"},
        {"Key": "p/hosts/empty", "Value": None},
        # from a transaction: base64 text
        {"Key": "p/hosts/txn", "Value": base64.b64encode(
            json.dumps({"name": "txn", "slot": 2}).encode()).decode()},
    ]
    found = parse_hosts(entries, [health("good")], "p")
    assert list(found) == ["good", "txn"]
    assert set(found.skipped) == {"p/hosts/junk", "p/hosts/list", "p/hosts/liar",
                                  "p/hosts/noslot", "p/hosts/neg", "p/hosts/a/b",
                                  "p/hosts/empty"}
    assert "names host 'other'" in found.skipped["p/hosts/liar"]


def test_the_default_prefix_registers_as_switchboard_host():
    assert service_id("switchboard") == "switchboard-host"
    assert service_id("sbtest-1") == "switchboard-host-sbtest-1"


def test_a_stored_placement_is_read_back_without_trusting_it():
    assert parse_placement(b'{"a": "h1", "b": 3, "gone": "h2", "c": ""}', ["a", "b", "c"]) == {
        "a": "h1"}
    assert parse_placement(b"not json", ["a"]) == {}
    assert parse_placement(b"[]", ["a"]) == {}
    assert parse_placement(None, ["a"]) == {}


def test_a_topology_stored_before_placement_has_an_empty_placement():
    from sbcore.model import ipam, load_topology
    from sbcore.model.desired import digest_of, encode, topology_objects

    topology = load_topology("name: t\nnetworks: {lan: {subnet: 10.1.0.0/24}}\n"
                             "containers: {a: {networks: [lan]}}\n")
    objects = topology_objects(topology, ipam.allocate(topology))
    digest = digest_of(objects)
    base = f"p/topologies/t/versions/{digest}/"
    entries = [{"Key": base + path, "Value": encode(value)} for path, value in objects.items()]
    entries += [{"Key": base + "sealed", "Value": b'{"objects": 1}'},
                {"Key": "p/topologies/t/applied", "CreateIndex": 5,
                 "Value": json.dumps({"digest": digest, "source": "x"}).encode()}]
    assert parse_desired("p/topologies/", entries).topologies["t"].placement == {}
    entries.append({"Key": f"p/topologies/t/{PLACEMENT}", "Value": b'{"a": "h1"}'})
    stored = parse_desired("p/topologies/", entries).topologies["t"]
    assert stored.placement == {"a": "h1"} and stored.digest == digest
