"""Image containers on a real daemon, run by real Podman in the namespaces Switchboard makes:
HTTP to another container and to the host, a service whose check passes, DNS inside the
image, restart with backoff, adoption after a daemon SIGKILL, recreation of a container
removed behind the daemon's back or whose image changed, a missing image, and `down`.

Needs Podman (scripts/install-deps.sh) and the demo image (scripts/build-image.sh, which
the module runs). Every runtime container made here carries this daemon's label and is
removed at the end, whatever happened.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import (
    ROOT,
    Switchboard,
    in_ns,
    private_switchboard,
    sh,
    teardown,
    wait_until,
)

pytestmark = pytest.mark.integration

TOPO = "sbt-img"
MISSING = "sbt-img-missing"
IMAGE = "localhost/switchboard/demo:latest"
IMAGE_V2 = "localhost/switchboard/demo:sbt-img-v2"
RUN = os.getpid()
NETNS_PREFIX = f"sbi{RUN % 100000}-"


def topology(web_image: str = IMAGE) -> str:
    return f"""
name: {TOPO}
networks:
  n: {{subnet: 10.180.1.0/24}}
containers:
  web:
    networks: {{n: {{ip: 10.180.1.10}}}}
    image: {web_image}
    services:
      - name: sbtimg-web
        port: 80
        check: {{http: /index.html, interval: 1s}}
  keep:
    networks: {{n: {{ip: 10.180.1.11}}}}
    image: {IMAGE}
    command: httpd -f -p 8080 -h /data
    env: {{GREETING: hello-from-env}}
    volumes: ["{{data}}:/data:ro"]
    workdir: /data
  job:
    networks: [n]
    image: {IMAGE}
    command: sh -c 'echo job started as $GREETING; exit 4'
    env: {{GREETING: sbtimg}}
    restart: on-failure
  client:
    networks: {{n: {{ip: 10.180.1.20}}}}
    command: sleep infinity
"""


def podman(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["podman", *args], capture_output=True, text=True, timeout=60)


def ours() -> list[dict[str, Any]]:
    """The runtime containers this module's daemon made (by its label)."""
    out = podman("ps", "--all", "--format", "json", "--filter",
                 f"label=switchboard.prefix={NETNS_PREFIX}").stdout
    return json.loads(out or "[]")


def runtime_id(name: str) -> str | None:
    found = [c["Id"] for c in ours() if f"{NETNS_PREFIX}{TOPO}-{name}" in c["Names"]]
    return found[0][:12] if found else None


def rows(sb: Switchboard, topo: str = TOPO) -> dict[str, dict[str, Any]]:
    return {r["container"]: r for r in sb.status(topo)["containers"]}


def serves(netns: str, url: str, expect: str) -> bool:
    return expect in in_ns(netns, f"curl -s --max-time 2 {url}").stdout


@pytest.fixture(scope="module")
def sb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Switchboard]:
    if os.geteuid() != 0:
        pytest.skip("integration tests need root")
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed (scripts/install-deps.sh)")
    subprocess.run(["bash", str(ROOT / "scripts/build-image.sh")], check=True, timeout=300)
    podman("tag", IMAGE, IMAGE_V2)
    state = tmp_path_factory.mktemp("images")
    data = state / "data"
    data.mkdir()
    (data / "index.html").write_text("served from a volume\n")
    daemon = private_switchboard(state, prefix=f"sbtimg-{RUN}", bridge=f"sbi{RUN}",
                                 of_port=17000 + RUN % 15000)
    daemon.env["SWITCHBOARD_NETNS_PREFIX"] = NETNS_PREFIX
    # no periodic pass to fall back on: what is followed must be followed by its events
    daemon.env["SWITCHBOARD_RESYNC_SECONDS"] = "600"
    daemon.start()
    try:
        daemon.wait_ready()
        text = topology().replace("{data}", str(data))
        (state / "topo.yaml").write_text(text)
        daemon.cli("up", str(state / "topo.yaml"))
        yield daemon
    finally:
        teardown(daemon)
        left = [c["Id"] for c in ours()]
        if left:
            podman("rm", "--force", "--time", "0", *left)
        podman("rmi", IMAGE_V2)
        for ns in sh("ip netns list").stdout.split():
            if ns.startswith(NETNS_PREFIX):
                sh(f"ip netns delete {ns}")


