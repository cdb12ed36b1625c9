"""The CNI plugin's request parsing, names and results, and CNI records in the desired
state (pure)."""

from __future__ import annotations

import json
from ipaddress import IPv4Address, IPv4Interface

import pytest

from cni.protocol import (
    Attached,
    CniError,
    alternative_name,
    container_name,
    parse,
    result,
    version_result,
)
from sbcore.model import TopologyError, load_topology
from sbcore.model.desired import cni_record_problem, encode, parse_desired, with_cni
from sbcore.plan.hostplan import plan_topology

CONF = {"cniVersion": "1.0.0", "name": "n", "type": "switchboard", "topology": "t",
        "network": "net"}
ENV = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "abc123", "CNI_NETNS": "/run/netns/x",
       "CNI_IFNAME": "eth0", "CNI_PATH": "/opt/cni/bin"}


def code_of(env: dict[str, str], stdin: str) -> int:
    with pytest.raises(CniError) as err:
        parse(env, stdin)
    return err.value.code


def test_a_good_add_request_is_read():
    request = parse({**ENV, "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAME=web;IP=10.0.0.5"},
                    json.dumps(CONF))
    assert (request.command, request.version, request.topology, request.network) == (
        "ADD", "1.0.0", "t", "net")
    assert (request.container_id, request.netns, request.ifname) == ("abc123", "/run/netns/x",
                                                                     "eth0")
    assert request.pod_name == "web" and request.requested_ip() == IPv4Address("10.0.0.5")
    assert request.timeout == 30


def test_the_ips_capability_wins_over_cni_args():
    conf = {**CONF, "runtimeConfig": {"ips": ["10.0.0.7/24"]}}
    request = parse({**ENV, "CNI_ARGS": "IP=10.0.0.5"}, json.dumps(conf))
    assert request.requested_ip() == IPv4Address("10.0.0.7")


@pytest.mark.parametrize(("env", "stdin", "code"), [
    ({"CNI_COMMAND": None}, json.dumps(CONF), 4),
    ({"CNI_COMMAND": "FROB"}, json.dumps(CONF), 4),
    ({"CNI_CONTAINERID": None}, json.dumps(CONF), 4),
    ({"CNI_CONTAINERID": "a b"}, json.dumps(CONF), 4),
    ({"CNI_IFNAME": "much-too-long-name"}, json.dumps(CONF), 4),
    ({"CNI_NETNS": "relative"}, json.dumps(CONF), 4),
    ({"CNI_NETNS": None}, json.dumps(CONF), 4),
    ({"CNI_ARGS": "novalue"}, json.dumps(CONF), 4),
    ({"CNI_ARGS": "IP=fe80::1"}, json.dumps(CONF), 4),
    ({}, "{not json", 6),
    ({}, "[1]", 6),
    ({}, json.dumps({**CONF, "cniVersion": "0.3.1"}), 1),
    ({}, json.dumps({k: v for k, v in CONF.items() if k != "cniVersion"}), 1),
    ({}, json.dumps({**CONF, "topology": ""}), 7),
    ({}, json.dumps({k: v for k, v in CONF.items() if k != "network"}), 7),
    ({}, json.dumps({**CONF, "prefix": 3}), 7),
    ({}, json.dumps({**CONF, "timeout": "soon"}), 7),
    ({}, json.dumps({**CONF, "runtimeConfig": {"ips": "10.0.0.1"}}), 7),
    ({}, json.dumps({**CONF, "runtimeConfig": {"ips": ["10.0.0.1", "10.0.0.2"]}}), 7),
    ({}, json.dumps({**CONF, "runtimeConfig": {"ips": ["nope"]}}), 7),
    ({"CNI_COMMAND": "STATUS"}, json.dumps(CONF), 1),  # STATUS is 1.1's
    ({"CNI_COMMAND": "GC"}, json.dumps({**CONF, "cniVersion": "1.1.0",
                                        "cni.dev/valid-attachments": "x"}), 7),
])
def test_bad_requests_get_the_specs_codes(env, stdin, code):
    environ = {**ENV, **env}
    assert code_of({k: v for k, v in environ.items() if v is not None}, stdin) == code


def test_del_needs_no_namespace_and_version_needs_no_config():
    request = parse({**ENV, "CNI_COMMAND": "DEL", "CNI_NETNS": ""}, json.dumps(CONF))
    assert request.command == "DEL" and request.netns == ""
    assert parse({"CNI_COMMAND": "VERSION"}, "").command == "VERSION"
    assert parse({"CNI_COMMAND": "VERSION"}, '{"cniVersion": "7.0.0"}').version == "1.0.0"
    assert version_result("1.0.0") == {"cniVersion": "1.0.0",
                                       "supportedVersions": ["0.4.0", "1.0.0", "1.1.0"]}


