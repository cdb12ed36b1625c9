"""Diff between the flows a switch holds and the flows wanted, by cookie. Pure."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from controller.pipeline.flows import Flow, SelectGroup


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


@dataclass(frozen=True)
class GroupDiff:
    """Groups to add, rewrite and delete."""

    add: tuple[SelectGroup, ...]
    modify: tuple[SelectGroup, ...]
    delete: tuple[SelectGroup, ...]

    def __bool__(self) -> bool:
        return bool(self.add or self.modify or self.delete)


def diff_groups(
    wanted: Iterable[SelectGroup], installed: dict[int, SelectGroup | None]
) -> GroupDiff:
    """Groups are identified by id; one whose content is unknown (None) is rewritten once."""
    by_id = {g.group_id: g for g in wanted}
    return GroupDiff(
        add=tuple(g for i, g in sorted(by_id.items()) if i not in installed),
        modify=tuple(
            g for i, g in sorted(by_id.items()) if i in installed and installed[i] != g
        ),
        delete=tuple(
            SelectGroup(i, ()) for i in sorted(installed) if i not in by_id
        ),
    )
