"""The CNI plugin driven as a runtime drives it (environment and stdin, one process per
call), against the session daemon, with network namespaces the tests make."""

from __future__ import annotations

import ipaddress
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import Switchboard, pings, sh, wait_until
from tests.integration.host.cnikit import (
    cni,
    cni_keys,
    config,
    kv_tree,
    namespaces,
    ports,
    rows,
    token_file,
)

pytestmark = pytest.mark.integration

TOPO = "sbt-cni-p"
FILE = f"""
name: {TOPO}
networks:
  net: {{subnet: 10.181.1.0/24}}
containers:
  peer:
    networks: {{net: {{ip: 10.181.1.10}}}}
"""


@pytest.fixture
def topology(switchboard: Switchboard, tmp_path: Path) -> Iterator[Path]:
    switchboard.up(tmp_path, FILE)
    try:
        yield tmp_path / "topo.yaml"
    finally:
        switchboard.cli("down", TOPO, check=False)


@pytest.fixture
def netns() -> Iterator[list[str]]:
    """Make namespaces by name (``make(n)`` gives its path); all are removed at the end."""
    made: list[str] = []
    yield made
    for name in made:
        sh(f"ip netns del {name}")


def make(made: list[str], suffix: str) -> str:
    name = f"sbt-cni-{os.getpid()}-{suffix}"
    sh(f"ip netns add {name}", check=True)
    sh(f"ip -n {name} link set lo up")
    made.append(name)
    return f"/run/netns/{name}"


def test_add_plugs_a_namespace_that_then_reaches_the_topology(
    switchboard: Switchboard, topology: Path, netns: list[str], tmp_path: Path
) -> None:
    conf = config(switchboard, token_file(tmp_path), TOPO)
    path = make(netns, "a")
    cid = f"sbtcni{os.getpid()}a"
    rc, result, err = cni("ADD", conf, cid, path)
    assert rc == 0, (result, err, switchboard.log_tail())
    assert result is not None and result["cniVersion"] == "1.0.0"
    (iface,) = result["interfaces"]
    assert iface["name"] == "eth0" and iface["sandbox"] == path and iface["mac"]
    (ip,) = result["ips"]
    address = ipaddress.ip_interface(ip["address"])
    assert address.network == ipaddress.ip_network("10.181.1.0/24")
    assert ip["gateway"] == "10.181.1.1" and ip["interface"] == 0
    assert result["routes"] == [{"dst": "0.0.0.0/0", "gw": "10.181.1.1"}]
    net = next(n for n in switchboard.status(TOPO)["networks"] if n["name"] == "net")
    assert result["dns"] == {"nameservers": [net["host_ip"]], "search": ["service.consul"]}
    name = path.rsplit("/", 1)[1]
    assert pings(name, "10.181.1.10", count=1, wait=2)

    # a repeated ADD of the same container changes nothing and gives the same address
    rc, again, err = cni("ADD", conf, cid, path)
    assert rc == 0 and again == result, (again, err)
    (row,) = [r for r in rows(switchboard, TOPO) if r.get("source") == "cni"]
    assert row["container_id"] == cid and row["ip"] == str(address.ip)
    assert row["state"] == "attached"
    text = switchboard.cli("status", TOPO).stdout  # the table says where it comes from
    assert any(line.split()[:1] == [row["container"]] and line.split()[-1] == "cni"
               for line in text.splitlines()), text

    # `up` of the file again keeps the CNI container and its address
    switchboard.cli("up", str(topology))
    assert [r["ip"] for r in rows(switchboard, TOPO) if r.get("source") == "cni"] == [
        str(address.ip)]
    assert pings(name, "10.181.1.10", count=1, wait=2)

    # DEL releases the record and the port; a second DEL has nothing to release
    before = ports(switchboard.bridge)
    rc, out, err = cni("DEL", conf, cid, path)
    assert rc == 0 and out is None, (out, err)
    assert cni_keys(switchboard.prefix, TOPO) == []
    assert row["port"] in before
    assert wait_until(lambda: row["port"] not in ports(switchboard.bridge), 30)
    assert not [r for r in rows(switchboard, TOPO) if r.get("source") == "cni"]
    rc, out, err = cni("DEL", conf, cid, path)
    assert rc == 0 and out is None, (out, err)
    rc, out, err = cni("DEL", conf, cid, "")  # DEL without a namespace, as the spec allows
    assert rc == 0, (out, err)


