"""The topology model: the YAML schema of /work/shared/topology-format.md, version 1.

Pure: parses the text it is given, validates it and returns frozen pydantic objects.
Every problem a user can make raises :class:`TopologyError`, whose message names the
key path and, where the YAML parser knows it, the line.
"""

from sbcore.model.base import TopologyError
from sbcore.model.container import Attach, Attachment, Check, Container, ServiceInstance
from sbcore.model.loading import load_topology, load_topology_file, validation_problems
from sbcore.model.network import Network, Router
from sbcore.model.policy import Policy, PortSpec, parse_port_spec
from sbcore.model.publish import Publish, ServicePublish, parse_publish
from sbcore.model.scalars import (
    CIDR_PREFIX,
    DEFAULT_CHECK_INTERVAL,
    DEFAULT_MTU,
    SERVICE_PREFIX,
    Duration,
    HostName,
    IPv4,
    Name,
    Port,
    Subnet,
    parse_duration,
)
from sbcore.model.topology import ServiceSettings, Topology

__all__ = [
    "CIDR_PREFIX",
    "DEFAULT_CHECK_INTERVAL",
    "DEFAULT_MTU",
    "SERVICE_PREFIX",
    "Attach",
    "Attachment",
    "Check",
    "Container",
    "Duration",
    "HostName",
    "IPv4",
    "Name",
    "Network",
    "Policy",
    "Publish",
    "parse_publish",
    "Port",
    "PortSpec",
    "Router",
    "ServiceInstance",
    "ServicePublish",
    "ServiceSettings",
    "Subnet",
    "Topology",
    "TopologyError",
    "load_topology",
    "load_topology_file",
    "parse_duration",
    "parse_port_spec",
    "validation_problems",
]
