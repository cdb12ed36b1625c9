"""Any file given to `switchboard up`: a valid topology or a TopologyError naming where, never
another exception and never a hang (property-based, with bounded examples and deadlines)."""

from __future__ import annotations

import time

import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from sbcore.model import Topology, TopologyError, load_topology

SOURCE = "f.yaml"
FAST = settings(max_examples=300, deadline=1000, suppress_health_check=[HealthCheck.too_slow])


def _loads_or_names_where(text: str) -> Topology | None:
    """Load ``text``; a TopologyError is fine when every problem names the file."""
    try:
        return load_topology(text, SOURCE)
    except TopologyError as exc:
        assert exc.problems
        for problem in exc.problems:
            assert problem.startswith(f"{SOURCE}"), problem
        return None


@FAST
@given(st.text(max_size=300))
@example("[" * 5000)
@example("{a: " * 3000)
@example("name: t\x00")
@example("a: &a [x]\n? *a\n: 1\n")
@example("name: !!python/object/apply:os.system [echo]\n")
def test_any_text_is_a_topology_or_a_topology_error(text: str) -> None:
    _loads_or_names_where(text)


_scalars = (st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats()
            | st.text(max_size=12) | st.sampled_from(["10.1.0.0/24", "10.1.0.5", "tcp/80",
                                                     "1s", "web", "lan", "service:api"]))
_keys = st.sampled_from(["name", "networks", "subnet", "gateway", "mtu", "routers", "policies",
                         "from", "to", "ports", "containers", "ip", "mac", "command", "attach",
                         "pid", "netns", "services", "port", "tags", "check", "http", "tcp",
                         "interval", "timeout", "vip", "host", "network", "lan", "web", "api",
                         "core"]) | st.text(max_size=6)
_docs = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=4)
                     | st.dictionaries(_keys, inner, max_size=5), max_leaves=25)


@FAST
@given(_docs)
def test_any_yaml_structure_is_a_topology_or_a_topology_error(doc: object) -> None:
    _loads_or_names_where(yaml.safe_dump(doc))


_ip = st.builds("10.1.0.{}".format, st.integers(0, 300))
_network = st.fixed_dictionaries({"subnet": st.sampled_from(["10.1.0.0/24", "10.2.0.0/24",
                                                             "10.1.0.0/24", "10.2.0.0/24",
                                                             "10.1.0.0/31", "10.1.0.1/24",
                                                             "x"])},
                                 optional={"gateway": _ip, "mtu": st.integers(0, 10000)})
_port = st.sampled_from(["tcp/80", "udp/53", "icmp", "tcp/9-1", "tcp/0", "sctp/1", 80])
_container = st.fixed_dictionaries(
    {"networks": st.one_of(st.lists(st.sampled_from(["lan", "dmz", "nope"]), max_size=3),
                           st.dictionaries(st.sampled_from(["lan", "dmz"]),
                                           st.fixed_dictionaries({}, optional={"ip": _ip}),
                                           max_size=2))},
    optional={"command": st.text(max_size=8),
              "attach": st.dictionaries(st.sampled_from(["pid", "netns"]),
                                        st.integers(-1, 5) | st.text(max_size=5), max_size=2),
              "host": st.text(max_size=8),
              "services": st.lists(st.fixed_dictionaries(
                  {"name": st.sampled_from(["api", "web", "Bad_"]),
                   "port": st.integers(-1, 70000)},
                  optional={"check": st.dictionaries(
                      st.sampled_from(["http", "tcp", "interval", "timeout"]),
                      st.sampled_from(["/", 80, "1s", "2", "500ms", -1]), max_size=3),
                      "network": st.sampled_from(["lan", "dmz", "x"]),
                      "tags": st.lists(st.text(max_size=4), max_size=2)}), max_size=2)})
