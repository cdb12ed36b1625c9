"""``switchboard graph``'s picture: what it shows, as Mermaid and as DOT (drawn by the real
Graphviz ``dot`` when it is installed)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from sbcore.model import ipam, load_topology
from switchboard.cli import graph

SHOP = (Path(__file__).resolve().parents[4] / "topologies" / "shop.yaml").read_text()
POLICY = SHOP + "policies:\n  - {from: front, to: 'service:api', ports: [tcp/8080]}\n"
SPLIT = {"web": "h1", "api-1": "h2", "api-2": "h3"}


def shop(text: str = SHOP) -> graph.Picture:
    topology = load_topology(text)
    return graph.picture(topology, ipam.allocate(topology))


def labels(pic: graph.Picture) -> dict[str, tuple[str, ...]]:
    return {n.id: n.lines for n in pic.nodes}


def test_the_picture_has_networks_routers_containers_with_addresses_and_services() -> None:
    pic = shop()
    assert labels(pic) == {
        "net__shop__front": ("front", "10.10.1.0/24"),
        "net__shop__back": ("back", "10.10.2.0/24"),
        "router__shop__core": ("router core",),
        "ctr__shop__web": ("web", "10.10.1.10"),
        "ctr__shop__api_1": ("api-1", "10.10.2.2"),
        "ctr__shop__api_2": ("api-2", "10.10.2.3"),
        "svc__shop__api": ("service api", "VIP 10.10.2.100:80"),
        "svc__shop__web": ("service web",),
    }
    edges = {(e.src, e.dst, e.kind, e.label) for e in pic.edges}
    assert ("router__shop__core", "net__shop__back", "link", "") in edges
    assert ("ctr__shop__api_1", "net__shop__back", "link", "") in edges
    assert ("svc__shop__api", "ctr__shop__api_2", "instance", ":8080") in edges
    assert not pic.hosts  # one host: no groups


def test_a_policy_is_an_arrow_from_its_source_to_its_destination() -> None:
    policies = [e for e in shop(POLICY).edges if e.kind == "policy"]
    assert policies == [graph.Edge("net__shop__front", "svc__shop__api", "policy", "tcp/8080")]


def test_hosts_are_groups_when_there_are_several() -> None:
    topology = load_topology(SHOP)
    pic = graph.picture(topology, ipam.allocate(topology), SPLIT)
    assert pic.hosts == {"h1": ["ctr__shop__web"], "h2": ["ctr__shop__api_1"],
                         "h3": ["ctr__shop__api_2"]}
    text = graph.to_mermaid([pic])
    assert 'subgraph host__shop__h2["host h2"]' in text


def test_mermaid_defines_every_node_once_and_links_only_defined_nodes() -> None:
    text = graph.to_mermaid([shop(POLICY)])
    assert text.startswith("flowchart LR\n")
    defined = re.findall(r"^\s+(\w+)[\[\{\(]", text, re.M)
    assert len(defined) == len(set(defined)) == 8
    links = re.findall(r"^\s+(\w+) (?:---|-\.->|==>)(?:\|[^|]*\|)? (\w+)$", text, re.M)
    assert len(links) == 9  # router 2, containers 3, instances 3, policy 1
    assert {n for link in links for n in link} <= set(defined)
    assert "net__shop__front ==>|tcp/8080| svc__shop__api" in text
    assert 'ctr__shop__web["web<br/>10.10.1.10"]:::container' in text


def test_two_topologies_get_a_group_each_and_never_share_a_node() -> None:
    other = SHOP.replace("name: shop", "name: shop-2")
    text = graph.to_mermaid([shop(), shop(other)])
    assert 'subgraph topo__shop__["topology shop"]' in text
    assert 'subgraph topo__shop_2__["topology shop-2"]' in text
    assert "ctr__shop_2__web[" in text and "ctr__shop__web[" in text


def test_dot_has_a_cluster_per_host_and_the_addresses() -> None:
    topology = load_topology(POLICY)
    text = graph.to_dot([graph.picture(topology, ipam.allocate(topology), SPLIT)])
    assert "subgraph cluster_host__shop__h1 {" in text
    assert 'ctr__shop__api_1 [label="api-1\\n10.10.2.2"' in text
    assert "net__shop__front -> svc__shop__api" in text


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz is not installed")
def test_graphviz_draws_the_dot_output_as_svg_and_png() -> None:
    topology = load_topology(POLICY)
    text = graph.to_dot([graph.picture(topology, ipam.allocate(topology), SPLIT)])
    check = subprocess.run(["dot", "-Tcanon"], input=text, capture_output=True, text=True)
    assert check.returncode == 0, check.stderr  # real Graphviz parses it
    svg = graph.render(text, "svg").decode()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg
    for label in ("10.10.2.100:80", "10.10.1.10", "host h3", "tcp/8080"):
        assert label in svg
    assert graph.render(text, "png")[:8] == b"\x89PNG\r\n\x1a\n"
