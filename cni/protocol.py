"""The CNI protocol (specification 1.0.0, with 1.1's STATUS and GC): the request a runtime
sends (environment and stdin), error objects and results. Pure: no I/O.

A request is read completely before anything is done, so a bad one changes nothing.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Interface, ip_address, ip_interface
from typing import Any

SUPPORTED = ("0.4.0", "1.0.0", "1.1.0")
COMMANDS = ("ADD", "DEL", "CHECK", "VERSION", "STATUS", "GC")
NEEDS_CONTAINER = ("ADD", "DEL", "CHECK")  # commands about one container attachment
DEFAULT_TIMEOUT = 30.0  # seconds ADD waits for the host's daemon to plug the container

# The specification's codes (1-99 are its own, 100+ the plugin's).
INCOMPATIBLE_VERSION = 1
UNSUPPORTED_FIELD = 2
UNKNOWN_CONTAINER = 3
INVALID_ENV = 4
IO_FAILURE = 5
DECODE_FAILURE = 6
INVALID_CONFIG = 7
TRY_AGAIN_LATER = 11
NOT_AVAILABLE = 50  # STATUS (1.1): the plugin cannot serve ADD now
# Switchboard's own codes.
CHECK_FAILED = 999  # CHECK: the container is not as its desired state says
ADDRESS_TAKEN = 1000  # the fixed address asked for belongs to another container
REFUSED = 1001  # admission refused it (placement, a conflict) or Consul refused the token
CONSUL_ERROR = 1002  # Consul answered a request with an error
INTERNAL = 1003  # a fault of the plugin itself (the details name it)

_CONTAINER_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")
_IFNAME_RE = re.compile(r"[A-Za-z0-9_.\-]{1,15}")
_NAME_RE = re.compile(r"[^a-z0-9-]+")
NAME_MAX = 30  # a container name's length limit (sbcore.model)


class CniError(Exception):
    """A CNI error object: ``code``, ``msg`` and ``details``."""

    def __init__(self, code: int, msg: str, details: str = "") -> None:
        super().__init__(msg)
        self.code, self.msg, self.details = code, msg, details

    def to_json(self, version: str) -> dict[str, Any]:
        out: dict[str, Any] = {"cniVersion": version, "code": self.code, "msg": self.msg}
        if self.details:
            out["details"] = self.details
        return out


@dataclass(frozen=True)
class Request:
    """One invocation: the command, its container (ADD, DEL, CHECK) and the network config."""

    command: str
    version: str
    config: dict[str, Any]
    container_id: str = ""
    netns: str = ""
    ifname: str = ""
    args: dict[str, str] = field(default_factory=dict)  # CNI_ARGS

    @property
    def topology(self) -> str:
        return str(self.config.get("topology", ""))

    @property
    def network(self) -> str:
        return str(self.config.get("network", ""))

    @property
    def pod_name(self) -> str:
        return self.args.get("K8S_POD_NAME", "")

    @property
    def timeout(self) -> float:
        return float(self.config.get("timeout", DEFAULT_TIMEOUT))

    def requested_ip(self) -> IPv4Address | None:
        """The fixed address asked for: runtimeConfig.ips (the ``ips`` capability), else
        CNI_ARGS ``IP=``; None: IPAM chooses."""
        ips = (self.config.get("runtimeConfig") or {}).get("ips") or []
        if ips:
            return _address(ips[0], INVALID_CONFIG, "runtimeConfig.ips")
        if self.args.get("IP"):
            return _address(self.args["IP"], INVALID_ENV, "CNI_ARGS IP")
        return None

    def valid_attachments(self) -> set[tuple[str, str]]:
        """GC: the (container ID, ifname) pairs the runtime still uses."""
        return {(str(a.get("containerID")), str(a.get("ifname")))
                for a in self.config.get("cni.dev/valid-attachments") or []}


def _address(value: Any, code: int, where: str) -> IPv4Address:
    """An IPv4 address written bare or with a prefix length."""
    try:
        address = (ip_interface(value).ip if isinstance(value, str) and "/" in value
                   else ip_address(value))
    except ValueError:
        raise CniError(code, f"{where}: {value!r} is not an IP address") from None
    if not isinstance(address, IPv4Address):
        raise CniError(code, f"{where}: {value} is not an IPv4 address (Switchboard "
                             "networks are IPv4)")
    return address


def parse_args(text: str) -> dict[str, str]:
    """CNI_ARGS: ``KEY=VALUE`` pairs separated by ``;``."""
    args = {}
    for part in filter(None, text.split(";")):
        key, sep, value = part.partition("=")
        if not sep or not key:
            raise CniError(INVALID_ENV, f"CNI_ARGS: {part!r} is not KEY=VALUE")
        args[key] = value
    return args


def parse(env: Mapping[str, str], stdin: str) -> Request:
    """Read a request from the environment and stdin; CniError with the spec's code when it
    is not one this plugin can serve."""
    command = env.get("CNI_COMMAND", "")
    if command not in COMMANDS:
        raise CniError(INVALID_ENV, f"CNI_COMMAND {command!r} is not one of "
                                    f"{', '.join(COMMANDS)}")
    if command == "VERSION" and not stdin.strip():
        return Request(command, SUPPORTED[-1], {})
    try:
        config = json.loads(stdin)
    except (ValueError, RecursionError):
        raise CniError(DECODE_FAILURE, "the network configuration on stdin is not JSON") from None
    if not isinstance(config, dict):
        raise CniError(DECODE_FAILURE, "the network configuration on stdin is not an object")
    version = config.get("cniVersion")
    if command == "VERSION":  # answered whatever the caller speaks
        return Request(command, version if version in SUPPORTED else "1.0.0", config)
    if version not in SUPPORTED:
        raise CniError(INCOMPATIBLE_VERSION, f"cniVersion {version!r} is not supported",
                       f"supported: {', '.join(SUPPORTED)}")
    if command in ("STATUS", "GC") and version != "1.1.0":
        raise CniError(INCOMPATIBLE_VERSION, f"{command} needs cniVersion 1.1.0, "
                                             f"the configuration has {version}")
    _check_config(config)
    if command not in NEEDS_CONTAINER:
        return Request(command, version, config)
    container_id = env.get("CNI_CONTAINERID", "")
    netns, ifname = env.get("CNI_NETNS", ""), env.get("CNI_IFNAME", "")
    if not _CONTAINER_ID_RE.fullmatch(container_id):
        raise CniError(INVALID_ENV, "CNI_CONTAINERID is missing or not letters, digits, "
                                    "'_', '.' and '-'")
    if not _IFNAME_RE.fullmatch(ifname) or ifname in (".", ".."):
        raise CniError(INVALID_ENV, f"CNI_IFNAME {ifname!r} is missing or not an interface "
                                    "name (1 to 15 of A-Z a-z 0-9 _ . -)")
    if command != "DEL" and not netns.startswith("/"):
        raise CniError(INVALID_ENV, f"CNI_NETNS {netns!r} is missing or not an absolute path")
    request = Request(command, version, config, container_id, netns, ifname,
                      parse_args(env.get("CNI_ARGS", "")))
    request.requested_ip()  # a bad address is a bad request
    return request


def _check_config(config: dict[str, Any]) -> None:
    for key in ("topology", "network"):
        if not isinstance(config.get(key), str) or not config[key]:
            raise CniError(INVALID_CONFIG, f"the network configuration has no {key!r} (the "
                                           "Switchboard topology and network to join)")
    for key in ("consul", "prefix", "tokenFile", "host"):
        if key in config and not isinstance(config[key], str):
            raise CniError(INVALID_CONFIG, f"{key!r} must be a string")
    timeout = config.get("timeout", DEFAULT_TIMEOUT)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
        raise CniError(INVALID_CONFIG, "'timeout' must be a positive number of seconds")
    runtime = config.get("runtimeConfig") or {}
    ips = runtime.get("ips") if isinstance(runtime, dict) else None
    if not isinstance(runtime, dict) or (ips is not None and not isinstance(ips, list)):
        raise CniError(INVALID_CONFIG, "runtimeConfig.ips must be a list of addresses")
    if ips and len(ips) > 1:
        raise CniError(INVALID_CONFIG, "runtimeConfig.ips: a Switchboard network gives one "
                                       "IPv4 address per container")
    valid = config.get("cni.dev/valid-attachments")
    if valid is not None and not (isinstance(valid, list)
                                  and all(isinstance(a, dict) for a in valid)):
        raise CniError(INVALID_CONFIG, "cni.dev/valid-attachments must be a list of objects")


def container_name(pod_name: str, container_id: str) -> str:
    """A Switchboard container name for an attachment: K8S_POD_NAME's, else the container
    ID's, made to fit ``[a-z0-9-]``, at most 30 characters."""
    name = _NAME_RE.sub("-", pod_name.lower()).strip("-")[:NAME_MAX].strip("-")
    if not name:
        name = "cni-" + _NAME_RE.sub("", container_id.lower())[:12]
    return name


