"""Session fixture: a private Switchboard daemon for the integration tests.

Needs root, a running ovs-vswitchd and a Consul agent (scripts/start-services.sh). Everything
created here is removed at the end; only the processes started here are stopped, by PID.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.harness import Switchboard, private_switchboard, teardown


@pytest.fixture(scope="session")
def switchboard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Switchboard]:
    if os.geteuid() != 0:
        pytest.skip("integration tests need root")
    sb = private_switchboard(tmp_path_factory.mktemp("switchboard-state"),
                             prefix=f"sbtest-{os.getpid()}")
    sb.start()
    sb.wait_ready()
    try:
        yield sb
    finally:
        teardown(sb)
