"""What the image benchmarks' baseline takes back of netavark's firewall rules. Pure."""

from __future__ import annotations

from bench.netavark import netavark_lines

SAVED = """:NETAVARK_FORWARD - [0:0]
:CNI-1234 - [0:0]
-A FORWARD -m comment --comment "netavark firewall plugin rules" -j NETAVARK_FORWARD
-A FORWARD -s 10.88.0.0/16 -j CNI-1234
-A NETAVARK_FORWARD -d 10.180.128.0/20 -j ACCEPT
""".splitlines()


def test_only_netavark_chains_and_the_rules_in_or_to_them() -> None:
    chains, rules = netavark_lines(line for line in SAVED)  # a generator is read once
    assert chains == ["NETAVARK_FORWARD"]
    assert rules == [SAVED[2], SAVED[4]]