def test_an_image_serves_http_to_a_container_and_to_the_host(sb: Switchboard) -> None:
    client = f"{NETNS_PREFIX}{TOPO}-client"
    assert wait_until(lambda: serves(client, "http://10.180.1.10/", "hello from the switchboard"
                                     " demo image"), 30), sb.log_tail()
    assert wait_until(lambda: "hello from the switchboard" in sh(
        "curl -s --max-time 2 http://10.180.1.10/").stdout, 20)
    # env, volume and workdir reach the image
    assert wait_until(lambda: serves(client, "http://10.180.1.11:8080/", "served from a volume"),
                      30)
    ps = podman("exec", f"{NETNS_PREFIX}{TOPO}-keep", "sh", "-c", "echo $GREETING; pwd").stdout
    assert ps.split() == ["hello-from-env", "/data"]


def test_status_shows_the_image_and_the_runtime_container_id(sb: Switchboard) -> None:
    assert wait_until(lambda: rows(sb)["web"].get("runtime_id") is not None, 20)
    web = rows(sb)["web"]
    assert web["image"] == IMAGE and web["state"] == "running"
    assert web["runtime_id"] == runtime_id("web")
    labels = podman("inspect", "--format", "{{json .Config.Labels}}",
                    f"{NETNS_PREFIX}{TOPO}-web").stdout
    assert json.loads(labels)["switchboard.topology"] == TOPO
    assert "image " + IMAGE in sb.cli("status", TOPO).stdout


def test_its_service_check_passes_and_dns_inside_the_image_resolves_it(
        sb: Switchboard) -> None:
    def resolves() -> bool:
        out = podman("exec", f"{NETNS_PREFIX}{TOPO}-keep", "nslookup",
                     "sbtimg-web.service.consul").stdout
        return "10.180.1.10" in out
    assert wait_until(resolves, 30), podman("exec", f"{NETNS_PREFIX}{TOPO}-keep", "cat",
                                            "/etc/resolv.conf").stdout


def test_an_image_that_exits_is_restarted_with_backoff_and_its_log_shown(
        sb: Switchboard) -> None:
    assert wait_until(lambda: rows(sb)["job"].get("restarts", 0) >= 2, 30), rows(sb)["job"]
    job = rows(sb)["job"]
    assert job["exit_status"] == 4 and job["restart"] == "on-failure"
    assert job["state"] in ("backoff", "crash-looping", "running"), job
    logs = sb.cli("logs", "job").stdout
    assert logs.count("job started as sbtimg") >= 2


def test_a_daemon_sigkill_leaves_them_running_and_the_next_one_adopts_or_recreates(
        sb: Switchboard) -> None:
    assert wait_until(lambda: runtime_id("web") and runtime_id("keep"), 20)
    web, keep = runtime_id("web"), runtime_id("keep")
    sb.kill(signal.SIGKILL)
    assert runtime_id("keep") == keep  # still there, daemon gone
    podman("rm", "--force", "--time", "0", f"{NETNS_PREFIX}{TOPO}-web")  # behind its back
    sb.start()
    sb.wait_ready()
    assert wait_until(lambda: runtime_id("web") not in (None, web), 30), sb.log_tail()
    assert runtime_id("keep") == keep  # adopted: the same container
    client = f"{NETNS_PREFIX}{TOPO}-client"
    assert wait_until(lambda: serves(client, "http://10.180.1.10/", "hello"), 30)


def test_a_changed_image_recreates_the_container_and_plan_says_so(
        sb: Switchboard, tmp_path: Path) -> None:
    assert wait_until(lambda: runtime_id("web") is not None, 20)
    before, keep = runtime_id("web"), runtime_id("keep")
    data = sb.state_dir / "data"
    path = tmp_path / "v2.yaml"
    path.write_text(topology(IMAGE_V2).replace("{data}", str(data)))
    plan = sb.cli("plan", str(path), check=False).stdout  # exit 2: changes
    assert "web" in plan and "its image changes" in plan
    sb.cli("up", str(path))
    assert wait_until(lambda: runtime_id("web") not in (None, before), 30), sb.log_tail()
    assert rows(sb)["web"]["image"] == IMAGE_V2
    assert runtime_id("keep") == keep
    client = f"{NETNS_PREFIX}{TOPO}-client"
    assert wait_until(lambda: serves(client, "http://10.180.1.10/", "hello"), 30)


