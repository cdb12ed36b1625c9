"""The floor of bring-up: the irreducible work for N containers on one network, done as
directly as the machine allows, timed in the same run as Switchboard's `up` of the same N.

The floor, phase by phase (the bridge exists before the clock starts, as the daemon's does):

- ``netns+veth``: one ``ip -batch``: N namespaces, N veth pairs (MAC, MTU, peer moved into its
  namespace), host ends up;
- ``ports``: one ``ovs-vsctl`` transaction adding the N veths and the network's host leg (an
  internal port), which waits for ovs-vswitchd to give them OpenFlow numbers;
- ``addresses``: from this process, one thread entering each namespace in turn (setns) and
  sending its link-up, address and default route as one netlink batch; the host leg's address;
- ``flows``: three flows per container and the host leg's (port security, ARP to its owner,
  delivery by MAC), in one ``ovs-ofctl --bundle`` transaction;
- ``answer``: until every container answers a ping from the host.

Switchboard's side is `switchboard up` of the same N on one network (a private daemon,
bridge, KV prefix and OpenFlow port) until every container answers, split into `up` (the
command) and what came after it returned (``answer``; reading the addresses with
`switchboard status` in between is not counted: the floor knows its addresses beforehand).
Its teardown (`switchboard down`) is timed against OVS's own port-removal floor: one
``ovs-vsctl del-br`` of a bridge holding N netdev ports. Both sides ping with the same pinger
(one raw ICMP socket, 32 requests every 10 ms, cycling over who has not answered). The sides
take turns going first; the kernel's ARP table limits are raised for the run (and put back)
as bench/cluster_bringup.py does. The daemon's log lines on where its passes spent their time follow
each round. Run as root with OVS and Consul started:

    /opt/switchboard/venv/bin/python bench/floor.py 50 400 1000 [--rounds 2]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from ipaddress import IPv4Network
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ovsdb.bridge import detect_datapath  # noqa: E402
from plumbing.forwarding import answered  # noqa: E402
from plumbing.netlinkbatch import IfaceConfig, netlink_batch  # noqa: E402
from plumbing.netns import NETNS_DIR, enter_netns  # noqa: E402
from plumbing.phases import Phases  # noqa: E402
from tests.harness import private_switchboard, sh, teardown  # noqa: E402

SUBNET = IPv4Network("10.233.0.0/16")
BRIDGE = "sbf-br"  # the floor's bridge
SB_BRIDGE = "sbf-sb"  # the private daemon's
LEG = "sbf-leg"
LEG_MAC = "02:fb:00:00:00:01"
OF_PORT = 6693
Took = dict[str, float]  # phase -> seconds


def all_answer(addresses: list[str], timeout: float = 300) -> None:
    """Ping from the host until every address answered once: the daemon's own check
    (plumbing.forwarding, paced requests on one raw socket)."""
    missing = set(addresses) - answered(addresses, timeout)
    if missing:
        raise RuntimeError(f"{len(missing)} containers never answered, e.g. {min(missing)}")


def _mac(i: int) -> str:
    return f"02:fa:00:{(i >> 16) & 0xFF:02x}:{(i >> 8) & 0xFF:02x}:{i & 0xFF:02x}"


def _run(args: list[str], stdin: str = "") -> None:
    proc = subprocess.run(args, input=stdin, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:3])} failed: {proc.stderr.strip()[:400]}")


def _configure(by_ns: dict[str, list[IfaceConfig]]) -> list[str]:
    """One thread entering each namespace in turn: one netlink batch in each."""
    errors: list[str] = []

    def body() -> None:
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        try:
            for ns, configs in by_ns.items():
                fd = os.open(NETNS_DIR / ns, os.O_RDONLY)
                try:
                    enter_netns(fd, ns)
                finally:
                    os.close(fd)
                errors.extend(netlink_batch(configs, loopback=True, where=f"{ns} "))
        finally:
            enter_netns(home, "root")
            os.close(home)

    worker = threading.Thread(target=body)
    worker.start()
    worker.join()
    return errors


def floor_up(n: int, datapath: str) -> tuple[Took, list[str]]:
    """Bring up N containers the floor's way; phases and addresses."""
    hosts = list(SUBNET.hosts())
    gateway = hosts[0]
    ips = [hosts[i + 10] for i in range(n)]
    _run(["ovs-vsctl", "--if-exists", "del-br", BRIDGE, "--", "add-br", BRIDGE, "--", "set",
          "bridge", BRIDGE, f"datapath_type={datapath}", "fail_mode=secure"])
    clock = Phases()
    script = "".join(f"netns add sbf{i}\n" for i in range(n))
    script += "".join(f"link add sbfv{i} type veth peer name eth0 address {_mac(i)} "
                      f"netns sbf{i}\nlink set sbfv{i} addrgenmode none arp off up\n"
                      for i in range(n))
    _run(["ip", "-batch", "-"], script)
    clock.lap("netns+veth")
    vsctl = ["ovs-vsctl", "--timeout=120"]
    for i in range(n):
        vsctl += ["--", "add-port", BRIDGE, f"sbfv{i}"]
    vsctl += ["--", "add-port", BRIDGE, LEG, "--", "set", "interface", LEG, "type=internal",
              f"mac=\"{LEG_MAC}\""]
    _run(vsctl)
    listing = subprocess.run(
        ["ovs-vsctl", "--format=csv", "--no-headings", "--columns=name,ofport", "list",
         "interface"], capture_output=True, text=True, check=True).stdout
    ofport = {name: int(port) for name, port in
              (line.split(",") for line in listing.splitlines()) if port.lstrip("-").isdigit()}
    clock.lap("ports")
    errors = netlink_batch([IfaceConfig(LEG, LEG_MAC, gateway, SUBNET.prefixlen, 1500)],
                           loopback=False, where="")
    errors += _configure({f"sbf{i}": [IfaceConfig("eth0", None, ips[i], SUBNET.prefixlen,
                                                  1500, f"sbf{i}", gateway)]
                          for i in range(n)})
    if errors:
        raise RuntimeError(f"configuring addresses: {errors[:3]}")
    clock.lap("addresses")
    leg = ofport[LEG]
    flows = [f"table=0,priority=100,in_port={leg},actions=goto_table:1",
             f"table=1,priority=100,dl_dst={LEG_MAC},actions=output:{leg}",
             f"table=1,priority=90,arp,arp_tpa={gateway},actions=output:{leg}"]
    for i in range(n):
        port = ofport[f"sbfv{i}"]
        flows += [f"table=0,priority=100,in_port={port},dl_src={_mac(i)},actions=goto_table:1",
                  f"table=1,priority=90,arp,arp_tpa={ips[i]},actions=output:{port}",
                  f"table=1,priority=100,dl_dst={_mac(i)},actions=output:{port}"]
    _run(["ovs-ofctl", "-O", "OpenFlow13", "--bundle", "add-flows", BRIDGE, "-"],
         "\n".join(flows) + "\n")
    clock.lap("flows")
    addresses = [str(ip) for ip in ips]
    all_answer(addresses)
    clock.lap("answer")
    return clock.took, addresses


