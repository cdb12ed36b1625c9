"""Session fixture: a private Switchboard daemon for the integration tests.

Needs root, a running ovs-vswitchd and a Consul agent (scripts/start-services.sh). Everything
created here is removed at the end; only the processes started here are stopped, by PID.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.harness import Switchboard, private_switchboard, teardown
from tests.upstream_dns import UpstreamDns


@pytest.fixture(scope="session")
def switchboard(tmp_path_factory: pytest.TempPathFactory,
                upstream_dns: UpstreamDns) -> Iterator[Switchboard]:
    if os.geteuid() != 0:
        pytest.skip("integration tests need root")
    run = os.getpid()  # several test runs may share this machine: keep them apart
    sb = private_switchboard(tmp_path_factory.mktemp("switchboard-state"),
                             prefix=f"sbtest-{run}", bridge=f"sbt{run}",
                             of_port=16000 + run % 16000)  # below the ephemeral range
    sb.env["SWITCHBOARD_UPSTREAM_DNS"] = upstream_dns.ip
    sb.start()
    sb.wait_ready()
    try:
        yield sb
    finally:
        teardown(sb)


@pytest.fixture(scope="session")
def upstream_dns() -> Iterator[UpstreamDns]:
    """The test daemon's DNS server for names outside Consul (tests/upstream_dns.py)."""
    if os.geteuid() != 0:
        pytest.skip("integration tests need root")
    server = UpstreamDns(os.getpid())
    server.start()
    try:
        yield server
    finally:
        server.stop()
