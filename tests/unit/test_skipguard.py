"""The CI skip guard's decision: which skips fail a CI run (tests/skipguard.py)."""

from __future__ import annotations

import pytest

from tests.skipguard import forbidden_skip, in_ci, skip_reason

CI = {"CI": "true"}


@pytest.mark.parametrize(("value", "ci"), [("true", True), ("1", True), ("TRUE", True),
                                           ("", False), ("0", False), ("false", False),
                                           ("no", False)])
def test_ci_is_any_value_but_empty_or_false(value: str, ci: bool) -> None:
    assert in_ci({"CI": value}) is ci
    assert in_ci({}) is False


def test_a_skipped_integration_test_fails_in_ci_naming_the_test_and_why() -> None:
    message = forbidden_skip("tests/integration/host/test_dns.py::test_x", {"integration"},
                             "Skipped: needs root", CI)
    assert message is not None
    assert message.startswith("tests/integration/host/test_dns.py::test_x was skipped in CI "
                              "(needs root)")
    assert forbidden_skip("t", {"lab", "integration"}, "x", CI) is not None
    assert forbidden_skip("t", {"lab"}, "x", CI) is not None


def test_outside_ci_or_for_unit_tests_a_skip_stands() -> None:
    assert forbidden_skip("t", {"integration"}, "needs root", {}) is None
    assert forbidden_skip("t", {"integration"}, "needs root", {"CI": "false"}) is None
    assert forbidden_skip("t", set(), "Graphviz is not installed", CI) is None
    assert forbidden_skip("t", {"parametrize"}, "x", CI) is None


def test_a_documented_absence_may_be_skipped_in_ci_and_nothing_else() -> None:
    allowed = {"no KVM": "CI runs in a container"}
    assert forbidden_skip("t", {"integration"}, "Skipped: no KVM here", CI, allowed) is None
    assert forbidden_skip("t", {"integration"}, "needs root", CI, allowed) is not None
    assert skip_reason("Skipped: needs root ") == "needs root"


def test_the_hook_turns_a_skip_into_a_failure_in_ci(pytester: pytest.Pytester,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The real hook, in a pytest run of its own."""
    pytester.makeconftest("from tests.conftest import pytest_runtest_makereport  # noqa\n")
    pytester.makeini("[pytest]\nmarkers =\n  integration: x\n")
    pytester.makepyfile(test_a="""
import pytest

@pytest.mark.integration
def test_skipped_integration():
    pytest.skip("needs root")

@pytest.mark.integration
@pytest.mark.skipif(True, reason="no dig")
def test_skipif_integration():
    pass

def test_skipped_unit():
    pytest.skip("no dot")
""")
    monkeypatch.setenv("CI", "true")
    result = pytester.runpytest_inprocess("-rs")
    result.assert_outcomes(failed=1, errors=1, skipped=1)
    result.stdout.fnmatch_lines(["*test_skipped_integration was skipped in CI (needs root)*"])
    monkeypatch.delenv("CI")
    pytester.runpytest_inprocess().assert_outcomes(skipped=3)