_topology = st.fixed_dictionaries(
    {"name": st.sampled_from(["t", "shop", "t", "shop", "Bad!", ""]),
     "networks": st.dictionaries(st.sampled_from(["lan", "dmz", "web"]), _network,
                                 max_size=2)},
    optional={
        "containers": st.dictionaries(st.sampled_from(["web", "api", "lan", "x-1"]),
                                      _container, max_size=3),
        "routers": st.dictionaries(st.sampled_from(["core", "lan"]), st.fixed_dictionaries(
            {"networks": st.lists(st.sampled_from(["lan", "dmz", "nope"]), max_size=3)}),
            max_size=2),
        "policies": st.lists(st.fixed_dictionaries(
            {"from": st.sampled_from(["lan", "web", "host", "nope"]),
             "to": st.sampled_from(["dmz", "api", "service:api", "host", "service:"])},
            optional={"ports": st.lists(_port, max_size=3)}), max_size=3),
        "services": st.dictionaries(st.sampled_from(["api", "web", "nope"]),
                                    st.fixed_dictionaries({"vip": _ip,
                                                           "port": st.integers(-1, 70000)}),
                                    max_size=2),
    })


def test_any_near_valid_topology_is_a_topology_or_a_topology_error() -> None:
    valid: list[Topology] = []

    @settings(max_examples=400, deadline=1000, suppress_health_check=[HealthCheck.too_slow])
    @given(_topology)
    def check(doc: dict) -> None:
        topology = _loads_or_names_where(yaml.safe_dump(doc, sort_keys=False))
        if topology is not None:  # a valid one survives being written out and read again
            valid.append(topology)
            again = yaml.safe_dump(topology.model_dump(mode="json", by_alias=True,
                                                       exclude_none=True), sort_keys=False)
            assert load_topology(again, SOURCE) == topology

    check()
    # 8 to 23 of the 400 are valid (measured); the round trip of valid ones is checked at
    # length below, on topologies valid by construction
    assert len(valid) >= 4, f"only {len(valid)} valid topologies of 400"


_subnets = [f"10.{i}.0.0/24" for i in range(1, 4)]
_valid_topology = st.dictionaries(
    st.sampled_from(["lan", "dmz", "web"]), st.just(None), min_size=1, max_size=3,
).flatmap(lambda nets: st.fixed_dictionaries({
    "name": st.sampled_from(["t", "shop", "a-b"]),
    "networks": st.just({n: {"subnet": s} for n, s in zip(nets, _subnets, strict=False)}),
    "containers": st.dictionaries(
        st.sampled_from(["api", "db", "x-1"]),
        st.fixed_dictionaries({"networks": st.lists(st.sampled_from(sorted(nets)), min_size=1,
                                                    max_size=3, unique=True)},
                              optional={"command": st.sampled_from(["sleep 1", "true"])}),
        max_size=3),
}))


@settings(max_examples=200, deadline=1000, suppress_health_check=[HealthCheck.too_slow])
@given(_valid_topology)
def test_a_valid_topology_survives_being_written_out_and_read_again(doc: dict) -> None:
    topology = load_topology(yaml.safe_dump(doc, sort_keys=False), SOURCE)
    again = yaml.safe_dump(topology.model_dump(mode="json", by_alias=True, exclude_none=True),
                           sort_keys=False)
    assert load_topology(again, SOURCE) == topology


def test_aliases_that_expand_without_end_are_refused_quickly() -> None:
    text = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{b}: &{b} [{', '.join([f'*{a}'] * 9)}]\n"
        for a, b in zip("abcdefgh", "bcdefghi", strict=True))  # 9**9 values if expanded
    started = time.monotonic()
    try:
        load_topology(text, SOURCE)
    except TopologyError as exc:
        assert "expands to more than" in str(exc)
    else:
        raise AssertionError("a billion-laughs file was accepted")
    assert time.monotonic() - started < 5


def test_a_file_nested_without_end_is_refused_not_a_recursion_error() -> None:
    for text in ("[" * 100_000, "a:\n" + "".join(" " * i + "- b:\n" for i in range(2000))):
        started = time.monotonic()
        try:
            load_topology(text, SOURCE)
        except TopologyError as exc:
            assert "nested more than" in str(exc) or "YAML syntax error" in str(exc)
        else:
            raise AssertionError("a file nested without end was accepted")
        assert time.monotonic() - started < 10
