"""The topology model: the contract example is accepted, every bad file is rejected clearly."""

from __future__ import annotations

import re
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest
from pydantic import ValidationError

from sbcore.model import (
    Attachment,
    Network,
    Policy,
    PortSpec,
    Topology,
    TopologyError,
    load_topology,
    load_topology_file,
    parse_duration,
    parse_port_spec,
)

# The full example of /work/shared/topology-format.md (version 1), copied as written.
CONTRACT_EXAMPLE = """\
name: shop                    # required; [a-z0-9-], at most 20 characters
networks:                     # required, at least one
  front:
    subnet: 10.10.1.0/24      # required; IPv4 CIDR
    gateway: 10.10.1.1        # optional; default: first host address of the subnet
    mtu: 1450                 # optional; default 1500 on one host, overlay-safe on many
  back:
    subnet: 10.10.2.0/24
routers:                      # optional; networks on one router can reach each other (L3)
  core:
    networks: [front, back]
policies:                     # optional; allow rules between networks that a router joins
  - from: front               # a network, or a container name
    to: back                  # a network, a container name, or service:<name>
    ports: [tcp/8080, udp/53] # optional; default: all
containers:
  web:
    networks:
      front: {ip: 10.10.1.10} # fixed address ...
    command: python3 -m http.server 80   # optional; run inside the container
    services:
      - name: web             # Consul service name
        port: 80
        tags: [v1]
        check: {http: /, interval: 2s}   # or {tcp: 80, interval: 1s}; optional
  api-1:
    networks: [back]          # ... or a list: addresses come from IPAM, stable across re-apply
    command: python3 -m http.server 8080
    services:
      - name: api
        port: 8080
        check: {tcp: 8080, interval: 1s}
  legacy:
    attach: {pid: 4242}       # an existing namespace (a Docker/Podman container's PID)
    networks: [back]
services:                     # optional; per-service settings
  api:
    vip: 10.10.2.100          # virtual IP, load-balanced over passing instances
    port: 80                  # VIP port -> each instance's service port
"""

BAD_DIR = Path(__file__).parent / "bad_topologies"
BAD_FILES = sorted(BAD_DIR.glob("*.yaml"))
SHOP_FILE = Path(__file__).parents[4] / "topologies" / "shop.yaml"


@pytest.fixture(scope="module")
def example() -> Topology:
    return load_topology(CONTRACT_EXAMPLE, "shop.yaml")


# --------------------------------------------------------------------------- the contract


def test_contract_example_networks_have_defaults_filled_in(example: Topology) -> None:
    assert example.name == "shop"
    assert list(example.networks) == ["front", "back"]
    front, back = example.networks["front"], example.networks["back"]
    assert front.subnet == IPv4Network("10.10.1.0/24")
    assert front.gateway == IPv4Address("10.10.1.1")
    assert front.mtu == 1450 and front.effective_mtu == 1450
    assert back.gateway == IPv4Address("10.10.2.1")  # default: first host address
    assert back.effective_gateway == IPv4Address("10.10.2.1")
    assert back.mtu is None and back.effective_mtu == 1500


def test_contract_example_routers_and_policies(example: Topology) -> None:
    assert example.routers["core"].networks == ["front", "back"]
    (policy,) = example.policies
    assert (policy.from_, policy.to) == ("front", "back")
    assert policy.port_specs == (PortSpec("tcp", 8080, 8080), PortSpec("udp", 53, 53))
    assert example.endpoint_kind("front") == "network"


def test_contract_example_containers_keep_file_order_and_normalize_networks(
    example: Topology,
) -> None:
    assert list(example.containers) == ["web", "api-1", "legacy"]
    web, api, legacy = (example.containers[n] for n in ("web", "api-1", "legacy"))
    assert web.networks == {"front": Attachment(ip=IPv4Address("10.10.1.10"))}
    assert api.networks == {"back": Attachment(ip=None)}
    assert web.command == "python3 -m http.server 80"
    assert web.attach is None
    assert legacy.attach is not None and legacy.attach.pid == 4242
    assert legacy.command is None and legacy.services == []
    assert legacy.default_network == "back"


def test_contract_example_services_and_checks(example: Topology) -> None:
    (web_svc,) = example.containers["web"].services
    assert (web_svc.name, web_svc.port, web_svc.tags) == ("web", 80, ["v1"])
    assert web_svc.network == "front"  # default: the container's first network
    assert web_svc.check is not None
    assert web_svc.check.http == "/" and web_svc.check.tcp is None
    assert web_svc.check.interval_seconds == 2.0
    (api_svc,) = example.containers["api-1"].services
    assert api_svc.check is not None and api_svc.check.tcp == 8080
    assert api_svc.check.interval_seconds == 1.0 and api_svc.tags == []
    assert example.services["api"].vip == IPv4Address("10.10.2.100")
    assert example.services["api"].port == 80
    assert example.vips() == {"api": IPv4Address("10.10.2.100")}
    assert list(example.declared_services()) == ["web", "api"]


def test_demo_shop_file_is_valid() -> None:
    shop = load_topology_file(SHOP_FILE)
    assert list(shop.containers) == ["web", "api-1", "api-2"]
    assert [c for c, _ in shop.declared_services()["api"]] == ["api-1", "api-2"]
    assert shop.policies == [] and all(c.attach is None for c in shop.containers.values())


def test_dump_round_trips_through_validation(example: Topology) -> None:
    dumped = example.model_dump(mode="json")
    assert dumped["policies"][0]["from"] == "front"
    assert Topology.model_validate(dumped) == example


def test_models_are_frozen(example: Topology) -> None:
    with pytest.raises(ValidationError):
        example.networks["front"].mtu = 9000  # type: ignore[misc]


