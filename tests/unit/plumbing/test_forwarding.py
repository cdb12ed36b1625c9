"""The ARP request a forwarding probe sends, and what counts as the switch's answer."""

from __future__ import annotations

from ipaddress import IPv4Address

from plumbing.forwarding import Probe, arp_request, is_answer

PROBE = Probe("sb-t-c1", "eth0", "02:00:00:00:00:0a", IPv4Address("10.1.0.10"),
              IPv4Address("10.1.0.254"))


def _reply(spa: str, tpa: str, op: int = 2) -> bytes:
    return (bytes.fromhex("02000000000a" "02000000fffe" "0806" "0001" "0800" "06" "04")
            + op.to_bytes(2, "big") + bytes.fromhex("02000000fffe")
            + IPv4Address(spa).packed + bytes.fromhex("02000000000a") + IPv4Address(tpa).packed)


def test_request_is_a_broadcast_arp_who_has_from_the_interface() -> None:
    frame = arp_request(PROBE)
    assert len(frame) == 42
    assert frame[:6] == b"\xff" * 6 and frame[6:12] == bytes.fromhex("02000000000a")
    assert frame[12:14] == b"\x08\x06" and frame[20:22] == b"\x00\x01"
    assert frame[28:32] == IPv4Address("10.1.0.10").packed
    assert frame[38:42] == IPv4Address("10.1.0.254").packed


def test_only_the_reply_for_the_target_to_this_address_counts() -> None:
    assert is_answer(_reply("10.1.0.254", "10.1.0.10"), PROBE)
    assert not is_answer(_reply("10.1.0.254", "10.1.0.10", op=1), PROBE)  # a request
    assert not is_answer(_reply("10.1.0.9", "10.1.0.10"), PROBE)  # another address
    assert not is_answer(_reply("10.1.0.254", "10.1.0.11"), PROBE)  # for someone else
    assert not is_answer(arp_request(PROBE), PROBE)  # its own request, seen going out
    assert not is_answer(b"\x00" * 20, PROBE)
