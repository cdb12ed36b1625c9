"""plumbing.plan: the pure diff between wanted topologies and what the host holds."""

from __future__ import annotations

from dataclasses import replace
from ipaddress import IPv4Address, IPv4Network

from ovsdb.bridge import OwnedPort
from plumbing.observe import LinkState, NamespaceState, ObservedInterfaces
from plumbing.plan import (
    Command,
    PlumbingPlan,
    Problems,
    endpoint_ids,
    host_leg_ids,
    plan_plumbing,
    plumbing_problems,
    process_key,
)
from sbcore.model import naming
from sbcore.plan.hostplan import ContainerPlan, Endpoint, HostLeg, NetworkPlan, TopologyPlan


def make_plan(
    topo: str = "t1",
    containers: dict[str, str | None] | None = None,
    subnet: str = "10.60.0.0/24",
    attach: dict[str, int] | None = None,
    ips: dict[str, str] | None = None,
) -> TopologyPlan:
    """One network ``lan``; ``containers`` maps container name -> command."""
    containers = {"a": "sleep 1000", "b": None, "c": None} if containers is None else containers
    attach, ips = attach or {}, ips or {}
    net = IPv4Network(subnet)
    hosts = list(net.hosts())
    leg = HostLeg(topo, "lan", naming.host_leg_name(topo, "lan"),
                  naming.host_leg_mac(topo, "lan"), hosts[-1], net.prefixlen, 1500)
    network = NetworkPlan(topo, "lan", naming.network_key(topo, "lan"), net, hosts[0],
                          naming.gateway_mac(topo, "lan"), 1500, leg)
    plans = []
    for i, (name, command) in enumerate(containers.items()):
        ns = naming.netns_name(topo, name)
        ep = Endpoint(topo, name, "lan", ns, "eth0", naming.veth_name(topo, name, "lan"),
                      naming.container_mac(topo, name, "lan"),
                      IPv4Address(ips.get(name, hosts[10 + i])), net.prefixlen, 1500, hosts[0])
        plans.append(ContainerPlan(topo, name, ns, command, attach.get(name), (ep,)))
    return TopologyPlan(topo, (network,), tuple(plans))


def realised(*plans: TopologyPlan) -> dict:
    """The observation of a host where ``plans`` are fully in place."""
    ports, netns, running, commands = {}, set(), {}, {}
    for topo in plans:
        for net in topo.networks:
            leg = net.host_leg
            ports[leg.port] = OwnedPort(leg.port, host_leg_ids(leg), len(ports) + 1)
        for c in topo.containers:
            netns.add(c.netns)
            for ep in c.endpoints:
                ports[ep.port] = OwnedPort(ep.port, endpoint_ids(ep), len(ports) + 1)
            if c.command:
                running[process_key(topo.name, c.name)] = True
                commands[process_key(topo.name, c.name)] = c.command
    return {"observed_ports": ports, "observed_netns": netns, "running": running,
            "observed_commands": commands}


def port(plan: TopologyPlan, container: str) -> str:
    return naming.veth_name(plan.name, container, "lan")


def test_realised_state_plans_nothing():
    plan = make_plan()
    result = plan_plumbing([plan], **realised(plan))
    assert result == PlumbingPlan()
    assert result.is_empty()


def test_empty_host_gets_everything():
    plan = make_plan()
    result = plan_plumbing([plan], {}, set(), {})
    assert result.create_netns == ["sb-t1-a", "sb-t1-b", "sb-t1-c"]
    assert result.create_endpoints == sorted(plan.endpoints(), key=lambda ep: ep.port)
    assert result.create_host_legs == [plan.networks[0].host_leg]
    assert result.start_commands == [Command("t1", "a", "sb-t1-a", "sleep 1000")]
    assert not (result.delete_ports or result.delete_netns or result.stop_commands)


def test_changed_ip_touches_only_that_port():
    before = make_plan()
    after = make_plan(ips={"b": "10.60.0.99"})
    result = plan_plumbing([after], **realised(before))
    (ep_b,) = after.containers[1].endpoints
    assert result == PlumbingPlan(delete_ports=[port(after, "b")], create_endpoints=[ep_b])


def test_changed_mtu_or_gateway_recreates_the_port():
    before = make_plan()
    c = before.containers[2]
    ep = replace(c.endpoints[0], default_gateway=None)
    after = replace(before, containers=before.containers[:2] + (replace(c, endpoints=(ep,)),))
    result = plan_plumbing([after], **realised(before))
    assert result == PlumbingPlan(delete_ports=[ep.port], create_endpoints=[ep])