def test_gc_reads_the_valid_attachments():
    conf = {**CONF, "cniVersion": "1.1.0",
            "cni.dev/valid-attachments": [{"containerID": "a", "ifname": "eth0"}]}
    request = parse({"CNI_COMMAND": "GC"}, json.dumps(conf))
    assert request.valid_attachments() == {("a", "eth0")}


def test_container_names_fit_switchboard_names():
    assert container_name("Web_1.example", "x") == "web-1-example"
    assert container_name("", "ABCDEF0123456789") == "cni-abcdef012345"
    assert container_name("---", "c0ffee") == "cni-c0ffee"
    long = container_name("a" * 80, "x")
    assert len(long) == 30
    other = alternative_name("a" * 30, "deadbeef99")
    assert other.endswith("-deadbeef") and len(other) <= 30


ATTACHED = Attached("eth0", "02:00:00:00:00:01", "/run/netns/x",
                    IPv4Interface("10.0.0.5/24"), IPv4Address("10.0.0.1"),
                    IPv4Address("10.0.0.254"))


def test_result_has_the_interface_address_route_and_resolver():
    assert result("1.0.0", ATTACHED) == {
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "eth0", "mac": "02:00:00:00:00:01",
                        "sandbox": "/run/netns/x"}],
        "ips": [{"address": "10.0.0.5/24", "gateway": "10.0.0.1", "interface": 0}],
        "routes": [{"dst": "0.0.0.0/0", "gw": "10.0.0.1"}],
        "dns": {"nameservers": ["10.0.0.254"], "search": ["service.consul"]},
    }
    assert result("0.4.0", ATTACHED)["ips"][0]["version"] == "4"


def test_error_objects_carry_the_version_code_and_message():
    assert CniError(7, "bad", "why").to_json("1.0.0") == {
        "cniVersion": "1.0.0", "code": 7, "msg": "bad", "details": "why"}
    assert "details" not in CniError(11, "later").to_json("1.0.0")


FILE = load_topology("name: t\nnetworks: {net: {subnet: 10.0.0.0/24}}\n"
                     "containers: {web: {networks: [net]}}\n")
RECORD = {"container_id": "abc", "ifname": "net1", "netns": "/run/netns/cni-1",
          "network": "net", "ip": "10.0.0.50", "host": "h1"}


def test_cni_records_merge_into_the_file_as_attached_containers():
    merged = with_cni(FILE, {"pod": RECORD})
    pod = merged.containers["pod"]
    assert pod.attach is not None and pod.attach.netns == "/run/netns/cni-1"
    assert pod.host == "h1" and str(pod.networks["net"].ip) == "10.0.0.50"
    plan = plan_topology(merged, {("web", "net"): IPv4Address("10.0.0.2"),
                                  ("pod", "net"): IPv4Address("10.0.0.50")})
    container = next(c for c in plan.containers if c.name == "pod")
    assert container.attach_path == "/run/netns/cni-1" and container.attached
    assert container.endpoints[0].ifname == "net1"
    assert with_cni(FILE, {}) is FILE


def test_a_file_container_of_a_cni_containers_name_is_refused():
    with pytest.raises(TopologyError, match="the CNI plugin added a container of this name"):
        with_cni(FILE, {"web": RECORD})
    with pytest.raises(TopologyError, match="outside subnet"):
        with_cni(FILE, {"pod": {**RECORD, "ip": "10.9.0.1"}})
    with pytest.raises(TopologyError, match="network"):
        with_cni(FILE, {"pod": {**RECORD, "network": "gone"}})


def test_cni_records_are_read_without_trusting_them():
    base = "sb/topologies/"
    entries = [{"Key": f"{base}t/cni/pod", "Value": encode(RECORD)},
               {"Key": f"{base}t/cni/bad", "Value": b"[1]"},
               {"Key": f"{base}t/cni/worse", "Value": encode({**RECORD, "netns": 5})}]
    state = parse_desired(base, entries)
    assert state.cni == {"t": {"pod": RECORD}}
    assert set(state.skipped) == {f"{base}t/cni/bad", f"{base}t/cni/worse"}
    assert cni_record_problem(RECORD) is None
    assert cni_record_problem({**RECORD, "ip": 3}) == "'ip' is not a string"


def test_a_namespace_path_is_attached_by_path_and_gets_no_resolv_conf():
    from dataclasses import replace

    from plumbing.plan import plan_plumbing
    from plumbing.resolvconf import wanted_files
    from tests.unit.plumbing.test_plumbing_plan import make_plan

    plan = make_plan(containers={"a": None, "ext": None})
    ext = replace(plan.containers[1], attach_path="/run/netns/cni-1")
    plan = replace(plan, containers=(plan.containers[0], ext))
    result = plan_plumbing([plan], {}, set(), {})
    assert result.create_netns == ["sb-t1-a"]
    assert result.attach_netns == [("sb-t1-ext", "/run/netns/cni-1")]
    assert set(wanted_files([plan], "")) == {"sb-t1-a"}
