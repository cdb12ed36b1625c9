"""Podman itself, through its CNI backend, attaches its containers with switchboard-cni.

Podman runs with a containers.conf and a storage.conf of the test's own (CONTAINERS_CONF,
CONTAINERS_STORAGE_CONF: its images, containers and CNI configuration live in a temporary
directory), and a local image made from busybox-static: no registry is needed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import ROOT, Switchboard, wait_until
from tests.integration.host.cnikit import cni_keys, config, ports, rows, token_file

pytestmark = pytest.mark.integration

TOPO = "sbt-cni-pod"
NETWORK = "sbt-cni-net"
IMAGE = "localhost/sbt-cni-busybox:test"
APPLETS = ("sh", "ip", "ping", "wget", "httpd", "nc", "sleep", "cat", "nslookup")
FILE = f"""
name: {TOPO}
networks:
  net: {{subnet: 10.181.2.0/24}}
containers:
  peer:
    networks: {{net: {{ip: 10.181.2.10}}}}
    services: [{{name: sbt-cni-peer, port: 80}}]
"""


def busybox_rootfs(path: Path) -> Path:
    """A root filesystem of /bin/busybox and links to its applets, as a tar."""
    with tarfile.open(path, "w") as tar:
        for directory in ("bin", "etc", "tmp", "proc", "sys", "dev", "run"):
            info = tarfile.TarInfo(directory)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        tar.add("/bin/busybox", "bin/busybox")
        for applet in APPLETS:
            info = tarfile.TarInfo(f"bin/{applet}")
            info.type, info.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(info)
    return path


class Podman:
    """podman with this test's configuration and storage."""

    def __init__(self, base: Path, plugin_config: dict[str, object]) -> None:
        self.base = base
        plugins, netd = base / "plugins", base / "net.d"
        plugins.mkdir()
        netd.mkdir()
        wrapper = plugins / "switchboard"  # this checkout's plugin, as /opt/cni/bin has it
        wrapper.write_text(f"#!/bin/sh\nPYTHONPATH={ROOT} exec {sys.executable} -m cni.main\n")
        wrapper.chmod(0o755)
        (netd / f"{NETWORK}.conflist").write_text(json.dumps({
            "cniVersion": "1.0.0", "name": NETWORK,
            "plugins": [{"type": "switchboard", **plugin_config}]}))
        (base / "containers.conf").write_text(f"""
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]
[network]
network_backend = "cni"
cni_plugin_dirs = ["{plugins}", "/usr/lib/cni"]
network_config_dir = "{netd}"
[engine]
cgroup_manager = "cgroupfs"
runtime = "runc"
events_logger = "file"
tmp_dir = "{base}/tmp"
""")
        (base / "storage.conf").write_text(f"""
[storage]
driver = "vfs"
graphroot = "{base}/storage"
runroot = "{base}/run"
""")
        self.env = {**os.environ, "CONTAINERS_CONF": str(base / "containers.conf"),
                    "CONTAINERS_STORAGE_CONF": str(base / "storage.conf")}

    def __call__(self, *args: str, check: bool = True,
                 timeout: float = 180) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(["podman", *args], env=self.env, capture_output=True, text=True,
                              timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"podman {' '.join(args)}: {proc.returncode}\n"
                                 f"{proc.stdout}\n{proc.stderr}")
        return proc


@pytest.fixture
def podman(switchboard: Switchboard, tmp_path: Path) -> Iterator[Podman]:
    if shutil.which("podman") is None or not Path("/bin/busybox").exists():
        pytest.skip("needs podman, runc and busybox-static (scripts/install-deps.sh)")
    switchboard.up(tmp_path, FILE)
    base = Path(tmp_path / "podman")
    base.mkdir()
    pod = Podman(base, config(switchboard, token_file(tmp_path), TOPO))
    try:
        pod("import", str(busybox_rootfs(tmp_path / "rootfs.tar")), IMAGE)
        yield pod
    finally:
        pod("rm", "-a", "-f", "-t", "0", check=False)
        pod("rmi", "-a", "-f", check=False)
        switchboard.cli("down", TOPO, check=False)
        shutil.rmtree(base, ignore_errors=True)


def test_podman_run_gets_a_switchboard_address_and_rm_releases_it(
    switchboard: Switchboard, podman: Podman
) -> None:
    name = f"sbt-cni-c{os.getpid()}"
    podman("run", "-d", "--name", name, "--network", NETWORK, IMAGE, "sleep", "600")
    (row,) = [r for r in rows(switchboard, TOPO) if r.get("source") == "cni"]
    assert row["container"] == name and row["state"] == "attached"
    inspect = json.loads(podman("inspect", name).stdout)[0]
    assert inspect["NetworkSettings"]["Networks"][NETWORK]["IPAddress"] == row["ip"]
    assert row["ip"].startswith("10.181.2.")
    assert "inet " + row["ip"] + "/24" in podman("exec", name, "ip", "-4", "addr").stdout

    # it reaches the topology's containers, and resolves their services
    assert podman("exec", name, "ping", "-c", "1", "-W", "2", "10.181.2.10").returncode == 0
    net = next(n for n in switchboard.status(TOPO)["networks"] if n["name"] == "net")
    assert f"nameserver {net['host_ip']}" in podman("exec", name, "cat",
                                                    "/etc/resolv.conf").stdout
    answer = podman("exec", name, "nslookup", "sbt-cni-peer.service.consul").stdout
    assert "10.181.2.10" in answer, answer

    # a fixed address (podman run --ip), kept beside the first container
    podman("run", "-d", "--name", f"{name}-ip", "--network", NETWORK, "--ip", "10.181.2.50",
           IMAGE, "sleep", "600")
    assert {r["container"]: r["ip"] for r in rows(switchboard, TOPO)
            if r.get("source") == "cni"} == {name: row["ip"], f"{name}-ip": "10.181.2.50"}
    assert podman("exec", f"{name}-ip", "ping", "-c", "1", "-W", "2", row["ip"]).returncode == 0

    # podman rm releases them: the records and the ports go
    assert row["port"] in ports(switchboard.bridge)
    podman("rm", "-f", "-t", "0", name, f"{name}-ip")
    assert cni_keys(switchboard.prefix, TOPO) == []
    assert wait_until(lambda: row["port"] not in ports(switchboard.bridge), 30)
    assert not [r for r in rows(switchboard, TOPO) if r.get("source") == "cni"]