# --------------------------------------------------------------------------- accepted forms


def test_mapping_networks_keep_file_order_for_the_default_route() -> None:
    topo = load_topology(
        """
name: t
networks:
  front: {subnet: 10.10.1.0/24}
  back: {subnet: 10.10.2.0/24, gateway: 10.10.2.254, mtu: 9000}
containers:
  both:
    networks:
      back:
      front: {}
    services:
      - {name: s, port: 1, network: front, check: {tcp: 1}}
"""
    )
    both = topo.containers["both"]
    assert list(both.networks) == ["back", "front"]
    assert both.default_network == "back"
    assert both.networks["back"].ip is None and both.networks["front"].ip is None
    assert both.services[0].network == "front"
    assert both.services[0].check is not None
    assert both.services[0].check.interval == "10s"
    assert topo.networks["back"].gateway == IPv4Address("10.10.2.254")


def test_yes_no_on_off_are_names_not_booleans() -> None:
    topo = load_topology(
        "name: t\nnetworks:\n  no: {subnet: 10.0.0.0/24}\ncontainers:\n  on: {networks: [no]}\n"
    )
    assert list(topo.containers["on"].networks) == ["no"]


def test_yaml_anchors_and_merge_keys_are_accepted() -> None:
    topo = load_topology(
        """
name: t
networks: {a: {subnet: 10.0.0.0/24}}
containers:
  api-1: &api
    networks: [a]
    command: run
  api-2: *api
  api-3:
    <<: *api
    command: other
"""
    )
    assert [c.command for c in topo.containers.values()] == ["run", "run", "other"]


def test_policy_can_be_built_in_python_with_from_underscore() -> None:
    policy = Policy(from_="web", to="service:api", ports=["icmp", "tcp/8000-8080"])
    assert policy.to_service == "api"
    assert policy.model_dump()["from"] == "web"


@pytest.mark.parametrize(
    ("text", "spec"),
    [
        ("tcp/80", PortSpec("tcp", 80, 80)),
        ("udp/53", PortSpec("udp", 53, 53)),
        ("tcp/8000-8080", PortSpec("tcp", 8000, 8080)),
        ("icmp", PortSpec("icmp")),
    ],
)
def test_port_specs_parse(text: str, spec: PortSpec) -> None:
    assert parse_port_spec(text) == spec
    assert str(spec) == text


@pytest.mark.parametrize("text", ["tcp/0", "tcp/65536", "tcp", "sctp/1", "tcp/90-80", "80"])
def test_bad_port_specs_are_rejected(text: str) -> None:
    with pytest.raises(ValueError, match="bad port spec"):
        parse_port_spec(text)


@pytest.mark.parametrize(
    ("text", "seconds"), [("1s", 1.0), ("500ms", 0.5), ("2m", 120.0), ("1m30s", 90.0)]
)
def test_go_durations_parse(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_network_built_in_python_checks_its_gateway() -> None:
    with pytest.raises(ValidationError, match="outside subnet"):
        Network(subnet=IPv4Network("10.0.0.0/24"), gateway=IPv4Address("10.0.1.1"))


# --------------------------------------------------------------------------- rejected files


def _expectations(text: str) -> list[str]:
    return [
        line.removeprefix("# expect: ")
        for line in text.splitlines()
        if line.startswith("# expect: ")
    ]


def test_every_bad_file_states_an_expectation() -> None:
    assert len(BAD_FILES) >= 20
    for path in BAD_FILES:
        assert _expectations(path.read_text()), f"{path.name} has no '# expect:' line"


@pytest.mark.parametrize("path", BAD_FILES, ids=[p.stem for p in BAD_FILES])
def test_bad_topology_is_rejected_with_path_and_line(path: Path) -> None:
    text = path.read_text()
    with pytest.raises(TopologyError) as info:
        load_topology(text, path.name)
    message = str(info.value)
    for expected in _expectations(text):
        assert expected in message
        m = re.match(r"line (\d+): ", expected)
        if m:
            assert f"{path.name} line {m.group(1)}: " in message


def test_address_outside_subnet_is_rejected_with_line() -> None:
    with pytest.raises(TopologyError) as info:
        load_topology((BAD_DIR / "address_outside_subnet.yaml").read_text(), "shop.yaml")
    assert str(info.value) == (
        "shop.yaml line 9: containers.web.networks.front.ip: 10.10.9.10 is outside subnet "
        "10.10.1.0/24 of network 'front'"
    )


def test_all_problems_are_reported_not_only_the_first() -> None:
    with pytest.raises(TopologyError) as info:
        load_topology((BAD_DIR / "several_problems.yaml").read_text(), "x.yaml")
    assert len(info.value.problems) == 4
    assert str(info.value) == "\n".join(info.value.problems)


def test_duplicate_key_names_both_lines() -> None:
    with pytest.raises(TopologyError, match=r"duplicate key 'web' \(lines 7 and 12\)"):
        load_topology((BAD_DIR / "duplicate_container_key.yaml").read_text())


def test_unknown_key_lists_the_known_keys() -> None:
    with pytest.raises(TopologyError, match="known keys here: subnet, gateway, mtu"):
        load_topology("name: t\nnetworks:\n  a: {subnet: 10.0.0.0/24, gw: 10.0.0.1}\n")


def test_topology_error_is_a_value_error() -> None:
    assert issubclass(TopologyError, ValueError)


def test_missing_file_is_a_topology_error(tmp_path: Path) -> None:
    with pytest.raises(TopologyError, match="cannot read"):
        load_topology_file(tmp_path / "nope.yaml")
