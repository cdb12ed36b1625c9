"""Service discovery against the real Consul agent at 127.0.0.1:8500 (DNS on :8600).

Every service here is named ``sbtest-*`` and every topology ``sbtest-*``; each test removes
what it registered, by ID. The topology's subnet is in 127.0.0.0/8 so that Consul's checks
reach small servers the tests run on the loopback interface.
"""

from __future__ import annotations

import http.server
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import consul
import pytest

from discovery.instances import CHECK_KEY, CheckSpec, Instance, desired_instances
from discovery.registry import Discoverer, Registry
from discovery.sync import ServiceSync
from sbcore.model import load_topology
from sbcore.model.ipam import allocate
from sbcore.state.store import consul_client

pytestmark = pytest.mark.integration

TOPOLOGY = "sbtest-disc"
WEB_IP, API_IP = "127.77.0.10", "127.77.0.2"


def topology_text(web_port: int, api_port: int, with_api: bool = True,
                  web_check: str = "{http: /, interval: 1s, timeout: 1s}") -> str:
    api = f"""
  api-1:
    networks: [lan]
    services:
      - {{name: sbtest-api, port: {api_port}, check: {{tcp: {api_port}, interval: 1s}}}}
"""
    return f"""
name: {TOPOLOGY}
networks:
  lan: {{subnet: 127.77.0.0/24}}
containers:
  web:
    networks: {{lan: {{ip: {WEB_IP}}}}}
    services:
      - name: sbtest-web
        port: {web_port}
        tags: [v1, sbtest]
        check: {web_check}
{api if with_api else ""}"""


def instances(text: str) -> list[Instance]:
    topology = load_topology(text)
    return desired_instances(topology, allocate(topology))


def wait_for(predicate: Callable[[], Any], timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.2)


@pytest.fixture
def client() -> consul.Consul:
    """The shared agent (scripts/start-services.sh); without it, or with a token it refuses,
    the tests fail: an agent that does not answer is not a reason to test nothing."""
    c = consul_client("http://127.0.0.1:8500")  # the token on every request (ACLs are on)
    c.agent.self()
    return c


@pytest.fixture
def cleanup(client: consul.Consul) -> Iterator[list[str]]:
    """Service IDs to deregister after the test (also before, in case a run was killed)."""
    ids: list[str] = []
    yield ids
    for sid in ids:
        forget(client, sid)


def forget(client: consul.Consul, sid: str) -> None:
    """Deregister ``sid`` if it is there (with ACLs on, Consul refuses an unknown one)."""
    try:
        client.agent.service.deregister(sid)
    except consul.ConsulException as exc:
        if "Unknown service" not in str(exc):
            raise