def alternative_name(name: str, container_id: str) -> str:
    """``name`` made unique with the start of the container ID, when another has it."""
    suffix = "-" + _NAME_RE.sub("", container_id.lower())[:8]
    return name[:NAME_MAX - len(suffix)].strip("-") + suffix


@dataclass(frozen=True)
class Attached:
    """What the host's daemon reports for a plugged container: what a result says."""

    ifname: str
    mac: str
    sandbox: str
    address: IPv4Interface
    gateway: IPv4Address
    nameserver: IPv4Address
    search: tuple[str, ...] = ("service.consul",)


def result(version: str, attached: Attached) -> dict[str, Any]:
    """The ADD result: the interface in the sandbox, its address with the gateway, the
    default route and the topology's resolver."""
    ip: dict[str, Any] = {"address": str(attached.address), "gateway": str(attached.gateway),
                          "interface": 0}
    if version.startswith("0."):
        ip["version"] = "4"
    return {
        "cniVersion": version,
        "interfaces": [{"name": attached.ifname, "mac": attached.mac,
                        "sandbox": attached.sandbox}],
        "ips": [ip],
        "routes": [{"dst": "0.0.0.0/0", "gw": str(attached.gateway)}],
        "dns": {"nameservers": [str(attached.nameserver)], "search": list(attached.search)},
    }


def version_result(version: str) -> dict[str, Any]:
    return {"cniVersion": version, "supportedVersions": list(SUPPORTED)}
