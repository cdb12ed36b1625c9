"""``switchboard-cni``: the CNI plugin's executable (installed as /opt/cni/bin/switchboard).

It reads the request (environment and stdin), does it through :mod:`cni.attachments` and
prints one JSON object on stdout: the result, or an error object with a non-zero exit.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cni.protocol import (
    INTERNAL,
    INVALID_CONFIG,
    IO_FAILURE,
    SUPPORTED,
    CniError,
    Request,
    parse,
    result,
    version_result,
)

DEFAULT_PREFIX = "switchboard"


def open_store(config: Mapping[str, Any]) -> Any:
    """A Store for the configuration's Consul agent (``consul``), KV prefix (``prefix``)
    and token file (``tokenFile``); the daemon's defaults otherwise."""
    from sbcore.state.store import DEFAULT_CONSUL, Store, consul_client

    token = None
    if config.get("tokenFile"):
        try:
            token = Path(config["tokenFile"]).read_text().strip()
        except OSError as exc:
            raise CniError(INVALID_CONFIG, f"tokenFile {config['tokenFile']}: "
                                           f"{exc.strerror}") from None
    client = consul_client(config.get("consul") or DEFAULT_CONSUL, token)
    return Store(client, config.get("prefix") or DEFAULT_PREFIX)


def this_host(store: Any, config: Mapping[str, Any]) -> str:
    """The host this runs on: ``host`` from the configuration, else the name this host's
    daemon registered in the local Consul agent, else the host name."""
    if config.get("host"):
        return str(config["host"])
    from controller.daemon.registration import owner_of
    from sbcore.state.hosts import service_id

    return owner_of(store.client, service_id(store.prefix)) or socket.gethostname()


def run(request: Request) -> dict[str, Any] | None:
    """Do one request; its result (None: nothing to print)."""
    if request.command == "VERSION":
        return version_result(request.version)
    from cni import attachments

    store = open_store(request.config)
    address = str(request.config.get("consul") or "the local agent")

    def host() -> str:
        return attachments.reachable(lambda: this_host(store, request.config), address)

    if request.command == "STATUS":
        attachments.status(store, this_host_or_down(store, request.config))
        return None
    if request.command == "ADD":
        where = host()
        attached = attachments.reachable(lambda: attachments.add(store, request, where), address)
        return result(request.version, attached)
    if request.command == "DEL":
        attachments.reachable(lambda: attachments.release(store, request), address)
    elif request.command == "CHECK":
        where = host()
        attachments.reachable(lambda: attachments.check(store, request, where), address)
    elif request.command == "GC":
        where = host()
        attachments.reachable(lambda: attachments.collect(store, request, where), address)
    return None


def this_host_or_down(store: Any, config: Mapping[str, Any]) -> str:
    from cni.attachments import NOT_AVAILABLE

    try:
        return this_host(store, config)
    except Exception as exc:  # noqa: BLE001 - any failure to reach Consul: not available
        raise CniError(NOT_AVAILABLE, "Consul cannot be reached", str(exc)) from None


def _version_of(stdin: str) -> str:
    """The configuration's cniVersion when it is one we speak (for error objects)."""
    try:
        version = json.loads(stdin).get("cniVersion")
    except (ValueError, AttributeError, RecursionError):
        return SUPPORTED[1]
    return version if version in SUPPORTED else SUPPORTED[1]


def main(environ: Mapping[str, str] | None = None) -> int:
    """Run the plugin once; the exit status."""
    env = os.environ if environ is None else environ
    try:
        stdin = sys.stdin.read()
    except OSError as exc:
        print(json.dumps(CniError(IO_FAILURE, f"reading stdin: {exc}").to_json(SUPPORTED[1])))
        return 1
    version = _version_of(stdin)
    try:
        request = parse(env, stdin)
        version = request.version
        out = run(request)
    except CniError as exc:
        print(json.dumps(exc.to_json(version)))
        return 1
    except Exception as exc:  # noqa: BLE001 - a runtime needs an error object, not a trace
        print(json.dumps(CniError(INTERNAL, "internal error of the Switchboard CNI plugin",
                                  f"{type(exc).__name__}: {exc}").to_json(version)))
        return 1
    if out is not None:
        print(json.dumps(out))
    return 0


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