@pytest.fixture
def servers() -> Iterator[tuple[int, int]]:
    """An HTTP server on WEB_IP and a listening TCP socket on API_IP: (web port, api port)."""
    httpd = http.server.HTTPServer((WEB_IP, 0), _QuietHandler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    listener = socket.create_server((API_IP, 0))
    try:
        yield httpd.server_address[1], listener.getsockname()[1]
    finally:
        httpd.shutdown()
        httpd.server_close()
        listener.close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok\n")

    def log_message(self, *args: Any) -> None:
        pass


def start(client: consul.Consul, cleanup: list[str], desired: list[Instance]) -> ServiceSync:
    cleanup.extend(i.id for i in desired)
    for sid in cleanup:  # leftovers of a killed run
        forget(client, sid)
    return ServiceSync(client)


# --------------------------------------------------------------------------- topology sync


def test_reconcile_registers_instances_as_declared(
    client: consul.Consul, cleanup: list[str], servers: tuple[int, int]
) -> None:
    web_port, api_port = servers
    desired = instances(topology_text(web_port, api_port))
    sync = start(client, cleanup, desired)

    plan = sync.reconcile(desired, {TOPOLOGY}, complete=True)
    assert [i.id for i in plan.register] == ["sb.sbtest-disc.web.sbtest-web",
                                            "sb.sbtest-disc.api-1.sbtest-api"]

    services = client.agent.services()
    web = services["sb.sbtest-disc.web.sbtest-web"]
    assert web["Service"] == "sbtest-web"
    assert web["Address"] == WEB_IP
    assert web["Port"] == web_port
    assert web["Tags"] == ["v1", "sbtest", f"topology-{TOPOLOGY}"]  # the topology's marker
    assert {k: v for k, v in web["Meta"].items() if k != CHECK_KEY} == {
        "switchboard": "1", "switchboard-topology": TOPOLOGY, "switchboard-container": "web"}
    assert CheckSpec.decode(web["Meta"][CHECK_KEY]) == CheckSpec(
        "http", f"http://{WEB_IP}:{web_port}/", "1s", "1s")
    api = services["sb.sbtest-disc.api-1.sbtest-api"]
    assert (api["Service"], api["Address"], api["Port"], api["Tags"]) == (
        "sbtest-api", API_IP, api_port, [f"topology-{TOPOLOGY}"])
    assert api["Meta"]["switchboard-container"] == "api-1"

    checks = client.agent.checks()
    web_check = checks["service:sb.sbtest-disc.web.sbtest-web"]
    api_check = checks["service:sb.sbtest-disc.api-1.sbtest-api"]
    assert (web_check["ServiceID"], web_check["ServiceName"], web_check["Type"]) == (
        "sb.sbtest-disc.web.sbtest-web", "sbtest-web", "http")
    assert (api_check["ServiceName"], api_check["Type"]) == ("sbtest-api", "tcp")

    # The agent does not return check definitions; the checks' results name their targets.
    def passing() -> dict[str, Any] | None:
        now = client.agent.checks()
        ours = [now["service:" + i.id] for i in desired]
        return now if all(c["Status"] == "passing" for c in ours) else None

    now = wait_for(passing)
    assert now, f"checks did not pass: {client.agent.checks()}"
    assert f"http://{WEB_IP}:{web_port}/" in now["service:sb.sbtest-disc.web.sbtest-web"]["Output"]
    assert f"{API_IP}:{api_port}" in now["service:sb.sbtest-disc.api-1.sbtest-api"]["Output"]

    resolver = Discoverer("sbtest-discoverer", Registry("sbtest-registry", client))
    assert wait_for(lambda: resolver.resolve("sbtest-web")) == [(WEB_IP, web_port)]
    assert resolver.resolve("v1.sbtest-web.service.consul") == [(WEB_IP, web_port)]


def test_second_reconcile_registers_nothing(
    client: consul.Consul, cleanup: list[str], servers: tuple[int, int]
) -> None:
    desired = instances(topology_text(*servers))
    sync = start(client, cleanup, desired)
    sync.reconcile(desired, {TOPOLOGY}, complete=True)
    assert (sync.registrations, sync.deregistrations) == (2, 0)
    before = client.agent.services()
    again = sync.reconcile(instances(topology_text(*servers)), {TOPOLOGY}, complete=True)
    assert again.empty
    assert (sync.registrations, sync.deregistrations) == (2, 0)
    assert client.agent.services() == before


def test_changed_check_replaces_the_old_one(
    client: consul.Consul, cleanup: list[str], servers: tuple[int, int]
) -> None:
    web_port, api_port = servers
    desired = instances(topology_text(web_port, api_port))
    sync = start(client, cleanup, desired)
    sync.reconcile(desired, {TOPOLOGY}, complete=True)

    edited = instances(topology_text(web_port, api_port,
                                     web_check=f"{{tcp: {web_port}, interval: 2s}}"))
    plan = sync.reconcile(edited, {TOPOLOGY}, complete=True)
    assert [i.id for i in plan.register] == ["sb.sbtest-disc.web.sbtest-web"]
    web_checks = [c for c in client.agent.checks().values()
                  if c["ServiceID"] == "sb.sbtest-disc.web.sbtest-web"]
    assert [c["Type"] for c in web_checks] == ["tcp"]
    assert sync.reconcile(edited, {TOPOLOGY}, complete=True).empty


def test_removed_instance_is_deregistered_and_others_survive(
    client: consul.Consul, cleanup: list[str], servers: tuple[int, int]
) -> None:
    desired = instances(topology_text(*servers))
    sync = start(client, cleanup, desired)
    foreign_id, other_id = "sbtest-foreign-1", "sb-sbtest-other-web-sbtest-web"
    cleanup.extend([foreign_id, other_id])
    client.agent.service.register("sbtest-foreign", service_id=foreign_id,
                                  address="127.0.0.1", port=9)
    client.agent.service.register(  # ours, but of a topology this sync does not own
        "sbtest-web", service_id=other_id, address="127.0.0.1", port=9,
        meta={"switchboard": "1", "switchboard-topology": "sbtest-other",
              "switchboard-container": "web"})
    registry = Registry("sbtest-registry", client)
    seed = registry.register("sbtest-seed", "127.0.0.1", 8123)
    cleanup.append(seed.id)
    sync.reconcile(desired, {TOPOLOGY}, complete=True)

    smaller = instances(topology_text(*servers, with_api=False))
    plan = sync.reconcile(smaller, {TOPOLOGY}, complete=False)
    assert plan.deregister == [] and "sb.sbtest-disc.api-1.sbtest-api" in client.agent.services()

    plan = sync.reconcile(smaller, {TOPOLOGY}, complete=True)
    assert plan.register == [] and plan.deregister == ["sb.sbtest-disc.api-1.sbtest-api"]
    assert sync.deregistrations == 1
    services = client.agent.services()
    assert "sb.sbtest-disc.api-1.sbtest-api" not in services
    assert "service:sb.sbtest-disc.api-1.sbtest-api" not in client.agent.checks()
    assert {"sb.sbtest-disc.web.sbtest-web", foreign_id, other_id, seed.id} <= set(services)

    plan = sync.reconcile([], {TOPOLOGY}, complete=True)  # as on `switchboard down`
    assert plan.deregister == ["sb.sbtest-disc.web.sbtest-web"]
    assert {foreign_id, other_id, seed.id} <= set(client.agent.services())


# --------------------------------------------------------------------------- programmatic API


def test_seed_api_registers_and_discovers(client: consul.Consul, cleanup: list[str]) -> None:
    registry = Registry("sbtest-registry")
    discoverer = Discoverer("sbtest-discoverer", registry)
    foreign_id = "sbtest-foreign-2"
    cleanup.append(foreign_id)
    client.agent.service.register("sbtest-foreign", service_id=foreign_id,
                                  address="127.0.0.1", port=9, tags=["x"])

    with pytest.raises(ValueError, match="'my-port'"):
        registry.register("sbtest-seed", "127.0.0.1", "my-port")
    inst = registry.register("sbtest-seed", "127.0.0.1", "8123", tags=["sbtest"])
    cleanup.append(inst.id)
    assert inst.id == "sb-reg-sbtest-registry-sbtest-seed-127.0.0.1-8123"
    assert registry.register("sbtest-seed", "127.0.0.1", 8123, tags=["sbtest"]) == inst
    assert registry.sync.registrations == 1
    assert registry.services() == [inst]
    entry = client.agent.services()[inst.id]
    assert entry["Meta"] == {"switchboard": "1", "switchboard-registry": "sbtest-registry"}

    services = discoverer.discover()
    [endpoint] = services["sbtest-seed"]
    assert (endpoint.id, endpoint.address, endpoint.port, endpoint.tags, endpoint.status) == (
        inst.id, "127.0.0.1", 8123, ("sbtest",), "passing")
    assert [e.id for e in services["sbtest-foreign"]] == [foreign_id]  # not only its own
    assert "consul" in services
    assert [e.id for e in discoverer.discover("sbtest-seed", passing_only=True)["sbtest-seed"]] \
        == [inst.id]

    assert wait_for(lambda: discoverer.resolve("sbtest-seed")) == [("127.0.0.1", 8123)]
    assert discoverer.resolve("sbtest-no-such-service") == []

    assert registry.deregister("sbtest-other-name") == []
    assert registry.deregister() == [inst.id]
    assert registry.services() == []
    assert discoverer.discover("sbtest-seed") == {"sbtest-seed": []}
    assert foreign_id in client.agent.services()


def test_registry_check_and_hostname_address(client: consul.Consul, cleanup: list[str]) -> None:
    registry = Registry("sbtest-registry", "http://127.0.0.1:8500")
    inst = registry.register("sbtest-named", "db.sbtest.invalid", 5432,
                             check={"tcp": 5432, "interval": "30s", "timeout": "1s"})
    cleanup.append(inst.id)
    check = client.agent.checks()["service:" + inst.id]
    assert check["Type"] == "tcp" and check["ServiceName"] == "sbtest-named"
    assert registry.services() == [inst]
    assert registry.deregister("sbtest-named") == [inst.id]