def test_removed_container_loses_only_its_port_namespace_and_command():
    before = make_plan()
    after = make_plan(containers={"b": None, "c": None}, ips={"b": "10.60.0.12", "c": "10.60.0.13"})
    seen = realised(before)
    result = plan_plumbing([after], **seen)
    assert result == PlumbingPlan(
        stop_commands=["t1/a"], delete_ports=[port(before, "a")], delete_netns=["sb-t1-a"]
    )


def test_foreign_namespaces_and_ports_are_never_deleted():
    plan = make_plan()
    seen = realised(plan)
    seen["observed_netns"] |= {"blue", "cni-1234", "sbx-other"}
    seen["observed_ports"]["eth9"] = OwnedPort("eth9", {"owner": "someone"}, 40)
    seen["observed_ports"]["vxlan0"] = OwnedPort("vxlan0", {}, None)
    assert plan_plumbing([plan], **seen).is_empty()
    gone = plan_plumbing([], **seen)
    assert set(gone.delete_netns) == {"sb-t1-a", "sb-t1-b", "sb-t1-c"}
    assert "eth9" not in gone.delete_ports and "vxlan0" not in gone.delete_ports


def test_removing_a_topology_leaves_the_other_alone():
    one, two = make_plan("t1"), make_plan("t2", subnet="10.61.0.0/24")
    seen = realised(one, two)
    result = plan_plumbing([two], **seen)
    assert result.delete_netns == ["sb-t1-a", "sb-t1-b", "sb-t1-c"]
    assert result.delete_ports == sorted(port(one, c) for c in "abc")
    assert result.delete_host_legs == [one.networks[0].host_leg.port]
    assert result.stop_commands == ["t1/a"]
    assert not (result.create_netns or result.create_endpoints or result.start_commands)


def test_attached_namespace_is_attached_not_created_and_only_unnamed():
    plan = make_plan(containers={"a": None, "ext": None}, attach={"ext": 4242})
    result = plan_plumbing([plan], {}, set(), {})
    assert result.create_netns == ["sb-t1-a"]
    assert result.attach_netns == [("sb-t1-ext", 4242)]
    gone = plan_plumbing([], **realised(plan))
    assert "sb-t1-ext" in gone.delete_netns  # the name goes; the process is not ours


def test_stale_attachment_is_renamed_and_its_port_remade():
    plan = make_plan(containers={"ext": None}, attach={"ext": 4242})
    result = plan_plumbing([plan], **realised(plan), stale_netns={"sb-t1-ext"})
    assert result.delete_netns == ["sb-t1-ext"]
    assert result.attach_netns == [("sb-t1-ext", 4242)]
    assert result.delete_ports == [port(plan, "ext")]
    assert result.create_endpoints == list(plan.containers[0].endpoints)


def test_missing_namespace_is_remade_with_its_ports_and_command():
    plan = make_plan()
    seen = realised(plan)
    seen["observed_netns"].discard("sb-t1-a")
    seen["running"]["t1/a"] = False
    result = plan_plumbing([plan], **seen)
    assert result.create_netns == ["sb-t1-a"]
    assert result.delete_ports == [port(plan, "a")]
    assert result.create_endpoints == list(plan.containers[0].endpoints)
    assert result.stop_commands == ["t1/a"]  # clears the stale pid file
    assert result.start_commands == [Command("t1", "a", "sb-t1-a", "sleep 1000")]


def test_port_without_ofport_is_remade():
    plan = make_plan()
    seen = realised(plan)
    name = port(plan, "b")
    seen["observed_ports"][name] = replace(seen["observed_ports"][name], ofport=None)
    result = plan_plumbing([plan], **seen)
    assert result == PlumbingPlan(delete_ports=[name], create_endpoints=list(
        plan.containers[1].endpoints))


def test_commands_restart_when_dead_or_changed_and_stop_when_dropped():
    plan = make_plan(containers={"a": "sleep 1000", "b": "sleep 2000", "c": None})
    seen = realised(plan)
    seen["running"]["t1/a"] = False
    seen["observed_commands"]["t1/b"] = "sleep 5"
    seen["running"]["t1/c"] = True
    seen["observed_commands"]["t1/c"] = "old"
    result = plan_plumbing([plan], **seen)
    assert result.stop_commands == ["t1/a", "t1/b", "t1/c"]
    assert [c.key for c in result.start_commands] == ["t1/a", "t1/b"]
    assert not (result.delete_ports or result.create_endpoints or result.delete_netns)


