"""Plumber against real OVS and namespaces (root): make, keep, change and remove containers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from ipaddress import IPv4Address, IPv4Network

import pytest

from ovsdb.bridge import Bridge
from plumbing import netns, processes, resolvconf
from plumbing.apply import PlumbingError
from plumbing.plan import Problems
from plumbing.plumber import Plumber
from sbcore.model import naming
from sbcore.plan.hostplan import ContainerPlan, Endpoint, HostLeg, NetworkPlan, TopologyPlan
from tests.harness import free_port, wait_until

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
]

BRIDGE = "sbt-plumb"
# A port no controller listens on: never a user's (6653) or the suite's daemon's.
CONTROLLER = f"tcp:127.0.0.1:{free_port()}"
TOPO = "sbtp"
COMMAND = "echo started with $(ip -o -4 addr show eth0 | awk '{print $4}'); exec sleep 300"


def make_plan(
    containers: dict[str, str | None],
    topo: str = TOPO,
    subnet: str = "10.77.0.0/24",
    mtu: int = 1400,
    attach: dict[str, int] | None = None,
    ips: dict[str, str] | None = None,
) -> TopologyPlan:
    """One network ``lan``; ``containers`` maps name -> command; IPs follow the order given."""
    attach, ips = attach or {}, ips or {}
    net = IPv4Network(subnet)
    gateway, leg_ip = net.network_address + 1, net.broadcast_address - 1
    leg = HostLeg(topo, "lan", naming.host_leg_name(topo, "lan"),
                  naming.host_leg_mac(topo, "lan"), leg_ip, net.prefixlen, mtu)
    network = NetworkPlan(topo, "lan", naming.network_key(topo, "lan"), net, gateway,
                          naming.gateway_mac(topo, "lan"), mtu, leg)
    plans = []
    for i, (name, command) in enumerate(containers.items()):
        ns = naming.netns_name(topo, name)
        ip = IPv4Address(ips[name]) if name in ips else net.network_address + 10 + i
        ep = Endpoint(topo, name, "lan", ns, "eth0", naming.veth_name(topo, name, "lan"),
                      naming.container_mac(topo, name, "lan"), ip, net.prefixlen, mtu, gateway)
        plans.append(ContainerPlan(topo, name, ns, command, attach.get(name), (ep,)))
    return TopologyPlan(topo, (network,), tuple(plans))


def ip_json(*args: str, netns_name: str | None = None) -> list[dict]:
    cmd = ["ip", "-j", *(("-n", netns_name) if netns_name else ()), *args]
    return json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)


def vsctl(*args: str) -> str:
    return subprocess.run(["ovs-vsctl", *args], check=True, capture_output=True,
                          text=True).stdout.strip()


def iface_ids(port: str) -> dict[str, str]:
    raw = json.loads(vsctl("--format=json", "--columns=external_ids", "list", "Interface", port))
    return dict(raw["data"][0][0][1])


def assert_interface(link: dict, mac: str, ip: IPv4Address, prefixlen: int, mtu: int) -> None:
    assert link["address"] == mac
    assert link["mtu"] == mtu
    assert "UP" in link["flags"]
    inet = [(a["local"], a["prefixlen"]) for a in link["addr_info"] if a["family"] == "inet"]
    assert inet == [(str(ip), prefixlen)]


@pytest.fixture
def bridge():
    br = Bridge(BRIDGE)
    br.delete()
    br.ensure(CONTROLLER)
    yield br
    br.delete()


@pytest.fixture
def plumber(bridge, tmp_path):
    plumber = Plumber(bridge, tmp_path / "state")
    yield plumber
    for pid_file in (tmp_path / "state" / "pids").glob("*/*.pid"):
        processes.stop(pid_file)
    # deleting the (now empty) namespaces takes their veths along
    leftover = [n for n in netns.list_namespaces() if n.startswith(f"sb-{TOPO}-")]
    netns.delete_namespaces(leftover)
    for name in leftover + [p.name for p in resolvconf.NETNS_ETC.glob(f"sb-{TOPO}-*")]:
        resolvconf.remove(name)


@pytest.fixture
def isolated_pid():
    """A process in a network namespace of its own that Switchboard did not make."""
    proc = subprocess.Popen(["unshare", "-n", "sleep", "60"])
    deadline = time.monotonic() + 5
    while os.readlink(f"/proc/{proc.pid}/ns/net") == os.readlink("/proc/self/ns/net"):
        assert time.monotonic() < deadline, "unshare did not move into a new namespace"
        time.sleep(0.01)
    yield proc.pid
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def test_reconcile_makes_keeps_and_removes(bridge, plumber, monkeypatch):
    plan = make_plan({"a": COMMAND, "b": None, "c": None})
    ofports = plumber.reconcile([plan])

    leg = plan.networks[0].host_leg
    assert set(ofports) == {ep.port for ep in plan.endpoints()} | {leg.port}
    assert all(isinstance(n, int) and n > 0 for n in ofports.values())
    for c in plan.containers:
        (ep,) = c.endpoints
        assert c.netns in netns.list_namespaces()
        (link,) = ip_json("addr", "show", "eth0", netns_name=c.netns)
        assert_interface(link, ep.mac, ep.ip, ep.prefixlen, ep.mtu)
        (lo,) = ip_json("link", "show", "lo", netns_name=c.netns)
        assert "UP" in lo["flags"]
        routes = ip_json("route", "show", "default", netns_name=c.netns)
        assert [(r["gateway"], r["dev"]) for r in routes] == [(str(ep.default_gateway), "eth0")]
        assert not [a for a in link["addr_info"] if a["family"] == "inet6"]
        ids = iface_ids(ep.port)
        assert ids["switchboard-topology"] == TOPO
        assert ids["switchboard-container"] == c.name
        assert ids["switchboard-network"] == "lan"
        assert ids["switchboard-ip"] == str(ep.ip)
        assert ids["switchboard-mac"] == ep.mac
        assert ids["switchboard-kind"] == "container"
        assert ids["switchboard-netns"] == c.netns
        assert int(vsctl("get", "Interface", ep.port, "ofport")) == ofports[ep.port]
    (host_link,) = ip_json("addr", "show", leg.port)
    assert_interface(host_link, leg.mac, leg.ip, leg.prefixlen, leg.mtu)
    ids = iface_ids(leg.port)
    assert ids["switchboard-kind"] == "host-leg"
    assert "switchboard-container" not in ids

    # the command runs inside its namespace, logs, and keeps running
    pid_path = plumber.files.pid_path(TOPO, "a")
    log_path = plumber.files.log_path(TOPO, "a")
    deadline = time.monotonic() + 5
    while f"started with {plan.containers[0].endpoints[0].ip}/24" not in log_path.read_text():
        assert time.monotonic() < deadline, log_path.read_text()
        time.sleep(0.05)
    pid = processes.read(pid_path).pid
    assert processes.is_running(pid_path)

    # a second reconcile writes nothing and runs nothing
    calls = []
    real_run, real_popen = subprocess.run, subprocess.Popen
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: calls.append(a) or real_run(*a, **k))
    monkeypatch.setattr(subprocess, "Popen",
                        lambda *a, **k: calls.append(a) or real_popen(*a, **k))
    monkeypatch.setattr(netns, "_netlink", lambda *a, **k: calls.append("netlink"))
    monkeypatch.setattr(netns, "_ip_batch", lambda *a, **k: calls.append("ip -batch"))
    writes = bridge.writes
    assert plumber.reconcile([plan]) == ofports
    assert bridge.writes == writes
    assert calls == []
    monkeypatch.undo()
    assert processes.read(pid_path).pid == pid and processes.is_running(pid_path)

    # changing b's address remakes b's port only
    inode_b = netns.netns_inode("sb-sbtp-b")
    changed = make_plan({"a": COMMAND, "b": None, "c": None}, ips={"b": "10.77.0.99"})
    new_ofports = plumber.reconcile([changed])
    port_b = changed.containers[1].endpoints[0].port
    assert {p: n for p, n in new_ofports.items() if p != port_b} == {
        p: n for p, n in ofports.items() if p != port_b
    }
    assert netns.netns_inode("sb-sbtp-b") == inode_b
    (link,) = ip_json("addr", "show", "eth0", netns_name="sb-sbtp-b")
    assert_interface(link, link["address"], IPv4Address("10.77.0.99"), 24, 1400)
    assert iface_ids(port_b)["switchboard-ip"] == "10.77.0.99"

    # removing c removes exactly its namespace and port
    before = set(netns.list_namespaces())
    smaller = make_plan({"a": COMMAND, "b": None}, ips={"b": "10.77.0.99"})
    left = plumber.reconcile([smaller])
    port_c = plan.containers[2].endpoints[0].port
    assert before - set(netns.list_namespaces()) == {"sb-sbtp-c"}
    assert set(bridge.owned_ports()) == set(left) == set(new_ofports) - {port_c}
    assert not netns.link_exists(port_c)
    assert processes.read(pid_path).pid == pid and processes.is_running(pid_path)

    status = plumber.observe()
    assert status[plan.containers[0].endpoints[0].port]["running"] is True
    assert status[port_b]["netns_exists"] is True and status[port_b]["running"] is None

    # removing the topology removes everything it had, and stops its command
    plumber.remove_topology(TOPO)
    assert not [n for n in netns.list_namespaces() if n.startswith("sb-sbtp-")]
    assert bridge.owned_ports() == {}
    assert not pid_path.exists()
    assert processes._starttime(pid) is None
    assert not netns.link_exists(leg.port)


def test_attached_namespace_gets_its_interface(bridge, plumber, isolated_pid):
    plan = make_plan({"ext": None}, attach={"ext": isolated_pid})
    plumber.reconcile([plan])
    (ep,) = plan.containers[0].endpoints
    out = subprocess.run(
        ["nsenter", "-t", str(isolated_pid), "-n", "ip", "-j", "addr", "show", "eth0"],
        check=True, capture_output=True, text=True,
    ).stdout
    (link,) = json.loads(out)
    assert_interface(link, ep.mac, ep.ip, ep.prefixlen, ep.mtu)
    st = os.stat(f"/proc/{isolated_pid}/ns/net")
    assert netns.netns_inode("sb-sbtp-ext") == (st.st_dev, st.st_ino)

    plumber.reconcile([])
    assert "sb-sbtp-ext" not in netns.list_namespaces()
    assert bridge.owned_ports() == {}
    assert processes._starttime(isolated_pid) is not None  # the process is not ours to end


def test_attach_pid_names_a_foreign_namespace(isolated_pid):
    name = f"sb-{TOPO}-attach"
    netns.attach_pid(name, isolated_pid)
    try:
        st = os.stat(f"/proc/{isolated_pid}/ns/net")
        assert netns.netns_inode(name) == (st.st_dev, st.st_ino)
    finally:
        netns.delete_namespaces([name])
    assert name not in netns.list_namespaces()
    assert processes._starttime(isolated_pid) is not None


def test_dead_attachment_is_reported_and_the_rest_plumbed(bridge, plumber):
    proc = subprocess.Popen(["true"])
    proc.wait()
    plan = make_plan({"a": None, "gone": None}, attach={"gone": proc.pid})
    with pytest.raises(PlumbingError, match=f"sbtp/gone: process {proc.pid} "):
        plumber.reconcile([plan])
    assert {n for n in netns.list_namespaces() if n.startswith("sb-sbtp-")} == {"sb-sbtp-a"}
    assert set(bridge.owned_ports()) == {
        plan.containers[0].endpoints[0].port, plan.networks[0].host_leg.port
    }
    assert plumber.problems == Problems(
        containers={("sbtp", "gone"): "the process to attach to is not running"})


def test_failure_rolls_back_what_the_call_made(bridge, plumber, monkeypatch):
    first = make_plan({"a": None})
    plumber.reconcile([first])
    kept = set(bridge.owned_ports())

    def broken(configs):
        list(configs)
        raise netns.NetnsError("namespace sb-sbtp-b: boom")

    monkeypatch.setattr(netns, "configure_namespaces", broken)
    with pytest.raises(PlumbingError, match="boom"):
        plumber.reconcile([make_plan({"a": None, "b": None, "c": None})])
    assert set(bridge.owned_ports()) == kept
    assert {n for n in netns.list_namespaces() if n.startswith("sb-sbtp-")} == {"sb-sbtp-a"}
    assert not netns.link_exists(naming.veth_name(TOPO, "b", "lan"))


def test_ensure_corrects_the_bridge_and_then_writes_nothing(bridge):
    vsctl("set", "Bridge", BRIDGE, "fail_mode=standalone", "protocols=OpenFlow10",
          "other_config:disable-in-band=false", "external_ids:keep=me")
    deadline = time.monotonic() + 5  # until our OVSDB replica has seen the change
    while bridge._read(lambda row: list(row.fail_mode)) != ["standalone"]:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    writes = bridge.writes
    bridge.ensure(CONTROLLER)
    assert bridge.writes == writes + 1
    assert vsctl("get", "Bridge", BRIDGE, "fail_mode") == "secure"
    assert vsctl("get", "Bridge", BRIDGE, "protocols") == "[OpenFlow13]"
    assert vsctl("get", "Bridge", BRIDGE, "datapath_type") == "netdev"
    assert vsctl("get", "Bridge", BRIDGE, "other_config:disable-in-band") == '"true"'
    assert vsctl("get", "Bridge", BRIDGE, "external_ids:keep") == "me"
    assert vsctl("get", "Controller", BRIDGE, "target") == f'"{CONTROLLER}"'
    own_id = f'"{naming.datapath_id(BRIDGE):016x}"'  # the daemon programs this datapath only
    assert vsctl("get", "Bridge", BRIDGE, "other_config:datapath-id") == own_id
    assert wait_until(lambda: vsctl("get", "Bridge", BRIDGE, "datapath_id") == own_id, 10)
    bridge.ensure(CONTROLLER)
    assert bridge.writes == writes + 1


def test_reconcile_scale(bridge, plumber):
    """Wall time of plumbing many containers on one network (SB_SCALE, default 400)."""
    count = int(os.environ.get("SB_SCALE", "400"))
    plan = make_plan({f"c{i}": None for i in range(count)}, subnet="10.78.0.0/20")
    start = time.perf_counter()
    ofports = plumber.reconcile([plan])
    took = time.perf_counter() - start
    again = time.perf_counter()
    assert plumber.reconcile([plan]) == ofports
    idle = time.perf_counter() - again
    print(f"\nreconcile of {count} containers: {took:.2f}s; unchanged re-reconcile: {idle:.3f}s")
    assert len(ofports) == count + 1
    start = time.perf_counter()
    plumber.reconcile([])
    print(f"removing {count} containers: {time.perf_counter() - start:.2f}s")
    assert not [n for n in netns.list_namespaces() if n.startswith("sb-sbtp-")]



def test_what_a_repair_could_not_fix_is_reported_with_what_differs(bridge, plumber, monkeypatch):
    plan = make_plan({"a": None, "b": None})
    plumber.reconcile([plan])
    assert plumber.problems == Problems()
    ep = plan.containers[0].endpoints[0]
    for args in (["link", "set", "eth0", "down"], ["addr", "flush", "dev", "eth0"]):
        subprocess.run(["ip", "-n", ep.netns, *args], check=True)
    monkeypatch.setattr(netns, "configure_namespaces", list)  # a repair that changes nothing
    plumber.reconcile([plan])
    assert list(plumber.problems.ports) == [ep.port]
    assert plumber.problems.ports[ep.port].startswith(
        f"eth0: down, no address {ep.ip}/{ep.prefixlen}")
    monkeypatch.undo()
    plumber.reconcile([plan])  # the real repair
    assert plumber.problems == Problems()
    (link,) = ip_json("addr", "show", "eth0", netns_name=ep.netns)
    assert_interface(link, ep.mac, ep.ip, ep.prefixlen, ep.mtu)
