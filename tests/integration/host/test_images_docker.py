"""Docker on a real daemon started with ``--runtime docker``, against a private dockerd
(no host networking; stopped by its PID; the module is skipped without dockerd): an image
runs, gets its resolver, is restarted in a new namespace and plugged again, and goes with
`down`; a Docker container attached by name is followed through a restart and its removal.
Every Docker container made here carries this daemon's label and is removed at the end."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator

import pytest

from tests.harness import ROOT, Switchboard, private_switchboard, sh, teardown, wait_until
from tests.integration.host.test_images import IMAGE, rows, serves

pytestmark = pytest.mark.integration

RUN = os.getpid()
NETNS_PREFIX = f"sbj{RUN % 100000}-"
DOCKER_DIR = f"/run/sbt-img-docker-{RUN}"
DOCKER_HOST = f"unix://{DOCKER_DIR}/docker.sock"
TOPO = "sbt-img-dk"


@pytest.fixture(scope="module")
def docker_env() -> Iterator[dict[str, str]]:
    """A private dockerd's environment (DOCKER_HOST), with the demo image imported."""
    if os.geteuid() != 0:
        pytest.skip("integration tests need root")
    if shutil.which("dockerd") is None or shutil.which("docker") is None:
        pytest.skip("dockerd is not installed (apt-get install docker.io)")
    os.makedirs(DOCKER_DIR, exist_ok=True)
    env = {**os.environ, "DOCKER_HOST": DOCKER_HOST}
    with open(f"{DOCKER_DIR}/dockerd.log", "ab") as log:
        proc = subprocess.Popen(
            ["dockerd", "--iptables=false", "--ip6tables=false", "--bridge=none",
             "--ip-forward=false", "--ip-masq=false", "-H", DOCKER_HOST,
             "--data-root", f"{DOCKER_DIR}/data", "--exec-root", f"{DOCKER_DIR}/exec",
             "--pidfile", f"{DOCKER_DIR}/dockerd.pid"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def docker_ok() -> bool:
        return subprocess.run(["docker", "info"], env=env, capture_output=True,
                              timeout=30).returncode == 0
    try:
        assert wait_until(docker_ok, 60), "the private dockerd never answered"
        subprocess.run(["bash", str(ROOT / "scripts/build-image.sh")], env=env, check=True,
                       timeout=300)
        yield env
    finally:
        left = subprocess.run(["docker", "ps", "-aq", "--filter",
                               f"label=switchboard.prefix={NETNS_PREFIX}"], env=env,
                              capture_output=True, text=True, timeout=60).stdout.split()
        if left:
            subprocess.run(["docker", "rm", "-f", *left], env=env, capture_output=True,
                           timeout=60)
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        shutil.rmtree(DOCKER_DIR, ignore_errors=True)


@pytest.fixture(scope="module")
def sb(docker_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
       ) -> Iterator[Switchboard]:
    state = tmp_path_factory.mktemp("docker-images")
    daemon = private_switchboard(state, prefix=f"sbtimgd-{RUN}", bridge=f"sbj{RUN}",
                                 of_port=18000 + RUN % 14000)
    daemon.env.update({"SWITCHBOARD_NETNS_PREFIX": NETNS_PREFIX, "DOCKER_HOST": DOCKER_HOST,
                       "SWITCHBOARD_RUNTIME": "docker",
                       # no periodic pass to fall back on: only docker events plug
                       "SWITCHBOARD_RESYNC_SECONDS": "600"})
    daemon.start()
    try:
        daemon.wait_ready()
        yield daemon
    finally:
        teardown(daemon)
        for ns in sh("ip netns list").stdout.split():
            if ns.startswith(NETNS_PREFIX):
                sh(f"ip netns delete {ns}")


def docker(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], env=env, capture_output=True, text=True,
                          timeout=60)


def test_under_docker_an_image_runs_is_plugged_restarted_and_removed(
        sb: Switchboard, docker_env: dict[str, str]) -> None:
    client, name = f"{NETNS_PREFIX}{TOPO}-client", f"{NETNS_PREFIX}{TOPO}-web"

    def docker_id() -> str | None:
        out = docker(docker_env, "ps", "-q", "--no-trunc", "--filter",
                     f"name=^{name}$").stdout.split()
        return out[0][:12] if out else None
    sb.up(sb.state_dir, f"""
        name: {TOPO}
        networks:
          w: {{subnet: 10.180.6.0/24}}
        containers:
          web:
            networks: {{w: {{ip: 10.180.6.10}}}}
            image: {IMAGE}
            services: [{{name: sbtimg-dk-web, port: 80}}]
          client:
            networks: {{w: {{ip: 10.180.6.20}}}}
            command: sleep infinity
        """)
    assert wait_until(lambda: serves(client, "http://10.180.6.10/", "hello"), 30), \
        sb.log_tail()
    first = docker_id()
    assert first is not None
    assert wait_until(lambda: rows(sb, TOPO)["web"].get("runtime_id") == first, 20)
    resolv = docker(docker_env, "exec", name, "cat", "/etc/resolv.conf").stdout
    assert "service.consul" in resolv, resolv
    docker(docker_env, "kill", name)  # exits: restarted (always), in a new namespace
    assert wait_until(lambda: docker_id() not in (None, first), 30), sb.log_tail()
    assert wait_until(lambda: serves(client, "http://10.180.6.10/", "hello"), 30), \
        sb.log_tail()
    assert wait_until(lambda: rows(sb, TOPO)["web"].get("restarts", 0) >= 1, 20), \
        rows(sb, TOPO)["web"]
    sb.cli("down", TOPO)
    assert docker_id() is None
    assert not [ns for ns in sh("ip netns list").stdout.split()
                if ns.startswith(f"{NETNS_PREFIX}{TOPO}")]


def test_a_docker_container_attached_by_name_is_followed_too(
        sb: Switchboard, docker_env: dict[str, str]) -> None:
    name, topo = f"sbt-img-dext-{RUN}", f"{TOPO}-attach"
    peer = f"{NETNS_PREFIX}{topo}-peer"
    sb.up(sb.state_dir, f"""
        name: {topo}
        networks:
          d: {{subnet: 10.180.5.0/24}}
        containers:
          ext:
            networks: {{d: {{ip: 10.180.5.10}}}}
            attach: {{docker: {name}}}
          peer:
            networks: {{d: {{ip: 10.180.5.20}}}}
            command: sleep infinity
        """, name="attach.yaml")
    assert rows(sb, topo)["ext"]["state"] == "pending"
    run = docker(docker_env, "run", "-d", "--name", name, "--label",
                 f"switchboard.prefix={NETNS_PREFIX}", "--network", "none", IMAGE)
    assert run.returncode == 0, run.stderr
    assert wait_until(lambda: serves(peer, "http://10.180.5.10/", "hello"), 30), sb.log_tail()
    docker(docker_env, "restart", "-t", "0", name)
    assert wait_until(lambda: serves(peer, "http://10.180.5.10/", "hello"), 30), sb.log_tail()
    docker(docker_env, "rm", "-f", name)
    assert wait_until(lambda: rows(sb, topo)["ext"]["state"] == "pending", 30)
    sb.cli("down", topo)
