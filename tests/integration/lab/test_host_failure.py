"""Hosts that fail, on a 3-host `switchboard lab` with real clients: rolling restarts under
traffic, a host killed (its instances leave DNS and the VIP, its unpinned containers move with
their addresses, and it runs nothing twice when it comes back), a partition, and Consul
servers lost. The controllers move containers after 10 s (`lab up --reschedule-after 10`).

The tests run in file order on one lab; each starts from a healthy cluster. Select with
`pytest -m lab`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.lab.labkit import LabDriver, eventually, run_in

pytestmark = [pytest.mark.lab, pytest.mark.integration]

LAB = LabDriver(f"sbf{os.getpid() % 100000}")
GRACE = 10  # short for the test, long enough to ride out a loaded machine's gossip flaps
VIP = "10.41.1.100"
TOPOLOGY = """
name: fo
networks:
  lan: {subnet: 10.41.1.0/24}
containers:
  web: {host: h1, networks: [lan], command: python3 -m http.server 80}
  pinned: {host: h2, networks: [lan], command: python3 -m http.server 80}
  api-1: &api
    networks: [lan]
    command: python3 -m http.server 8080
    services: [{name: api, port: 8080, check: {http: /, interval: 1s, timeout: 1s}}]
  api-2: *api
  api-3: *api
services:
  api: {vip: 10.41.1.100, port: 80}
"""
# Requests from `web`, each retried for up to 1 s; prints how many failed for good.
CLIENT = r"""
import json, socket, sys, time, pathlib
targets, stop = sys.argv[1:-1], pathlib.Path(sys.argv[-1])
sent = failed = 0
def get(target):
    host, port = target.split(":")
    with socket.create_connection((host, int(port)), timeout=0.3) as s:
        s.settimeout(0.5)
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        return s.recv(12).startswith(b"HTTP/1.0 200")
while not stop.exists():
    for target in targets:
        sent += 1
        deadline = time.monotonic() + 1.0
        while True:
            try:
                if get(target):
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                failed += 1
                print("failed", target, time.time(), file=sys.stderr, flush=True)
                break
            time.sleep(0.05)
    time.sleep(0.05)
print(json.dumps({"sent": sent, "failed": failed}))
"""


@pytest.fixture(scope="module")
def cluster(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[dict]:
    if os.geteuid() != 0:
        pytest.skip("the lab needs root")
    failed_before = request.session.testsfailed
    up = LAB.lab("up", "--hosts", "3", "--reschedule-after", str(GRACE))
    try:
        assert up.returncode == 0, f"lab up failed:\n{up.stdout}\n{up.stderr}"
        path = tmp_path_factory.mktemp("fo") / "fo.yaml"
        path.write_text(TOPOLOGY)
        applied = LAB.sb("h1", "up", str(path))
        assert applied.returncode == 0, f"{applied.stdout}\n{applied.stderr}"
        yield {"file": path, "before": rows()}
    finally:
        if request.session.testsfailed > failed_before:  # the hosts' logs, for the reader
            kept = Path("/tmp/switchboard-test-logs") / LAB.name
            for host in ("h1", "h2", "h3"):
                shutil.copytree(LAB.state_dir(host) / "log", kept / host, dirs_exist_ok=True)
            print(f"the lab's logs are kept in {kept}")
        if not os.environ.get("SWITCHBOARD_TEST_KEEP_LAB"):  # kept to look into it
            LAB.lab("down")


def rows(host: str = "h1") -> dict[str, dict]:
    """Container -> its status row (one network each), as ``host`` sees it."""
    status = eventually(lambda: LAB.sb_json(host, "status", "fo"), timeout=30)
    assert status, "status failed"
    return {row["container"]: row for row in status["topologies"][0]["containers"]}


def host_state(name: str, asked: str = "h1") -> str:
    hosts = LAB.sb_json(asked, "hosts") or {"hosts": []}
    return next((h["state"] for h in hosts["hosts"] if h["name"] == name), "?")


def consul(host: str, path: str) -> object:
    """GET the host's agent as the operator (the lab's management token: ACLs are on)."""
    token = Path(f"/var/lib/switchboard/lab/{LAB.name}/secrets/management.token")
    header = ["-H", f"X-Consul-Token: {token.read_text().strip()}"] if token.exists() else []
    out = LAB.lab("exec", host, "--", "curl", "-fsS", "--max-time", "5", *header,
                  f"http://127.0.0.1:8500{path}")
    return json.loads(out.stdout) if out.returncode == 0 else None


def all_voters(expected: int = 3) -> bool:
    """Consul's servers all vote again (autopilot promotes a returning server after 10 s):
    before the next fault, or losing one more would lose the quorum."""
    health = consul("h1", "/v1/operator/autopilot/health")
    servers = health.get("Servers", []) if isinstance(health, dict) else []
    return sum(1 for s in servers if s.get("Voter") and s.get("Healthy")) == expected


def instance_nodes(container: str) -> list[str]:
    """The Consul nodes holding a registration of the container's api instance."""
    entries = consul("h1", "/v1/catalog/service/api") or []
    return sorted(e["Node"] for e in entries  # type: ignore[union-attr]
                  if e["ServiceMeta"].get("switchboard-container") == container)


