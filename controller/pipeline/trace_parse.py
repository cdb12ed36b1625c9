"""OVS's output for ``switchboard trace``, parsed (pure).

``ovs-appctl ofproto/trace`` into passes through the pipeline and the flows matched in each;
a VIP's instances from ``ovs-ofctl dump-flows``; port names from ``ovs-ofctl show``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from controller.pipeline.flows import cookie_stage
from controller.pipeline.tables import table_name


@dataclass(frozen=True)
class Step:
    """One flow the packet matched."""

    table: int
    match: str
    priority: int | None  # None: no flow matched (table miss)
    cookie: int
    actions: tuple[str, ...] = ()

    @property
    def stage(self) -> str:
        """The stage that owns the flow (by its cookie), else the table's name."""
        return (cookie_stage(self.cookie) if self.cookie else None) or table_name(self.table)


@dataclass(frozen=True)
class Pass:
    """One walk through the pipeline: the first, then one per conntrack recirculation."""

    ct_state: str | None
    steps: tuple[Step, ...]
    datapath_actions: str


@dataclass(frozen=True)
class Trace:
    """A parsed ``ofproto/trace``."""

    passes: tuple[Pass, ...]

    @property
    def steps(self) -> list[Step]:
        return [s for p in self.passes for s in p.steps]

    @property
    def outputs(self) -> list[int | str]:
        """OpenFlow ports the packet leaves by (``"in_port"``: back where it came from)."""
        found: list[int | str] = []
        for step in self.steps:
            for action in step.actions:
                m = re.fullmatch(r"output:(\d+)", action)
                if m:
                    found.append(int(m.group(1)))
                elif action in ("IN_PORT", "output:IN_PORT"):
                    found.append("in_port")
        return found

    @property
    def group(self) -> int | None:
        """The select group the trace ended in (OVS cannot follow its hash), if any."""
        last = self.passes[-1] if self.passes else None
        if last is None or not last.steps or "recirc(" not in last.datapath_actions:
            return None
        for action in last.steps[-1].actions:
            m = re.fullmatch(r"group:(\d+)", action)
            if m:
                return int(m.group(1))
        return None

    @property
    def dropped_at(self) -> Step | None:
        """The step that dropped the packet, when it was dropped."""
        if self.outputs or self.group is not None or not self.passes:
            return None
        last = self.passes[-1]
        return last.steps[-1] if last.steps else None


_STEP = re.compile(
    r"^(?P<indent>\s*)(?P<table>\d+)\. (?:(?P<match>.*?),? ?priority (?P<prio>\d+)"
    r"(?:, cookie (?P<cookie>0x[0-9a-f]+))?|(?P<miss>No match\.?.*))$"
)
_RECIRC = re.compile(r"^recirc\(0x[0-9a-f]+\) - resume conntrack with (?:default )?"
                     r"ct_state=(?P<state>\S+)")
_SKIP = ("thaw", "Resuming from table", "bucket ", "->")


def parse_trace(text: str) -> Trace:
    """Parse ``ovs-appctl ofproto/trace`` output into passes of steps."""
    passes: list[Pass] = []
    ct_state: str | None = None
    steps: list[dict[str, Any]] = []
    in_bridge = False

    def close(datapath: str) -> None:
        passes.append(Pass(ct_state, tuple(
            Step(s["table"], s["match"], s["priority"], s["cookie"], tuple(s["actions"]))
            for s in steps), datapath))
        steps.clear()

    for raw in text.splitlines():
        line = raw.rstrip()
        recirc = _RECIRC.match(line)
        if recirc:
            ct_state = recirc.group("state")
            continue
        if line.startswith("bridge("):
            in_bridge = True
            continue
        if line.startswith("Datapath actions:"):
            close(line.partition(":")[2].strip())
            in_bridge = False
            continue
        if not in_bridge or not line.strip() or line.startswith(("Final flow", "Megaflow")):
            if line.startswith(("Final flow", "Megaflow")):
                in_bridge = False
            continue
        m = _STEP.match(line)
        if m:
            miss = m.group("miss") is not None
            steps.append({
                "table": int(m.group("table")),
                "match": "" if miss else (m.group("match") or "").rstrip(", "),
                "priority": None if miss else int(m.group("prio")),
                "cookie": int(m.group("cookie") or "0", 16),
                "actions": [],
            })
            continue
        action = line.strip()
        if steps and not action.startswith(_SKIP) and not set(action) <= {"-"}:
            steps[-1]["actions"].append(action)
    if steps:
        close("")
    return Trace(tuple(passes))


def nat_targets(flows_text: str, vip: str, proto: str) -> list[str]:
    """``IP:PORT`` of each instance a VIP's service_nat flows send new connections to."""
    targets = []
    for line in flows_text.splitlines():
        if f"nw_dst={vip}" in line and re.search(rf"\b{proto}\b", line):
            m = re.search(r"nat\(dst=([\d.]+(?::\d+)?)\)", line)
            if m and m.group(1) not in targets:
                targets.append(m.group(1))
    return targets


def port_names(show_text: str) -> dict[int, str]:
    """OpenFlow port number -> interface name, from ``ovs-ofctl show``."""
    return {int(m.group(1)): m.group(2)
            for m in re.finditer(r"^\s*(\d+)\(([^)]+)\):", show_text, re.MULTILINE)}
