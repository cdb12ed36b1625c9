"""Placement of containers on hosts: pinned, kept, spread; clear errors (pure)."""

from __future__ import annotations

import pytest

from sbcore.model import load_topology
from sbcore.model.inventory import HostRecord
from sbcore.plan.placement import PlacementError, evacuate, load_of, place


def topo(**pins: str | None) -> object:
    lines = ["name: t", "networks:", "  lan: {subnet: 10.1.0.0/24}"]
    lines += ["containers:"] if pins else []
    for name, host in pins.items():
        extra = f", host: {host}" if host else ""
        lines.append(f"  {name}: {{networks: [lan]{extra}}}")
    return load_topology("\n".join(lines) + "\n")


def hosts(*ready: str, down: tuple[str, ...] = ()) -> dict[str, HostRecord]:
    records = {n: HostRecord(n, i, state="ready") for i, n in enumerate(ready)}
    records.update({n: HostRecord(n, 10 + i, state="down", reason="its daemon stopped answering")
                    for i, n in enumerate(down)})
    return records


def test_a_single_host_gets_every_container():
    assert place(topo(a=None, b=None), {}, hosts("h1"), {}) == {"a": "h1", "b": "h1"}


def test_new_containers_are_spread_least_loaded_first_ties_by_name():
    placement = place(topo(a=None, b=None, c=None, d=None), {}, hosts("h2", "h1"), {})
    assert placement == {"a": "h1", "b": "h2", "c": "h1", "d": "h2"}


def test_load_of_other_topologies_counts():
    placement = place(topo(a=None, b=None), {}, hosts("h1", "h2"), {"h1": 5, "h2": 1})
    assert placement == {"a": "h2", "b": "h2"}


def test_pinned_container_goes_to_its_host():
    assert place(topo(a="h2", b=None), {}, hosts("h1", "h2"), {})["a"] == "h2"


def test_pinned_containers_count_in_the_load_before_spreading():
    assert place(topo(a="h1", b=None), {}, hosts("h1", "h2"), {}) == {"a": "h1", "b": "h2"}


def test_placed_containers_keep_their_host_across_re_apply_and_edits():
    before = place(topo(a=None, b=None, c=None), {}, hosts("h1", "h2"), {})
    load = load_of([before])
    again = place(topo(a=None, b=None, c=None, d=None), before, hosts("h1", "h2", "h3"), load)
    assert {k: again[k] for k in before} == before
    assert again["d"] == "h3"  # the new host is the least loaded


def test_a_placed_container_stays_on_a_host_that_is_down_now():
    assert place(topo(a=None), {"a": "h1"}, hosts("h2", down=("h1",)), {"h1": 1}) == {"a": "h1"}


def test_a_pinned_container_already_there_stays_when_its_host_is_down():
    assert place(topo(a="h1"), {"a": "h1"}, hosts("h2", down=("h1",)), {}) == {"a": "h1"}


def test_a_pin_to_another_host_moves_the_container():
    assert place(topo(a="h2"), {"a": "h1"}, hosts("h1", "h2"), {"h1": 1}) == {"a": "h2"}


def test_an_unknown_host_names_the_container_the_host_and_the_ready_hosts():
    with pytest.raises(PlacementError) as caught:
        place(topo(web="nope"), {}, hosts("h1", "h2"), {})
    assert str(caught.value).startswith(
        "containers.web.host: nope is not a known host; ready hosts: h1, h2")


def test_a_down_host_is_an_error_with_its_reason():
    with pytest.raises(PlacementError, match=r"containers.web.host: h3 is down \(its daemon "
                       r"stopped answering\); ready hosts: h1"):
        place(topo(web="h3"), {}, hosts("h1", down=("h3",)), {})


def test_no_ready_host_is_a_clear_error_unless_unplaced_is_allowed():
    with pytest.raises(PlacementError, match="container a cannot be placed: no host is ready"):
        place(topo(a=None), {}, hosts(down=("h1",)), {})
    assert place(topo(a=None, b=None), {"b": "h1"}, hosts(down=("h1",)), {},
                 allow_unplaced=True) == {"b": "h1"}


def test_a_topology_without_containers_needs_no_host():
    assert place(topo(), {}, {}, {}) == {}


def test_removed_containers_leave_the_placement():
    assert place(topo(a=None), {"a": "h1", "gone": "h1"}, hosts("h1"), {"h1": 2}) == {"a": "h1"}


def test_placement_is_deterministic_whatever_the_dict_order():
    one = place(topo(c=None, a=None, b=None), {}, dict(reversed(hosts("h1", "h2").items())), {})
    two = place(topo(a=None, b=None, c=None), {}, hosts("h1", "h2"), {})
    assert one == two


def test_a_bad_host_name_is_a_validation_error():
    from sbcore.model import TopologyError

    with pytest.raises(TopologyError, match="containers.a.host: .*invalid host name"):
        load_topology("name: t\nnetworks: {lan: {subnet: 10.1.0.0/24}}\n"
                      "containers: {a: {networks: [lan], host: 'bad host'}}\n")


def test_evacuate_moves_unpinned_containers_of_a_gone_host_to_the_least_loaded_ready_ones():
    before = {"a": "h1", "b": "h1", "c": "h2", "d": "h3"}
    after = evacuate(topo(a=None, b=None, c=None, d=None), before,
                     hosts("h2", "h3", down=("h1",)), load_of([before]), {"h1"})
    assert after == {"a": "h2", "b": "h3", "c": "h2", "d": "h3"}


def test_evacuate_leaves_pinned_containers_and_other_hosts_alone():
    before = {"a": "h1", "b": "h1", "c": "h2"}
    after = evacuate(topo(a="h1", b=None, c=None), before, hosts("h2", "h3", down=("h1",)),
                     load_of([before]), {"h1"})
    assert after == {"a": "h1", "b": "h3", "c": "h2"}


def test_evacuate_never_moves_to_a_host_that_is_down_or_gone():
    before = {"a": "h1"}
    after = evacuate(topo(a=None), before, hosts(down=("h1", "h2")), {"h1": 1}, {"h1"})
    assert after == before  # no ready host: stays, moved on a later pass
    after = evacuate(topo(a=None), before, hosts("h2", down=("h1", "h3")), {}, {"h1"})
    assert after == {"a": "h2"}


def test_evacuate_counts_other_topologies_load():
    before = {"a": "h1", "b": "h1"}
    after = evacuate(topo(a=None, b=None), before, hosts("h2", "h3", down=("h1",)),
                     {"h1": 2, "h2": 10, "h3": 0}, {"h1"})
    assert after == {"a": "h3", "b": "h3"}