def web() -> str:
    return LAB.netns("h1", "fo", "web")


def dig(name: str = "api.service.consul") -> list[str]:
    return run_in(web(), "dig", "+short", "+time=1", "+tries=1", name).stdout.split()


def curl(url: str, timeout: float = 3) -> str:
    return run_in(web(), "curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}",
                  "--max-time", str(timeout), url).stdout


def healthy() -> None:
    """Every host ready and every server voting (the state each test starts from)."""
    assert eventually(lambda: all(host_state(h) == "ready" for h in ("h1", "h2", "h3"))
                      and all_voters(), timeout=60), (LAB.sb("h1", "hosts").stdout,
                                                      consul("h1", "/v1/operator/autopilot/health"))


def rolling_restarts(cluster: dict, stop: Path) -> tuple[dict, str, list[str]]:
    """Restart every host's daemon, then every host's OVS, one at a time, while a client in
    ``web`` (h1) sends requests to the api instances on h2 and h3 and to the VIP, each retried
    for up to 1 s: (counts, the client's failure lines, when each restart began)."""
    remote = [f"{r['ip']}:8080" for n, r in cluster["before"].items()
              if n.startswith("api") and r["host"] != "h1"]
    client = subprocess.Popen(["ip", "netns", "exec", web(), sys.executable, "-c", CLIENT,
                               *remote, f"{VIP}:80", str(stop)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    restarts = []
    try:
        time.sleep(1)
        for part in ("controller", "ovs"):
            for host in ("h1", "h2", "h3"):
                restarts.append(f"{time.time():.1f} {host} {part}")
                out = LAB.lab("restart", host, "--only", part)
                assert out.returncode == 0, out.stdout + out.stderr
                time.sleep(1)
        stop.touch()
        out, err = client.communicate(timeout=30)
    finally:
        if client.poll() is None:
            client.kill()
    return json.loads(out), err, restarts


def test_rolling_restarts_of_daemons_then_ovs_lose_no_retried_request(cluster: dict,
                                                                      tmp_path: Path) -> None:
    """Known rare failure (docs/limitations.md): restarting h1's own OVS stops all of
    web's traffic for 0.6 to 0.85 s, and a request in flight then waits for its 0.5 s read
    timeout, so a round now and then loses a request (2 of 30 on the lab). A failed round is
    reported as a warning and the round is run again, which must lose nothing."""
    counts, err, restarts = rolling_restarts(cluster, tmp_path / "stop1")
    assert counts["sent"] > 50, counts
    if counts["failed"]:
        warnings.warn(f"rolling restarts, first round: {counts}; {err[-1000:]}; {restarts}",
                      stacklevel=1)
        healthy()
        counts, err, restarts = rolling_restarts(cluster, tmp_path / "stop2")
    assert counts["sent"] > 50 and counts["failed"] == 0, (counts, err[-2000:], restarts)


def test_a_killed_host_leaves_hosts_dns_and_the_vip_within_10_s(cluster: dict) -> None:
    healthy()
    before = cluster["before"]
    on_h2 = [n for n, r in before.items() if r["host"] == "h2" and n.startswith("api")]
    assert on_h2, before  # placement spreads the instances over the three hosts
    gone_ip = before[on_h2[0]]["ip"]
    assert gone_ip in dig()
    killed_at = time.monotonic()
    assert LAB.lab("kill", "h2").returncode == 0
    assert eventually(lambda: gone_ip not in dig() and host_state("h2") == "down",
                      timeout=10, every=0.2), (dig(), host_state("h2"))
    assert time.monotonic() - killed_at < 10
    assert eventually(lambda: [curl(f"http://{VIP}/") for _ in range(6)] == ["200"] * 6,
                      timeout=5, every=0.2)


def test_unpinned_containers_move_with_their_addresses_pinned_ones_show_host_down(
    cluster: dict,
) -> None:
    before = cluster["before"]
    moved = [n for n, r in before.items() if r["host"] == "h2" and n != "pinned"]

    def settled() -> dict[str, dict] | None:
        now = rows()
        done = all(now[n]["host"] in ("h1", "h3") and now[n]["state"] == "running"
                   for n in moved)
        return now if done else None

    after = eventually(settled, timeout=GRACE + 30, every=1)
    assert after, rows()
    for name in moved:
        assert (after[name]["ip"], after[name]["mac"]) == (before[name]["ip"],
                                                          before[name]["mac"])
        url = f"http://{before[name]['ip']}:8080/"  # its server listens a moment after
        assert eventually(lambda u=url: curl(u) == "200", timeout=15), curl(url)
    logs = "".join((LAB.state_dir(h) / "log" / "controller.log").read_text()
                   for h in ("h1", "h3"))
    for name in moved:  # one decider: each move made once, by one daemon
        assert logs.count(f"moved container {name} of topology fo from h2") == 1, logs[-3000:]
    assert after["pinned"]["host"] == "h2" and after["pinned"]["state"] == "host down"
    out = LAB.sb("h3", "events", "-n", "200", "--json")
    events = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
    assert any(e["kind"] == "host.down" and "h2" in e["message"] for e in events), out.stdout
    assert {e["container"] for e in events if e["kind"] == "container.moved"} >= set(moved)
    status = LAB.sb("h3", "status", "fo")
    assert "h2: down" in status.stdout and "names its host" in status.stdout, status.stdout
    ip = before[moved[0]]["ip"]
    assert eventually(lambda: ip in dig(), timeout=10), dig()  # registered on its new host


def test_a_host_that_comes_back_runs_only_what_is_placed_on_it(cluster: dict) -> None:
    before = cluster["before"]
    moved = [n for n, r in before.items() if r["host"] == "h2" and n != "pinned"]
    started = LAB.lab("start", "h2")
    assert started.returncode == 0, started.stdout + started.stderr
    assert eventually(lambda: rows()["pinned"]["state"] == "running", timeout=30), rows()
    for name in moved:
        assert not Path(f"/run/netns/{LAB.netns('h2', 'fo', name)}").exists()
        assert len(instance_nodes(name)) == 1, instance_nodes(name)
    assert rows()[moved[0]]["host"] != "h2"  # it stays where it moved
    assert curl(f"http://{before['pinned']['ip']}/") == "200"


def test_a_partitioned_host_stops_what_moved_away_when_it_rejoins(cluster: dict) -> None:
    healthy()
    on_h3 = [n for n, r in rows().items() if r["host"] == "h3"]
    assert on_h3
    assert LAB.lab("unplug", "h3").returncode == 0
    try:
        assert eventually(lambda: all(rows()[n]["host"] != "h3" for n in on_h3),
                          timeout=GRACE + 30, every=1), rows()
        # h3 still runs its copies, cut off: nobody else routes to them
        assert all(Path(f"/run/netns/{LAB.netns('h3', 'fo', n)}").exists() for n in on_h3)
    finally:
        assert LAB.lab("plug", "h3").returncode == 0
    # Consul's gossip retries a failed member every 30 s: h3 rejoins within about that
    assert eventually(lambda: not any(Path(f"/run/netns/{LAB.netns('h3', 'fo', n)}").exists()
                                      for n in on_h3), timeout=60, every=1)
    for name in on_h3:
        assert eventually(lambda n=name: len(instance_nodes(n)) <= 1, timeout=10)
        assert curl(f"http://{rows()[name]['ip']}:{8080 if name.startswith('api') else 80}/") \
            == "200"


def test_one_server_lost_changes_nothing_two_lost_refuse_up_and_keep_traffic(
    cluster: dict, tmp_path: Path
) -> None:
    healthy()
    extra = tmp_path / "extra.yaml"
    extra.write_text("name: extra\nnetworks:\n  lan: {subnet: 10.42.1.0/24}\n"
                     "containers:\n  a: {host: h1, networks: [lan]}\n")
    target = next(r for n, r in rows().items() if r["host"] == "h2")
    assert LAB.lab("kill", "h3", "--only", "consul").returncode == 0
    try:
        out = LAB.sb("h1", "up", str(extra))
        assert out.returncode == 0, out.stdout + out.stderr
        assert LAB.lab("kill", "h2", "--only", "consul").returncode == 0
        refused = LAB.sb("h1", "down", "extra")
        assert refused.returncode == 1
        assert "has no leader" in refused.stderr and "keep their traffic" in refused.stderr, \
            refused.stderr
        ping = run_in(web(), "ping", "-c", "5", "-i", "0.2", "-W", "1", target["ip"])
        assert ping.returncode == 0, ping.stdout  # h1 -> h2 with two servers gone
    finally:
        for host in ("h2", "h3"):
            LAB.lab("start", host)
    healthy()
    assert LAB.sb("h1", "down", "extra").returncode == 0
