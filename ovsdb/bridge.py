"""The Switchboard bridge in OVSDB, through ovsdbapp: one transaction per change, none if none."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ovsdbapp.backend.ovs_idl import command, connection, idlutils
from ovsdbapp.schema.open_vswitch import impl_idl

from sbcore.model.naming import OWNER_KEY, datapath_id

DEFAULT_DB = "unix:/var/run/openvswitch/db.sock"
TOPOLOGY_KEY = "switchboard-topology"  # set on every port Switchboard owns
_COLUMNS = {  # only what we read or write: the IDL then ignores statistics and status churn
    "Open_vSwitch": ["bridges", "next_cfg", "cur_cfg"],
    "Bridge": ["name", "ports", "datapath_type", "fail_mode", "protocols", "other_config",
               "external_ids", "controller"],
    "Port": ["name", "interfaces", "external_ids"],
    "Interface": ["name", "type", "external_ids", "ofport", "error", "mac", "mtu_request",
                  "options"],
    "Controller": ["target", "max_backoff"],
}
_TIMEOUT = 60.0  # seconds for one transaction, including ovs-vswitchd catching up


class BridgeError(RuntimeError):
    """An OVSDB change or wait on the bridge failed."""


@dataclass(frozen=True)
class PortSpec:
    """A port to add: a veth host end (``internal=False``) or an OVS internal port."""

    name: str
    internal: bool
    external_ids: dict[str, str] = field(default_factory=dict)
    mac: str | None = None  # Interface mac: only honoured for internal ports
    mtu: int | None = None  # Interface mtu_request
    type: str | None = None  # Interface type other than internal (e.g. vxlan)
    options: dict[str, str] = field(default_factory=dict)  # Interface options


@dataclass(frozen=True)
class OwnedPort:
    """A port on the bridge that carries Switchboard's external_ids."""

    name: str
    external_ids: dict[str, str]
    ofport: int | None  # None until ovs-vswitchd assigns one, or when it failed


CONTROLLER_MAX_BACKOFF_MS = 1000
TUNNEL_PORT = "sb-tun"  # the one flow-based VXLAN port of the bridge


def detect_datapath() -> str:
    """``system`` (the kernel datapath) where the ``openvswitch`` module is loaded, else
    ``netdev`` (userspace): the kernel one is faster and tunnels offloaded packets."""
    return "system" if Path("/sys/module/openvswitch").is_dir() else "netdev"


def _tunnel_options(local_ip: str) -> dict[str, str]:
    return {"remote_ip": "flow", "key": "flow", "local_ip": local_ip}


def _wanted_bridge(name: str, controller: str, datapath: str = "netdev") -> dict[str, Any]:
    return {
        "datapath_type": datapath,
        "fail_mode": ["secure"],
        "protocols": ["OpenFlow13"],
        "other_config": {"disable-in-band": "true",
                         "datapath-id": f"{datapath_id(name):016x}"},
        "external_ids": {OWNER_KEY: "bridge"},
        "controller": [controller],
    }


def _bridge_diff(row: Any, wanted: dict[str, Any]) -> dict[str, Any]:
    """Columns of an existing bridge row that differ from ``wanted`` (maps: only our keys)."""
    diff: dict[str, Any] = {}
    for column, value in wanted.items():
        current = getattr(row, column)
        if column == "controller":
            current = [c.target for c in current]
        if isinstance(value, dict):
            differs = any(current.get(k) != v for k, v in value.items())
        elif isinstance(value, list):
            differs = list(current) != value
        else:
            differs = current != value
        if differs:
            diff[column] = value
    return diff


class _Run(command.BaseCommand):
    """A write command whose body is a function of (api, txn)."""

    def __init__(self, api: Any, body: Callable[[Any, Any], None], text: str) -> None:
        super().__init__(api)
        self.body = body
        self.text = text

    def run_idl(self, txn: Any) -> None:
        self.body(self.api, txn)

    def __str__(self) -> str:
        return self.text


_APIS: dict[str, impl_idl.OvsdbIdl] = {}
_APIS_LOCK = threading.Lock()


def _api(db: str) -> impl_idl.OvsdbIdl:
    """One IDL connection per database, shared by every Bridge on it."""
    with _APIS_LOCK:
        if db not in _APIS:
            helper = idlutils.get_schema_helper(db, "Open_vSwitch")
            for table, columns in _COLUMNS.items():
                helper.register_columns(table, columns)
            idl = connection.OvsdbIdl(db, helper)
            conn = connection.Connection(idl, timeout=_TIMEOUT)
            # ovsdbapp keeps the connection on the class: a class per database keeps them apart.
            cls = type("SwitchboardOvsIdl", (impl_idl.OvsdbIdl,), {"_ovsdb_connection": None})
            _APIS[db] = cls(conn)
        return _APIS[db]