def test_fixed_address_pod_name_gc_and_status(
    switchboard: Switchboard, topology: Path, netns: list[str], tmp_path: Path
) -> None:
    conf = config(switchboard, token_file(tmp_path), TOPO, version="1.1.0")
    path = make(netns, "b")
    cid = f"sbtcni{os.getpid()}b"
    rc, out, err = cni("STATUS", conf)
    assert rc == 0 and out is None, (out, err)
    rc, result, err = cni("ADD", conf, cid, path,
                          args="IgnoreUnknown=1;K8S_POD_NAME=Web_1;IP=10.181.1.77")
    assert rc == 0, (result, err)
    assert result["ips"][0]["address"] == "10.181.1.77/24"
    assert [r["container"] for r in rows(switchboard, TOPO) if r.get("source") == "cni"] == [
        "web-1"]
    # GC keeps what the runtime still uses, releases the rest
    valid = {"cni.dev/valid-attachments": [{"containerID": cid, "ifname": "eth0"}]}
    assert cni("GC", {**conf, **valid})[0] == 0
    assert len(cni_keys(switchboard.prefix, TOPO)) == 1
    rc, out, err = cni("GC", {**conf, "cni.dev/valid-attachments": []})
    assert rc == 0, (out, err)
    assert cni_keys(switchboard.prefix, TOPO) == []
    assert wait_until(lambda: not [r for r in rows(switchboard, TOPO)
                                   if r.get("source") == "cni"], 30)


def test_check_passes_then_fails_after_tampering(
    switchboard: Switchboard, topology: Path, netns: list[str], tmp_path: Path
) -> None:
    conf = config(switchboard, token_file(tmp_path), TOPO)
    path = make(netns, "c")
    cid = f"sbtcni{os.getpid()}c"
    rc, result, err = cni("ADD", conf, cid, path)
    assert rc == 0, (result, err)
    checked = {**conf, "prevResult": result}
    rc, out, err = cni("CHECK", checked, cid, path)
    assert rc == 0 and out is None, (out, err)

    rc, out, _ = cni("CHECK", {**checked, "prevResult": {**result, "ips": [
        {"address": "10.181.1.99/24", "interface": 0}]}}, cid, path)
    assert rc == 1 and out["code"] == 999 and "prevResult" in out["details"]
    rc, out, _ = cni("CHECK", checked, "sbtcni-unknown", path)
    assert rc == 1 and out["code"] == 3

    # the namespace loses its address; the daemon is held so that it cannot repair it first
    name = path.rsplit("/", 1)[1]
    assert switchboard.proc is not None
    os.kill(switchboard.proc.pid, signal.SIGSTOP)
    try:
        sh(f"ip -n {name} addr flush dev eth0", check=True)
        rc, out, _ = cni("CHECK", checked, cid, path)
    finally:
        os.kill(switchboard.proc.pid, signal.SIGCONT)
    assert rc == 1 and out["code"] == 999, out
    assert "has no address" in out["details"], out
    # the daemon repairs the namespace: CHECK passes again
    assert wait_until(lambda: cni("CHECK", checked, cid, path)[0] == 0, 60)
    assert cni("DEL", conf, cid, path)[0] == 0


def test_bad_requests_are_refused_with_their_codes_and_change_nothing(
    switchboard: Switchboard, topology: Path, netns: list[str], tmp_path: Path
) -> None:
    conf = config(switchboard, token_file(tmp_path), TOPO)
    path = make(netns, "d")
    cid = f"sbtcni{os.getpid()}d"
    kv, spaces, bridge = kv_tree(switchboard.prefix), namespaces(), ports(switchboard.bridge)
    links = sh(f"ip -n {path.rsplit('/', 1)[1]} -o link").stdout
    cases = [
        ("not JSON", "{nope", {}, 6),
        ("a JSON list", "[]", {}, 6),
        ("a version we do not speak", {**conf, "cniVersion": "9.9.9"}, {}, 1),
        ("STATUS before 1.1", conf, {"command": "STATUS"}, 1),
        ("no topology key", {k: v for k, v in conf.items() if k != "topology"}, {}, 7),
        ("an unknown topology", {**conf, "topology": "sbt-cni-none"}, {}, 7),
        ("an unknown network", {**conf, "network": "nope"}, {}, 7),
        ("an address outside the subnet", {**conf, "runtimeConfig": {"ips": ["10.9.9.9/24"]}},
         {}, 7),
        ("an address that is taken", conf, {"args": "IP=10.181.1.10"}, 1000),
        ("the gateway's address", conf, {"args": "IP=10.181.1.1"}, 1000),
        ("not an address", conf, {"args": "IP=banana"}, 4),
        ("bad CNI_ARGS", conf, {"args": "K8S_POD_NAME"}, 4),
        ("no container ID", conf, {"container_id": ""}, 4),
        ("no namespace", conf, {"netns": ""}, 4),
        ("a namespace that is not one", conf, {"netns": str(tmp_path / "token")}, 4),
        ("a namespace that does not exist", conf, {"netns": "/run/netns/sbt-cni-none"}, 4),
        ("a host that is not known", {**conf, "host": "sbt-cni-nohost"}, {}, 1001),
        ("a bad interface name", conf, {"ifname": "a/b"}, 4),
        ("an unknown command", conf, {"command": "FROB"}, 4),
        ("a negative timeout", {**conf, "timeout": -1}, {}, 7),
    ]
    for what, stdin, how, code in cases:
        rc, out, err = cni(how.get("command", "ADD"), stdin,
                           how.get("container_id", cid), how.get("netns", path),
                           how.get("ifname", "eth0"), how.get("args", ""))
        assert rc != 0, what
        assert out is not None and out["code"] == code, (what, out, err)
        assert out["msg"] and out["cniVersion"] in ("0.4.0", "1.0.0", "1.1.0"), (what, out)
        assert "Traceback" not in err, (what, err)
    assert kv_tree(switchboard.prefix) == kv
    assert namespaces() == spaces
    assert ports(switchboard.bridge) == bridge
    assert sh(f"ip -n {path.rsplit('/', 1)[1]} -o link").stdout == links


