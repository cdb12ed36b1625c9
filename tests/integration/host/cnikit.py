"""Run the CNI plugin as a runtime does: the environment and the configuration on stdin."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import consul

from tests.harness import ROOT, Switchboard, sh

SUBNET = "10.181.1.0/24"


def cni(command: str, config: dict[str, Any] | str, container_id: str = "", netns: str = "",
        ifname: str = "eth0", args: str = "", env: dict[str, str] | None = None,
        ) -> tuple[int, dict[str, Any] | None, str]:
    """One plugin run: exit status, the JSON it printed (None: nothing) and its stderr."""
    environ = {"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT),
               "CNI_COMMAND": command, "CNI_PATH": "/opt/cni/bin:/usr/lib/cni"}
    for key, value in (("CNI_CONTAINERID", container_id), ("CNI_NETNS", netns),
                       ("CNI_IFNAME", ifname), ("CNI_ARGS", args)):
        if value:
            environ[key] = value
    environ.update(env or {})
    stdin = config if isinstance(config, str) else json.dumps(config)
    proc = subprocess.run([sys.executable, "-m", "cni.main"], input=stdin, env=environ,
                          capture_output=True, text=True, timeout=120)
    out = json.loads(proc.stdout) if proc.stdout.strip() else None
    return proc.returncode, out, proc.stderr


def config(sb: Switchboard, token_file: Path, topology: str, network: str = "net",
           version: str = "1.0.0", **more: Any) -> dict[str, Any]:
    """A network configuration for the test daemon (its KV prefix, a token file)."""
    return {"cniVersion": version, "name": "sbt-cni-net", "type": "switchboard",
            "topology": topology, "network": network, "prefix": sb.prefix,
            "tokenFile": str(token_file), "timeout": 60, **more}


def token_file(directory: Path) -> Path:
    """The management token the tests hold, in a file (the ``tokenFile`` option)."""
    path = directory / "token"
    path.write_text(os.environ.get("CONSUL_HTTP_TOKEN", ""))
    path.chmod(0o600)
    return path


def kv_tree(prefix: str) -> dict[str, bytes]:
    """The desired state's keys and values (reports and events change by themselves)."""
    _, entries = consul.Consul().kv.get(f"{prefix}/", recurse=True)
    return {e["Key"]: e["Value"] for e in entries or []
            if not e["Key"].startswith((f"{prefix}/status/", f"{prefix}/events/",
                                        f"{prefix}/hosts/", f"{prefix}/slots/"))}


def cni_keys(prefix: str, topology: str) -> list[str]:
    _, keys = consul.Consul().kv.get(f"{prefix}/topologies/{topology}/cni/", keys=True)
    return sorted(keys or [])


def namespaces() -> set[str]:
    """The namespaces of these tests (others run on this machine at the same time)."""
    return {line.split()[0] for line in sh("ip netns list").stdout.splitlines()
            if "sbt-cni" in line}


def ports(bridge: str) -> set[str]:
    return set(sh(f"ovs-vsctl list-ports {bridge}").stdout.split())


def rows(sb: Switchboard, topology: str) -> list[dict[str, Any]]:
    """The container rows `switchboard status --json` shows for a topology."""
    data = json.loads(sb.cli("status", topology, "--json").stdout)
    return data["topologies"][0]["containers"]
