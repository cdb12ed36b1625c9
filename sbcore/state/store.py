"""Desired state and host reports in Consul KV: reads, staged writes, atomic commits.

Keys (``P`` is the prefix, ``switchboard`` by default; a topology's own layout is in
sbcore.model.desired)::

    P/admission                  {"generation": n, "change": ...}: bumped by every admission
    P/topologies/<topo>/...      the topology's versions, its ``applied`` marker and its
                                 ``placement`` (container -> host)
    P/status/<host>/<topo>       the daemon's report for its host
    P/hosts/<host>, P/slots/<n>  the host inventory (sbcore.state.hosts)
    P/events/<host>/<ns>-<seq>   the host's last events, a ring (sbcore.state.events)

Admission is optimistic, as Kubernetes does with resourceVersion: read everything in one
transaction (``snapshot``), decide, stage a version under its digest, then switch the marker
in one transaction that also does a check-and-set on ``P/admission`` at the index read. Any
admission in between makes the check fail, and the caller reads and decides again: of two
conflicting writers exactly one wins. Every deletion of a version happens inside such a
transaction, so a version a writer staged cannot vanish before its commit succeeds.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import consul

from sbcore.model.desired import (
    KINDS,
    MARKER,
    PLACEMENT,
    SEALED,
    VERSIONS,
    DesiredState,
    StoredTopology,
    encode,
    load_json,
    parse_desired,
    raw_value,
)
from sbcore.state.events import events_prefix
from sbcore.state.token import Token
from sbcore.state.token import resolve as resolve_token

__all__ = ["DEFAULT_CONSUL", "DesiredState", "Store", "StoredTopology", "consul_client"]

DEFAULT_CONSUL = "http://127.0.0.1:8500"  # the local agent
TXN_LIMIT = 64  # Consul's limit of operations in one transaction
STAGE_WRITERS = 4  # transactions of one version's objects under way at once
ADMISSION = "admission"


def consul_client(address: str, token: str | Token | None = None) -> consul.Consul:
    """Client for a Consul HTTP address such as ``http://127.0.0.1:8500``, sending the ACL
    token ``token`` or, without one, the token sbcore.state.token finds (its source is kept
    in ``client.token_source``). TokenError when a named token file cannot be read."""
    scheme, _, rest = address.partition("://")
    if not rest:
        scheme, rest = "http", address
    host, _, port = rest.partition(":")
    found = token if isinstance(token, Token) else resolve_token(token)
    client = consul.Consul(host=host, port=int(port or 8500), scheme=scheme)
    client.token = found.secret  # py-consul would prefer CONSUL_HTTP_TOKEN to its argument
    client.token_source = found.source
    if found.secret:  # on every request: py-consul's txn.put sends no token of its own
        client.http.session.headers["X-Consul-Token"] = found.secret
    return client


class Store:
    """Reads and writes Switchboard's keys in Consul KV."""

    def __init__(self, client: consul.Consul, prefix: str = "switchboard") -> None:
        self.client = client
        self.prefix = prefix.strip("/")

    # --- paths ----------------------------------------------------------------------------
    def _topo_prefix(self, name: str = "") -> str:
        return f"{self.prefix}/topologies/{name + '/' if name else ''}"

    def _version_prefix(self, name: str, digest: str) -> str:
        return f"{self._topo_prefix(name)}{VERSIONS}{digest}/"

    def cni_key(self, topology: str, container: str) -> str:
        """Key of a container the CNI plugin added to ``topology``."""
        return f"{self._topo_prefix(topology)}cni/{container}"

    def status_key(self, host: str, topology: str) -> str:
        return f"{self.prefix}/status/{host}/{topology}"

    # --- reading the desired state -------------------------------------------------------
    def read_topologies(
        self, index: str | None = None, wait: str = "10s"
    ) -> tuple[str | None, DesiredState]:
        """The desired state; blocks up to ``wait`` for a change after ``index``."""
        index, entries = self.client.kv.get(
            self._topo_prefix(), recurse=True, index=index, wait=wait
        )
        return index, parse_desired(self._topo_prefix(), entries or [])

    def applied(self) -> dict[str, StoredTopology]:
        """The currently applied topologies, in the order they were applied (non-blocking)."""
        return self.read_topologies()[1].topologies

    def marker(self, name: str) -> dict[str, Any] | None:
        """A topology's ``applied`` marker (digest and source), None when not applied."""
        _, entry = self.client.kv.get(self._topo_prefix(name) + MARKER)
        try:
            marker = load_json(entry["Value"]) if entry else None
        except ValueError:
            return {}
        return marker if isinstance(marker, dict) or marker is None else {}

    def snapshot(self) -> DesiredState:
        """The admission key, every topology key and the host records, read in one
        transaction."""
        hosts = f"{self.prefix}/hosts/"
        reply = self._txn([
            kv_op("get-tree", f"{self.prefix}/{ADMISSION}"),
            kv_op("get-tree", self._topo_prefix()),
            kv_op("get-tree", hosts),
        ])
        entries = [r["KV"] for r in reply.get("Results") or []]
        admission = f"{self.prefix}/{ADMISSION}"
        state = parse_desired(self._topo_prefix(), [
            e for e in entries if e["Key"].startswith(self._topo_prefix())])
        state.host_entries = [e for e in entries if e["Key"].startswith(hosts)]
        for entry in entries:
            if entry["Key"] == admission:
                state.admission_index = int(entry["ModifyIndex"])
                try:
                    state.generation = int(load_json(raw_value(entry) or b"{}")["generation"])
                except (ValueError, KeyError, TypeError):
                    state.generation = 0  # unreadable: the check-and-set still holds
        return state

    # --- writing the desired state -------------------------------------------------------
    def stage(self, state: DesiredState, name: str, digest: str, objects: dict[str, Any]) -> int:
        """Write a version's objects (what ``state`` shows missing or different), then seal
        it; the seal's index, which the commit checks."""
        base = self._version_prefix(name, digest)
        have = state.versions.get(name, {}).get(digest, {})
        ops = [kv_op("set", base + path, encode(value))
               for path, value in objects.items() if have.get(path) != encode(value)]
        ops += [kv_op("delete", base + path)
                for path in have if path not in objects and path != SEALED]
        # The chunks are independent (the seal, written after all of them, is what a commit
        # checks): a few at a time, so that Consul commits them together.
        with ThreadPoolExecutor(STAGE_WRITERS) as pool:
            list(pool.map(self._txn, _chunks(ops, TXN_LIMIT)))
        reply = self._txn([kv_op("set", base + SEALED,
                                            encode({"objects": len(objects)}))])
        return int(reply["Results"][0]["KV"]["ModifyIndex"])

    def commit(
        self, state: DesiredState, name: str, digest: str, source: str, sealed_index: int,
        placement: dict[str, str] | None = None, extra: list[dict[str, Any]] | None = None,
    ) -> bool:
        """Make version ``digest`` the desired one, with its ``placement`` (container ->
        host; None leaves the stored one as it is), and drop the topology's other versions,
        if nothing was admitted since ``state`` was read; False when something was.
        ``extra``: more operations of the same transaction (a CNI record's write)."""
        ops = [
            self._admission_op(state, f"up {name} {digest}"),
            kv_op("check-index", self._version_prefix(name, digest) + SEALED,
                   index=sealed_index),
            kv_op("set", self._topo_prefix(name) + MARKER,
                   encode({"digest": digest, "source": source})),
        ]
        if placement is not None:
            ops.append(kv_op("set", self._topo_prefix(name) + PLACEMENT, encode(placement)))
        ops += extra or []
        stale = [d for d in state.versions.get(name, {}) if d != digest]
        ops += [kv_op("delete-tree", self._version_prefix(name, d))
                for d in stale[:TXN_LIMIT - len(ops) - len(KINDS)]]
        # objects of the layout before versions (beside the marker)
        ops += [kv_op("delete-tree", f"{self._topo_prefix(name)}{kind}/") for kind in KINDS]
        return self._try(ops)

    def remove(self, state: DesiredState, name: str) -> bool:
        """Delete every key of a topology, if nothing was admitted since ``state`` was read;
        False when something was."""
        return self._try([self._admission_op(state, f"down {name}"),
                          kv_op("delete-tree", self._topo_prefix(name))])

    def discard(self, state: DesiredState, name: str, digest: str) -> bool:
        """Delete a staged version that was not committed (same rule as ``remove``)."""
        return self._try([self._admission_op(state, f"discard {name} {digest}"),
                          kv_op("delete-tree", self._version_prefix(name, digest))])

    def relocate(
        self, state: DesiredState, placements: dict[str, dict[str, str]], change: str,
        lock: tuple[str, str] | None = None,
    ) -> bool:
        """Store new placements of applied topologies (topology -> container -> host) in one
        transaction, if nothing was admitted since ``state`` was read and, with ``lock``
        (key, session), if that session still holds the lock; False when a check failed.
        At most ``TXN_LIMIT - 2`` topologies at a time (ValueError otherwise)."""
        if len(placements) > TXN_LIMIT - 2:
            raise ValueError(f"at most {TXN_LIMIT - 2} topologies per relocation")
        ops = [self._admission_op(state, change)]
        if lock is not None:
            ops.append(kv_op("check-session", lock[0], session=lock[1]))
        ops += [kv_op("set", self._topo_prefix(name) + PLACEMENT, encode(placement))
                for name, placement in sorted(placements.items())]
        return self._try(ops)

    def forget_host(self, state: DesiredState, host: str, slot_keys: list[str]) -> list[str] | None:
        """Delete a host's record, the slot keys it holds, its reports and its events in one
        transaction, if nothing was admitted since ``state`` was read: the keys and trees
        deleted, None when the check failed (see :mod:`sbcore.state.forget`)."""
        keys = [f"{self.prefix}/hosts/{host}", *slot_keys]
        trees = [f"{self.prefix}/status/{host}/", events_prefix(self.prefix, host)]
        ops = [self._admission_op(state, f"forget host {host}"),
               *(kv_op("delete", key) for key in keys),
               *(kv_op("delete-tree", tree) for tree in trees)]
        return [*keys, *trees] if self._try(ops) else None

    def _txn(self, ops: list[dict[str, Any]]) -> Any:
        """One KV transaction; an ACL refusal (Consul answers it as a failed transaction,
        409) raises consul.ACLPermissionDenied, not a conflict."""
        try:
            return self.client.txn.put(ops)
        except consul.ConsulException as exc:
            if str(exc).startswith("409") and '"Permission denied"' in str(exc):
                raise consul.ACLPermissionDenied(
                    "Permission denied (a KV transaction under the prefix "
                    f"{self.prefix}/)") from None
            raise

    def _admission_op(self, state: DesiredState, change: str) -> dict[str, Any]:
        value = encode({"generation": state.generation + 1, "change": change})
        return kv_op("cas", f"{self.prefix}/{ADMISSION}", value, index=state.admission_index)

    def _try(self, ops: list[dict[str, Any]]) -> bool:
        try:
            self._txn(ops)
        except consul.ConsulException as exc:
            if str(exc).startswith("409"):  # a check failed: someone admitted something
                return False
            raise
        return True

    # --- status -------------------------------------------------------------------------------
    def report(self, host: str, topology: str, report: dict[str, Any]) -> None:
        self.client.kv.put(self.status_key(host, topology), json.dumps(report, sort_keys=True))

    def clear_report(self, host: str, topology: str) -> None:
        self.client.kv.delete(self.status_key(host, topology))

    def reports(
        self, topology: str | None = None, skipped: dict[str, str] | None = None
    ) -> dict[tuple[str, str], dict[str, Any]]:
        """(host, topology) -> the daemon's last report. A key that holds no report (foreign
        or corrupted) is left out, and put in ``skipped`` (key -> why) when given."""
        _, entries = self.client.kv.get(f"{self.prefix}/status/", recurse=True)
        result = {}
        for entry in entries or []:
            host, _, topo = entry["Key"][len(self.prefix) + 8:].partition("/")
            if topology is None or topo == topology:
                try:
                    report = load_json(entry["Value"])
                    if why := report_problem(report):
                        raise ValueError(why)
                except ValueError as exc:
                    if skipped is not None:
                        skipped[entry["Key"]] = f"not a status report: {exc}"
                    continue
                result[(host, topo)] = report
        return result

    def wait_for_report(
        self, topology: str, predicate: Any, timeout: float, on_poll: Any = None
    ) -> dict[tuple[str, str], dict[str, Any]]:
        """Poll the reports of a topology until ``predicate(reports)`` is true or time is up."""
        deadline = time.monotonic() + timeout
        while True:
            reports = self.reports(topology)
            if on_poll is not None:
                on_poll(reports)
            if predicate(reports) or time.monotonic() > deadline:
                return reports
            time.sleep(0.1)



