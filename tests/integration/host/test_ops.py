"""``switchboard plan`` / ``up --dry-run``, ``graph`` and ``logs`` against the real daemon,
Consul agent and containers: plan output and exit codes on edits of topologies/shop.yaml,
the KV untouched by a plan, a stored topology drawn by Graphviz, and a real command's output."""

from __future__ import annotations

import html
import json
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import consul
import pytest

from tests.harness import ROOT, Switchboard, wait_until

pytestmark = pytest.mark.integration

NAME = "sbt-plan"
SHOP = ((ROOT / "topologies" / "shop.yaml").read_text()
        .replace("name: shop", f"name: {NAME}").replace("10.10.", "10.242."))
EDITED = (SHOP.replace("command: python3 -m http.server 80\n",
                       "command: python3 -m http.server 81\n")
          .replace("  api-2:", "  api-0:\n    networks: [back]\n  api-2:"))
LOGGER = "sbt-logs"
CHATTY = f"""
name: {LOGGER}
networks:
  lan: {{subnet: 10.242.8.0/24}}
containers:
  talker:
    networks: [lan]
    command: "echo hello-from-talker; i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.2; done"
  quiet:
    networks: [lan]
"""


def kv_tree(sb: Switchboard) -> list[tuple[str, int, bytes]]:
    """Every key under the test prefix with its ModifyIndex (any write changes it), but the
    daemon's own, which it writes when it likes: its events, reports and lock."""
    _, entries = consul.Consul().kv.get(f"{sb.prefix}/", recurse=True)
    theirs = tuple(f"{sb.prefix}/{part}" for part in ("events/", "status/", "leader"))
    return sorted((e["Key"], e["ModifyIndex"], e["Value"] or b"") for e in entries or []
                  if not e["Key"].startswith(theirs))


def write(tmp: Path, text: str, name: str) -> Path:
    path = tmp / name
    path.write_text(text)
    return path


def pid_of(sb: Switchboard, container: str) -> int:
    return int((sb.state_dir / "pids" / NAME / f"{container}.pid").read_text().split()[0])


def status_ips(sb: Switchboard, name: str) -> dict[str, str]:
    data = json.loads(sb.cli("status", name, "--json").stdout)
    return {r["container"]: r["ip"] for r in data["topologies"][0]["containers"]}


