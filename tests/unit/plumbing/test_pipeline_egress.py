"""Egress and ``cidr:`` policies on the in-memory switch (with conntrack)."""

from __future__ import annotations

from typing import Any

import pytest

from plumbing.hostnat import Leg, render, table_name
from sbcore.model import TopologyError, load_topology
from tests.unit.controller.pipeline.test_pipeline_l3 import SHOP, Lab

OUTSIDE = "198.18.7.2"


def _from_outside(lab: Lab, out: dict[str, Any], network: str, *, dst: str | None = None,
                  sport: int | None = None, dport: int | None = None) -> Any:
    """What the host's kernel hands back on the leg: the answer to ``out`` (or, with
    ``dst``/``dport``, a new packet from the same outside address)."""
    leg = lab.net(network).host_leg
    pkt = {"in_port": lab.ports[leg.port], "eth_src": leg.mac, "eth_dst": "",
           "eth_type": 0x0800, "ipv4_src": out["ipv4_dst"], "ipv4_dst": dst or out["ipv4_src"],
           "ip_proto": out["ip_proto"], "ip_ttl": 63}
    if out["ip_proto"] == 6:
        pkt.update(tcp_src=sport or out["tcp_dst"], tcp_dst=dport or out["tcp_src"])
    for ep in lab.plan.endpoints():
        if str(ep.ip) == pkt["ipv4_dst"]:
            pkt["eth_dst"] = ep.mac
    return lab.switch.process(pkt)


def test_egress_goes_to_the_host_leg_and_only_its_replies_come_back():
    lab = Lab(SHOP)
    front = lab.net("front")
    out = lab.send("web", OUTSIDE, dport=443)
    assert out.ports == [lab.ports[front.host_leg.port]]
    packet = out.outputs[0][1]
    assert packet["eth_dst"] == front.host_leg.mac and packet["ip_ttl"] == 63
    assert _from_outside(lab, packet, "front").ports == [lab.port_of("web")]
    # a new connection from outside, to the same container, is not a reply
    assert _from_outside(lab, packet, "front", sport=5555, dport=22).ports == []


def test_egress_off_leaves_the_network_an_island():
    lab = Lab(SHOP.replace("front: {subnet: 10.10.1.0/24}",
                           "front: {subnet: 10.10.1.0/24, egress: false}"))
    assert lab.send("web", OUTSIDE, dport=443).ports == []
    assert lab.send("api-1", OUTSIDE, dport=443).ports == [
        lab.ports[lab.net("back").host_leg.port]]


def test_egress_never_carries_a_topology_subnet_nor_skips_the_host_guard():
    lab = Lab(SHOP)
    assert lab.send("web", "10.10.3.10").ports == []  # an unrouted network stays apart
    leg = lab.net("front").host_leg
    # the host's own address on the network: only DNS (the guard), not egress
    assert lab.send("web", str(leg.ip), dport=22, dst_mac=leg.mac).ports == []


POLICY = """
policies:
  - {from: web, to: "cidr:198.18.7.0/24", ports: [tcp/443]}
"""


def test_with_policies_egress_needs_a_cidr_rule():
    lab = Lab(SHOP + POLICY)
    leg_port = lab.ports[lab.net("front").host_leg.port]
    allowed = lab.send("web", OUTSIDE, dport=443)
    assert allowed.ports == [leg_port]
    assert _from_outside(lab, allowed.outputs[0][1], "front").ports == [lab.port_of("web")]
    assert lab.send("web", OUTSIDE, dport=80).ports == []  # another port
    assert lab.send("web", "198.18.8.2", dport=443).ports == []  # outside the CIDR
    assert lab.send("api-1", OUTSIDE, dport=443).ports == []  # another source


def test_a_cidr_source_reaches_a_container_where_a_rule_says():
    lab = Lab(SHOP + """
policies:
  - {from: "cidr:10.10.1.10/32", to: back, ports: [tcp/8080]}
""")
    assert lab.send("web", "10.10.2.11", dport=8080).ports == [lab.port_of("api-1")]
    assert lab.send("web", "10.10.2.11", dport=22).ports == []


@pytest.mark.parametrize("ref, words", [
    ("cidr:198.18.7.1/24", "host bits set"),
    ("cidr:198.18.7.0", "prefix length"),
    ("cidr:not-an-address/8", "not an IPv4 CIDR"),
])
def test_a_bad_cidr_is_named_with_its_place(ref: str, words: str):
    with pytest.raises(TopologyError) as err:
        load_topology(SHOP + f'\npolicies:\n  - {{from: web, to: "{ref}"}}\n')
    assert "policies.0.to" in str(err.value) and words in str(err.value)


def test_egress_must_be_true_or_false():
    with pytest.raises(TopologyError, match="networks.front.egress"):
        load_topology(SHOP.replace("front: {subnet: 10.10.1.0/24}",
                                   "front: {subnet: 10.10.1.0/24, egress: yes}"))


def test_host_table_masquerades_egress_subnets_and_guards_host_addresses():
    legs = [Leg("sbhaaa", "10.10.1.254", "10.10.1.0/24", True),
            Leg("sbhbbb", "10.10.2.254", "10.10.2.0/24", False)]
    script = render(table_name("sbt-x"), legs, ["eth0"])
    assert "table ip switchboard_sbt-x {" in script
    assert 'ip saddr { 10.10.1.0/24 } oifname != { "sbhaaa", "sbhbbb" } masquerade' in script
    assert 'iifname "sbhbbb" ip daddr != 10.10.2.254 ct state new drop' in script
    assert 'iifname { "eth0" } ct state established,related accept' in script
    assert table_name("sb-int") == "switchboard"


