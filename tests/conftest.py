"""Hooks for the whole suite: in CI, a skipped integration test fails (tests/skipguard.py)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from tests.skipguard import forbidden_skip

pytest_plugins = ["pytester"]  # tests/unit/test_skipguard.py runs the hook in a pytest of its own


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if not report.skipped or hasattr(report, "wasxfail"):
        return
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    message = forbidden_skip(item.nodeid, {m.name for m in item.iter_markers()}, reason,
                             os.environ)
    if message is not None:
        report.outcome = "failed"
        report.longrepr = message