@pytest.fixture(scope="module")
def files(switchboard: Switchboard, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[dict[str, Path]]:
    tmp = tmp_path_factory.mktemp("ops")
    yield {"shop": write(tmp, SHOP, "shop.yaml"), "edited": write(tmp, EDITED, "edited.yaml"),
           "bad": write(tmp, SHOP.replace("ip: 10.242.1.10", "ip: 10.242.9.10"), "bad.yaml"),
           "chatty": write(tmp, CHATTY, "chatty.yaml"), "dir": tmp}
    for name in (NAME, LOGGER):
        switchboard.cli("down", name, check=False)


def test_plan_before_up_lists_everything_and_writes_nothing(switchboard, files) -> None:
    sb = switchboard
    before = kv_tree(sb)
    result = sb.cli("plan", str(files["shop"]), check=False)
    assert result.returncode == 2, result.stderr
    out = result.stdout
    assert f"topology {NAME} is not applied yet" in out
    for line in ("+ network front", "+ router core", "+ container api-1", "+ service api",
                 "api-1 on back: 10.242.2.2 (IPAM)", "web on front: 10.242.1.10 (fixed)",
                 "8 to add, 0 to change, 0 to remove"):
        assert line in out
    assert kv_tree(sb) == before
    assert sb.cli("status", NAME, check=False).returncode == 1  # still not applied


def test_plan_of_the_applied_file_changes_nothing_and_exits_0(switchboard, files) -> None:
    sb = switchboard
    sb.cli("up", str(files["shop"]))
    before = kv_tree(sb)
    for args in (("plan", str(files["shop"])), ("up", "--dry-run", str(files["shop"]))):
        result = sb.cli(*args, check=False)
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"topology {NAME}: no changes" in result.stdout
    assert kv_tree(sb) == before


def test_plan_of_an_edit_shows_what_up_then_really_does(switchboard, files) -> None:
    sb = switchboard
    before, pids = kv_tree(sb), {c: pid_of(sb, c) for c in ("web", "api-1", "api-2")}
    result = sb.cli("plan", str(files["edited"]), "--json", check=False)
    assert result.returncode == 2, result.stderr
    plan = json.loads(result.stdout)
    assert kv_tree(sb) == before
    assert [(c["kind"], c["name"], c["action"]) for c in plan["changes"]] == [
        ("container", "api-0", "add"), ("container", "web", "change")]
    assert [e["container"] for e in plan["restart"]] == ["web"]
    [allocated] = plan["addresses"]
    assert (allocated["container"], allocated["network"]) == ("api-0", "back")
    dry = sb.cli("up", "--dry-run", str(files["edited"]), check=False)
    assert dry.returncode == 2 and "containers that restart:\n  web: its command changes" in (
        dry.stdout)
    assert kv_tree(sb) == before

    sb.cli("up", str(files["edited"]))
    assert status_ips(sb, NAME)["api-0"] == allocated["new"]  # what IPAM really gave it
    assert pid_of(sb, "web") != pids["web"]  # restarted, as the plan said
    assert {c: pid_of(sb, c) for c in ("api-1", "api-2")} == {
        c: pids[c] for c in ("api-1", "api-2")}  # untouched, as the plan said
    assert sb.cli("plan", str(files["edited"]), check=False).returncode == 0


def test_plan_of_an_invalid_file_exits_1_naming_the_problem(switchboard, files) -> None:
    sb = switchboard
    before = kv_tree(sb)
    for args in (("plan",), ("up", "--dry-run")):
        result = sb.cli(*args, str(files["bad"]), check=False)
        assert result.returncode == 1
        assert "bad.yaml" in result.stderr and "10.242.9.10 is outside subnet" in result.stderr
    assert kv_tree(sb) == before


def test_graph_draws_the_stored_topology_with_its_addresses(switchboard, files) -> None:
    sb = switchboard
    ips = status_ips(sb, NAME)
    text = sb.cli("graph", NAME).stdout
    assert text.startswith("flowchart LR")
    for container in ("web", "api-0", "api-1", "api-2"):
        assert f'["{container}<br/>{ips[container]}"]' in text
    dot = sb.cli("graph", NAME, "--format", "dot").stdout
    assert dot.startswith("digraph") and "VIP 10.242.2.100:80" in dot
    missing = sb.cli("graph", "no-such-topology", check=False)
    assert missing.returncode == 1 and "no topology named 'no-such-topology'" in missing.stderr


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz is not installed")
def test_graph_writes_an_svg_drawn_by_graphviz(switchboard, files) -> None:
    out = files["dir"] / "shop.svg"
    switchboard.cli("graph", NAME, "-o", str(out))
    svg = html.unescape(out.read_text())  # Graphviz writes "-" as &#45;
    assert "<svg" in svg and "10.242.2.100:80" in svg and "api-0" in svg


def test_logs_shows_a_real_commands_output(switchboard, files) -> None:
    sb = switchboard
    sb.cli("up", str(files["chatty"]))
    assert wait_until(lambda: "tick 3" in sb.cli("logs", "talker", check=False).stdout, 15)
    out = sb.cli("logs", "talker", "-n", "-1").stdout
    assert "hello-from-talker" in out and "starting in" in out
    assert len(sb.cli("logs", "talker", "-n", "1").stdout.splitlines()) == 1


def test_logs_follow_prints_new_output_until_ctrl_c(switchboard, files) -> None:
    sb = switchboard
    last = int(sb.cli("logs", "talker", "-n", "1").stdout.split()[-1])
    proc = subprocess.Popen([sys.executable, "-m", "switchboard.cli", "logs", "talker", "-f",
                             "-n", "0"], env=sb.env, cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        seen = [proc.stdout.readline() for _ in range(3)]  # type: ignore[union-attr]
        ticks = [int(line.split()[-1]) for line in seen]
        assert ticks[0] > last and ticks == list(range(ticks[0], ticks[0] + 3))
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_logs_errors_name_the_container_and_the_host(switchboard, files) -> None:
    sb = switchboard
    unknown = sb.cli("logs", "nobody", check=False)
    assert unknown.returncode == 1
    assert "no applied topology has a container named 'nobody'" in unknown.stderr
    elsewhere = sb.cli("logs", "talker", "--host-id", "another-host", check=False)
    assert elsewhere.returncode == 1
    assert "runs on host test-host" in elsewhere.stderr
    quiet = sb.cli("logs", "quiet", check=False)
    assert quiet.returncode == 1 and "has no command" in quiet.stderr
