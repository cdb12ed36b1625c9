"""The daemon's forwarding check: which interfaces keep a topology pending, and when a few
silent ones are no longer waited for."""

from __future__ import annotations

from ipaddress import IPv4Address
from typing import Any

import pytest

from controller.daemon import forwarding
from controller.daemon.forwarding import ForwardingCheck
from sbcore.plan.hostplan import Endpoint


def _ep(i: int, topology: str = "t") -> Endpoint:
    return Endpoint(topology, f"c{i}", "lan", f"sb-{topology}-c{i}", "eth0", f"p{i}",
                    "02:00:00:00:00:01", IPv4Address(f"10.0.0.{i}"), 24, 1500, None)


class _Plan:
    def __init__(self, eps: list[Endpoint]) -> None:
        self.eps = eps

    def endpoints(self) -> list[Endpoint]:
        return self.eps


def _answering(monkeypatch: pytest.MonkeyPatch, silent: set[str]) -> None:
    def answered(addresses: Any, _timeout: float) -> set[str]:
        return set(addresses) - silent
    monkeypatch.setattr(forwarding, "answered", answered)


def test_pending_until_every_interface_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    check = ForwardingCheck(wait=0, give_up=30)
    eps = [_ep(i) for i in range(1, 4)]
    check.plumbed(eps)
    _answering(monkeypatch, {"10.0.0.2"})
    assert "1 interface(s) (10.0.0.2)" in check.check([_Plan(eps)])["t"]
    _answering(monkeypatch, set())
    assert check.check([_Plan(eps)]) == {}


def test_a_silent_few_are_let_go_only_when_the_rest_forward(
        monkeypatch: pytest.MonkeyPatch) -> None:
    check = ForwardingCheck(wait=0, give_up=0)
    eps = [_ep(i) for i in range(1, 21)]
    check.plumbed(eps)
    _answering(monkeypatch, {"10.0.0.1"})  # 19 of 20 answer: that one drops pings itself
    assert check.check([_Plan(eps)]) == {}
    nothing = ForwardingCheck(wait=0, give_up=0)
    nothing.plumbed(eps)
    _answering(monkeypatch, {str(ep.ip) for ep in eps})  # the data path does not forward
    assert "20 interface(s)" in nothing.check([_Plan(eps)])["t"]


def test_interfaces_no_longer_wanted_are_forgotten(monkeypatch: pytest.MonkeyPatch) -> None:
    check = ForwardingCheck(wait=0, give_up=30)
    check.plumbed([_ep(1), _ep(2)])
    _answering(monkeypatch, {"10.0.0.1", "10.0.0.2"})
    assert check.check([_Plan([])]) == {}


def test_no_raw_socket_holds_nothing_back(monkeypatch: pytest.MonkeyPatch) -> None:
    def refused(_addresses: Any, _timeout: float) -> set[str]:
        raise PermissionError("Operation not permitted")
    monkeypatch.setattr(forwarding, "answered", refused)
    check = ForwardingCheck(wait=0, give_up=30)
    check.plumbed([_ep(1)])
    assert check.check([_Plan([_ep(1)])]) == {}
