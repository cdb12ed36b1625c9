"""In CI no integration test may be skipped, except for a documented, real absence.

CI (``.ci/run``, with ``CI`` set in the environment) runs ``scripts/test.sh``, which installs
everything the integration tests use (root, Open vSwitch, Consul, dig, iperf3, Graphviz) and
starts the services: a skip there means a failure went unseen, so ``tests/conftest.py``
reports it as a failure naming the test. ``pytest -rs`` prints every skip of a run.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

# Skip reason (its start) -> why CI may lack that. Add an entry only for something CI cannot
# have, and say so here.
ALLOWED_ABSENCES: dict[str, str] = {
    "dockerd is not installed": (
        "scripts/install-deps.sh does not install Docker: on a machine with systemd, Debian's "
        "docker.io starts a system dockerd that makes its own bridge and sets the host's "
        "iptables FORWARD policy to drop, which a test command must not do to a user's host. "
        "The Docker runtime's tests run where docker.io is installed (apt-get install docker.io)"
    ),
}

GUARDED_MARKERS = frozenset({"integration", "lab"})


def in_ci(environ: Mapping[str, str]) -> bool:
    """``CI`` set to anything but empty, 0, false or no (as CI services set it: true)."""
    return environ.get("CI", "").strip().lower() not in {"", "0", "false", "no"}


def skip_reason(text: str) -> str:
    """The reason pytest gives for a skip, without its ``Skipped: `` prefix."""
    return text.removeprefix("Skipped: ").strip()


def forbidden_skip(test: str, markers: Collection[str], reason: str,
                   environ: Mapping[str, str],
                   allowed: Mapping[str, str] = ALLOWED_ABSENCES) -> str | None:
    """The failure message for a skip CI must not have; None when the skip may stand."""
    if not in_ci(environ) or not GUARDED_MARKERS & set(markers):
        return None
    reason = skip_reason(reason)
    if any(reason.startswith(absence) for absence in allowed):
        return None
    return (f"{test} was skipped in CI ({reason}): CI runs every integration test; fix what "
            f"it lacks, or add the reason to ALLOWED_ABSENCES in tests/skipguard.py with why")
