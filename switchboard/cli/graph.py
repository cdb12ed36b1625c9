"""A picture of a topology: networks, routers, containers with their addresses, services and
VIPs, policies as arrows, and hosts as groups when there are several. Pure.

:func:`picture` turns a topology (with its allocation and placement) into nodes, edges and
groups; :func:`to_mermaid` and :func:`to_dot` write those as Mermaid or Graphviz DOT text.
Several topologies go into one picture, each in a group of its own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import graphviz

from sbcore.model import SERVICE_PREFIX, Topology, ipam

NodeKind = Literal["network", "router", "container", "service", "host"]
EdgeKind = Literal["link", "instance", "policy"]
UNPLACED = "(not placed)"


@dataclass(frozen=True)
class Node:
    """A box in the picture; ``lines`` is its label, one entry per line."""

    id: str
    kind: NodeKind
    lines: tuple[str, ...]


@dataclass(frozen=True)
class Edge:
    """``link``: a container or router on a network; ``instance``: a service to a container
    that offers it; ``policy``: an allowed direction of new connections."""

    src: str
    dst: str
    kind: EdgeKind
    label: str = ""


@dataclass
class Picture:
    """One topology. ``hosts``: host -> the ids of the containers it runs (empty when all
    run on one host)."""

    topology: str
    nodes: list[Node] = field(default_factory=list)
    edges: list[Edge] = field(default_factory=list)
    hosts: dict[str, list[str]] = field(default_factory=dict)


def _id(kind: str, topology: str, name: str) -> str:
    """A node id valid in Mermaid and DOT; names are [a-z0-9-], so this is one-to-one."""
    return f"{kind}__{topology}__{name}".replace("-", "_")


def picture(
    topology: Topology,
    allocation: ipam.Allocation | None = None,
    placement: Mapping[str, str] | None = None,
) -> Picture:
    """The picture of ``topology``; ``allocation`` defaults to a fresh IPAM run and
    ``placement`` (container -> host) to the containers' own ``host`` keys."""
    name = topology.name
    allocation = allocation if allocation is not None else ipam.allocate(topology)
    placement = dict(placement if placement is not None else
                     {c: spec.host for c, spec in topology.containers.items() if spec.host})
    pic = Picture(name)
    for net_name, net in topology.networks.items():
        lines = [net_name, str(net.subnet)]
        if net.mtu is not None:
            lines.append(f"mtu {net.mtu}")
        if not net.egress:
            lines.append("no egress")
        pic.nodes.append(Node(_id("net", name, net_name), "network", tuple(lines)))
    for router_name, router in topology.routers.items():
        rid = _id("router", name, router_name)
        pic.nodes.append(Node(rid, "router", (f"router {router_name}",)))
        pic.edges += [Edge(rid, _id("net", name, n), "link") for n in router.networks]
    for c_name, container in topology.containers.items():
        cid = _id("ctr", name, c_name)
        several = len(container.networks) > 1
        lines = [c_name] + [
            f"{allocation[(c_name, n)]}" + (f" ({n})" if several else "")
            for n in container.networks if (c_name, n) in allocation
        ]
        if container.attach is not None:
            lines.append(f"attached {container.attach.describe()}")
        if container.publish:
            lines.append(f"publishes {', '.join(container.publish)}")
        pic.nodes.append(Node(cid, "container", tuple(lines)))
        pic.edges += [Edge(cid, _id("net", name, n), "link") for n in container.networks]
    declared = topology.declared_services()
    for svc in sorted(set(declared) | set(topology.services)):
        sid = _id("svc", name, svc)
        settings = topology.services.get(svc)
        lines = [f"service {svc}"]
        if settings is not None and settings.vip is not None:
            port = f":{settings.port}" if settings.port is not None else ""
            lines.append(f"VIP {settings.vip}{port}")
            if settings.publish is not None:
                lines.append(f"published on host port {settings.published} (every host)")
        pic.nodes.append(Node(sid, "service", tuple(lines)))
        pic.edges += [Edge(sid, _id("ctr", name, c), "instance", f":{inst.port}")
                      for c, inst in declared.get(svc, [])]
    if any(topology.endpoint_kind(p.to) == "host" for p in topology.policies):
        pic.nodes.append(Node(_id("hostaddr", name, "host"), "host", ("host addresses",)))
    cidrs = {ref for p in topology.policies for ref in (p.from_, p.to)
             if topology.endpoint_kind(ref) == "cidr"}
    for ref in sorted(cidrs):  # addresses a policy names by range (outside, or inside)
        pic.nodes.append(Node(_cidr_id(name, ref), "host", (ref,)))
    for policy in topology.policies:
        ports = ", ".join(policy.ports) if policy.ports else "all"
        pic.edges.append(Edge(_ref(topology, policy.from_), _ref(topology, policy.to),
                              "policy", ports))
    hosts = {placement.get(c) or UNPLACED for c in topology.containers}
    if len(hosts) > 1:
        for c_name in topology.containers:
            host = placement.get(c_name) or UNPLACED
            pic.hosts.setdefault(host, []).append(_id("ctr", topology.name, c_name))
        pic.hosts = dict(sorted(pic.hosts.items()))
    return pic


def _cidr_id(topology: str, ref: str) -> str:
    """The node of a ``cidr:A.B.C.D/N`` policy end (its dots and slash made id-safe)."""
    return _id("cidr", topology, ref.split(":", 1)[1].replace(".", "_").replace("/", "_"))


