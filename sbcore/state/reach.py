"""What Switchboard could not reach, said in one line: the part, its address, how to start it.

Every "a part is down" failure becomes one exception class, :class:`Unreachable`, whose text
is the sentence a user reads, e.g.::

    cannot reach the Consul agent at http://127.0.0.1:8500: connection refused;
    start it with scripts/start-services.sh

The CLI's group prints it as one error line; the Python API raises it. Consul clients made by
:func:`consul_client` raise it instead of a ``requests`` connection error.
"""

from __future__ import annotations

import socket
import subprocess
import time
from typing import Any

import consul
import requests

from sbcore.state import store, token

START_SERVICES = "scripts/start-services.sh"
START_CONTROLLER = "scripts/start-controller.sh"


class Unreachable(RuntimeError):
    """A part Switchboard needs (Consul, Open vSwitch, the controller) does not answer."""

    def __init__(self, part: str, address: str, reason: str, hint: str) -> None:
        self.part, self.address, self.reason, self.hint = part, address, reason, hint
        super().__init__(f"cannot reach {part} at {address}: {reason}; {hint}")


def reason_of(exc: BaseException) -> str:
    """Why a connection failed, in a few words ("connection refused"), from its chain."""
    seen: set[int] = set()
    todo: list[Any] = [exc]
    chain: list[BaseException] = []
    while todo:
        item = todo.pop(0)
        if not isinstance(item, BaseException) or id(item) in seen:
            continue
        seen.add(id(item))
        chain.append(item)
        todo.extend([getattr(item, "reason", None), item.__cause__, item.__context__,
                     *item.args])
    for item in chain:
        if isinstance(item, ConnectionRefusedError):
            return "connection refused"
        if isinstance(item, FileNotFoundError):
            return "no such socket"
        if isinstance(item, socket.gaierror) or type(item).__name__ == "NameResolutionError":
            return "host name not found"
        if isinstance(item, TimeoutError | requests.Timeout | socket.timeout):
            return "no answer in time"
    for item in chain:
        if isinstance(item, OSError) and item.strerror:
            return item.strerror[0].lower() + item.strerror[1:]
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__


# --- Consul ------------------------------------------------------------------------------

def consul_unreachable(address: str, exc: BaseException) -> Unreachable:
    return Unreachable("the Consul agent", address, reason_of(exc),
                       f"start it with {START_SERVICES}")


LEADER_WAIT = 10.0  # seconds a command waits for the Consul servers to elect a leader
_NO_LEADER = ("No cluster leader", "rpc error")  # 500s while the servers elect one


def no_leader(status: int, text: str) -> bool:
    """Whether a Consul answer means its servers have no leader (now): an election after a
    server failed, or no quorum."""
    return status == 500 and any(marker in text for marker in _NO_LEADER)


