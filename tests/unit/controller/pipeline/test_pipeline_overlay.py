"""The pipeline across hosts: one in-memory flow table per host, joined by a simulated tunnel.

Each host compiles the same topology from its own place in the cluster; a packet that a host
sends out of its tunnel port arrives at the host its tunnel destination names, with the
tunnel key it was given, as on a VXLAN underlay.
"""

from __future__ import annotations

from typing import Any

from controller.pipeline.compiler import compile_pipeline
from sbcore.model import ipam, load_topology
from sbcore.plan.hostplan import Endpoint, PeerHost, Site, TopologyPlan, plan_topology
from tests.unit.controller.pipeline.fakeoftable import FakeOFTable

TUNNEL = 100  # the tunnel's OpenFlow port on every host
HOSTS = {"h1": PeerHost(0, "10.99.1.1"), "h2": PeerHost(1, "10.99.1.2"),
         "h3": PeerHost(2, "10.99.1.3")}
CLUSTER = """
name: shop
networks:
  front: {subnet: 10.10.1.0/24}
  back: {subnet: 10.10.2.0/24}
routers:
  core: {networks: [front, back]}
policies:
  - {from: front, to: back, ports: [tcp/8080]}
containers:
  web: {networks: [front]}
  web2: {networks: [front]}
  api-1: {networks: [back], services: [{name: api, port: 8080}]}
  api-2: {networks: [back], services: [{name: api, port: 8080}]}
services:
  api: {vip: 10.10.2.100, port: 80}
"""
PLACEMENT = {"web": "h1", "web2": "h2", "api-1": "h2", "api-2": "h3"}


class Cluster:
    """Three hosts, each with its own flow table and conntrack."""

    def __init__(self, text: str = CLUSTER, placement: dict[str, str] | None = None) -> None:
        topology = load_topology(text)
        allocation = ipam.allocate(topology)
        self.plans: dict[str, TopologyPlan] = {}
        self.ports: dict[str, dict[str, int]] = {}
        self.tables: dict[str, FakeOFTable] = {}
        for host, me in HOSTS.items():
            site = Site(host=host, slot=me.slot, peers=HOSTS, max_mtu=1450, tx_offload=False)
            plan = plan_topology(topology, allocation, placement or PLACEMENT, site)
            local = plan.local_view()
            names = [ep.port for ep in local.endpoints()] + [n.host_leg.port for n in plan.networks]
            ports = {name: number for number, name in enumerate(sorted(names), start=1)}
            table = FakeOFTable()
            compiled = compile_pipeline([plan], ports, tunnel_port=TUNNEL)
            table.apply(compiled.flows, compiled.groups)
            self.plans[host], self.ports[host], self.tables[host] = plan, ports, table
        self.tunnel_crossings = 0

    def ep(self, container: str, network: str | None = None) -> Endpoint:
        return next(ep for ep in self.plans["h1"].endpoints()
                    if ep.container == container and network in (None, ep.network))

    def host_of(self, container: str) -> str:
        return PLACEMENT[container]

    def send(self, host: str, packet: dict[str, Any]) -> list[tuple[str, int, dict[str, Any]]]:
        """Where a packet that enters ``host`` ends up: (host, port, packet) per copy."""
        delivered = []
        for port, out in self.tables[host].process(packet).outputs:
            if port != TUNNEL:
                delivered.append((host, port, out))
                continue
            self.tunnel_crossings += 1
            target = next(h for h, p in HOSTS.items() if p.tunnel_ip == out["tun_ipv4_dst"])
            assert target != host, "a host tunnels a packet to itself"
            arrived = {k: v for k, v in out.items()
                       if k not in ("metadata", "ct_state", "ct_mark", "tun_ipv4_dst", "reg1")}
            arrived["in_port"] = TUNNEL
            for dst, dst_port, final in self.send(target, arrived):
                assert dst_port != TUNNEL, "a packet crossed two tunnels"
                delivered.append((dst, dst_port, final))
        return delivered

    def packet(self, src: str, dst_mac: str, dst_ip: str, **fields: Any) -> tuple[str, dict]:
        ep = self.ep(src)
        host = self.host_of(src)
        pkt = {"in_port": self.ports[host][ep.port], "eth_src": ep.mac, "eth_dst": dst_mac,
               "eth_type": 0x0800, "ipv4_src": str(ep.ip), "ipv4_dst": dst_ip, "ip_proto": 6,
               "tcp_src": 40000, "tcp_dst": 8080, "ip_ttl": 64}
        pkt.update(fields)
        return host, pkt

    def gateway_mac(self, network: str) -> str:
        return next(n.gateway_mac for n in self.plans["h1"].networks if n.name == network)

    def port(self, container: str) -> tuple[str, int]:
        host = self.host_of(container)
        return host, self.ports[host][self.ep(container).port]


