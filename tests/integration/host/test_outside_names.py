"""Names outside Consul: a container resolves them through the daemon's upstream (here a DNS
server in an outside namespace, given with --upstream-dns), reaches the address by egress,
`switchboard resolve` shows the path, and a dead upstream gives SERVFAIL, not a hang."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.harness import free_port, in_ns, private_switchboard, teardown, wait_until
from tests.outside import Outside

pytestmark = pytest.mark.integration

ZONE = "sbt-out.test"
TOPOLOGY = """
name: sbt-out-names
networks:
  lan: {subnet: 10.182.6.0/24}
containers:
  probe: {networks: {lan: {ip: 10.182.6.10}}}
"""
PROBE = "sb-sbt-out-names-probe"


def _dig(name: str) -> str:
    return in_ns(PROBE, f"dig +time=5 +tries=1 {name} A").stdout


def test_names_outside_consul_resolve_upstream_and_a_dead_upstream_gives_servfail(
        tmp_path: Path) -> None:
    run = os.getpid()
    with Outside(30) as outside:
        outside.serve_dns(ZONE, outside.ip)
        sb = private_switchboard(tmp_path, prefix=f"sbt25names-{run}",
                                 bridge=f"sbt25n{run % 10000}", of_port=free_port())
        sb.env["SWITCHBOARD_UPSTREAM_DNS"] = outside.ip
        sb.start()
        try:
            sb.wait_ready()
            sb.up(tmp_path, TOPOLOGY)
            name = f"www.{ZONE}"
            assert wait_until(lambda: outside.ip in _dig(name), 30), _dig(name)
            assert "status: NXDOMAIN" in _dig(f"www.elsewhere.{ZONE}x")
            # by name, then by egress: the outside server sees the host's address
            fetched = in_ns(PROBE, f"curl -s -m 3 http://{name}:8080/").stdout
            assert fetched == outside.root_ip
            shown = sb.cli("resolve", "-t", "sbt-out-names", name)
            assert f"asks {outside.ip}:53 (--upstream-dns)" in shown.stdout
            assert shown.stdout.strip().endswith(outside.ip)
            # one dot, as a user types a domain: no service answers, so it goes upstream
            apex = sb.cli("resolve", "-t", "sbt-out-names", ZONE)
            assert "not under .consul" in apex.stdout, apex.stdout
            assert apex.stdout.strip().endswith(outside.ip)
            outside.stop_dns()  # closed port: refused at once
            assert "status: SERVFAIL" in _dig(f"gone.{ZONE}")
            outside.run("ip link set out0 down")  # silent: nothing answers
            assert "status: SERVFAIL" in _dig(f"silent.{ZONE}")
            failed = sb.cli("resolve", "-t", "sbt-out-names", f"silent.{ZONE}", "--timeout",
                            "5", check=False)
            assert failed.returncode != 0 and "SERVFAIL" in failed.stdout + failed.stderr
        finally:
            teardown(sb)