class Bridge:
    """One OVS bridge and the ports Switchboard owns on it."""

    def __init__(self, name: str, db: str = DEFAULT_DB, datapath: str = "netdev") -> None:
        self.name = name
        self.db = db
        self.datapath = datapath  # netdev (userspace) or system (kernel)
        self.writes = 0  # transactions committed by this object
        self._api = _api(db)

    # -- reading (the local IDL replica, under the connection's lock) -------------------

    def _read(self, fn: Callable[[Any], Any]) -> Any:
        with self._api.ovsdb_connection.lock:
            row = idlutils.row_by_value(self._api.idl, "Bridge", "name", self.name, None)
            return fn(row)

    def exists(self) -> bool:
        return self._read(lambda row: row is not None)

    def connected(self) -> bool:
        """Whether the IDL is connected to ovsdb-server now (it reconnects on its own)."""
        idl = self._api.ovsdb_connection.idl
        return bool(idl._session.is_connected())  # python-ovs's Idl has no public probe

    def owned_ports(self) -> dict[str, OwnedPort]:
        """Ports on this bridge marked with ``switchboard-topology``."""

        def collect(row: Any) -> dict[str, OwnedPort]:
            owned = {}
            for port in row.ports if row is not None else ():
                ids = dict(port.external_ids)
                ofport = None
                for iface in port.interfaces:
                    ids = {**iface.external_ids, **ids}
                    if iface.ofport and iface.ofport[0] > 0:
                        ofport = iface.ofport[0]
                if TOPOLOGY_KEY in ids:
                    owned[port.name] = OwnedPort(port.name, ids, ofport)
            return owned

        return self._read(collect)

    def _ofports(self, names: Iterable[str]) -> dict[str, tuple[int | None, str]]:
        """name -> (ofport or None, error text) for the interfaces that exist."""
        found = {}
        with self._api.ovsdb_connection.lock:
            for name in names:
                iface = idlutils.row_by_value(self._api.idl, "Interface", "name", name, None)
                if iface is not None:
                    ofport = iface.ofport[0] if iface.ofport else None
                    found[name] = (ofport, iface.error[0] if iface.error else "")
        return found

    def wait_ofports(self, names: Iterable[str], timeout: float = 10.0) -> dict[str, int]:
        """Wait until ovs-vswitchd has given every named interface an OpenFlow port number."""
        names = list(names)
        deadline = time.monotonic() + timeout
        while True:
            found = self._ofports(names)
            failed = {n: err for n, (ofport, err) in found.items() if ofport == -1}
            if failed:
                detail = "; ".join(f"{n}: {e or 'no ofport'}" for n, e in sorted(failed.items()))
                raise BridgeError(f"bridge {self.name}: ovs-vswitchd could not add {detail}")
            ready = {n: of for n, (of, _) in found.items() if of is not None and of > 0}
            if len(ready) == len(names):
                return ready
            if time.monotonic() > deadline:
                missing = sorted(set(names) - set(ready))
                raise BridgeError(
                    f"bridge {self.name}: no ofport after {timeout:.0f}s for {', '.join(missing)}"
                )
            time.sleep(0.02)

    # -- writing ---------------------------------------------------------------------

    def _commit(self, what: str, body: Callable[[Any, Any], None]) -> None:
        try:
            with self._api.transaction(check_error=True, log_errors=False) as txn:
                txn.add(_Run(self._api, body, f"{what} on {self.name}"))
        except Exception as err:
            raise BridgeError(f"bridge {self.name}: {what} failed: {err}") from err
        self.writes += 1

    def _row(self, api: Any) -> Any:
        try:
            return idlutils.row_by_value(api.idl, "Bridge", "name", self.name)
        except idlutils.RowNotFound as err:
            raise BridgeError(f"bridge {self.name} does not exist") from err

    def ensure(self, controller: str) -> None:
        """Create or correct the bridge; writes nothing when it is already as wanted."""
        wanted = _wanted_bridge(self.name, controller, self.datapath)

        def pending(row: Any) -> dict[str, Any] | None:
            return None if row is None else _bridge_diff(row, wanted)

        diff = self._read(pending)
        if diff == {}:
            return

        def apply(api: Any, txn: Any) -> None:
            row = idlutils.row_by_value(api.idl, "Bridge", "name", self.name, None)
            columns = wanted if row is None else _bridge_diff(row, wanted)
            if row is None:
                row = txn.insert(api.tables["Bridge"])
                row.name = self.name
                _add_port(api, txn, row, PortSpec(self.name, internal=True))
                api._ovs.addvalue("bridges", row)
            for column, value in columns.items():
                if column == "controller":
                    targets = []
                    for target in value:
                        ctl = txn.insert(api.tables["Controller"])
                        ctl.target = target
                        # reconnect within a second after the controller restarts
                        ctl.max_backoff = [CONTROLLER_MAX_BACKOFF_MS]
                        targets.append(ctl)
                    row.controller = targets
                elif isinstance(value, dict):
                    for key, val in value.items():
                        row.setkey(column, key, val)
                else:
                    setattr(row, column, value)

        self._commit("ensure bridge", apply)

    def ensure_tunnel(self, local_ip: str) -> None:
        """Give the bridge its flow-based VXLAN port (``remote_ip=flow``, ``key=flow``) sending
        from ``local_ip``; writes nothing when it is already so."""
        wanted = _tunnel_options(local_ip)

        def current(_row: Any) -> tuple[str, dict[str, str]] | None:
            iface = idlutils.row_by_value(self._api.idl, "Interface", "name", TUNNEL_PORT, None)
            return None if iface is None else (iface.type, dict(iface.options))

        found = self._read(current)
        if found == ("vxlan", wanted):
            return

        def apply(api: Any, txn: Any) -> None:
            iface = idlutils.row_by_value(api.idl, "Interface", "name", TUNNEL_PORT, None)
            if iface is None:
                _add_port(api, txn, self._row(api),
                          PortSpec(TUNNEL_PORT, internal=False, type="vxlan", options=wanted,
                                   external_ids={OWNER_KEY: "tunnel"}))
            else:
                iface.type = "vxlan"
                iface.options = wanted

        self._commit(f"tunnel port {TUNNEL_PORT} from {local_ip}", apply)

    def tunnel_ofport(self) -> int | None:
        """The tunnel port's OpenFlow number; None when there is none (yet)."""
        ofport, _ = self._ofports([TUNNEL_PORT]).get(TUNNEL_PORT, (None, ""))
        return ofport if ofport and ofport > 0 else None

    def add_ports(self, specs: list[PortSpec]) -> None:
        """Add all ``specs`` in one transaction; a port that already exists is an error."""
        if not specs:
            return

        def apply(api: Any, txn: Any) -> None:
            row = self._row(api)
            for spec in specs:
                if idlutils.row_by_value(api.idl, "Port", "name", spec.name, None) is not None:
                    raise BridgeError(f"port {spec.name} already exists")
                _add_port(api, txn, row, spec)

        self._commit(f"adding {len(specs)} port(s) ({_names(s.name for s in specs)})", apply)

    def delete_ports(self, names: Iterable[str]) -> None:
        """Remove the named ports from this bridge in one transaction (missing ones are skipped)."""
        names = list(names)
        if not names:
            return

        def apply(api: Any, txn: Any) -> None:
            row = self._row(api)
            on_bridge = {port.uuid for port in row.ports}  # row.ports is rebuilt on each access
            for name in names:
                port = idlutils.row_by_value(api.idl, "Port", "name", name, None)
                if port is None or port.uuid not in on_bridge:
                    continue
                row.delvalue("ports", port)
                for iface in port.interfaces:
                    iface.delete()
                port.delete()

        self._commit(f"deleting {len(names)} port(s) ({_names(names)})", apply)

    def delete(self) -> None:
        """Remove the bridge and all its ports (tests and teardown)."""
        if not self.exists():
            return

        def apply(api: Any, txn: Any) -> None:
            row = self._row(api)
            for port in row.ports:
                for iface in port.interfaces:
                    iface.delete()
                port.delete()
            api._ovs.delvalue("bridges", row)
            row.delete()

        self._commit("deleting the bridge", apply)


def _add_port(api: Any, txn: Any, bridge_row: Any, spec: PortSpec) -> None:
    iface = txn.insert(api.tables["Interface"])
    iface.name = spec.name
    if spec.internal:
        iface.type = "internal"
    elif spec.type:
        iface.type = spec.type
    if spec.options:
        iface.options = dict(spec.options)
    if spec.mac:
        iface.mac = spec.mac
    if spec.mtu:
        iface.mtu_request = spec.mtu
    iface.external_ids = dict(spec.external_ids)
    port = txn.insert(api.tables["Port"])
    port.name = spec.name
    port.interfaces = [iface]
    port.external_ids = dict(spec.external_ids)
    bridge_row.addvalue("ports", port)


def _names(names: Iterable[str], limit: int = 5) -> str:
    names = list(names)
    more = f", … {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more
