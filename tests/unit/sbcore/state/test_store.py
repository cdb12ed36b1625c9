"""The desired-state encoding in Consul KV (pure parts)."""

from __future__ import annotations

import json

from sbcore.model import ipam, load_topology
from sbcore.model.desired import digest_of, topology_from_objects, topology_objects

TEXT = """
name: shop
networks:
  zeta: {subnet: 10.10.9.0/24}
  alpha: {subnet: 10.10.1.0/24}
routers:
  core: {networks: [zeta, alpha]}
policies:
  - {from: zeta, to: alpha, ports: [tcp/80]}
containers:
  web:
    networks: [zeta, alpha]
    services: [{name: web, port: 80, check: {tcp: 80, interval: 1s}}]
services:
  web: {vip: 10.10.9.100, port: 80}
"""


def _through_kv(objects: dict) -> dict:
    """What a read back from Consul gives: values stored as JSON with sorted keys."""
    return {k: json.loads(json.dumps(v, sort_keys=True)) for k, v in objects.items()}


def test_round_trip_keeps_the_topology_and_the_allocation():
    topology = load_topology(TEXT)
    allocation = ipam.allocate(topology)
    again, allocation_again = topology_from_objects(
        "shop", _through_kv(topology_objects(topology, allocation)))
    assert again == topology
    assert allocation_again == allocation


def test_round_trip_keeps_the_order_of_a_containers_networks():
    topology = load_topology(TEXT)
    objects = _through_kv(topology_objects(topology, ipam.allocate(topology)))
    again, _ = topology_from_objects("shop", objects)
    assert list(again.containers["web"].networks) == ["zeta", "alpha"]


def test_one_key_per_object_and_a_content_digest():
    topology = load_topology(TEXT)
    objects = topology_objects(topology, ipam.allocate(topology))
    assert sorted(objects) == ["containers/web", "networks/alpha", "networks/zeta",
                               "policies/0000", "routers/core", "services/web"]
    assert digest_of(objects) == digest_of(_through_kv(objects))
    changed = load_topology(TEXT.replace("tcp/80", "tcp/81"))
    assert digest_of(topology_objects(changed, ipam.allocate(changed))) != digest_of(objects)
