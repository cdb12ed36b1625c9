"""Containers attached to a process or a namespace path: which of them can be plugged now,
and which cannot because what they attach to is gone."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sbcore.plan.hostplan import TopologyPlan


def dead_attachments(plans: list[TopologyPlan]) -> dict[tuple[str, str], str]:
    """(topology, container) -> why, of containers whose namespace to attach to is gone (an
    image whose namespace its own command makes, under Docker, is not one of them)."""
    return {(topo.name, c.name): "the process to attach to is not running"
            if c.attach_pid is not None else f"the namespace {c.attach_path} does not exist"
            for topo in plans for c in topo.containers
            if c.attached and c.runtime is None and pid_netns(c.attach_source) is None}


def without_dead_attachments(
    plans: list[TopologyPlan],
) -> tuple[list[TopologyPlan], list[str]]:
    """Plans minus containers whose attach process is gone, and a sentence for each. An
    image whose namespace follows its command (Docker) waits for it instead: its command
    stays."""
    kept, orphans = [], []
    for topo in plans:
        dead = [c for c in topo.containers if c.attached and pid_netns(c.attach_source) is None]
        orphans += [
            f"{topo.name}/{c.name}: process {c.attach_pid} to attach to is not running"
            if c.attach_pid is not None else
            f"{topo.name}/{c.name}: namespace {c.attach_path} to attach to does not exist"
            for c in dead if c.runtime is None
        ]
        containers = tuple(c if c not in dead else replace(c, attach_pid=None)
                           for c in topo.containers if c not in dead or c.runtime is not None)
        kept.append(replace(topo, containers=containers) if dead else topo)
    return kept, orphans


def pid_netns(source: int | str | None) -> tuple[int, int] | None:
    """(device, inode) of the namespace of a pid or at a path; None when there is none."""
    path = f"/proc/{source}/ns/net" if isinstance(source, int) else source
    try:
        st = Path(str(path)).stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino
