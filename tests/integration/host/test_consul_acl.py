"""Switchboard on a Consul agent with ACLs on, default deny, set up by the set-up's own script.

A private Consul server (free ports, own data) gets the configuration and tokens from
``scripts/consul-security.sh`` (as start-services.sh and start-host.sh do): a daemon, the
CLI and the Python API holding Switchboard's least-privilege token do everything they do
without ACLs; DNS answers through the anonymous token's dns policy; a wrong or missing token
is refused with one line that names Consul, the token's source and what to do, and changes
nothing. The shared agent is never touched; every process started here is stopped by PID.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import consul
import pytest

from discovery.registry import Registry
from sbcore.state import reach
from tests.consul_agent import Agent, daemon_on_agent, free_port, running_agent
from tests.harness import ROOT, Switchboard, in_ns, sh, wait_until

pytestmark = pytest.mark.integration

SCRIPT = ROOT / "scripts" / "consul-security.sh"
TOPOLOGY = "sbt-acl"
SERVICE = "sbtacl-api"
LAN = "10.236.48"
ACL_LAB = f"""
name: {TOPOLOGY}
networks:
  lan: {{subnet: {LAN}.0/24}}
containers:
  api:
    networks: {{lan: {{ip: {LAN}.11}}}}
    command: python3 -m http.server 8080
    services:
      - {{name: {SERVICE}, port: 8080, check: {{tcp: 8080, interval: 1s}}}}
  client:
    networks: {{lan: {{ip: {LAN}.10}}}}
"""


@pytest.fixture(scope="module")
def secrets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if os.geteuid() != 0 or shutil.which("consul") is None:
        pytest.skip("needs root and the consul binary")
    root = tmp_path_factory.mktemp("acl-secrets") / "secrets"
    subprocess.run(["bash", str(SCRIPT), "secrets", str(root), "--servers", "1"], check=True,
                   capture_output=True)
    return root / "server-0"


@pytest.fixture(scope="module")
def agent(secrets: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agent]:
    root = tmp_path_factory.mktemp("acl-consul")
    config = root / "acl.hcl"
    config.write_text(subprocess.run(["bash", str(SCRIPT), "config", str(secrets), "--acl-only"],
                                     check=True, capture_output=True, text=True).stdout)
    with running_agent(root, [f"-config-file={config}"]) as agent:
        yield agent


@pytest.fixture(scope="module")
def prefix() -> str:
    return f"sbacl-{os.getpid()}"


@pytest.fixture(scope="module")
def policies(agent: Agent, secrets: Path, prefix: str) -> Path:
    """The policies and tokens made by the script; Switchboard's token file."""
    env = dict(os.environ, CONSUL_HTTP_ADDR=agent.http.removeprefix("http://"))
    env.pop("CONSUL_HTTP_TOKEN", None)
    subprocess.run(["bash", str(SCRIPT), "acl", str(secrets), prefix], env=env, check=True,
                   capture_output=True, timeout=120)
    return secrets / "token"


def admin(agent: Agent, secrets: Path) -> consul.Consul:
    """A management client (what an operator holds), to look without Switchboard's eyes."""
    client = consul.Consul(port=agent.ports["http-port"])
    client.token = (secrets / "management.token").read_text().strip()  # not CONSUL_HTTP_TOKEN
    return client


def keys(agent: Agent, secrets: Path, prefix: str) -> list[str]:
    _, found = admin(agent, secrets).kv.get(f"{prefix}/", keys=True)
    return sorted(found or [])


@pytest.fixture(scope="module")
def sb(agent: Agent, policies: Path, prefix: str,
       tmp_path_factory: pytest.TempPathFactory) -> Iterator[Switchboard]:
    run = os.getpid()
    with daemon_on_agent(agent, tmp_path_factory.mktemp("acl-state"), prefix, f"sba{run}",
                         TOPOLOGY, env={"SWITCHBOARD_TOKEN_FILE": str(policies)},
                         drop_env=("SWITCHBOARD_TOKEN", "CONSUL_HTTP_TOKEN")) as board:
        yield board


def test_with_switchboards_token_up_discovery_and_dns_work(sb: Switchboard, agent: Agent,
                                                           secrets: Path, tmp_path: Path):
    sb.up(tmp_path, ACL_LAB)
    client_ns = sb.status(TOPOLOGY)
    netns = next(r["netns"] for r in client_ns["containers"] if r["container"] == "client")

    def passing() -> list[dict]:
        return admin(agent, secrets).health.service(SERVICE, passing=True)[1]
    assert wait_until(lambda: len(passing()) == 1, 20), sb.log_tail()
    # the container's resolver (the daemon's DNS proxy, scoped through the health API)
    answer = in_ns(netns, f"dig +short {SERVICE}.service.consul")
    assert answer.stdout.split() == [f"{LAN}.11"], answer
    # Consul's own DNS answers without a token: the anonymous token's dns policy
    direct = sh(f"dig +short -p {agent.dns[1]} @127.0.0.1 {SERVICE}.service.consul")
    assert direct.stdout.split() == [f"{LAN}.11"], direct
    services = json.loads(sb.cli("services", "--json").stdout)
    assert SERVICE in json.dumps(services)
    # the daemon's host record and its rescheduler lock (a session) were allowed too
    hosts = sb.cli("hosts").stdout
    assert "test-host" in hosts and "ready" in hosts, hosts
    assert wait_until(lambda: any(k.endswith("/leader") for k in
                                  keys(agent, secrets, sb.prefix)), 15), sb.log_tail()


@pytest.mark.parametrize(("token_env", "source"), [
    ({"SWITCHBOARD_TOKEN": "00000000-1111-2222-3333-444444444444"},
     "refused Switchboard's token from SWITCHBOARD_TOKEN: ACL not found"),
    ({}, "Switchboard sent no token: ACL not found"),
])
def test_a_wrong_or_missing_token_is_refused_clearly_and_changes_nothing(
    sb: Switchboard, agent: Agent, secrets: Path, tmp_path: Path, token_env: dict, source: str
):
    before = keys(agent, secrets, sb.prefix)
    services_before = sorted(admin(agent, secrets).agent.services())
    env = {k: v for k, v in sb.env.items()
           if k not in ("SWITCHBOARD_TOKEN_FILE", "SWITCHBOARD_TOKEN")}
    env.update(token_env)
    (tmp_path / "other.yaml").write_text(ACL_LAB.replace(TOPOLOGY, "sbt-acl2")
                                         .replace(LAN, "10.236.49"))
    for args in (["up", "--no-wait", str(tmp_path / "other.yaml")], ["down", TOPOLOGY],
                 ["status"]):
        result = subprocess.run(
            [sys.executable, "-m", "switchboard.cli", *args], env=env,
            cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert result.returncode == 1, result
        line = result.stderr.strip()
        assert line.startswith(f"error: the Consul agent at {agent.http} has ACLs on and "), line
        assert source in line and "nothing was changed" in line, line
        assert "--token, SWITCHBOARD_TOKEN or a token file" in line, line
        assert "Traceback" not in result.stderr
    assert keys(agent, secrets, sb.prefix) == before
    assert sorted(admin(agent, secrets).agent.services()) == services_before


def test_the_api_and_the_daemon_refuse_an_unknown_token(sb: Switchboard, agent: Agent,
                                                        tmp_path: Path):
    with pytest.raises(reach.TokenRefused, match="ACL not found"):
        Registry("sbtacl-reg", agent.http, token="00000000-1111-2222-3333-444444444444")
    env = dict(sb.env, SWITCHBOARD_TOKEN="00000000-1111-2222-3333-444444444444",
               SWITCHBOARD_BRIDGE=f"sbb{os.getpid()}", SWITCHBOARD_OF_PORT=str(free_port()),
               SWITCHBOARD_METRICS=f"127.0.0.1:{free_port()}", SWITCHBOARD_STATE=str(tmp_path),
               SWITCHBOARD_RUN=str(tmp_path))
    result = subprocess.run([sys.executable, "-m", "switchboard.cli", "controller"], env=env,
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "refused Switchboard's token from SWITCHBOARD_TOKEN: ACL not found" in result.stderr
    sh(f"ovs-vsctl --if-exists del-br sbb{os.getpid()}")