def _where(delivered: list[tuple[str, int, dict[str, Any]]]) -> list[tuple[str, int]]:
    return [(host, port) for host, port, _ in delivered]


def test_same_network_crosses_one_tunnel_to_the_container_on_another_host():
    cluster = Cluster()
    web2 = cluster.ep("web2")
    host, pkt = cluster.packet("web", web2.mac, str(web2.ip))
    delivered = cluster.send(host, pkt)
    assert _where(delivered) == [cluster.port("web2")]
    assert cluster.tunnel_crossings == 1


def test_the_tunnel_key_is_the_network_and_the_destination_its_host():
    cluster = Cluster()
    web2 = cluster.ep("web2")
    host, pkt = cluster.packet("web", web2.mac, str(web2.ip))
    (out,) = [o for p, o in cluster.tables[host].process(pkt).outputs if p == TUNNEL]
    front = next(n for n in cluster.plans["h1"].networks if n.name == "front")
    assert out["tunnel_id"] == front.tunnel_key and 0 < front.tunnel_key < 2**24
    assert out["tun_ipv4_dst"] == HOSTS["h2"].tunnel_ip


def test_arp_for_a_container_on_another_host_is_answered_locally():
    cluster = Cluster()
    web, web2 = cluster.ep("web"), cluster.ep("web2")
    host, port = cluster.port("web")
    request = {"in_port": port, "eth_src": web.mac, "eth_dst": "ff:ff:ff:ff:ff:ff",
               "eth_type": 0x0806, "arp_op": 1, "arp_spa": str(web.ip), "arp_sha": web.mac,
               "arp_tpa": str(web2.ip), "arp_tha": "00:00:00:00:00:00"}
    result = cluster.tables[host].process(request)
    assert result.ports == [port]
    assert result.outputs[0][1]["arp_sha"] == web2.mac


def test_an_unknown_destination_is_dropped_not_flooded():
    cluster = Cluster()
    host, pkt = cluster.packet("web", "02:00:00:00:00:99", "10.10.1.77")
    assert cluster.send(host, pkt) == []
    assert cluster.tunnel_crossings == 0


def test_a_spoofed_frame_never_reaches_the_tunnel():
    cluster = Cluster()
    web2 = cluster.ep("web2")
    host, pkt = cluster.packet("web", web2.mac, str(web2.ip), ipv4_src="10.10.1.250")
    assert cluster.send(host, pkt) == [] and cluster.tunnel_crossings == 0


def test_a_frame_from_the_tunnel_with_another_topologys_key_is_dropped():
    cluster = Cluster()
    web2 = cluster.ep("web2")
    _, pkt = cluster.packet("web", web2.mac, str(web2.ip))
    pkt.update(in_port=TUNNEL, tunnel_id=12345)
    assert cluster.tables["h2"].process(pkt).ports == []


def test_routing_happens_on_the_sending_host_and_the_policy_there():
    cluster = Cluster()
    api = cluster.ep("api-1")
    host, pkt = cluster.packet("web", cluster.gateway_mac("front"), str(api.ip))
    delivered = cluster.send(host, pkt)
    assert _where(delivered) == [cluster.port("api-1")]
    assert delivered[0][2]["ip_ttl"] == 63 and cluster.tunnel_crossings == 1
    host, refused = cluster.packet("web", cluster.gateway_mac("front"), str(api.ip),
                                   tcp_dst=22)
    assert cluster.send(host, refused) == []
    assert cluster.tunnel_crossings == 1  # refused before the tunnel