# -- interfaces inside the namespaces (issue 14: observe, then repair) -----------------------


def interfaces_of(*plans: TopologyPlan) -> ObservedInterfaces:
    """What netlink would show where ``plans`` are fully configured."""
    seen = ObservedInterfaces()
    index = 100
    for topo in plans:
        for net in topo.networks:
            leg = net.host_leg
            index += 1
            seen.root[leg.port] = LinkState(leg.port, index, "openvswitch", leg.mac, leg.mtu,
                                            True, True, None,
                                            frozenset({(str(leg.ip), leg.prefixlen)}))
        for c in topo.containers:
            links = {"lo": LinkState("lo", 1, None, "00:00:00:00:00:00", 65536, True, True,
                                     None, frozenset({("127.0.0.1", 8)}))}
            routes = set()
            for n, ep in enumerate(c.endpoints, start=2):
                index += 1
                seen.root[ep.port] = LinkState(ep.port, index, "veth", "aa:00:00:00:00:01",
                                               ep.mtu, True, False, n)
                links[ep.ifname] = LinkState(ep.ifname, n, "veth", ep.mac, ep.mtu, True, True,
                                             index, frozenset({(str(ep.ip), ep.prefixlen)}))
                if ep.default_gateway is not None:
                    routes.add((str(ep.default_gateway), ep.ifname))
            seen.namespaces[c.netns] = NamespaceState(links, frozenset(routes))
    return seen


def _inner(seen: ObservedInterfaces, netns: str, ifname: str = "eth0") -> LinkState:
    return seen.namespaces[netns].links[ifname]


def _set_inner(seen: ObservedInterfaces, netns: str, **changes: object) -> None:
    ns = seen.namespaces[netns]
    links = {**ns.links, "eth0": replace(ns.links["eth0"], **changes)}
    seen.namespaces[netns] = replace(ns, links=links)


def test_configured_interfaces_plan_nothing_and_show_no_problem():
    plan = make_plan()
    seen = realised(plan)
    interfaces = interfaces_of(plan)
    assert plan_plumbing([plan], **seen, interfaces=interfaces).is_empty()
    problems = plumbing_problems([plan], seen["observed_ports"], seen["observed_netns"],
                                 interfaces)
    assert problems == Problems()


def test_interface_left_unconfigured_by_a_crash_is_configured_again():
    """The daemon was killed between adding the ports and configuring the namespaces."""
    plan = make_plan()
    interfaces = interfaces_of(plan)
    _set_inner(interfaces, "sb-t1-b", mac="5e:11:22:33:44:55", up=False, addresses=frozenset())
    ns = interfaces.namespaces["sb-t1-b"]
    interfaces.namespaces["sb-t1-b"] = replace(ns, default_routes=frozenset())
    leg = plan.networks[0].host_leg
    interfaces.root[leg.port] = replace(interfaces.root[leg.port], addresses=frozenset())
    result = plan_plumbing([plan], **realised(plan), interfaces=interfaces)
    assert result == PlumbingPlan(configure_endpoints=list(plan.containers[1].endpoints),
                                  configure_host_legs=[leg])


def test_each_difference_is_named_in_the_problem():
    plan = make_plan()
    seen = realised(plan)
    interfaces = interfaces_of(plan)
    _set_inner(interfaces, "sb-t1-a", mac="5e:11:22:33:44:55", mtu=1400, up=False,
               addresses=frozenset())
    ns = interfaces.namespaces["sb-t1-a"]
    interfaces.namespaces["sb-t1-a"] = replace(ns, default_routes=frozenset())
    problems = plumbing_problems([plan], seen["observed_ports"], seen["observed_netns"],
                                 interfaces)
    ep = plan.containers[0].endpoints[0]
    assert list(problems.ports) == [ep.port] and not problems.containers
    text = problems.ports[ep.port]
    for part in ("eth0:", "MAC 5e:11:22:33:44:55", "MTU 1400", "down", f"no address {ep.ip}",
                 f"no default route via {ep.default_gateway}"):
        assert part in text


def test_wrong_mtu_or_missing_route_alone_is_configured_again():
    plan = make_plan()
    interfaces = interfaces_of(plan)
    _set_inner(interfaces, "sb-t1-a", mtu=9000)
    ns = interfaces.namespaces["sb-t1-c"]
    interfaces.namespaces["sb-t1-c"] = replace(ns, default_routes=frozenset())
    result = plan_plumbing([plan], **realised(plan), interfaces=interfaces)
    assert result.configure_endpoints == [plan.containers[0].endpoints[0],
                                          plan.containers[2].endpoints[0]]
    assert not (result.delete_ports or result.create_endpoints)