_ROW_KEYS = ("container", "network", "netns", "interface", "ip", "mac", "port", "state")
_NETWORK_KEYS = ("name", "subnet", "gateway", "host_ip")


def report_problem(value: Any) -> str | None:
    """Why a value read under ``P/status/`` is not a daemon's report; None when it is one.
    Checks what readers rely on: its state, digest, container and network rows. Pure."""
    if not isinstance(value, dict):
        return "not a JSON object"
    for key in ("state", "digest"):
        if not isinstance(value.get(key), str):
            return f"{key!r} is not a string"
    for key, fields in (("containers", _ROW_KEYS), ("networks", _NETWORK_KEYS)):
        rows = value.get(key, [])
        if not isinstance(rows, list) or not all(
            isinstance(row, dict) and all(isinstance(row.get(f), str) for f in fields)
            for row in rows
        ):
            return f"{key!r} is not a list of rows with {', '.join(fields)}"
    return None


def kv_op(verb: str, key: str, value: bytes | None = None, index: int | None = None,
          session: str | None = None) -> dict[str, Any]:
    """One operation of a Consul KV transaction (``value`` is sent base64-encoded)."""
    op: dict[str, Any] = {"Verb": verb, "Key": key}
    if value is not None:
        op["Value"] = base64.b64encode(value).decode()
    if index is not None:
        op["Index"] = index
    if session is not None:
        op["Session"] = session
    return {"KV": op}


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]
