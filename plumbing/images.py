"""Image containers: the runtime's command that runs an OCI image in the namespace
Switchboard made, and the few runtime calls the daemon makes (JSON output only).

An image container is supervised as a command container is (plumbing.processes,
plumbing.supervisor): its command is ``podman run`` in the foreground, started from the
host's namespaces (runc refuses to set up a container from inside the namespace it joins),
with ``--network ns:/run/netns/<netns>``. So the restart policy, its backoff, the exit status
(``podman run`` exits with the container's), the log (the container's output, relayed by
the runtime) and adoption after a daemon restart are those of commands. The runtime's
container is named after the namespace and carries labels naming its owner; the daemon
removes it (``rm -f``) whenever it stops the command, and ``--replace`` removes one a killed
client left behind.
"""

from __future__ import annotations

import json
import logging
import shlex
import shutil
import subprocess
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from plumbing.netns import NETNS_DIR
from plumbing.resolvconf import path_of

if TYPE_CHECKING:
    from sbcore.plan.hostplan import ContainerPlan, TopologyPlan

LOG = logging.getLogger(__name__)

RUNTIMES = ("podman", "docker")
DEFAULT_RUNTIME = "podman"
LABEL = "switchboard"  # label keys: switchboard.topology, .container, .prefix, .spec
CALL_TIMEOUT = 30.0


class ImageError(RuntimeError):
    """The runtime cannot run an image container here (the message says why)."""


def run_command(runtime: str, c: ContainerPlan, prefix: str, cidfile: Path | None = None
                ) -> str:
    """The shell command that runs ``c``'s image in its namespace, in the foreground.

    Podman joins the namespace Switchboard made (``--network ns:``). Docker cannot join a
    namespace by path: its container starts with ``--network none`` and the plumber plugs
    the container's own namespace once it runs (as ``attach: {docker: NAME}``). With
    ``cidfile``, the runtime writes its container's ID there as it creates it (the file of
    an earlier run must be gone: plumbing.processes removes it before each start), and
    ``status`` reads it without asking the runtime."""
    spec = c.image
    assert spec is not None
    if runtime == "docker":
        argv = ["docker", "run", "--rm", "--name", c.netns, "--hostname", c.name,
                "--network", "none"]
    else:
        argv = [runtime, "run", "--rm", "--replace", "--name", c.netns, "--hostname", c.name,
                "--network", f"ns:{NETNS_DIR / c.netns}"]
    if cidfile is not None:
        argv += ["--cidfile", str(cidfile)]
    argv += ["--volume", f"{path_of(c.netns)}:/etc/resolv.conf:ro"]
    for key, value in (("topology", c.topology), ("container", c.name), ("prefix", prefix),
                       ("spec", spec.digest())):
        argv += ["--label", f"{LABEL}.{key}={value}"]
    for key, value in spec.env:
        argv += ["--env", f"{key}={value}"]
    for volume in spec.volumes:
        argv += ["--volume", volume]
    if spec.workdir:
        argv += ["--workdir", spec.workdir]
    if spec.user:
        argv += ["--user", spec.user]
    argv += ["--", spec.image, *(spec.args or ())]
    if runtime == "docker":  # no --replace: a container a killed client left goes first
        return (f"docker rm -f {shlex.quote(c.netns)} >/dev/null 2>&1; exec "
                + shlex.join(argv))
    return "exec " + shlex.join(argv)


def with_run_commands(plans: list[TopologyPlan], runtime: str, prefix: str,
                      cid_path: Callable[[str, str], Path] | None = None
                      ) -> list[TopologyPlan]:
    """The plans with each image container's command set to its runtime command
    (``cid_path(topology, container)``: where its runtime writes its container's ID)."""
    out = []
    for topo in plans:
        if not any(c.image for c in topo.containers):
            out.append(topo)
            continue
        containers = tuple(
            replace(c, command=run_command(runtime, c, prefix,
                                           cid_path(topo.name, c.name) if cid_path else None),
                    runtime=runtime,
                    attach_name=("docker", c.netns) if runtime == "docker" else None)
            if c.image else c for c in topo.containers)
        out.append(replace(topo, containers=containers))
    return out


def _call(argv: list[str], timeout: float = CALL_TIMEOUT) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                              check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise ImageError(f"{argv[0]} {argv[1]} failed: {err}") from err


def read_cid(path: Path) -> str | None:
    """The short ID in a ``--cidfile`` (None: none written yet)."""
    try:
        found = Path(path).read_text().strip()
    except OSError:
        return None
    return found[:12] or None


def missing_runtime(runtime: str) -> str | None:
    """Why ``runtime`` cannot run containers here (None: its binary is installed)."""
    if shutil.which(runtime) is None:
        return (f"{runtime} is not installed on this host (scripts/install-deps.sh "
                "installs it)")
    return None