class _Session(requests.Session):
    """A requests session whose connection failures name the Consul agent's address, and
    which rides out a leader election (up to ``LEADER_WAIT`` seconds)."""

    def __init__(self, address: str) -> None:
        super().__init__()
        self.address = address

    def request(self, *args: Any, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        deadline = time.monotonic() + LEADER_WAIT
        while True:
            try:
                response = super().request(*args, **kwargs)
            except (requests.ConnectionError, requests.Timeout) as exc:
                raise consul_unreachable(self.address, exc) from None
            if not no_leader(response.status_code, response.text) or \
                    time.monotonic() > deadline:
                return response
            time.sleep(0.25)


def consul_client(address: str, token: str | None = None) -> consul.Consul:
    """A Consul client for ``address`` that raises :class:`Unreachable` when it is down,
    sending ``token`` or the one sbcore.state.token finds."""
    client = store.consul_client(address, token)
    session = _Session(address)
    session.headers.update(client.http.session.headers)  # the token
    client.http.session = session
    if (address, client.token) not in _checked:
        check_token(client, address)
    return client


_checked: set[tuple[str, str | None]] = set()  # (address, token) the agent accepted


class TokenRefused(consul.ACLPermissionDenied):
    """The Consul agent refused Switchboard's ACL token (unknown, or none sent)."""


def check_token(client: consul.Consul, address: str) -> None:
    """Raise :class:`TokenRefused` when the agent has ACLs on and does not know the token
    (a wrong one, or none: reads would silently come back empty). One request
    (``/v1/acl/token/self``); nothing when ACLs are off or the agent is down."""
    try:
        reply = client.http.session.get(f"{client.http.base_uri}/v1/acl/token/self",
                                        headers=client.prepare_headers(), timeout=5)
    except (Unreachable, requests.RequestException):
        return  # down: the first real request says so
    if reply.status_code == 403:
        raise TokenRefused(f"{reply.text.strip() or 'ACL not found'}")
    if reply.status_code in (200, 401):  # known, or ACLs off
        _checked.add((address, client.token))


def token_refused(address: str, source: str, why: str) -> str:
    """The line for a token the agent refused, naming its source and what to do."""
    what = ("Switchboard sent no token" if source.startswith("no token")
            else f"it refused Switchboard's token from {source}")
    extra = f" ({source})" if source.startswith("no token (") else ""
    policy = (" (the token's policy must allow Switchboard's KV prefix, services and "
              "sessions: scripts/consul-security.sh policy PREFIX prints it)"
              if "Permission denied" in why and not source.startswith("no token") else "")
    return (f"the Consul agent at {address} has ACLs on and {what}{extra}: {why}{policy}; "
            f"nothing was changed. {token.HOW}")


def consul_refused(address: str, exc: consul.ConsulException, source: str = "") -> str:
    """The line for an agent that answers but refuses (no leader, ACL, a bad request)."""
    if isinstance(exc, consul.ACLPermissionDenied):
        return token_refused(address, source or "no token", str(exc).strip() or "denied")
    if no_leader(500, str(exc)):
        return (f"the Consul cluster of the agent at {address} has no leader after "
                f"{LEADER_WAIT:.0f} s: most of its servers are down or cut off (see `consul "
                "members`). The desired state cannot change until a majority is back; running "
                "containers keep their traffic")
    return (f"the Consul agent at {address} refused the request: {exc}; "
            f"see its log, or restart it with {START_SERVICES}")


def dns_unreachable(server: tuple[str, int], exc: BaseException) -> Unreachable | None:
    """Unreachable when a DNS error came from the socket (no server), else None."""
    if not any(isinstance(e, OSError) for e in (exc, exc.__cause__, exc.__context__)):
        return None
    return Unreachable("Consul's DNS interface", f"{server[0]}:{server[1]}", reason_of(exc),
                       f"start the Consul agent with {START_SERVICES} (or set --dns)")


# --- Open vSwitch ------------------------------------------------------------------------

OVS_HINT = f"start Open vSwitch with {START_SERVICES}"


def check_ovsdb(db: str, timeout: float = 2.0) -> None:
    """Raise Unreachable unless ovsdb-server accepts a connection at ``db``
    (``unix:PATH`` or ``tcp:HOST:PORT``)."""
    kind, _, rest = db.partition(":")
    try:
        if kind == "unix":
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(timeout)
                sock.connect(rest)
        elif kind == "tcp":
            host, _, port = rest.rpartition(":")
            socket.create_connection((host, int(port)), timeout).close()
    except (OSError, ValueError) as exc:
        raise Unreachable("ovsdb-server", db, reason_of(exc), OVS_HINT) from None


def check_vswitchd(rundir: str) -> None:
    """Raise Unreachable unless ovs-vswitchd answers ``ovs-appctl`` (its control socket)."""
    try:
        result = subprocess.run(["ovs-appctl", "-t", "ovs-vswitchd", "version"],
                                capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise Unreachable("ovs-vswitchd", rundir, reason_of(exc), OVS_HINT) from None
    if result.returncode != 0:
        why = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "no answer"
        raise Unreachable("ovs-vswitchd", rundir, why.removeprefix("ovs-appctl: "), OVS_HINT)


# --- the controller ----------------------------------------------------------------------

NO_CONTROLLER_HINT = (f"start it with {START_CONTROLLER}, or pass --no-wait to only store "
                      "the topology")


def no_controller(
    address: str, prefix: str, why: str, hint: str = NO_CONTROLLER_HINT
) -> Unreachable:
    """No host is ready under ``prefix``; ``why`` says which hosts there are and why each is
    down (sbcore.state.hosts.describe)."""
    return Unreachable("a switchboard controller", f"{address} (KV prefix {prefix})", why, hint)
