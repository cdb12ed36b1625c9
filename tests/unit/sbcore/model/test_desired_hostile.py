"""Reading the desired state back from Consul KV when anyone may have written there (pure).

Every key below the prefix that is foreign, corrupted or of the wrong type is skipped and
listed with why; the good topologies are read as if it were not there; nothing raises.
"""

from __future__ import annotations

import base64
import json
import string

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sbcore.model import ipam, load_topology
from sbcore.model.desired import (
    KINDS,
    MARKER,
    PLACEMENT,
    SEALED,
    DesiredState,
    digest_of,
    encode,
    parse_desired,
    topology_objects,
)
from sbcore.state.hosts import parse_hosts

BASE = "sb/topologies/"
GOOD = load_topology("name: good\nnetworks: {lan: {subnet: 10.1.0.0/24}}\n"
                     "containers: {web: {networks: [lan]}}\n")


def _stored(name: str, objects: dict, index: int = 5) -> list[dict]:
    """The keys `up` writes for one version of a topology, as a recursive KV read gives them."""
    digest = digest_of(objects)
    base = f"{BASE}{name}/versions/{digest}/"
    entries = [{"Key": base + path, "Value": encode(value), "CreateIndex": index}
               for path, value in objects.items()]
    entries.append({"Key": base + SEALED, "Value": b'{"objects": 1}', "CreateIndex": index})
    entries.append({"Key": f"{BASE}{name}/{MARKER}", "CreateIndex": index,
                    "Value": encode({"digest": digest, "source": "f.yaml"})})
    return entries


GOOD_ENTRIES = _stored("good", topology_objects(GOOD, ipam.allocate(GOOD)))


def _read(*extra: dict) -> DesiredState:
    return parse_desired(BASE, [*GOOD_ENTRIES, *extra])


def _only_good_is_desired(state: DesiredState) -> None:
    assert list(state.topologies) == ["good"]
    assert state.topologies["good"].topology == GOOD


def test_a_foreign_key_under_the_prefix_is_reported_and_the_good_topology_kept() -> None:
    state = _read({"Key": f"{BASE}evil/x", "Value": b"x"})
    _only_good_is_desired(state)
    assert "not a key of Switchboard's layout" in state.skipped[f"{BASE}evil/x"]
    assert not state.invalid


def test_keys_outside_the_layout_are_each_reported_by_their_full_key() -> None:
    keys = [f"{BASE}evil", f"{BASE}", f"{BASE}evil/", f"{BASE}good/x",
            f"{BASE}good/versions/", f"{BASE}good/versions/abc"]
    state = _read(*({"Key": k, "Value": b"1"} for k in keys))
    _only_good_is_desired(state)
    assert sorted(state.skipped) == sorted(keys)


def test_a_marker_that_is_not_json_makes_its_topology_unreadable_not_the_others() -> None:
    state = _read({"Key": f"{BASE}evil/{MARKER}", "Value": b"x"})
    _only_good_is_desired(state)
    assert "'applied' marker is not JSON" in state.invalid["evil"]
    assert state.skipped[f"{BASE}evil/{MARKER}"] == state.invalid["evil"]


def test_json_nested_too_deeply_to_parse_is_skipped_not_a_recursion_error() -> None:
    deep = b"[" * 100_000
    state = _read({"Key": f"{BASE}evil/{MARKER}", "Value": deep},
                  {"Key": f"{BASE}good/{PLACEMENT}", "Value": deep})
    _only_good_is_desired(state)
    assert "nested too deeply" in state.invalid["evil"]


def test_a_marker_of_the_wrong_type_names_what_was_expected() -> None:
    for value in (b"[]", b'"x"', b"null", b'{"digest": 7}', b"{}"):
        state = _read({"Key": f"{BASE}evil/{MARKER}", "Value": value})
        _only_good_is_desired(state)
        assert "marker names no version" in state.invalid["evil"], value


