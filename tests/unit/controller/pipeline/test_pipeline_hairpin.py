"""Hairpin on the in-memory switch: an instance connecting to its own service's VIP."""

from __future__ import annotations

from tests.unit.controller.pipeline.test_pipeline_l3 import POLICIES, SHOP, Lab

VIP = "10.10.2.100"
INSTANCES = ("api-1", "api-2", "api-3")


def _to_itself(lab: Lab, client: str, sports: range) -> list[tuple[int, object]]:
    """(source port, result) of the client's new connections to the VIP that the switch
    balanced to the client itself."""
    found = []
    for sport in sports:
        result = lab.send(client, VIP, sport=sport, dport=80)
        if result.ports == [lab.port_of(client)]:
            found.append((sport, result))
    return found


def test_instance_balanced_to_itself_gets_the_packet_back_from_the_vip():
    lab = Lab(SHOP)
    me = lab.ep("api-1")
    hits = _to_itself(lab, "api-1", range(50000, 50060))
    assert hits, "no connection was balanced to the client itself"
    for _, result in hits:
        out = result.outputs[0][1]
        assert (out["ipv4_dst"], out["tcp_dst"]) == (str(me.ip), 8080)
        assert out["ipv4_src"] == VIP  # not its own address: it would drop that
        assert out["eth_dst"] == me.mac and out["eth_src"] == lab.net("back").gateway_mac
        assert out["ip_ttl"] == 63


def test_hairpin_reply_reaches_the_client_socket_as_from_vip_port():
    lab = Lab(SHOP)
    sport, result = _to_itself(lab, "api-2", range(51000, 51060))[0]
    reply = lab.reply(result.outputs[0][1], "api-2")  # the server side answers the VIP
    assert reply.ports == [lab.port_of("api-2")]
    back = reply.outputs[0][1]
    assert (back["ipv4_src"], back["tcp_src"]) == (VIP, 80)
    assert (back["ipv4_dst"], back["tcp_dst"]) == (str(lab.ep("api-2").ip), sport)


def test_established_hairpin_packets_keep_their_translation():
    lab = Lab(SHOP)
    sport, first = _to_itself(lab, "api-3", range(52000, 52060))[0]
    again = lab.send("api-3", VIP, sport=sport, dport=80)
    assert again.ports == [lab.port_of("api-3")]
    assert again.outputs[0][1]["ipv4_src"] == first.outputs[0][1]["ipv4_src"] == VIP


def test_instance_balanced_to_another_instance_is_not_source_natted():
    lab = Lab(SHOP)
    me = lab.ep("api-1")
    others = {lab.port_of(c) for c in INSTANCES if c != "api-1"}
    seen = 0
    for sport in range(53000, 53060):
        result = lab.send("api-1", VIP, sport=sport, dport=80)
        if result.ports and result.ports[0] in others:
            seen += 1
            out = result.outputs[0][1]
            assert out["ipv4_src"] == str(me.ip)
            reply = lab.reply(out, next(c for c in INSTANCES
                                        if lab.port_of(c) == result.ports[0]))
            assert reply.ports == [lab.port_of("api-1")]
            assert reply.outputs[0][1]["ipv4_src"] == VIP
    assert seen


def test_every_connection_from_every_instance_to_its_vip_is_answered():
    """Whichever instance the switch picks, the client gets its answer back (with policies
    on, as they hold for routed traffic)."""
    lab = Lab(SHOP + POLICIES)
    for client in INSTANCES:
        for sport in range(54000, 54030):
            result = lab.send(client, VIP, sport=sport, dport=80)
            assert len(result.ports) == 1, (client, sport)
            server = next(c for c in INSTANCES if lab.port_of(c) == result.ports[0])
            reply = lab.reply(result.outputs[0][1], server)
            assert reply.ports == [lab.port_of(client)], (client, server, sport)
            assert (reply.outputs[0][1]["ipv4_src"], reply.outputs[0][1]["tcp_src"]) == (VIP, 80)


def test_clients_that_are_not_instances_take_no_hairpin_stage():
    lab = Lab(SHOP)
    result = lab.send("web", VIP, sport=55000, dport=80)
    assert len(result.ports) == 1
    assert not any(stage.startswith("hairpin") for stage in result.stages)


def test_a_host_compiles_hairpin_flows_only_for_the_instances_it_runs():
    lab = Lab(SHOP)
    hairpin = [f for f in lab.switch.flows.values() if "/hairpin/" in f.owner]
    owners = {f.owner.split("/")[2] for f in hairpin if f.owner.count("/") >= 3}
    assert owners == set(INSTANCES)
