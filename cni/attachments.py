"""CNI attachments as Switchboard desired state: add, release, check and collect them.

A container a runtime adds is a record under ``P/topologies/<T>/cni/<container>`` (see
sbcore.model.desired): its container ID, namespace path, interface, network, address and
host. Every admission of T merges the records into what T's file declares, so a later
`switchboard up` of the file keeps them; the record and the topology's new version are
committed in one transaction of the same atomic admission as `up` (switchboard.apply).
Its address is fixed in the record when it is first admitted, so it keeps it for its life.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import time
from collections.abc import Callable
from ipaddress import IPv4Interface, ip_address, ip_interface
from typing import Any

import consul
import requests

from cni.protocol import (
    ADDRESS_TAKEN,
    CHECK_FAILED,
    CONSUL_ERROR,
    INVALID_CONFIG,
    INVALID_ENV,
    NOT_AVAILABLE,
    REFUSED,
    TRY_AGAIN_LATER,
    UNKNOWN_CONTAINER,
    Attached,
    CniError,
    Request,
    alternative_name,
    container_name,
)
from sbcore.model import Topology, TopologyError, ipam
from sbcore.model.desired import DesiredState, StoredTopology, encode, with_cni
from sbcore.plan.placement import PlacementError
from sbcore.state.store import Store, kv_op
from switchboard.apply import ATTEMPTS, Decision, _discard, decide

Records = dict[str, dict[str, Any]]
Change = Callable[[DesiredState, StoredTopology], tuple[Records, list[dict[str, Any]]] | None]
SETTLE = 10.0  # seconds DEL waits for the daemon to unplug (it succeeds either way)


def file_part(stored: StoredTopology, records: Records) -> Topology:
    """The topology as its file declares it: the stored one without the CNI containers."""
    if not records:
        return stored.topology
    doc = stored.topology.model_dump(mode="json", by_alias=True, exclude_none=True)
    for name in records:
        doc.get("containers", {}).pop(name, None)
    return Topology.model_validate(doc)


def find(records: Records, container_id: str, ifname: str) -> tuple[str, dict[str, Any]] | None:
    """The record of an attachment (container ID and interface), with its container name."""
    for name, record in sorted(records.items()):
        if record["container_id"] == container_id and record["ifname"] == ifname:
            return name, record
    return None


def _topology(state: DesiredState, request: Request) -> StoredTopology:
    stored = state.topologies.get(request.topology)
    if stored is None:
        raise CniError(INVALID_CONFIG, f"topology {request.topology!r} is not applied",
                       "apply it with `switchboard up FILE` first (`switchboard status` lists "
                       "the applied topologies)")
    if request.network not in stored.topology.networks:
        raise CniError(INVALID_CONFIG, f"topology {request.topology!r} has no network "
                                       f"{request.network!r}",
                       f"its networks: {', '.join(stored.topology.networks)}")
    return stored


def admit(store: Store, topology: str, change: Change) -> Decision | None:
    """Admit ``topology`` with the CNI records ``change`` returns for the state read (and
    the operations to commit with it), as `up` admits a file: read, decide, stage, commit
    with a check-and-set, again when another admission came in between. None when
    ``change`` says there is nothing to do; CniError when the admission refuses it."""
    staged: str | None = None
    for attempt in range(ATTEMPTS):
        state = store.snapshot()
        try:
            stored = state.topologies.get(topology)
            wanted = change(state, stored) if stored is not None else None
            if stored is None or wanted is None:
                if staged is not None:
                    _discard(store, topology, staged)
                return None
            records, ops = wanted
            build = file_part(stored, state.cni.get(topology, {}))
            decision = decide(store, state, build, False, records)
        except Exception as exc:
            if staged is not None:
                _discard(store, topology, staged)
            if isinstance(exc, TopologyError | PlacementError | ValueError) and not isinstance(
                    exc, CniError):
                raise CniError(REFUSED, "Switchboard refused the change", str(exc)) from None
            raise
        if staged is not None and staged != decision.digest:
            _discard(store, topology, staged)
        staged = decision.digest
        sealed = store.stage(state, topology, decision.digest, decision.objects)
        if store.commit(state, topology, decision.digest, stored.source, sealed,
                        decision.placement, ops):
            return decision
        time.sleep(random.uniform(0, 0.01 * min(attempt + 1, 20)))
    raise CniError(TRY_AGAIN_LATER, f"other writers kept changing topology {topology!r}")


def add(store: Store, request: Request, host: str) -> Attached:
    """ADD: admit the attachment on ``host`` and wait until its daemon plugged it."""
    if not is_netns(request.netns):
        raise CniError(INVALID_ENV, f"CNI_NETNS {request.netns} is not a network namespace")
    state = store.snapshot()
    stored = _topology(state, request)
    asked = request.requested_ip()
    net = stored.topology.networks[request.network]
    if asked is not None and asked not in net.subnet:
        raise CniError(INVALID_CONFIG, f"address {asked} is outside subnet {net.subnet} of "
                                       f"network {request.network!r}")
    found = find(state.cni.get(request.topology, {}), request.container_id, request.ifname)
    if found and found[1]["netns"] == request.netns and asked in (None, ip_address(
            found[1]["ip"])):  # a repeated ADD: already desired as asked
        return wait_plugged(store, request, host, found[0], found[1])
    record = {"container_id": request.container_id, "ifname": request.ifname,
              "netns": request.netns, "network": request.network, "host": host,
              "ip": str(asked) if asked else None}
    names: list[str] = []

    def change(state: DesiredState, stored: StoredTopology) -> tuple[Records, list[Any]]:
        records = dict(state.cni.get(request.topology, {}))
        again = find(records, request.container_id, request.ifname)
        name = again[0] if again else _free_name(request, stored, records)
        mine = dict(record)
        if again and not asked:
            mine["ip"] = again[1].get("ip")
        records.pop(name, None)
        base = file_part(stored, records)
        if mine["ip"] is None:
            merged = with_cni(base, {**records, name: mine})
            mine["ip"] = str(ipam.allocate(merged, stored.allocation)[(name, request.network)])
        else:
            _check_free(base, stored, records, name, request.network, mine["ip"])
        names[:] = [name]
        records[name] = mine
        return records, [kv_op("set", store.cni_key(request.topology, name), encode(mine))]

    decision = admit(store, request.topology, change)
    if decision is None:
        raise CniError(INVALID_CONFIG, f"topology {request.topology!r} is not applied")
    name = names[0]
    final = {**record, "ip": str(decision.allocation[(name, request.network)])}
    try:
        return wait_plugged(store, request, host, name, final)
    except CniError:
        release(store, request, settle=0)  # undo: ADD failed, so nothing stays
        raise


def is_netns(path: str) -> bool:
    """Whether ``path`` is a network namespace (a file of the kernel's nsfs)."""
    try:
        return os.stat(path).st_dev == os.stat("/proc/self/ns/net").st_dev
    except OSError:
        return False


def _free_name(request: Request, stored: StoredTopology, records: Records) -> str:
    name = container_name(request.pod_name, request.container_id)
    if name in stored.topology.containers or name in records:
        name = alternative_name(name, request.container_id)
    if name in stored.topology.containers or name in records:
        raise CniError(REFUSED, f"container name {name!r} is taken in topology "
                                f"{request.topology!r}")
    return name


def _check_free(base: Topology, stored: StoredTopology, records: Records, name: str,
                network: str, ip: str) -> None:
    """ADDRESS_TAKEN unless ``ip`` is free on ``network`` for container ``name``."""
    others = with_cni(base, records)
    address = ip_address(ip)
    owners = {a: c for (c, n), a in stored.allocation.items() if n == network and c != name}
    if address in owners or address in ipam.reserved_addresses(others, network):
        owner = owners.get(address)
        what = f"container {owner!r}" if owner else "the network (gateway, VIP or host address)"
        raise CniError(ADDRESS_TAKEN, f"address {ip} on network {network!r} is taken by {what}")


def wait_plugged(store: Store, request: Request, host: str, name: str,
                 record: dict[str, Any]) -> Attached:
    """Wait until ``host``'s daemon reports container ``name`` attached with its address;
    TRY_AGAIN_LATER when it does not within the request's timeout."""
    deadline = time.monotonic() + request.timeout
    last = "no report from the daemon yet"
    while True:
        report = store.reports(request.topology).get((host, request.topology))
        if report is not None:
            attached, why = _attached(report, name, request, record)
            if attached is not None:
                return attached
            last = why
        if time.monotonic() > deadline:
            raise CniError(TRY_AGAIN_LATER, f"host {host}'s Switchboard daemon did not plug "
                                            f"{request.topology}/{name} within "
                                            f"{request.timeout:g} s", last)
        time.sleep(0.1)


def _attached(report: dict[str, Any], name: str, request: Request,
              record: dict[str, Any]) -> tuple[Attached | None, str]:
    rows = [r for r in report.get("containers", []) if r["container"] == name]
    row = next((r for r in rows if r["interface"] == request.ifname), None)
    if row is None:
        return None, report.get("error") or f"the daemon does not show {name} yet"
    if row["state"] != "attached" or not row.get("ofport") or row["ip"] != record["ip"]:
        return None, row.get("problem") or f"{name} is {row['state']}"
    net = next((n for n in report.get("networks", []) if n["name"] == request.network), None)
    if net is None:
        return None, f"the daemon does not show network {request.network} yet"
    prefix = ip_interface(net["subnet"]).network.prefixlen
    return Attached(
        ifname=request.ifname, mac=row["mac"], sandbox=request.netns,
        address=IPv4Interface(f"{row['ip']}/{prefix}"), gateway=ip_address(net["gateway"]),
        nameserver=ip_address(net["host_ip"]),
    ), ""


def release(store: Store, request: Request, settle: float = SETTLE) -> bool:
    """DEL: remove the attachment's record (and so its port); False when there was none.
    Waits up to ``settle`` seconds for the daemon to unplug it."""
    names: list[str] = []

    def change(state: DesiredState, stored: StoredTopology) -> tuple[Records, list[Any]] | None:
        records = state.cni.get(request.topology, {})
        found = find(records, request.container_id, request.ifname)
        if found is None:
            return None
        names[:] = [found[0]]
        rest = {n: r for n, r in records.items() if n != found[0]}
        return rest, [kv_op("delete", store.cni_key(request.topology, found[0]))]

    if admit(store, request.topology, change) is None:
        return False
    _wait_gone(store, request.topology, names[0], settle)
    return True


def _wait_gone(store: Store, topology: str, name: str, settle: float) -> None:
    deadline = time.monotonic() + settle
    while time.monotonic() < deadline:
        rows = [r for report in store.reports(topology).values()
                for r in report.get("containers", []) if r["container"] == name]
        if not rows:
            return
        time.sleep(0.1)


def collect(store: Store, request: Request, host: str) -> list[str]:
    """GC: release this host's attachments on the request's network whose container ID and
    interface are not among the valid ones; the container names released."""
    valid = request.valid_attachments()
    gone: list[str] = []

    def change(state: DesiredState, stored: StoredTopology) -> tuple[Records, list[Any]] | None:
        records = state.cni.get(request.topology, {})
        stale = [n for n, r in records.items() if r["network"] == request.network
                 and r.get("host") == host and (r["container_id"], r["ifname"]) not in valid]
        if not stale:
            return None
        gone[:] = sorted(stale)
        rest = {n: r for n, r in records.items() if n not in stale}
        return rest, [kv_op("delete", store.cni_key(request.topology, n)) for n in stale]

    admit(store, request.topology, change)
    return gone


def check(store: Store, request: Request, host: str) -> None:
    """CHECK: CHECK_FAILED (or UNKNOWN_CONTAINER) unless the attachment is desired, the
    daemon reports it attached and the namespace holds its interface, address and route."""
    _, state = store.read_topologies()
    stored = _topology(state, request)
    found = find(state.cni.get(request.topology, {}), request.container_id, request.ifname)
    if found is None:
        raise CniError(UNKNOWN_CONTAINER, f"container {request.container_id[:12]} has no "
                                          f"attachment {request.ifname} on topology "
                                          f"{request.topology!r}")
    name, record = found
    problems = []
    if record["netns"] != request.netns:
        problems.append(f"desired namespace {record['netns']}, CNI_NETNS {request.netns}")
    report = store.reports(request.topology).get((record.get("host") or host, request.topology))
    attached, why = _attached(report or {}, name, request, record)
    if attached is None:
        problems.append(f"the daemon does not report it attached: {why}")
    else:
        problems += _namespace_problems(request, attached)
    prev = (request.config.get("prevResult") or {}).get("ips") or []
    if prev and str(prev[0].get("address", "")).split("/")[0] != record["ip"]:
        problems.append(f"prevResult has {prev[0].get('address')}, desired {record['ip']}")
    if stored.allocation.get((name, request.network)) != ip_address(record["ip"]):
        problems.append(f"the desired address is not {record['ip']}")
    if problems:
        raise CniError(CHECK_FAILED, f"{request.topology}/{name} is not as desired",
                       "; ".join(problems))


def _namespace_problems(request: Request, want: Attached) -> list[str]:
    """What differs inside the namespace: the interface's MAC and address, the route."""
    def ip_json(*args: str) -> Any:
        proc = subprocess.run(["nsenter", f"--net={request.netns}", "ip", "-j", *args],
                              capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise CniError(INVALID_ENV, f"cannot look into {request.netns}",
                           proc.stderr.strip())
        return json.loads(proc.stdout or "[]")

    links = ip_json("addr", "show", "dev", request.ifname) if _has_link(
        request) else []
    if not links:
        return [f"{request.netns} has no interface {request.ifname}"]
    link, problems = links[0], []
    if link.get("address") != want.mac:
        problems.append(f"{request.ifname} has MAC {link.get('address')}, desired {want.mac}")
    have = {f"{a['local']}/{a['prefixlen']}" for a in link.get("addr_info", [])
            if a.get("family") == "inet"}
    if str(want.address) not in have:
        problems.append(f"{request.ifname} has {', '.join(sorted(have)) or 'no address'}, "
                        f"desired {want.address}")
    routes = ip_json("-4", "route", "show", "default")
    if not any(r.get("gateway") == str(want.gateway) for r in routes):
        problems.append(f"no default route via {want.gateway}")
    return problems


def _has_link(request: Request) -> bool:
    proc = subprocess.run(["nsenter", f"--net={request.netns}", "ip", "link", "show", "dev",
                           request.ifname], capture_output=True, check=False)
    return proc.returncode == 0


def reachable(call: Callable[[], Any], consul_address: str) -> Any:
    """Run ``call``; Consul unreachable is TRY_AGAIN_LATER, an ACL refusal REFUSED."""
    try:
        return call()
    except consul.ACLPermissionDenied as exc:
        raise CniError(REFUSED, "Consul refused the token", str(exc)) from None
    except (requests.ConnectionError, requests.Timeout) as exc:
        raise CniError(TRY_AGAIN_LATER, f"Consul at {consul_address} cannot be reached",
                       type(exc).__name__) from None
    except consul.ConsulException as exc:
        raise CniError(CONSUL_ERROR, "Consul answered with an error", str(exc)) from None


def status(store: Store, host: str) -> None:
    """STATUS: NOT_AVAILABLE unless Consul answers and this host's daemon is ready."""
    from sbcore.state.hosts import read_hosts

    try:
        record = read_hosts(store.client, store.prefix).get(host)
    except (requests.ConnectionError, requests.Timeout, consul.ConsulException) as exc:
        raise CniError(NOT_AVAILABLE, "Consul cannot be reached", str(exc)) from None
    if record is None or not record.ready:
        why = record.reason if record is not None else "it never registered"
        raise CniError(NOT_AVAILABLE, f"the Switchboard daemon of host {host} is not ready",
                       f"{why}; start it with scripts/start-controller.sh")
