"""`switchboard up` of an invalid file: a clear error, and nothing on the host changes."""

from __future__ import annotations

from pathlib import Path

import consul
import pytest

from tests.harness import Switchboard, sh

pytestmark = pytest.mark.integration

CORPUS = sorted((Path(__file__).parents[2] / "unit/sbcore/model/bad_topologies").glob("*.yaml"))


def _host_state(sb: Switchboard) -> tuple[str, str, str, object]:
    _, keys = consul.Consul().kv.get(f"{sb.prefix}/", keys=True)
    return (sh("ip netns list").stdout, sh(f"ovs-vsctl list-ports {sb.bridge}").stdout,
            "\n".join(sb.flows()), sorted(k for k in keys or [] if "/status/" not in k))


@pytest.mark.parametrize("path", CORPUS, ids=[p.stem for p in CORPUS])
def test_bad_file_is_rejected_with_a_clear_error_and_changes_nothing(switchboard, path):
    expect = path.read_text().splitlines()[0].removeprefix("# expect:").strip()
    before = _host_state(switchboard)
    result = switchboard.cli("up", str(path), check=False)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "nothing was changed" in result.stderr
    assert expect in " ".join(result.stderr.split()), result.stderr
    assert "Traceback" not in result.stderr
    assert _host_state(switchboard) == before
