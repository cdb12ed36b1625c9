"""`up` returning means the data path forwards, at the scale where it once did not: 1000
containers on a one-host lab (a freshly started OVS on the userspace datapath, with its tunnel
port), where nothing answered a ping for 24-110 s after `up` returned. Every container must
answer a ping from its host within a few seconds of `up` (pinged as bench/cluster_bringup.py
does: paced, from the host's namespace). Select with `pytest -m lab`.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.lab.labkit import LabDriver

pytestmark = [pytest.mark.lab, pytest.mark.integration]

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "bench"))

from cluster_bringup import HostPinger, all_answer, arp_table_room  # noqa: E402

NAME = f"sba{os.getpid() % 100000}"
CONTAINERS = 1000  # the gap showed at 1000 (none at 400)
GRACE = 5.0  # seconds after `up` returned for every container to answer
LAB = LabDriver(NAME)


@pytest.fixture(scope="module")
def one_host() -> Iterator[None]:
    if os.geteuid() != 0:
        pytest.skip("the lab needs root")
    with arp_table_room(2 * CONTAINERS + 1024):
        up = LAB.lab("up", "--hosts", "1")
        try:
            assert up.returncode == 0, f"lab up failed:\n{up.stdout}\n{up.stderr}"
            yield
        finally:
            LAB.lab("down", timeout=600)


def test_every_container_answers_within_seconds_of_up(one_host: None, tmp_path: Path) -> None:
    rows = "".join(f"  c{i}: {{networks: [lan]}}\n" for i in range(CONTAINERS))
    topo = tmp_path / "many.yaml"
    topo.write_text(f"name: many\nnetworks:\n  lan: {{subnet: 10.235.0.0/16}}\n"
                    f"containers:\n{rows}")
    netns = f"{NAME}-h1"  # the lab host's namespace, where its daemon and host legs are
    up = LAB.sb("h1", "up", str(topo), "--timeout", "600", timeout=700)
    returned = time.monotonic()
    assert up.returncode == 0, f"{up.stdout}\n{up.stderr}"
    try:
        data = json.loads(LAB.sb("h1", "status", "many", "--json").stdout)
        addresses = {r["ip"] for t in data["topologies"] for r in t["containers"]}
        assert len(addresses) == CONTAINERS
        pinger = HostPinger(netns, addresses, ident=0x5B01)
        all_answer([pinger], timeout=120)
        late = sorted((at - returned, a) for a, at in pinger.answered.items())
        slow = [(round(s, 1), a) for s, a in late if s > GRACE]
        assert not slow, (f"{len(slow)} of {CONTAINERS} containers answered more than "
                          f"{GRACE:.0f} s after `up` returned: {slow[:5]} … {slow[-1:]}")
    finally:
        LAB.sb("h1", "down", "many", timeout=600)