def test_add_that_is_not_plugged_in_time_is_undone(
    switchboard: Switchboard, topology: Path, netns: list[str], tmp_path: Path
) -> None:
    conf = config(switchboard, token_file(tmp_path), TOPO, timeout=3)
    path = make(netns, "e")
    kv = kv_tree(switchboard.prefix)
    assert switchboard.proc is not None
    os.kill(switchboard.proc.pid, signal.SIGSTOP)  # a daemon that does not answer in time
    try:
        rc, out, err = cni("ADD", conf, f"sbtcni{os.getpid()}e", path)
    finally:
        os.kill(switchboard.proc.pid, signal.SIGCONT)
    assert rc == 1 and out is not None and out["code"] == 11, (out, err)
    assert "did not plug" in out["msg"]
    admission = f"{switchboard.prefix}/admission"  # two admissions: the ADD and its undoing
    after = kv_tree(switchboard.prefix)
    assert {k: v for k, v in after.items() if k != admission} == {
        k: v for k, v in kv.items() if k != admission}
    assert cni_keys(switchboard.prefix, TOPO) == []


def test_file_and_cni_containers_coexist_until_down(
    switchboard: Switchboard, topology: Path, netns: list[str], tmp_path: Path
) -> None:
    conf = config(switchboard, token_file(tmp_path), TOPO)
    path = make(netns, "f")
    cid = f"sbtcni{os.getpid()}f"
    rc, result, err = cni("ADD", conf, cid, path, args="K8S_POD_NAME=sbt-pod")
    assert rc == 0, (result, err)
    # `plan` of the unchanged file sees nothing to change: the CNI container stays
    planned = switchboard.cli("plan", str(topology), check=False)
    assert planned.returncode == 0, planned.stdout + planned.stderr
    # a file that declares a container of the CNI container's name is refused
    clash = tmp_path / "clash.yaml"
    clash.write_text(FILE + "  sbt-pod:\n    networks: [net]\n")
    refused = switchboard.cli("up", str(clash), check=False)
    assert refused.returncode != 0
    assert "containers.sbt-pod: the CNI plugin added a container of this name" in (
        refused.stdout + refused.stderr)
    # a file that adds another container keeps the CNI one, at its address
    grown = tmp_path / "grown.yaml"
    grown.write_text(FILE + "  other:\n    networks: [net]\n")
    switchboard.cli("up", str(grown))
    names = {r["container"]: r for r in rows(switchboard, TOPO)}
    assert names["sbt-pod"]["source"] == "cni" and names["other"]["source"] == "file"
    assert names["sbt-pod"]["ip"] + "/24" == result["ips"][0]["address"]
    assert names["other"]["ip"] != names["sbt-pod"]["ip"]
    # `down` takes the CNI containers with it; the runtime's namespace stays, unplugged
    switchboard.cli("down", TOPO)
    assert cni_keys(switchboard.prefix, TOPO) == []
    name = path.rsplit("/", 1)[1]
    assert name in namespaces()
    assert "eth0" not in sh(f"ip -n {name} -o link").stdout
    rc, out, err = cni("DEL", conf, cid, path)  # nothing left to release
    assert rc == 0 and out is None, (out, err)


def test_a_namespace_gone_without_del_is_shown_and_gc_releases_it(
    switchboard: Switchboard, topology: Path, netns: list[str], tmp_path: Path
) -> None:
    conf = config(switchboard, token_file(tmp_path), TOPO, version="1.1.0")
    path = make(netns, "g")
    cid = f"sbtcni{os.getpid()}g"
    rc, result, err = cni("ADD", conf, cid, path)
    assert rc == 0, (result, err)
    sh(f"ip netns del {path.rsplit('/', 1)[1]}", check=True)  # a runtime that lost it
    assert wait_until(lambda: [r["state"] for r in rows(switchboard, TOPO)
                               if r.get("source") == "cni"] == ["broken"], 60), rows(
        switchboard, TOPO)
    (row,) = [r for r in rows(switchboard, TOPO) if r.get("source") == "cni"]
    assert "does not exist" in row["problem"], row
    # `up` of the file says which container keeps it from converging, until GC releases it
    up = switchboard.cli("up", str(topology), check=False)
    assert up.returncode != 0 and row["container"] in up.stderr, up.stderr
    rc, out, err = cni("GC", {**conf, "cni.dev/valid-attachments": []})
    assert rc == 0, (out, err)
    assert cni_keys(switchboard.prefix, TOPO) == []
    switchboard.cli("up", str(topology))


def test_version_lists_the_versions(tmp_path: Path) -> None:
    rc, out, _ = cni("VERSION", '{"cniVersion": "1.0.0"}')
    assert rc == 0 and out == {"cniVersion": "1.0.0",
                               "supportedVersions": ["0.4.0", "1.0.0", "1.1.0"]}
