"""The ``switchboard`` command (the top of the layout): :mod:`switchboard.cli.root` is the
group with ``up``, ``down`` and ``status``; the other commands live in a module each, next to
what only they show (``statusview``, ``graph``, ``logs``).

``main`` is imported on first use, so that a submodule (``switchboard.cli.output``, which
the lab's commands use too) comes without the whole command tree."""

from __future__ import annotations

from typing import Any

__all__ = ["main"]


def __getattr__(name: str) -> Any:
    if name == "main":
        from switchboard.cli.root import main

        return main
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