def floor_down(n: int) -> Took:
    """Remove the floor's bridge (OVS's own port removal: the teardown floor) and namespaces."""
    clock = Phases()
    _run(["ovs-vsctl", "--timeout=300", "del-br", BRIDGE])
    clock.lap("del-br")
    _run(["ip", "-force", "-batch", "-"], "".join(f"netns del sbf{i}\n" for i in range(n)))
    clock.lap("netns del")
    return clock.took


def switchboard_side(n: int, state: Path, datapath: str) -> tuple[Took, Took]:
    """`up` of N containers until all answer, then `down`; phases of each."""
    sb = private_switchboard(state, prefix="sbfloor", bridge=SB_BRIDGE, of_port=OF_PORT)
    sb.start()
    try:
        rows = "".join(f"  c{i}: {{networks: [lan]}}\n" for i in range(n))
        topo = state / f"floor{n}.yaml"
        topo.write_text(f"name: floor{n}\nnetworks:\n  lan: {{subnet: {SUBNET}}}\n"
                        f"containers:\n{rows}")
        sb.wait_ready()
        used = sh(f"ovs-vsctl get bridge {SB_BRIDGE} datapath_type").stdout.strip().strip('"')
        if (used or "system") != datapath:
            raise RuntimeError(f"the daemon's bridge is on {used}, the floor's on {datapath}")
        clock = Phases()
        sb.cli("up", str(topo), "--timeout", "600", timeout=700)
        clock.lap("up")
        addresses = [r["ip"] for r in sb.status(f"floor{n}")["containers"]]
        clock.lap("status")  # not counted: the floor knows its addresses beforehand
        all_answer(addresses)
        clock.lap("answer")
        down = Phases()
        sb.cli("down", f"floor{n}", timeout=600)
        down.lap("down")
        return clock.took, down.took
    finally:
        _daemon_phases(sb.log)
        teardown(sb)


