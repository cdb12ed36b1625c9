"""The echo requests a forwarding check sends, and what counts as an answer to it."""

from __future__ import annotations

import struct

from plumbing.forwarding import checksum, echo_request, reply_ident


def _reply(ident: int, kind: int = 0) -> bytes:
    ip = bytes([0x45]) + bytes(19)
    return ip + struct.pack("!BBHHH", kind, 0, 0, ident, 1) + b"switchboard"


def test_request_is_an_echo_request_with_a_valid_checksum() -> None:
    packet = echo_request(0x1234, 7)
    assert packet[0] == 8 and struct.unpack("!HH", packet[4:8]) == (0x1234, 7)
    assert checksum(packet) == 0  # a correct checksum sums to zero


def test_only_echo_replies_carry_an_ident() -> None:
    assert reply_ident(_reply(0x1234)) == 0x1234
    assert reply_ident(_reply(0x1234, kind=8)) is None  # a request, not a reply
    assert reply_ident(b"\x45" + bytes(10)) is None
