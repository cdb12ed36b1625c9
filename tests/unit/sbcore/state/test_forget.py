"""When a host may be forgotten (sbcore.state.forget.refusal), and what runs on it. Pure."""

from __future__ import annotations

from sbcore.model import ipam, load_topology
from sbcore.model.desired import StoredTopology
from sbcore.model.inventory import HostRecord, Hosts
from sbcore.state.forget import placed_on, refusal

TOPOLOGY = """
name: fo
networks:
  lan: {subnet: 10.41.1.0/24}
containers:
  web: {networks: [lan]}
  pinned: {host: h2, networks: [lan]}
  api: {networks: [lan]}
"""


def stored(placement: dict[str, str]) -> StoredTopology:
    topology = load_topology(TOPOLOGY)
    return StoredTopology(topology, ipam.allocate(topology), "d", "fo.yaml", placement=placement)


HOSTS = Hosts([HostRecord("h1", 0, state="ready"), HostRecord("h2", 1, state="down"),
               HostRecord("h3", 2, state="down")])


def test_a_down_host_nothing_runs_on_can_be_forgotten():
    applied = {"fo": stored({"web": "h1", "pinned": "h1", "api": "h1"})}
    assert refusal("h3", HOSTS, applied) is None
    assert refusal("h3", HOSTS, {}) is None


def test_a_live_host_is_never_forgotten():
    why = refusal("h1", HOSTS, {})
    assert why is not None and "h1 is up" in why


def test_an_unknown_host_is_named_with_the_known_ones():
    why = refusal("h9", HOSTS, {})
    assert why is not None and "'h9'" in why and "h1, h2, h3" in why


def test_a_host_with_containers_placed_on_it_names_them_and_says_what_to_do():
    applied = {"fo": stored({"web": "h1", "pinned": "h2", "api": "h2"})}
    why = refusal("h2", HOSTS, applied)
    assert why is not None
    assert "fo: api, pinned" in why and "fo/pinned" in why  # the pinned one must be edited
    moving = {"fo": stored({"web": "h1", "pinned": "h1", "api": "h2"})}
    why = refusal("h2", HOSTS, moving)
    assert why is not None and "fo: api" in why and "reschedule" in why


def test_containers_stored_without_placement_belong_to_the_lowest_slot_host():
    applied = {"fo": stored({"web": "h1"})}
    assert placed_on("h1", applied, first=True) == {"fo": ["api", "pinned", "web"]}
    assert placed_on("h2", applied, first=False) == {}
    first_down = Hosts([HostRecord("h1", 3, state="down"), HostRecord("h2", 4, state="ready")])
    assert refusal("h1", first_down, applied) is not None
    assert refusal("h1", first_down, {"fo": stored({"web": "h2", "pinned": "h2",
                                                   "api": "h2"})}) is None