def test_a_missing_image_leaves_the_container_broken_with_the_reason(
        sb: Switchboard, tmp_path: Path) -> None:
    path = tmp_path / "missing.yaml"
    path.write_text(f"""
name: {MISSING}
networks:
  m: {{subnet: 10.180.2.0/24}}
containers:
  ghost:
    networks: [m]
    image: localhost/switchboard/absent:1
""")
    sb.cli("up", str(path), check=False)

    def broken() -> bool:
        row = rows(sb, MISSING).get("ghost", {})
        return row.get("state") == "broken" and "absent:1" in row.get("problem", "")
    assert wait_until(broken, 30), rows(sb, MISSING)
    assert "not in podman's image store" in rows(sb, MISSING)["ghost"]["problem"]
    sb.cli("down", MISSING)


def test_down_removes_the_runtime_containers_namespaces_and_ports(sb: Switchboard) -> None:
    assert ours()
    sb.cli("down", TOPO)
    assert ours() == []
    assert not [ns for ns in sh("ip netns list").stdout.split() if ns.startswith(NETNS_PREFIX)]
    ports = sh(f"ovs-vsctl list-ports {sb.bridge}").stdout.split()
    assert ports == [], ports


def test_the_demo_file_puts_its_image_instance_behind_the_vip(
        sb: Switchboard, tmp_path: Path) -> None:
    shop = ((ROOT / "topologies" / "shop.yaml").read_text()
            .replace("name: shop", f"name: {TOPO}-shop")
            .replace("10.10.1.", "10.180.11.").replace("10.10.2.", "10.180.12."))
    assert "image: localhost/switchboard/demo:latest" in shop
    path = tmp_path / "shop.yaml"
    path.write_text(shop)
    sb.cli("up", str(path))
    web = f"{NETNS_PREFIX}{TOPO}-shop-web"
    seen: set[str] = set()

    def both() -> bool:  # the VIP sends only to instances whose check passes
        out = in_ns(web, "curl -s --max-time 2 http://10.180.12.100/").stdout
        seen.add("image" if "demo image" in out else "python" if "Directory listing" in out
                 else "")
        return {"image", "python"} <= seen
    assert wait_until(both, 60, 0.2), (seen, rows(sb, f"{TOPO}-shop"))
    assert rows(sb, f"{TOPO}-shop")["api-2"]["image"] == IMAGE
    sb.cli("down", f"{TOPO}-shop")
    assert ours() == []


ATTACHED = f"sbt-img-ext-{RUN}"


def test_a_podman_container_attached_by_name_is_followed_through_restarts_and_removal(
        sb: Switchboard, tmp_path: Path) -> None:
    path = tmp_path / "attach.yaml"
    path.write_text(f"""
name: {TOPO}-attach
networks:
  a: {{subnet: 10.180.3.0/24}}
containers:
  ext:
    networks: {{a: {{ip: 10.180.3.10}}}}
    attach: {{podman: {ATTACHED}}}
  peer:
    networks: {{a: {{ip: 10.180.3.20}}}}
    command: sleep infinity
""")
    # after `down` of the image topology: no crash-looping job wakes the daemon meanwhile
    topo, peer = f"{TOPO}-attach", f"{NETNS_PREFIX}{TOPO}-attach-peer"
    sb.cli("up", str(path))
    row = rows(sb, topo)["ext"]
    assert row["state"] == "pending" and f"waiting for podman container {ATTACHED}" in row[
        "note"], row
    podman("run", "-d", "--name", ATTACHED, "--label", f"switchboard.prefix={NETNS_PREFIX}",
           "--network", "none", IMAGE)
    assert wait_until(lambda: serves(peer, "http://10.180.3.10/", "hello"), 30), sb.log_tail()
    assert rows(sb, topo)["ext"]["state"] == "attached"
    for _ in range(2):  # each start is a new namespace: plugged again, by the runtime's events
        old = podman("inspect", "--format", "{{.State.Pid}}", ATTACHED).stdout.strip()
        podman("restart", "--time", "0", ATTACHED)
        assert podman("inspect", "--format", "{{.State.Pid}}", ATTACHED).stdout.strip() != old
        assert wait_until(lambda: serves(peer, "http://10.180.3.10/", "hello"), 30), \
            sb.log_tail()
    podman("rm", "--force", "--time", "0", ATTACHED)
    port = rows(sb, topo)["ext"]["port"]
    assert wait_until(lambda: port not in sh(f"ovs-vsctl list-ports {sb.bridge}").stdout, 30)
    assert wait_until(lambda: rows(sb, topo)["ext"]["state"] == "pending", 30)
    sb.cli("down", topo)
