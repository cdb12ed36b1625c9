"""One-line reasons for a part that is down, the bridge lock, and what "no host ready" says."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import requests

from controller.daemon import startup
from sbcore.state import hosts, reach


def _refused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # closed again: nothing listens there


def test_a_refused_consul_call_raises_unreachable_with_the_address_and_the_remedy():
    address = f"http://127.0.0.1:{_refused_port()}"
    with pytest.raises(reach.Unreachable) as caught:
        reach.consul_client(address).kv.get("anything")
    assert str(caught.value) == (f"cannot reach the Consul agent at {address}: connection "
                                 "refused; start it with scripts/start-services.sh")


@pytest.mark.parametrize(("exc", "reason"), [
    (requests.ConnectionError(OSError(111, "Connection refused")), "connection refused"),
    (FileNotFoundError(2, "No such file or directory"), "no such socket"),
    (requests.ConnectTimeout("slow"), "no answer in time"),
    (socket.gaierror(-2, "Name or service not known"), "host name not found"),
    (OSError(13, "Permission denied"), "permission denied"),
])
def test_reason_of_names_the_cause_in_a_few_words(exc, reason):
    wrapped = RuntimeError("outer")
    wrapped.__cause__ = exc
    assert reach.reason_of(wrapped) == reason


def test_an_ovsdb_socket_that_does_not_exist_is_unreachable(tmp_path: Path):
    db = f"unix:{tmp_path}/db.sock"
    with pytest.raises(reach.Unreachable, match=f"ovsdb-server at {db}: no such socket"):
        reach.check_ovsdb(db)


def test_a_second_lock_on_a_bridge_names_the_bridge_and_the_holder(tmp_path: Path):
    fd = startup.lock_bridge("br-x", tmp_path)
    try:
        with pytest.raises(startup.StartError) as caught:
            startup.lock_bridge("br-x", tmp_path)
        assert "already runs for bridge br-x (pid " in str(caught.value)
        os.close(startup.lock_bridge("br-y", tmp_path))  # another bridge is free
    finally:
        os.close(fd)
    os.close(startup.lock_bridge("br-x", tmp_path))  # released with its fd (its process)


def test_a_listening_openflow_port_is_refused_with_a_sentence():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(startup.StartError, match=f"127.0.0.1:{port} is in use"):
            startup.check_of_port("127.0.0.1", port)


def test_default_ovsdb_address_matches_the_bridge_module():
    from ovsdb.bridge import DEFAULT_DB

    assert startup.DEFAULT_OVSDB == DEFAULT_DB


def test_no_ready_host_names_each_host_and_why_it_is_down():
    record = {"Key": "p/hosts/h1", "Value": json.dumps({"name": "h1", "slot": 0}).encode()}
    found = hosts.parse_hosts([record], [], "p")
    error = reach.no_controller("http://127.0.0.1:8500", "p", hosts.describe(found))
    assert str(error).startswith("cannot reach a switchboard controller at "
                                 "http://127.0.0.1:8500 (KV prefix p): no host is ready: h1 is "
                                 "down (not registered in Consul")
    assert "scripts/start-controller.sh" in str(error)
    assert hosts.describe(hosts.parse_hosts([], [], "p")) == "no host has registered"


# The directives of systemd.unit(5), systemd.service(5), systemd.exec(5) and systemd.kill(5)
# a controller unit may reasonably use; one missing here is most likely a typo.
UNIT_DIRECTIVES = {
    "Unit": {"Description", "Documentation", "After", "Before", "Wants", "Requires",
             "BindsTo", "PartOf", "Conflicts", "StartLimitIntervalSec", "StartLimitBurst"},
    "Service": {"Type", "Environment", "EnvironmentFile", "RuntimeDirectory",
                "RuntimeDirectoryPreserve", "ExecStartPre", "ExecStart", "ExecStartPost",
                "ExecStop", "ExecReload", "Restart", "RestartSec", "KillSignal", "KillMode",
                "TimeoutStartSec", "TimeoutStopSec", "User", "Group", "WorkingDirectory",
                "LimitNOFILE"},
    "Install": {"WantedBy", "RequiredBy", "Alias"},
}


def unit_sections(text: str) -> dict[str, list[tuple[str, str]]]:
    """A unit file's sections as (key, value) lines, as systemd reads them (comments,
    repeated keys)."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        assert current is not None and "=" in line, line
        key, _, value = line.partition("=")
        current.append((key.strip(), value.strip()))
    return sections


def test_systemd_unit_is_valid():
    """What ``systemd-analyze verify`` checks that matters here, without systemd: known
    sections and directives, valid values, and a command line the controller accepts."""
    from switchboard.cli.controller import controller as controller_command

    unit = Path(__file__).parents[4] / "contrib" / "switchboard-controller.service"
    sections = unit_sections(unit.read_text())
    assert set(sections) == set(UNIT_DIRECTIVES)
    for name, lines in sections.items():
        unknown = {key for key, _ in lines} - UNIT_DIRECTIVES[name]
        assert not unknown, f"[{name}]: unknown directives {unknown}"
    service = dict(sections["Service"])
    assert service["Type"] in {"simple", "exec", "notify"}
    assert service["Restart"] in {"no", "on-success", "on-failure", "on-abnormal",
                                  "on-watchdog", "on-abort", "always"}
    assert service["KillSignal"] in {"SIGINT", "SIGTERM"}  # the daemon stops on both
    for key in ("RestartSec", "TimeoutStopSec"):
        float(service[key])
    program, subcommand, *args = service["ExecStart"].split()
    assert program.endswith("/switchboard") and subcommand == "controller"
    controller_command.make_context("controller", args)  # raises on an unknown option
    assert ("WantedBy", "multi-user.target") in sections["Install"]