def _ref(topology: Topology, ref: str) -> str:
    """The node a policy's ``from``/``to`` names."""
    kind = topology.endpoint_kind(ref)
    if kind == "service":
        return _id("svc", topology.name, ref[len(SERVICE_PREFIX):])
    if kind == "host":  # `to: host`: the hosts' own addresses on the networks
        return _id("hostaddr", topology.name, "host")
    if kind == "cidr":
        return _cidr_id(topology.name, ref)
    return _id("net" if kind == "network" else "ctr", topology.name, ref)


# --- Mermaid -----------------------------------------------------------------------------

_MERMAID_SHAPES = {"network": ('[["', '"]]'), "router": ('{{"', '"}}'), "host": ('(("', '"))'),
                   "container": ('["', '"]'), "service": ('(["', '"])')}
_MERMAID_EDGES = {"link": "---", "instance": "-.->", "policy": "==>"}


def _mermaid_text(text: str) -> str:
    return text.replace("&", "#amp;").replace('"', "#quot;").replace("<", "#lt;").replace(
        ">", "#gt;")


def to_mermaid(pictures: Sequence[Picture]) -> str:
    """A Mermaid flowchart of the pictures (a group per topology when there are several)."""
    out = ["flowchart LR"]
    for pic in pictures:
        indent = "  "
        if len(pictures) > 1:
            out.append(f'  subgraph {_id("topo", pic.topology, "")}["topology {pic.topology}"]')
            indent = "    "
        grouped = {i for ids in pic.hosts.values() for i in ids}
        by_id = {n.id: n for n in pic.nodes}
        for node in pic.nodes:
            if node.id not in grouped:
                out.append(indent + _mermaid_node(node))
        for host, ids in pic.hosts.items():
            out.append(f'{indent}subgraph {_id("host", pic.topology, host)}'
                       f'["host {_mermaid_text(host)}"]')
            out += [f"{indent}  {_mermaid_node(by_id[i])}" for i in ids]
            out.append(f"{indent}end")
        for edge in pic.edges:
            arrow = _MERMAID_EDGES[edge.kind]
            label = f"|{_mermaid_text(edge.label)}|" if edge.label else ""
            out.append(f"{indent}{edge.src} {arrow}{label} {edge.dst}")
        if len(pictures) > 1:
            out.append("  end")
    for kind, style in (("network", "fill:#e8f0fe,stroke:#4a6fa5"),
                        ("router", "fill:#fff4e0,stroke:#c77c00"),
                        ("container", "fill:#ffffff,stroke:#555555"),
                        ("service", "fill:#eaf7ea,stroke:#3c8d3c"),
                        ("host", "fill:#f3e8fd,stroke:#7a4fa5")):
        out.append(f"  classDef {kind} {style}")
    return "\n".join(out) + "\n"


def _mermaid_node(node: Node) -> str:
    left, right = _MERMAID_SHAPES[node.kind]
    label = "<br/>".join(_mermaid_text(line) for line in node.lines)
    return f"{node.id}{left}{label}{right}:::{node.kind}"


# --- Graphviz DOT ------------------------------------------------------------------------

_DOT_NODES = {
    "network": {"shape": "box", "style": "rounded,filled", "fillcolor": "#e8f0fe"},
    "router": {"shape": "hexagon", "style": "filled", "fillcolor": "#fff4e0"},
    "container": {"shape": "box"},
    "service": {"shape": "ellipse", "style": "filled", "fillcolor": "#eaf7ea"},
    "host": {"shape": "house", "style": "filled", "fillcolor": "#f3e8fd"},
}
_DOT_EDGES = {
    "link": {"dir": "none"},
    "instance": {"style": "dashed"},
    "policy": {"color": "#b03030", "fontcolor": "#b03030", "penwidth": "2"},
}


def to_dot(pictures: Sequence[Picture]) -> str:
    """Graphviz DOT text of the pictures (a cluster per topology when there are several,
    and per host)."""
    graph = graphviz.Digraph("switchboard", graph_attr={"rankdir": "LR", "fontname": "Helvetica"},
                             node_attr={"fontname": "Helvetica", "fontsize": "11"},
                             edge_attr={"fontname": "Helvetica", "fontsize": "10"})
    for pic in pictures:
        if len(pictures) > 1:
            with graph.subgraph(name=f"cluster_{_id('topo', pic.topology, '')}") as sub:
                sub.attr(label=f"topology {pic.topology}", style="dashed")
                _dot_picture(sub, pic)
        else:
            _dot_picture(graph, pic)
    return graph.source


def _dot_picture(graph: graphviz.Digraph, pic: Picture) -> None:
    grouped = {i for ids in pic.hosts.values() for i in ids}
    by_id = {n.id: n for n in pic.nodes}
    for node in pic.nodes:
        if node.id not in grouped:
            graph.node(node.id, "\\n".join(node.lines), **_DOT_NODES[node.kind])
    for host, ids in pic.hosts.items():
        with graph.subgraph(name=f"cluster_{_id('host', pic.topology, host)}") as sub:
            sub.attr(label=f"host {host}", style="rounded", color="#888888")
            for i in ids:
                sub.node(i, "\\n".join(by_id[i].lines), **_DOT_NODES[by_id[i].kind])
    for edge in pic.edges:
        attrs = dict(_DOT_EDGES[edge.kind])
        if edge.label:
            attrs["label"] = edge.label
        graph.edge(edge.src, edge.dst, **attrs)


def render(dot_text: str, fmt: str) -> bytes:
    """Draw DOT text as ``svg`` or ``png`` with Graphviz's ``dot`` (raises
    graphviz.ExecutableNotFound when it is not installed)."""
    return graphviz.Source(dot_text).pipe(format=fmt)
