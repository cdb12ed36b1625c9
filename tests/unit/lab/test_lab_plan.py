"""The lab's plan (names, addresses, roles, directories) and its preflight checks: pure."""

from __future__ import annotations

import pytest

from lab import checks
from lab.config import Lab, LabError, plan_lab


def test_host_k_gets_the_kth_address_of_each_subnet_and_the_first_three_are_servers() -> None:
    lab = plan_lab("sblab", 4)
    assert [(h.name, h.netns, h.control_ip, h.tunnel_ip, h.server) for h in lab.hosts] == [
        ("h1", "sblab-h1", "10.99.0.1", "10.99.1.1", True),
        ("h2", "sblab-h2", "10.99.0.2", "10.99.1.2", True),
        ("h3", "sblab-h3", "10.99.0.3", "10.99.1.3", True),
        ("h4", "sblab-h4", "10.99.0.4", "10.99.1.4", False),
    ]


def test_each_host_has_its_own_directories_and_container_prefix() -> None:
    h2 = plan_lab("sblab", 2).host("h2")
    env = h2.env()
    assert env["SWITCHBOARD_NETNS_PREFIX"] == "sblab-h2-"
    assert env["SWITCHBOARD_OVSDB"] == "unix:/run/switchboard/lab/sblab/h2/ovs/db.sock"
    assert env["SWITCHBOARD_STATE"] == "/var/lib/switchboard/lab/sblab/h2"
    assert env["SWITCHBOARD_TUNNEL_IP"] == "10.99.1.2"


def test_subnets_can_be_changed() -> None:
    lab = plan_lab("sblab", 2, "192.168.7.0/24", "192.168.8.0/24")
    assert lab.host("h2").control_ip == "192.168.7.2"
    assert lab.host("h2").tunnel_ip == "192.168.8.2"


@pytest.mark.parametrize(("args", "message"), [
    ((0,), "at least 1"),
    ((3, "10.99.0.0/24", "10.99.0.0/25"), "overlap"),
    ((3, "10.99.0.0/30", "10.99.1.0/24"), "do not fit"),
    ((3, "10.99.0.0/33", "10.99.1.0/24"), "bad subnet"),
])
def test_bad_plans_are_refused_with_a_reason(args: tuple, message: str) -> None:
    with pytest.raises(LabError, match=message):
        plan_lab("sblab", *args)


def test_unknown_host_names_the_known_ones() -> None:
    with pytest.raises(LabError, match="has no host 'h7'; its hosts are h1, h2"):
        plan_lab("sblab", 2).host("h7")


def test_the_state_file_round_trips() -> None:
    lab = plan_lab("sblab", 3)
    lab.hosts[1].pids = {"consul": 42}
    lab.hosts[1].killed = True
    assert Lab.from_json(lab.to_json()) == lab


def test_missing_programs_are_named_with_their_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(checks.shutil, "which",
                        lambda prog, path=None: None if prog in ("consul", "ovs-vswitchd")
                        else f"/usr/bin/{prog}")
    with pytest.raises(LabError, match=r"missing ovs-vswitchd, consul \(Debian packages: "
                                       r"consul openvswitch-switch\)"):
        checks.require_programs()


def test_not_root_is_one_sentence_with_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(checks.os, "geteuid", lambda: 1000)
    with pytest.raises(LabError, match="needs root .* run it with sudo"):
        checks.require_root()