def test_a_marker_naming_a_version_that_is_not_stored_says_so() -> None:
    state = _read({"Key": f"{BASE}evil/{MARKER}", "Value": b'{"digest": "0123"}'})
    assert "version 0123 that its marker names is not stored" in state.invalid["evil"]


def test_an_object_changed_after_it_was_stored_fails_the_digest_check() -> None:
    entries = [dict(e) for e in _stored("evil", {"networks/lan": {"subnet": "10.2.0.0/24"}})]
    entries[0]["Value"] = encode({"subnet": "10.3.0.0/24"})
    state = _read(*entries)
    _only_good_is_desired(state)
    assert "do not match its digest" in state.invalid["evil"]


def test_a_well_sealed_version_that_is_not_a_valid_topology_names_the_key_path() -> None:
    state = _read(*_stored("evil", {"networks/lan": {"subnet": "banana"}}),
                  *_stored("worse", {"containers/a": {"spec": [], "addresses": {}}}),
                  *_stored("Bad!", {"networks/lan": {"subnet": "10.9.0.0/24"}}))
    _only_good_is_desired(state)
    assert "does not hold a valid topology: networks.lan.subnet" in state.invalid["evil"]
    assert "does not hold a topology" in state.invalid["worse"]
    assert "invalid topology name 'Bad!'" in state.invalid["Bad!"]
    assert "\n" not in "".join(state.invalid.values())  # one line each, no pydantic dump


def test_values_of_the_wrong_type_or_encoding_are_skipped() -> None:
    state = _read({"Key": f"{BASE}a/{MARKER}", "Value": 7},
                  {"Key": f"{BASE}b/{MARKER}", "Value": b"\xff\xfe"},
                  {"Key": f"{BASE}c/{MARKER}", "Value": "not base64!"},
                  {"Key": f"{BASE}d/{MARKER}", "Value": None, "CreateIndex": "soon"})
    _only_good_is_desired(state)
    assert set(state.invalid) == {"a", "b", "d"}
    assert "not base64" in state.skipped[f"{BASE}c/{MARKER}"]


def test_a_host_record_nested_too_deeply_is_skipped() -> None:
    hosts = parse_hosts([{"Key": "sb/hosts/h1", "Value": b"[" * 100_000}], [], "sb")
    assert hosts.skipped == {"sb/hosts/h1": "not JSON"}


# --- property-based: any key and value below the prefix --------------------------------------

_segment = st.one_of(
    st.sampled_from([MARKER, PLACEMENT, SEALED, "versions", "good", "evil", "", *KINDS]),
    st.text(string.ascii_letters + string.digits + "-_.!", max_size=8),
)
_keys = st.lists(_segment, min_size=0, max_size=5).map(lambda parts: BASE + "/".join(parts))
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=3),
    max_leaves=10,
)
_values = st.one_of(
    st.none(), st.binary(max_size=40), _json.map(encode),
    st.builds(lambda d: encode({"digest": d, "source": "x"}), st.text(max_size=16)),
    st.text(max_size=20),  # a transaction's base64 text (or not base64 at all)
    st.integers(), st.lists(st.integers(), max_size=2),
)
_index = st.one_of(st.none(), st.integers(-5, 10**6), st.text(max_size=4))
_entries = st.lists(st.fixed_dictionaries({"Key": _keys, "Value": _values, "CreateIndex": _index}),
                    max_size=12)


@settings(max_examples=300, deadline=500, suppress_health_check=[HealthCheck.too_slow])
@given(_entries)
def test_any_keys_and_values_under_the_prefix_never_raise_and_never_hide_the_good_topology(
    hostile: list[dict],
) -> None:
    hostile = [e for e in hostile if not e["Key"].startswith(f"{BASE}good/")]
    state = parse_desired(BASE, [*GOOD_ENTRIES, *hostile])
    assert "good" in state.topologies and state.topologies["good"].topology == GOOD
    assert set(state.invalid) <= set(state.markers)
    for name in state.invalid:  # every unreadable topology is reported by its marker key
        assert f"{BASE}{name}/{MARKER}" in state.skipped
    for key, why in state.skipped.items():
        assert key.startswith(BASE) and why and "\n" not in why


