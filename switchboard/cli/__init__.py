"""The ``switchboard`` command (the top of the layout): :mod:`switchboard.cli.main` is the
group with ``up``, ``down`` and ``status``; the other commands live in a module each, next to
what only they show (``statusview``, ``graph``, ``logs``)."""

from switchboard.cli.main import main

__all__ = ["main"]
