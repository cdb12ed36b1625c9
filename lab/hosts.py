"""One simulated host's software: started with ``scripts/start-host.sh`` inside the host's
namespace (as on a real host, with per-host directories in the environment), and probed
from outside: is its Consul agent in a cluster with a leader, does its controller beat."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from lab.config import MAX_SERVERS, NETNS_DIR, Host, Lab, LabError

ROOT = Path(__file__).resolve().parents[1]
START_HOST = ROOT / "scripts" / "start-host.sh"
SECURITY = ROOT / "scripts" / "consul-security.sh"


def switchboard_command() -> str:
    """The daemon's command: this interpreter running the ``switchboard`` package of this
    checkout (start-host.sh runs in ``ROOT``, first on ``sys.path`` for ``-m``), so that the
    lab's daemons run the code that made the lab, as its commands do, whatever checkout the
    venv's own ``switchboard`` was installed from."""
    return f"{sys.executable} -m switchboard.cli"


def host_environ(host: Host) -> dict[str, str]:
    """The caller's environment without its Switchboard and OVS settings, plus the host's."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SWITCHBOARD_", "OVS_", "CONSUL_"))}
    env.update(host.env())
    env["SWITCHBOARD_CMD"] = switchboard_command()
    env["PYTHONPATH"] = str(ROOT)  # the hosts run this checkout's code, as its CLI does
    env["PATH"] = env.get("PATH", "") + ":/usr/local/sbin:/usr/sbin:/sbin"
    return env


def in_netns(host: Host, *command: str) -> list[str]:
    """``command`` run in the host's network namespace (nothing else of the process changes:
    unlike ``ip netns exec`` there is no private mount namespace, so namespaces the host's
    controller creates are visible to every host)."""
    return ["nsenter", f"--net={NETNS_DIR / host.netns}", "--", *command]


def secrets_dir(lab: Lab) -> Path:
    """Where the lab keeps what ``consul-security.sh secrets`` made (the CA, the gossip key,
    the ACL secrets and a bundle per host): the operator's machine of a real cluster."""
    return lab.state_dir / "secrets"


def make_secrets(lab: Lab) -> None:
    """Gossip key, CA, certificates and ACL secrets, one bundle per host (as a real
    cluster's set-up makes them once and copies each host's bundle to it)."""
    servers = len(lab.servers)
    made = subprocess.run(["bash", str(SECURITY), "secrets", str(secrets_dir(lab)), "--servers",
                           str(servers), "--clients", str(len(lab.hosts) - servers)],
                          capture_output=True, text=True)
    if made.returncode != 0:
        why = (made.stderr.strip().splitlines() or ["no output"])[-1]
        raise LabError(f"cannot make the lab's Consul secrets ({SECURITY.name}): {why}")


def bundle(lab: Lab, host: Host) -> Path:
    """The host's bundle: ``server-K`` for the K-th server, ``client-K`` for the K-th client."""
    kind = [h for h in lab.hosts if h.server == host.server]
    return secrets_dir(lab) / f"{'server' if host.server else 'client'}-{kind.index(host)}"


def start_host_args(lab: Lab, host: Host) -> list[str]:
    """The start-host.sh command line a real host with these addresses would use."""
    args = ["bash", str(START_HOST), "--no-install", "--host-id", host.name,
            "--bind", host.control_ip, "--tunnel-ip", f"{host.tunnel_ip}/{host.prefixlen_tunnel}"]
    if bundle(lab, host).exists():  # labs made before Consul's security have none
        args += ["--secrets", str(bundle(lab, host))]
    if lab.datapath == "netdev":
        args += ["--tunnel-port", "ul1"]
    if host.server:
        args += ["--server", "--bootstrap-expect", str(min(MAX_SERVERS, len(lab.hosts)))]
    for server in lab.servers:
        args += ["--join", server.control_ip]
    return args


def spawn(lab: Lab, host: Host) -> subprocess.Popen[bytes]:
    """Start the host's software in the background; its output goes to start-host.log."""
    for d in (host.state_dir, host.log_dir, host.run_dir, f"{host.state_dir}/etc"):
        Path(d).mkdir(parents=True, exist_ok=True)
    with open(host.log("start-host"), "ab") as log:
        return subprocess.Popen(in_netns(host, *start_host_args(lab, host)), cwd=ROOT,
                                env=host_environ(host), stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _http(host: Host, path: str) -> str | None:
    """GET the host's Consul agent (inside its namespace); the body, None on any failure."""
    out = subprocess.run(in_netns(host, "curl", "-fsS", "--max-time", "1",
                                  f"http://127.0.0.1:8500{path}"),
                         capture_output=True, text=True)
    return out.stdout if out.returncode == 0 else None


def consul_leader(host: Host) -> str | None:
    """The leader the host's agent knows (``10.99.0.2:8300``), None if none or no agent."""
    body = _http(host, "/v1/status/leader")
    leader = (body or "").strip().strip('"')
    return leader or None


def controller_connected(host: Host) -> bool:
    """True when the host's ovs-vswitchd has an OpenFlow connection to its controller (the
    daemon made its bridge and listens)."""
    out = subprocess.run(["ovs-vsctl", f"--db=unix:{host.ovs_run}/db.sock", "--timeout=2",
                          "--bare", "--columns=is_connected", "list", "Controller"],
                         capture_output=True, text=True)
    return out.returncode == 0 and "true" in out.stdout.split()


def last_error(host: Host) -> str:
    """The last line start-host.sh wrote (its reason when it failed)."""
    try:
        lines = Path(host.log("start-host")).read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return lines[-1] if lines else ""
