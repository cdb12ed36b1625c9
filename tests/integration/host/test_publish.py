"""Published container ports: the host's port reaches the container from an outside namespace
(198.18.28.0/24, the client's address kept) and from the host itself; nothing unpublished is
reachable from outside, even for a client that routes the container's subnet through the
host; a port taken on the host, or already published, is refused and changes nothing."""

from __future__ import annotations

import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import Switchboard, sh, wait_until
from tests.outside import SERVER, Outside

pytestmark = pytest.mark.integration

NAME = "sbt-out-pub"
HOST_PORT = 18180


def topology(script: Path, publish: str = f"{HOST_PORT}:8080/tcp", name: str = NAME,
             subnet: str = "10.182.4") -> str:
    return f"""
name: {name}
networks:
  lan: {{subnet: {subnet}.0/24}}
containers:
  web:
    networks: {{lan: {{ip: {subnet}.10}}}}
    command: {sys.executable} -m http.server 9090 & exec {sys.executable} {script} 0.0.0.0
    publish: ["{publish}"]
"""


@pytest.fixture(scope="module")
def outside() -> Iterator[Outside]:
    with Outside(28) as out:
        yield out


@pytest.fixture(scope="module")
def published(switchboard: Switchboard, outside: Outside,
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    work = tmp_path_factory.mktemp("publish")
    script = work / "who.py"  # answers each client with the address it sees
    script.write_text(SERVER)
    switchboard.up(work, topology(script))
    try:
        yield script
    finally:
        switchboard.cli("down", NAME, check=False)


def _get(outside: Outside | None, url: str) -> str:
    cmd = f"curl -s -m 3 {url}"
    return (outside.run(cmd) if outside else sh(cmd)).stdout


def test_the_published_port_answers_outside_with_the_clients_address_kept(
        published: Path, outside: Outside) -> None:
    url = f"http://{outside.root_ip}:{HOST_PORT}/"
    assert wait_until(lambda: _get(outside, url) == outside.ip, 30), _get(outside, url)


def test_the_published_port_answers_the_host_itself(published: Path,
                                                    outside: Outside) -> None:
    url = f"http://{outside.root_ip}:{HOST_PORT}/"
    assert wait_until(lambda: _get(None, url) == outside.root_ip, 30), _get(None, url)


def test_the_published_port_answers_the_host_on_127_0_0_1(published: Path,
                                                         switchboard: Switchboard) -> None:
    leg = str(switchboard.status(NAME)["networks"][0]["host_ip"])
    url = f"http://127.0.0.1:{HOST_PORT}/"  # the container sees the host's address there
    assert wait_until(lambda: _get(None, url) == leg, 30), _get(None, url)


def test_nothing_unpublished_is_reachable_from_outside(published: Path,
                                                       outside: Outside) -> None:
    assert wait_until(lambda: _get(outside, f"http://{outside.root_ip}:{HOST_PORT}/")
                      == outside.ip, 30)
    assert outside.run(f"curl -s -m 3 http://{outside.root_ip}:8080/").returncode != 0
    assert outside.run(f"curl -s -m 3 http://{outside.root_ip}:9090/").returncode != 0
    assert sh("curl -s -o /dev/null -m 3 http://10.182.4.10:9090/").returncode == 0  # it runs
    outside.run(f"ip route add 10.182.4.0/24 via {outside.root_ip}")
    try:  # a client that routes the container's subnet through the host (whether the host
        # forwards everything or not): neither an unpublished port nor the published one
        # but by the host's port
        assert outside.run("curl -s -m 3 http://10.182.4.10:9090/").returncode != 0
        assert outside.run("curl -s -m 3 http://10.182.4.10:8080/").returncode != 0
        udp = outside.run("python3 -c \"import socket; s = socket.socket(2, 2); "
                          "s.settimeout(3); s.sendto(b'hi', ('10.182.4.10', 5353)); "
                          "print(s.recv(100))\"")
        assert udp.returncode != 0, udp.stdout
        assert outside.run("ping -c 1 -W 2 10.182.4.10").returncode != 0
    finally:
        outside.run("ip route del 10.182.4.0/24")


def test_a_port_taken_on_the_host_or_published_twice_is_refused_and_changes_nothing(
        switchboard: Switchboard, published: Path, tmp_path: Path) -> None:
    before = switchboard.cli("status", NAME, "--json").stdout
    with socket.create_server(("127.0.0.1", HOST_PORT + 1)):
        taken = switchboard.cli("up", str(_file(tmp_path, topology(
            published, f"{HOST_PORT + 1}:8080/tcp"))), check=False)
    assert taken.returncode != 0
    assert f"containers.web.publish.0: host port {HOST_PORT + 1}/tcp is already taken" in (
        taken.stdout + taken.stderr)
    twice = switchboard.cli("up", str(_file(tmp_path, topology(
        published, name="sbt-out-pub2", subnet="10.182.5"))), check=False)
    assert twice.returncode != 0
    assert f"published host port ({HOST_PORT}/tcp)" in twice.stdout + twice.stderr
    assert "sbt-out-pub2" not in switchboard.cli("status", "--json").stdout
    assert switchboard.cli("status", NAME, "--json").stdout == before


def _file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "topology.yaml"
    path.write_text(text)
    return path


def test_status_and_plan_show_what_is_published(switchboard: Switchboard, published: Path,
                                                 tmp_path: Path) -> None:
    status = switchboard.cli("status", NAME).stdout
    assert f"web: host port {HOST_PORT}/tcp -> 10.182.4.10:8080/tcp" in status, status
    changed = _file(tmp_path, topology(published, f"{HOST_PORT}:8080/tcp\", \"18183:9/udp"))
    plan = switchboard.cli("plan", str(changed), check=False)
    assert plan.returncode == 2, plan.stdout + plan.stderr
    assert "publish" in plan.stdout and "18183:9/udp" in plan.stdout, plan.stdout