def missing_images(runtime: str, images: Iterable[str]) -> dict[str, str]:
    """Image -> why it cannot run, for each image the runtime's store lacks."""
    found = {}
    for image in sorted(set(images)):
        if (why := missing_runtime(runtime)) is not None:
            found[image] = why
            continue
        if runtime == "docker":
            done = _call(["docker", "image", "inspect", image])
            absent = done.returncode != 0 and "No such image" in done.stderr
        else:
            done = _call([runtime, "image", "exists", image])
            absent = done.returncode == 1
        if absent:
            found[image] = (f"image {image} is not in {runtime}'s image store (no registry is "
                            "asked; scripts/build-image.sh builds the demo's image)")
        elif done.returncode != 0:
            found[image] = f"{runtime} image exists {image}: {done.stderr.strip()}"
    return found


def remove(runtime: str, names: Iterable[str], stop_timeout: int = 1) -> None:
    """Remove these containers of the runtime (stopping them first); absent ones are fine."""
    names = sorted(set(names))
    if not names or missing_runtime(runtime):
        return
    if runtime == "docker":  # absent ones are only complained about
        done = _call(["docker", "rm", "--force", *names])
        if done.returncode != 0 and "No such container" not in done.stderr:
            LOG.warning("docker rm %s: %s", " ".join(names), done.stderr.strip())
        return
    done = _call([runtime, "rm", "--force", "--ignore", "--time", str(stop_timeout), *names])
    if done.returncode != 0:
        LOG.warning("%s rm %s: %s", runtime, " ".join(names), done.stderr.strip())


def owned(runtime: str, prefix: str, topology: str | None = None) -> list[dict[str, Any]]:
    """The runtime's containers labelled as this daemon's (``prefix``), as ``ps`` gives
    them in JSON (Id, Names, Image, State, Labels...); [] when the runtime is missing."""
    if missing_runtime(runtime):
        return []
    json_format = "{{json .}}" if runtime == "docker" else "json"
    argv = [runtime, "ps", "--all", "--format", json_format,
            "--filter", f"label={LABEL}.prefix={prefix}"]
    if topology is not None:
        argv += ["--filter", f"label={LABEL}.topology={topology}"]
    done = _call(argv)
    if done.returncode != 0:
        raise ImageError(f"{runtime} ps: {done.stderr.strip()}")
    return parse_ps(done.stdout)


def parse_ps(text: str) -> list[dict[str, Any]]:
    """``podman ps --format json`` output (a JSON array), or ``docker ps --format '{{json
    .}}'`` output (one JSON object a line); empty output: none."""
    text = text.strip()
    if not text:
        return []
    if text.startswith("{"):
        return [row for line in text.splitlines() if line.strip()
                if isinstance(row := json.loads(line), dict)]
    data = json.loads(text)
    return data if isinstance(data, list) else []


def by_name(containers: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Name -> {id, image, state} of ``ps`` rows."""
    out = {}
    for row in containers:
        names = row.get("Names") or []
        for name in [names] if isinstance(names, str) else names:
            out[name] = {"id": str(row.get("Id") or row.get("ID", ""))[:12],
                         "image": row.get("Image"),
                         "state": row.get("State")}
    return out


def running_pids(runtime: str, names: Iterable[str]) -> dict[str, int]:
    """Name -> PID of the main process of each of these runtime containers that runs (one
    absent or stopped is left out). Raises ImageError when the runtime cannot tell."""
    names = set(names)
    if not names:
        return {}
    if (why := missing_runtime(runtime)) is not None:
        raise ImageError(why)
    if runtime == "docker":  # docker ps has no PID: inspect (absent names only complain)
        done = _call(["docker", "inspect", "--type", "container", *sorted(names)])
        if done.returncode != 0 and not done.stdout.strip():
            if "No such" in done.stderr:
                return {}
            raise ImageError(f"docker inspect: {done.stderr.strip()}")
        return {n: p for n, p in parse_docker_inspect(done.stdout).items() if n in names}
    done = _call([runtime, "ps", "--format", "json"])
    if done.returncode != 0:
        raise ImageError(f"{runtime} ps: {done.stderr.strip()}")
    return {n: p for n, p in parse_podman_pids(done.stdout).items() if n in names}


def parse_podman_pids(text: str) -> dict[str, int]:
    """Name -> PID from ``podman ps --format json`` (running containers only)."""
    found = {}
    for row in parse_ps(text):
        pid = row.get("Pid")
        if row.get("State") == "running" and isinstance(pid, int) and pid > 0:
            for name in row.get("Names") or []:
                found[name] = pid
    return found


def parse_docker_inspect(text: str) -> dict[str, int]:
    """Name -> PID from ``docker inspect`` (a JSON array; names start with ``/``)."""
    found = {}
    for row in parse_ps(text):
        state = row.get("State") or {}
        pid = state.get("Pid")
        if state.get("Running") and isinstance(pid, int) and pid > 0:
            found[str(row.get("Name", "")).lstrip("/")] = pid
    return found


def event_name(line: str) -> str | None:
    """The container an event line of ``podman events --format json`` (or ``docker events
    --format '{{json .}}'``) is about, None for another kind of line."""
    try:
        event = json.loads(line)
    except ValueError:
        return None
    if not isinstance(event, dict):
        return None
    if event.get("Type", "container") != "container":
        return None
    name = event.get("Name") or (event.get("Actor") or {}).get("Attributes", {}).get("name")
    return str(name) if name else None
