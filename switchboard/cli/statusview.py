"""What `switchboard status` shows of a topology: every host's report merged into one list
of container rows, judged against the current placement and the hosts' health. Pure."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

Row = dict[str, Any]


def merged_rows(
    reports: Mapping[str, Mapping[str, Any]],
    placement: Mapping[str, str],
    down: Mapping[str, str] | None = None,
    pinned: frozenset[str] = frozenset(),
) -> list[Row]:
    """Every host's container rows, each with its ``host`` (the row's own, else the host
    that reported it), sorted by container, network and host.

    A placed container's rows come only from the host it is placed on now: a host it was
    moved away from may still hold an old report naming it. A container placed on a host
    that is ``down`` (host -> why) shows state ``host down``; one no host reports yet shows
    ``not reported``. ``pinned``: containers that name their host (they never move).
    """
    down = down or {}
    rows = [{**row, "host": row.get("host") or host}
            for host, report in reports.items() for row in report.get("containers", [])]
    rows = [row for row in rows
            if placement.get(str(row.get("container")), row["host"]) == row["host"]]
    seen = {row.get("container") for row in rows}
    for container, host in placement.items():
        if container not in seen:
            rows.append({"container": container, "host": host, "network": "", "netns": "",
                         "interface": "", "ip": "", "mac": "", "port": "", "ofport": None,
                         "state": "not reported",
                         "problem": f"host {host} has not reported it yet"})
    for row in rows:
        host = row["host"]
        if host in down:
            row["state"] = "host down"
            row["problem"] = f"host {host} is down ({down[host]}); " + (
                "it names its host, so it stays there until the host is back"
                if row.get("container") in pinned else
                "it moves to a ready host once the host has been down for the reschedule "
                "grace period (`switchboard controller --reschedule-after`)")
    return sorted(rows, key=lambda r: (str(r.get("container")), str(r.get("network")),
                                       str(r.get("host"))))


def host_states(
    reports: Mapping[str, Mapping[str, Any]], digest: str, down: Mapping[str, str]
) -> list[str]:
    """``h1: converged``, ``h2: down`` (a down host's last report says nothing now),
    ``h3: pending (stale)`` for each host that reported the topology."""
    states = []
    for host, report in sorted(reports.items()):
        state = "down" if host in down else str(report.get("state"))
        stale = host not in down and report.get("digest") != digest
        states.append(f"{host}: {state}" + (" (stale)" if stale else ""))
    return states
