"""Host failure benchmark: a host killed, until the cluster has routed around it.

Makes a private 3-host lab (``--lab``; removed at the end, also on failure) whose controllers
move containers after ``--grace`` seconds (`lab up --reschedule-after`). Each round applies a
topology with ``web`` pinned on h1 and three unplaced ``api`` instances behind a VIP (so one
lands on each host), kills the host of one instance (h2 and h3 in turn; `lab kill`: every
process at once, links unplugged), and measures from the kill:

- **DNS**: until ``api.service.consul``, asked from inside ``web`` (its resolver: the daemon's
  DNS forwarder on h1), no longer answers the dead instance's address;
- **VIP**: the last failed request of a client in ``web`` that sends one request through the
  VIP every 50 ms (each with a 0.3 s timeout): after it, every request succeeded;
- **moved**: until the killed instance, moved by the rescheduler to another host with its
  address, answers ping from both surviving hosts.

The baseline, measured in the same run: Consul's own failure detection, from the kill until
the dead node's ``serfHealth`` is no longer passing as h1's agent reports it. Then the host is
started again and the next round waits until every host is ready and every Consul server
votes. Prints p50/max of each over the rounds. Run as root:

    /opt/switchboard/venv/bin/python bench/host_failure.py [-n 6] [--grace 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from labrun import LabRun  # noqa: E402

TOPOLOGY = """
name: {name}
networks:
  lan: {{subnet: 10.44.{index}.0/24}}
containers:
  web: {{host: h1, networks: [lan], command: python3 -m http.server 80}}
  api-1: &api
    networks: [lan]
    command: python3 -m http.server 8080
    services: [{{name: api, port: 8080, check: {{http: /, interval: 1s, timeout: 1s}}}}]
  api-2: *api
  api-3: *api
services:
  api: {{vip: 10.44.{index}.100, port: 80}}
"""
VIP_CLIENT = r"""
import socket, sys, time, pathlib
vip, stop = sys.argv[1], pathlib.Path(sys.argv[2])
while not stop.exists():
    try:
        with socket.create_connection((vip, 80), timeout=0.3) as s:
            s.settimeout(0.3)
            s.sendall(b"GET / HTTP/1.0\r\n\r\n")
            ok = s.recv(12).startswith(b"HTTP/1.0 200")
    except OSError:
        ok = False
    if not ok:
        print(time.time(), flush=True)
    time.sleep(0.05)
"""


def until(check, timeout: float, every: float = 0.05) -> float | None:  # noqa: ANN001
    """Seconds (wall clock, time.time) at which ``check()`` first held; None on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return time.time()
        time.sleep(every)
    return None


def serf_failed(run: LabRun, node: str) -> bool:
    out = run.run("h1", "curl", "-fsS", "--max-time", "1",
                  "http://127.0.0.1:8500/v1/health/node/" + node, check=False)
    try:
        checks = json.loads(out.stdout)
    except ValueError:
        return False
    return not any(c["CheckID"] == "serfHealth" and c["Status"] == "passing" for c in checks)


def healthy(run: LabRun, timeout: float = 90) -> None:
    """Every host ready and every Consul server voting again."""
    run.wait_hosts_ready(timeout)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        token = Path(f"/var/lib/switchboard/lab/{run.name}/secrets/management.token")
        header = ["-H", f"X-Consul-Token: {token.read_text().strip()}"] if token.exists() else []
        out = run.run("h1", "curl", "-fsS", "--max-time", "1", *header,  # operator:read
                      "http://127.0.0.1:8500/v1/operator/autopilot/health", check=False)
        try:
            servers = json.loads(out.stdout)["Servers"]
        except (ValueError, KeyError):
            servers = []
        if len(servers) == 3 and all(s["Voter"] and s["Healthy"] for s in servers):
            return
        time.sleep(0.5)
    raise RuntimeError("the Consul servers did not all vote again")


def one_round(run: LabRun, index: int, victim: str, grace: float, workdir: Path
              ) -> dict[str, float]:
    name = f"hf{index}"
    path = workdir / f"{name}.yaml"
    path.write_text(TOPOLOGY.format(name=name, index=index))
    run.sb("h1", "up", str(path))
    rows = run.status(name)
    instance = next(n for n, r in rows.items() if r["host"] == victim and n.startswith("api"))
    address = rows[instance]["ip"]
    web = run.container_ns("h1", name, "web")
    survivors = [h for h in ("h1", "h2", "h3") if h != victim]
    stop = workdir / f"stop{index}"
    client = subprocess.Popen(["ip", "netns", "exec", web, sys.executable, "-c", VIP_CLIENT,
                               f"10.44.{index}.100", str(stop)],
                              stdout=subprocess.PIPE, text=True)
    time.sleep(1)
    found: dict[str, float | None] = {}

    def dns_gone() -> bool:
        out = subprocess.run(["ip", "netns", "exec", web, "dig", "+short", "+time=1",
                              "+tries=1", "api.service.consul"], capture_output=True, text=True)
        return out.returncode == 0 and bool(out.stdout.split()) and address not in out.stdout

    def answers_from_survivors() -> bool:
        return all(run.run(h, "ping", "-c", "1", "-W", "0.2", address, check=False)
                   .returncode == 0 for h in survivors)

    watchers = {
        "serf": lambda: until(lambda: serf_failed(run, victim), 60),
        "dns": lambda: until(dns_gone, 60),
        "moved": lambda: until(answers_from_survivors, grace + 60, every=0.1),
    }
    threads = []
    killed = time.time()
    run.lab_cli("kill", victim)
    for key, watch in watchers.items():
        thread = threading.Thread(target=lambda k=key, w=watch: found.__setitem__(k, w()))
        thread.start()
        threads.append(thread)
    for thread in threads:
        thread.join()
    time.sleep(2)  # the VIP client keeps going: a failure after the move would show
    stop.touch()
    out, _ = client.communicate(timeout=10)
    failures = [float(t) for t in out.split() if float(t) >= killed]
    result = {key: (at - killed if at else float("nan")) for key, at in found.items()}
    result["vip"] = (max(failures) - killed) if failures else 0.0
    run.lab_cli("start", victim)
    healthy(run)
    run.sb("h1", "down", name)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--rounds", type=int, default=6)
    parser.add_argument("--grace", type=float, default=5.0,
                        help="the controllers' --reschedule-after (seconds)")
    parser.add_argument("--lab", default=f"sbhf{os.getpid() % 10000}")
    args = parser.parse_args()
    results = []
    with LabRun(args.lab, 3, ("--reschedule-after", f"{args.grace:g}")) as run, \
            tempfile.TemporaryDirectory() as tmp:
        healthy(run)
        for index in range(1, args.rounds + 1):
            victim = "h2" if index % 2 else "h3"
            result = one_round(run, index, victim, args.grace, Path(tmp))
            print(f"round {index} (kill {victim}): " + ", ".join(
                f"{k} {v:.2f} s" for k, v in result.items()), flush=True)
            results.append(result)
    print(f"\n{args.rounds} host kills on a 3-host lab, reschedule grace {args.grace:g} s "
          "(seconds from the kill; p50 / max):")
    labels = {"serf": "Consul marks the node failed (baseline)",
              "dns": "its instance gone from DNS",
              "vip": "last failed request through the VIP",
              "moved": "moved instance answers ping from both other hosts"}
    for key, label in labels.items():
        values = [r[key] for r in results]
        print(f"  {label:52s} {statistics.median(values):6.2f} / {max(values):6.2f}")
    serf = statistics.median(r["serf"] for r in results)
    dns = statistics.median(r["dns"] for r in results)
    moved = statistics.median(r["moved"] for r in results)
    print(f"  ratio DNS / Consul's detection: {dns / serf:.2f}; move after detection + grace: "
          f"{moved - serf - args.grace:.2f} s")


if __name__ == "__main__":
    main()