def _daemon_phases(log: Path) -> None:
    """Print where the daemon's passes that changed something spent their time (its log)."""
    for line in log.read_text().splitlines():
        if " took " in line:
            print("      daemon:", line.split(" INFO ", 1)[-1])


def _fmt(phases: Took) -> str:
    return ", ".join(f"{k} {v:.2f}" for k, v in phases.items())


def one_round(n: int, datapath: str, order: list[str]) -> dict[str, Took]:
    out: dict[str, Took] = {}
    steps: dict[str, Callable[[], None]] = {}

    def floor() -> None:
        try:
            out["floor up"], _ = floor_up(n, datapath)
        finally:
            out["floor down"] = floor_down(n)

    def ours() -> None:
        with tempfile.TemporaryDirectory(prefix="sbfloor-") as tmp:
            out["switchboard up"], out["switchboard down"] = switchboard_side(
                n, Path(tmp), datapath)

    steps = {"floor": floor, "switchboard": ours}
    for side in order:
        steps[side]()
    return out


@contextlib.contextmanager
def arp_table_room(entries: int) -> Iterator[None]:
    """Raise the kernel's ARP table limits (global to all namespaces) to hold ``entries``;
    the old values back after. N containers and the host need 2N entries: past the default
    ``gc_thresh3`` of 1024, new ones fail ("neighbor table overflow") and pings go
    unanswered for a minute, on either side."""
    neigh = Path("/proc/sys/net/ipv4/neigh/default")
    old = {k: int((neigh / k).read_text()) for k in ("gc_thresh2", "gc_thresh3")}
    try:
        (neigh / "gc_thresh3").write_text(str(max(old["gc_thresh3"], 2 * entries)))
        (neigh / "gc_thresh2").write_text(str(max(old["gc_thresh2"], entries)))
        yield
    finally:
        for key in ("gc_thresh2", "gc_thresh3"):
            (neigh / key).write_text(str(old[key]))


def main(sizes: list[int], rounds: int) -> None:
    with arp_table_room(2 * max(sizes, default=0) + 1024):
        _main(sizes, rounds)


def _main(sizes: list[int], rounds: int) -> None:
    datapath = detect_datapath()
    print(f"datapath: {datapath}; {rounds} round(s) per size, the sides taking turns first")
    print(f"{'N':>5} {'first':>11} {'floor s':>8} {'sb s':>7} {'sb/floor':>9} "
          f"{'sb ms/ctr':>10} {'teardown floor s':>17} {'sb down s':>10} {'down/floor':>11}")
    for n in sizes:
        for r in range(rounds):
            order = ["switchboard", "floor"] if r % 2 == 0 else ["floor", "switchboard"]
            res = one_round(n, datapath, order)
            fl = sum(res["floor up"].values())
            ours = sum(v for k, v in res["switchboard up"].items() if k != "status")
            fd, od = res["floor down"]["del-br"], res["switchboard down"]["down"]
            print(f"{n:>5} {order[0]:>11} {fl:>8.2f} {ours:>7.2f} {ours / fl:>8.2f}x "
                  f"{1000 * ours / n:>10.2f} {fd:>17.2f} {od:>10.2f} {od / fd:>10.2f}x")
            print(f"      floor: {_fmt(res['floor up'])} | down: {_fmt(res['floor down'])}")
            print(f"      switchboard: {_fmt(res['switchboard up'])}", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sizes", type=int, nargs="*", default=[50, 400, 1000])
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    main(args.sizes, args.rounds)