@settings(max_examples=200, deadline=500)
@given(st.dictionaries(st.sampled_from(["networks/lan", "containers/web", "policies/0000",
                                        "routers/r", "services/s", "networks/x"]),
                       _json, min_size=1, max_size=4))
def test_a_sealed_version_of_any_json_objects_is_a_topology_or_reported(objects: dict) -> None:
    state = parse_desired(BASE, _stored("evil", objects))
    assert ("evil" in state.topologies) != ("evil" in state.invalid)


def test_a_transaction_read_of_the_same_keys_gives_the_same_state() -> None:
    as_txn = [{**e, "Value": base64.b64encode(e["Value"]).decode()} for e in GOOD_ENTRIES]
    assert parse_desired(BASE, as_txn).topologies == parse_desired(BASE, GOOD_ENTRIES).topologies
    assert json.loads(GOOD_ENTRIES[-1]["Value"])["source"] == "f.yaml"


class _FakeKV:
    def __init__(self, entries: list[dict]) -> None:
        self.entries = entries

    def get(self, key: str, **_: object) -> tuple[int, list[dict]]:
        return 1, [e for e in self.entries if e["Key"].startswith(key)]


class _FakeConsul:
    def __init__(self, entries: list[dict]) -> None:
        self.kv = _FakeKV(entries)


def _report(**extra: object) -> bytes:
    row = dict.fromkeys(("container", "network", "netns", "interface", "ip", "mac", "port",
                         "state"), "x")
    return encode({"state": "converged", "digest": "d", "containers": [row], **extra})


def test_status_keys_that_hold_no_report_are_skipped_and_named() -> None:
    from sbcore.state.store import Store

    entries = [{"Key": "sb/status/h1/good", "Value": _report()},
               {"Key": "sb/status/h1/deep", "Value": b"[" * 100_000},
               {"Key": "sb/status/h1/list", "Value": b"[1]"},
               {"Key": "sb/status/h1/rows", "Value": _report(containers=5)},
               {"Key": "sb/status/h1/nets", "Value": _report(networks=[{"name": 1}])},
               {"Key": "sb/status/h1/state", "Value": encode({"state": 1, "digest": "d"})}]
    store = Store(_FakeConsul(entries), "sb")  # type: ignore[arg-type]
    skipped: dict[str, str] = {}
    reports = store.reports(skipped=skipped)
    assert list(reports) == [("h1", "good")]
    assert sorted(skipped) == sorted(e["Key"] for e in entries[1:])
    assert "nested too deeply" in skipped["sb/status/h1/deep"]
    assert "'containers' is not a list of rows" in skipped["sb/status/h1/rows"]
    assert store.reports("good") == reports


@settings(max_examples=200, deadline=500)
@given(st.lists(st.fixed_dictionaries({"Key": _keys.map(lambda k: "sb/status/" + k[len(BASE):]),
                                       "Value": _values}), max_size=8))
def test_any_status_keys_never_raise(entries: list[dict]) -> None:
    from sbcore.state.store import Store

    entries = [e for e in entries if isinstance(e["Value"], bytes | None)]  # what Consul gives
    skipped: dict[str, str] = {}
    reports = Store(_FakeConsul(entries), "sb").reports(skipped=skipped)  # type: ignore[arg-type]
    assert len(reports) + len(skipped) <= len(entries)


def test_the_daemon_refuses_an_unreadable_topology_without_raising() -> None:
    from controller.daemon.daemon import realisable

    for marker in (b"[" * 100_000, b'["digest"]', b"x", b'{"digest": 5}'):
        state = _read({"Key": f"{BASE}evil/{MARKER}", "Value": marker})
        desired, refused = realisable(state)
        assert list(desired) == ["good"] and list(refused) == ["evil"]
