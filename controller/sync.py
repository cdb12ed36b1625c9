"""Diff between the flows a switch holds and the flows wanted, by cookie. Pure."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from controller.flows import Flow


@dataclass(frozen=True)
class FlowDiff:
    """What to delete (cookies) and add (flows) to turn installed into wanted."""

    delete: tuple[int, ...]
    add: tuple[Flow, ...]

    def __bool__(self) -> bool:
        return bool(self.delete or self.add)


def diff_flows(wanted: Iterable[Flow], installed: Iterable[int]) -> FlowDiff:
    """Flows whose cookie the switch lacks are added; cookies nobody wants are deleted.

    A cookie hashes the whole flow, so a changed flow shows up as one delete and one add.
    """
    by_cookie = {f.cookie: f for f in wanted}
    have = set(installed)
    return FlowDiff(
        delete=tuple(sorted(have - by_cookie.keys())),
        add=tuple(f for c, f in sorted(by_cookie.items()) if c not in have),
    )