PUBLISHED = SHOP.replace("web: {networks: {front: {ip: 10.10.1.10}}}",
                         'web: {networks: {front: {ip: 10.10.1.10}}, publish: ["8080:80/tcp"]}')


def _client(lab: Lab, dport: int, src: str = "198.18.7.2") -> Any:
    """A new connection the host's table destination-NATed to web, from ``src``."""
    fake = {"ipv4_dst": src, "ipv4_src": str(lab.ep("web").ip), "ip_proto": 6,
            "tcp_dst": 33000, "tcp_src": dport}
    return _from_outside(lab, fake, "front")


def test_a_published_port_is_reached_from_the_leg_with_the_clients_address_and_answers():
    lab = Lab(PUBLISHED)
    came = _client(lab, 80)
    assert came.ports == [lab.port_of("web")]
    assert came.outputs[0][1]["ipv4_src"] == "198.18.7.2"  # the client's address is kept
    answer = lab.reply(came.outputs[0][1], "web")
    assert answer.ports == [lab.ports[lab.net("front").host_leg.port]]
    again = _from_outside(lab, answer.outputs[0][1], "front")  # the client's next packet
    assert again.ports == [lab.port_of("web")]
    assert _client(lab, 22).ports == []  # an unpublished port


def test_a_published_port_on_a_network_without_egress_answers_but_opens_nothing():
    lab = Lab(PUBLISHED.replace("front: {subnet: 10.10.1.0/24}",
                                "front: {subnet: 10.10.1.0/24, egress: false}"))
    came = _client(lab, 80)
    assert came.ports == [lab.port_of("web")]
    assert lab.reply(came.outputs[0][1], "web").ports == [
        lab.ports[lab.net("front").host_leg.port]]
    assert lab.send("web", OUTSIDE, dport=443).ports == []


def test_with_policies_a_published_port_needs_a_cidr_source():
    lab = Lab(PUBLISHED + """
policies:
  - {from: "cidr:198.18.7.0/24", to: web, ports: [tcp/80]}
""")
    assert _client(lab, 80).ports == [lab.port_of("web")]
    assert _client(lab, 80, src="198.18.8.2").ports == []


def test_a_host_port_published_twice_is_named():
    with pytest.raises(TopologyError, match=r"containers.solo.publish.0: host port 8080/tcp is "
                                            r"already published by container 'web'"):
        load_topology(PUBLISHED.replace("solo: {networks: {lone: {ip: 10.10.3.10}}}",
                                        'solo: {networks: {lone: {ip: 10.10.3.10}}, '
                                        'publish: ["8080:81"]}'))
    with pytest.raises(TopologyError, match="write HOSTPORT:PORT/tcp"):
        load_topology(PUBLISHED.replace("8080:80/tcp", "8080/tcp"))


def test_host_table_dnats_published_ports_from_outside_and_from_the_host():
    from plumbing.hostnat import Dnat
    legs = [Leg("sbhaaa", "10.10.1.254", "10.10.1.0/24", False, True)]
    script = render("switchboard", legs, ["eth0"], [Dnat("tcp", 8080, "10.10.1.10", 80)])
    rule = "fib daddr type local tcp dport 8080 dnat to 10.10.1.10:80"
    assert f'iifname != {{ "sbhaaa" }} {rule}' in script  # prerouting: not from a leg
    assert f"    {rule}\n" in script  # output: the host's own connections
    # to a host leg: this daemon's published ports, and another daemon's on the same host
    assert 'iifname { "eth0" } oifname "sbh*" ct status dnat accept' in script
    assert 'oifname "sbh*" ct status dnat accept' in render("switchboard", legs, ["eth0"])
    # the client's address is kept; only the host's own connections through 127.0.0.1 are
    # masqueraded (a loopback source cannot leave by a leg)
    masquerades = [line.strip() for line in script.splitlines() if "masquerade" in line]
    assert masquerades == ["ip saddr 127.0.0.0/8 ct status dnat masquerade"]


def test_graph_shows_cidr_ends_published_ports_and_networks_without_egress():
    from switchboard.cli.graph import picture, to_mermaid
    text = PUBLISHED.replace("back: {subnet: 10.10.2.0/24}",
                             "back: {subnet: 10.10.2.0/24, egress: false}") + POLICY
    mermaid = to_mermaid([picture(load_topology(text))])
    assert "publishes 8080:80/tcp" in mermaid
    assert "no egress" in mermaid
    assert "cidr:198.18.7.0/24" in mermaid and "cidr__shop__198_18_7_0_24" in mermaid


def test_the_upstream_path_says_where_names_outside_consul_go(tmp_path):
    from discovery.upstream import describe_upstreams
    from switchboard.cli.services import _outside_consul
    conf = tmp_path / "resolv.conf"
    conf.write_text("nameserver 127.0.0.53\n")
    assert describe_upstreams([("198.18.30.2", 53)]) == "198.18.30.2:53 (--upstream-dns)"
    stub = describe_upstreams([], conf)
    assert stub.startswith("127.0.0.53:53 (the host's resolvers") and "loopback stub" in stub
    conf.write_text("nameserver 192.0.2.1\n")
    assert "loopback" not in describe_upstreams([], conf)
    assert _outside_consul("www.example.org") and not _outside_consul("v1.web")
    assert not _outside_consul("web.service.consul")
    assert _outside_consul("example.com.") and not _outside_consul("web.service.consul.")
