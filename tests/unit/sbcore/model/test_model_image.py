"""Image containers in the topology file: what is accepted and the errors for what is not."""

from __future__ import annotations

import pytest

from sbcore.model import TopologyError, load_topology
from sbcore.model.image import Volume, parse_volume

HEAD = """\
name: shop
networks:
  front: {subnet: 10.10.1.0/24}
containers:
  web:
    networks: [front]
"""


def _load(extra: str):
    return load_topology(HEAD + extra, "shop.yaml").containers["web"]


def _error(extra: str) -> str:
    with pytest.raises(TopologyError) as err:
        _load(extra)
    return str(err.value)


def test_image_with_arguments_env_volumes_workdir_and_user() -> None:
    web = _load("""\
    image: localhost/switchboard/demo:latest
    command: httpd -f -p 80 -h /srv
    env: {MODE: demo, EMPTY: ""}
    volumes: [/var/lib/demo:/srv:ro, /tmp/x:/x]
    workdir: /srv
    user: "1000:1000"
    restart: on-failure
""")
    assert web.image == "localhost/switchboard/demo:latest"
    assert web.command == "httpd -f -p 80 -h /srv"
    assert web.env == {"MODE": "demo", "EMPTY": ""}
    assert [parse_volume(v) for v in web.volumes] == [
        Volume("/var/lib/demo", "/srv", True), Volume("/tmp/x", "/x", False)]
    assert (web.workdir, web.user, web.restart_policy) == ("/srv", "1000:1000", "on-failure")


def test_an_image_alone_runs_its_own_command() -> None:
    web = _load("    image: localhost/demo@sha256:" + "a" * 64 + "\n")
    assert web.command is None and web.env == {} and web.volumes == []


@pytest.mark.parametrize(("extra", "expected"), [
    ("    image: localhost/demo\n    volumes: [data:/srv]\n",
     "containers.web.volumes.0: bad volume 'data:/srv': the host path 'data' "
     "is relative; write an absolute path"),
    ("    image: localhost/demo\n    volumes: [/data:srv]\n",
     "the container path 'srv' is relative"),
    ("    image: localhost/demo\n    volumes: [/data/../etc:/srv]\n", "holds . or .."),
    ("    image: localhost/demo\n    volumes: [/data:/srv:rx]\n", "is ro or rw, not 'rx'"),
    ("    image: localhost/demo\n    volumes: [/data]\n", "write /host/path:/in/container"),
    ("    image: localhost/demo\n    volumes: [/a:/srv, /b:/srv]\n",
     "containers.web.volumes.1: /srv is already bound by volumes.0"),
    ("    image: localhost/demo\n    volumes: [/a:/etc/resolv.conf]\n", "which Switchboard binds"),
    ("    image: 'Local Host/demo'\n", "containers.web.image: bad image reference"),
    ("    image: localhost/demo\n    env: {1X: a}\n", "bad environment variable name '1X'"),
    ("    image: localhost/demo\n    env: {X: 1}\n",
     "containers.web.env.X: expected a string, got 1"),
    ("    image: localhost/demo\n    workdir: srv\n", "working directory path 'srv' is relative"),
    ("    image: localhost/demo\n    user: 'root group'\n", "bad user 'root group'"),
    ("    image: localhost/demo\n    command: echo 'unclosed\n", "it cannot be split"),
    ("    image: localhost/demo\n    attach: {pid: 1}\n", "cannot have an image"),
    ("    env: {A: b}\n", "containers.web.env: env is for an image container, and this "
                         "container has no image"),
    ("    volumes: [/a:/b]\n", "containers.web.volumes: volumes is for an image container"),
    ("    command: sleep 1\n    user: root\n", "containers.web.user: user is for an image"),
    ("    image: localhost/demo\n    entrypoint: sh\n", "entrypoint"),
])
def test_bad_image_keys_are_named_with_their_place(extra: str, expected: str) -> None:
    assert expected in _error(extra)


def test_restart_is_accepted_for_an_image_without_command() -> None:
    assert _load("    image: localhost/demo\n    restart: never\n").restart_policy == "never"


@pytest.mark.parametrize(("attach", "by_name"), [
    ("{podman: web-1}", ("podman", "web-1")), ("{docker: web.1}", ("docker", "web.1")),
    ("{pid: 42}", None)])
def test_attach_by_runtime_name(attach: str, by_name: tuple[str, str] | None) -> None:
    assert _load(f"    attach: {attach}\n").attach.by_name == by_name


@pytest.mark.parametrize(("attach", "expected"), [
    ("{podman: web, pid: 3}", "attach takes exactly one of pid (a process), netns (a path), "
                              "podman or docker (a container's name); got pid, podman"),
    ("{netns: /run/netns/x, docker: web}", "got netns, docker"),
    ("{podman: web, ifname: eth1}", "ifname goes with netns"),
    ("{}", "got none"),
    ("{podman: -web}", "bad container name '-web'"),
    ("{docker: 'a b'}", "bad container name 'a b'"),
])
def test_bad_attach_by_name(attach: str, expected: str) -> None:
    assert expected in _error(f"    attach: {attach}\n")
