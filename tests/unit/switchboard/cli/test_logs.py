"""``switchboard logs``: finding a container's topology and host, the last lines, following."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from sbcore.model import ipam, load_topology
from sbcore.model.desired import StoredTopology
from switchboard.cli.logs import LogsError, check_here, find, follow, last_lines
from tests.harness import wait_until

SHOP = (Path(__file__).resolve().parents[4] / "topologies" / "shop.yaml").read_text()


def stored(text: str, placement: dict[str, str]) -> StoredTopology:
    topology = load_topology(text)
    return StoredTopology(topology, ipam.allocate(topology), "d", "f.yaml",
                          placement=placement)


SHOP_STORED = stored(SHOP, {"web": "h1", "api-1": "h2", "api-2": "h2"})
APPLIED = {"shop": SHOP_STORED,
           "shop-2": stored(SHOP.replace("name: shop", "name: shop-2"), {})}


def test_a_container_is_found_in_the_topology_named() -> None:
    assert find(APPLIED, "web", "shop") is SHOP_STORED


def test_a_name_in_several_topologies_asks_for_one() -> None:
    with pytest.raises(LogsError, match=r"several topologies \(shop, shop-2\).*--topology"):
        find(APPLIED, "web")


def test_an_unknown_container_or_topology_is_a_clear_error() -> None:
    with pytest.raises(LogsError, match="no applied topology has a container named 'nope'"):
        find(APPLIED, "nope")
    with pytest.raises(LogsError, match="topology 'shop' has no container 'nope'.*web"):
        find(APPLIED, "nope", "shop")
    with pytest.raises(LogsError, match="no topology named 'gone' is applied"):
        find(APPLIED, "web", "gone")


def test_a_container_on_another_host_names_that_host() -> None:
    with pytest.raises(LogsError, match="runs on host h2.*run `switchboard logs api-1` on h2"):
        check_here(SHOP_STORED, "api-1", "h1")
    check_here(SHOP_STORED, "web", "h1")  # here: no error
    check_here(APPLIED["shop-2"], "web", "h9")  # not placed: this host's


def test_a_container_without_a_command_has_no_output() -> None:
    text = SHOP.replace("    command: python3 -m http.server 80\n", "")
    with pytest.raises(LogsError, match="has no command"):
        check_here(stored(text, {}), "web", "h1")


def test_last_lines_reads_from_the_end(tmp_path: Path) -> None:
    log = tmp_path / "c.log"
    log.write_bytes(b"".join(b"line %d\n" % i for i in range(20000)))
    data, end = last_lines(log, 3)
    assert data == b"line 19997\nline 19998\nline 19999\n"
    assert end == log.stat().st_size
    assert last_lines(log, 0) == (b"", end)
    assert last_lines(log, -1)[0] == log.read_bytes()
    log.write_bytes(b"no newline at the end")
    assert last_lines(log, 5)[0] == b"no newline at the end"


def test_follow_prints_what_is_appended_and_survives_truncation(tmp_path: Path) -> None:
    log = tmp_path / "c.log"
    log.write_bytes(b"old\n")
    got: list[bytes] = []
    done = threading.Event()
    thread = threading.Thread(target=follow, args=(log, got.append, log.stat().st_size),
                              kwargs={"interval": 0.01, "stop": done.is_set})
    thread.start()
    try:
        with log.open("ab") as f:
            f.write(b"new 1\n")
        assert _until(lambda: b"".join(got) == b"new 1\n")
        log.write_bytes(b"again\n")  # truncated and written anew
        assert _until(lambda: b"".join(got) == b"new 1\nagain\n")
    finally:
        done.set()
        thread.join(5)


def _until(predicate, timeout: float = 5.0) -> bool:  # type: ignore[no-untyped-def]
    return wait_until(predicate, timeout, interval=0.01)
