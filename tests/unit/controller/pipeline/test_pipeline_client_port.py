"""A client that uses an instance both through the VIP and directly, on the in-memory switch.

Linux gives a new connection to another destination the same source port as an earlier one,
so a direct connection can carry exactly the addresses and ports of a VIP connection after
its destination NAT. Its replies must still come from the instance, not from the VIP.
"""

from __future__ import annotations

import pytest

from controller.pipeline.clientport import swapped
from tests.unit.controller.pipeline.test_pipeline_l3 import POLICIES, SHOP, Lab
from tests.unit.controller.pipeline.test_pipeline_overlay import Cluster

VIP = "10.10.2.100"
INSTANCES = ("api-1", "api-2", "api-3")
TCP, UDP = 6, 17


def _instance_at(lab: Lab, port: int) -> str:
    return next(c for c in INSTANCES if lab.port_of(c) == port)


@pytest.mark.parametrize("policies", ["", POLICIES], ids=["open", "policies"])
def test_direct_connection_with_a_vip_connections_source_port_is_answered_by_the_instance(
        policies):
    lab = Lab(SHOP + policies)
    via_vip = lab.send("web", VIP, sport=45000, dport=80)
    instance = _instance_at(lab, via_vip.ports[0])
    assert lab.reply(via_vip.outputs[0][1], instance).ports == [lab.port_of("web")]

    direct = lab.send("web", str(lab.ep(instance).ip), sport=45000, dport=8080)
    assert direct.ports == [lab.port_of(instance)]
    reply = lab.reply(direct.outputs[0][1], instance)
    assert reply.ports == [lab.port_of("web")]
    back = reply.outputs[0][1]
    assert (back["ipv4_src"], back["tcp_src"]) == (str(lab.ep(instance).ip), 8080)
    assert back["tcp_dst"] == 45000


def test_swap_maps_linux_ephemeral_ports_one_to_one_below_32768_and_back():
    ephemeral = range(32768, 61000)
    images = {swapped(port) for port in ephemeral}
    assert len(images) == len(ephemeral)  # one to one
    assert all(1024 <= port < 32768 for port in images)
    assert all(swapped(swapped(port)) == port for port in range(65536))
    assert all(swapped(port) == port for port in (0, 22, 80, 1023, 5120, 8191, 61440, 65535))


@pytest.mark.parametrize("proto", [TCP, UDP], ids=["tcp", "udp"])
def test_instance_sees_the_clients_address_and_a_port_linux_does_not_give_out(proto):
    lab = Lab(SHOP)
    field = "tcp" if proto == TCP else "udp"
    for sport in (33000, 45000, 60999):
        result = lab.send("web", VIP, proto=proto, sport=sport, dport=80)
        out = result.outputs[0][1]
        assert out["ipv4_src"] == str(lab.ep("web").ip)
        assert out[f"{field}_src"] == swapped(sport) and 1024 <= swapped(sport) < 32768


def test_vip_reply_reaches_the_client_socket_at_its_own_port_and_later_packets_keep_theirs():
    lab = Lab(SHOP)
    first = lab.send("web", VIP, sport=46000, dport=80)
    seen_port = first.outputs[0][1]["tcp_src"]
    again = lab.send("web", VIP, sport=46000, dport=80)
    assert again.ports == first.ports and again.outputs[0][1]["tcp_src"] == seen_port
    reply = lab.reply(first.outputs[0][1], _instance_at(lab, first.ports[0]))
    back = reply.outputs[0][1]
    assert (back["ipv4_src"], back["tcp_src"], back["tcp_dst"]) == (VIP, 80, 46000)


def test_two_clients_ports_stay_apart_and_each_gets_its_replies():
    lab = Lab(SHOP)
    seen = set()
    for sport in range(47000, 47040):
        result = lab.send("web", VIP, sport=sport, dport=80)
        out = result.outputs[0][1]
        key = (out["ipv4_dst"], out["tcp_src"])
        assert key not in seen  # two live connections never share a client port
        seen.add(key)
        reply = lab.reply(out, _instance_at(lab, result.ports[0]))
        assert reply.outputs[0][1]["tcp_dst"] == sport


def test_across_hosts_a_direct_connection_after_a_vip_one_is_answered_by_the_instance():
    cluster = Cluster()
    web = cluster.ep("web")
    host, pkt = cluster.packet("web", cluster.gateway_mac("front"), "10.10.2.100",
                               tcp_src=45000, tcp_dst=80)
    ((dst_host, _, out),) = cluster.send(host, pkt)
    instance = next(c for c in ("api-1", "api-2") if cluster.host_of(c) == dst_host)
    assert out["tcp_src"] == swapped(45000) < 32768
    reply_host, reply = cluster.packet(instance, cluster.gateway_mac("back"), str(web.ip),
                                       tcp_src=8080, tcp_dst=out["tcp_src"])
    ((_, port, back),) = cluster.send(reply_host, reply)
    assert (cluster.host_of("web"), port) == cluster.port("web")
    assert (back["ipv4_src"], back["tcp_src"], back["tcp_dst"]) == ("10.10.2.100", 80, 45000)

    ip = str(cluster.ep(instance).ip)
    host, pkt = cluster.packet("web", cluster.gateway_mac("front"), ip,
                               tcp_src=45000, tcp_dst=8080)
    ((_, _, out),) = cluster.send(host, pkt)
    assert out["tcp_src"] == 45000  # a direct connection keeps its port
    reply_host, reply = cluster.packet(instance, cluster.gateway_mac("back"), str(web.ip),
                                       tcp_src=8080, tcp_dst=45000)
    ((_, port, back),) = cluster.send(reply_host, reply)
    assert (back["ipv4_src"], back["tcp_src"], back["tcp_dst"]) == (ip, 8080, 45000)