def test_replies_to_an_allowed_routed_connection_pass_back_across_hosts():
    cluster = Cluster()
    web, api = cluster.ep("web"), cluster.ep("api-1")
    host, pkt = cluster.packet("web", cluster.gateway_mac("front"), str(api.ip))
    assert cluster.send(host, pkt)
    reply_host, reply = cluster.packet("api-1", cluster.gateway_mac("back"), str(web.ip),
                                       tcp_src=8080, tcp_dst=40000)
    assert _where(cluster.send(reply_host, reply)) == [cluster.port("web")]
    # the same packet not as a reply: a new connection from back to front, not allowed
    reply_host, new = cluster.packet("api-1", cluster.gateway_mac("back"), str(web.ip),
                                     tcp_src=8081, tcp_dst=40000)
    assert cluster.send(reply_host, new) == []


def test_a_vip_balances_on_the_clients_host_over_instances_on_other_hosts():
    cluster = Cluster()
    seen = set()
    for sport in range(40000, 40040):
        host, pkt = cluster.packet("web", cluster.gateway_mac("front"), "10.10.2.100",
                                   tcp_src=sport, tcp_dst=80)
        delivered = cluster.send(host, pkt)
        assert len(delivered) == 1
        dst_host, port, out = delivered[0]
        assert out["tcp_dst"] == 8080
        seen.add((dst_host, port))
    assert seen == {cluster.port("api-1"), cluster.port("api-2")}


def test_a_vip_reply_is_undone_on_the_clients_host():
    cluster = Cluster()
    web = cluster.ep("web")
    host, pkt = cluster.packet("web", cluster.gateway_mac("front"), "10.10.2.100", tcp_dst=80)
    ((dst_host, _, out),) = cluster.send(host, pkt)
    backend = next(c for c in ("api-1", "api-2") if cluster.host_of(c) == dst_host)
    reply_host, reply = cluster.packet(backend, cluster.gateway_mac("back"), str(web.ip),
                                       tcp_src=8080, tcp_dst=out["tcp_src"])
    ((final_host, port, back),) = cluster.send(reply_host, reply)
    assert (final_host, port) == cluster.port("web")
    assert (back["ipv4_src"], back["tcp_src"], back["tcp_dst"]) == ("10.10.2.100", 80, 40000)


def test_each_host_has_its_own_address_on_a_network_and_reaches_remote_containers():
    cluster = Cluster()
    legs = {h: next(n.host_leg for n in p.networks if n.name == "front")
            for h, p in cluster.plans.items()}
    assert len({leg.ip for leg in legs.values()}) == 3
    assert len({leg.mac for leg in legs.values()}) == 3
    assert str(legs["h1"].ip) == "10.10.1.254"  # a host alone keeps the address it had
    web = cluster.ep("web")  # on h1; h3 connects to it from its own address
    leg = legs["h3"]
    pkt = {"in_port": cluster.ports["h3"][leg.port], "eth_src": leg.mac, "eth_dst": web.mac,
           "eth_type": 0x0800, "ipv4_src": str(leg.ip), "ipv4_dst": str(web.ip),
           "ip_proto": 6, "tcp_src": 50000, "tcp_dst": 80}
    assert _where(cluster.send("h3", pkt)) == [cluster.port("web")]
    reply = {"in_port": cluster.port("web")[1], "eth_src": web.mac, "eth_dst": leg.mac,
             "eth_type": 0x0800, "ipv4_src": str(web.ip), "ipv4_dst": str(leg.ip),
             "ip_proto": 6, "tcp_src": 80, "tcp_dst": 50000}
    assert _where(cluster.send("h1", reply)) == [("h3", cluster.ports["h3"][leg.port])]


def test_only_local_containers_are_plumbed_and_the_default_mtu_fits_the_tunnel():
    cluster = Cluster()
    local = cluster.plans["h2"].local_view()
    assert sorted(c.name for c in local.containers) == ["api-1", "web2"]
    assert {ep.mtu for ep in local.endpoints()} == {1450}
    assert not any(ep.tx_offload for ep in local.endpoints())


def test_an_explicit_mtu_that_cannot_fit_in_the_tunnel_is_an_error():
    import pytest

    from sbcore.model import TopologyError

    text = CLUSTER.replace("{subnet: 10.10.1.0/24}", "{subnet: 10.10.1.0/24, mtu: 1500}")
    with pytest.raises(TopologyError, match=r"networks\.front\.mtu: 1500 does not fit"):
        Cluster(text)