def test_veth_whose_peer_is_gone_is_made_again():
    plan = make_plan()
    interfaces = interfaces_of(plan)
    ns = interfaces.namespaces["sb-t1-a"]
    interfaces.namespaces["sb-t1-a"] = replace(ns, links={"lo": ns.links["lo"]})
    result = plan_plumbing([plan], **realised(plan), interfaces=interfaces)
    assert result == PlumbingPlan(delete_ports=[port(plan, "a")],
                                  create_endpoints=list(plan.containers[0].endpoints))


def test_veth_host_end_gone_or_paired_elsewhere_is_made_again():
    plan = make_plan()
    interfaces = interfaces_of(plan)
    del interfaces.root[port(plan, "a")]
    _set_inner(interfaces, "sb-t1-b", peer_index=9999)
    result = plan_plumbing([plan], **realised(plan), interfaces=interfaces)
    assert result.delete_ports == [port(plan, "a"), port(plan, "b")]
    assert [ep.container for ep in result.create_endpoints] == ["a", "b"]


def test_an_address_the_container_added_itself_is_left_alone():
    plan = make_plan()
    interfaces = interfaces_of(plan)
    extra = _inner(interfaces, "sb-t1-c").addresses | {("192.0.2.7", 24)}
    _set_inner(interfaces, "sb-t1-c", addresses=extra)
    seen = realised(plan)
    assert plan_plumbing([plan], **seen, interfaces=interfaces).is_empty()
    assert plumbing_problems([plan], seen["observed_ports"], seen["observed_netns"],
                             interfaces) == Problems()


def test_a_host_leg_with_a_foreign_address_is_made_again():
    plan = make_plan()
    interfaces = interfaces_of(plan)
    leg = plan.networks[0].host_leg
    root = interfaces.root[leg.port]
    interfaces.root[leg.port] = replace(root, addresses=root.addresses | {("192.0.2.7", 24)})
    result = plan_plumbing([plan], **realised(plan), interfaces=interfaces)
    assert result == PlumbingPlan(delete_host_legs=[leg.port], create_host_legs=[leg])


def test_host_leg_interface_gone_is_made_again():
    plan = make_plan()
    interfaces = interfaces_of(plan)
    leg = plan.networks[0].host_leg
    del interfaces.root[leg.port]
    result = plan_plumbing([plan], **realised(plan), interfaces=interfaces)
    assert result == PlumbingPlan(delete_host_legs=[leg.port], create_host_legs=[leg])


def test_problems_name_missing_namespaces_ports_and_ofports():
    plan = make_plan()
    seen = realised(plan)
    seen["observed_netns"].discard("sb-t1-a")
    del seen["observed_ports"][port(plan, "b")]
    name = port(plan, "c")
    seen["observed_ports"][name] = replace(seen["observed_ports"][name], ofport=None)
    problems = plumbing_problems([plan], seen["observed_ports"], seen["observed_netns"],
                                 interfaces_of(plan))
    assert problems.containers == {("t1", "a"): "namespace sb-t1-a missing"}
    assert problems.ports == {
        port(plan, "b"): f"port {port(plan, 'b')} not on the bridge",
        name: f"port {name} has no OpenFlow port number",
    }


def test_an_image_under_docker_starts_first_and_its_namespace_is_plugged_once_it_runs() -> None:
    base = make_plan(containers={"a": None})
    image = replace(base.containers[0], command="exec docker run img", runtime="docker",
                    attach_name=("docker", base.containers[0].netns))
    waiting = replace(base, containers=(image,))
    plan = plan_plumbing([waiting], {}, set(), {})
    assert plan.create_netns == [] and plan.attach_netns == [] and plan.create_endpoints == []
    assert [c.runtime for c in plan.start_commands] == ["docker"]
    # it runs (pid 77): its namespace is attached and plugged, its command left running
    attached = replace(waiting, containers=(replace(image, attach_pid=77),))
    plan = plan_plumbing([attached], {}, set(), {"t1/a": True},
                         observed_commands={"t1/a": "exec docker run img"})
    assert plan.attach_netns == [(image.netns, 77)]
    assert [ep.container for ep in plan.create_endpoints] == ["a"]
    assert plan.start_commands == [] and plan.stop_commands == []
