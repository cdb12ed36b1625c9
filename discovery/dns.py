"""A minimal DNS client for Consul's DNS interface (RFC 1035 messages, SRV of RFC 2782).

Encoding and decoding are pure; :func:`query` is the only I/O (UDP, then TCP when the
answer is truncated).
"""

from __future__ import annotations

import secrets
import socket
import struct
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address

__all__ = [
    "A",
    "AAAA",
    "CNAME",
    "SRV",
    "DNSError",
    "Message",
    "Question",
    "Record",
    "SrvData",
    "decode_message",
    "encode_message",
    "encode_query",
    "query",
    "srv_endpoints",
]

A, CNAME, AAAA, SRV = 1, 5, 28, 33
IN = 1
FLAG_QR, FLAG_TC, FLAG_RD = 0x8000, 0x0200, 0x0100
RCODE_NXDOMAIN = 3
_MAX_POINTER_JUMPS = 32


class DNSError(ValueError):
    """A malformed message, a bad name or a failed query."""


@dataclass(frozen=True)
class Question:
    name: str  # without the trailing dot
    type: int
    cls: int = IN


@dataclass(frozen=True)
class SrvData:
    priority: int
    weight: int
    port: int
    target: str


RData = str | SrvData | bytes  # A/AAAA: address text; CNAME: a name; SRV; other: raw bytes


@dataclass(frozen=True)
class Record:
    name: str
    type: int
    ttl: int
    data: RData
    cls: int = IN


@dataclass(frozen=True)
class Message:
    id: int
    flags: int = 0
    questions: tuple[Question, ...] = ()
    answers: tuple[Record, ...] = ()
    authority: tuple[Record, ...] = ()
    additional: tuple[Record, ...] = ()

    @property
    def rcode(self) -> int:
        return self.flags & 0xF

    @property
    def truncated(self) -> bool:
        return bool(self.flags & FLAG_TC)


# --------------------------------------------------------------------------- encoding


def encode_name(name: str) -> bytes:
    """A domain name as length-prefixed labels (no compression)."""
    out = bytearray()
    labels = name.rstrip(".").split(".") if name.strip(".") else []
    for label in labels:
        raw = label.encode("idna") if not label.isascii() else label.encode()
        if not 1 <= len(raw) <= 63:
            raise DNSError(f"bad DNS name {name!r}: labels must have 1 to 63 characters")
        out += bytes([len(raw)]) + raw
    out += b"\0"
    if len(out) > 255:
        raise DNSError(f"bad DNS name {name!r}: longer than 255 bytes")
    return bytes(out)


def _encode_rdata(rtype: int, data: RData) -> bytes:
    if isinstance(data, bytes):
        return data
    if isinstance(data, SrvData):
        return struct.pack("!HHH", data.priority, data.weight, data.port) + encode_name(
            data.target
        )
    if rtype == A:
        return IPv4Address(data).packed
    if rtype == AAAA:
        return IPv6Address(data).packed
    return encode_name(data)


def _encode_record(rec: Record) -> bytes:
    rdata = _encode_rdata(rec.type, rec.data)
    fixed = struct.pack("!HHIH", rec.type, rec.cls, rec.ttl, len(rdata))
    return encode_name(rec.name) + fixed + rdata


def encode_message(msg: Message) -> bytes:
    """A whole message in wire format."""
    header = struct.pack(
        "!HHHHHH", msg.id, msg.flags, len(msg.questions), len(msg.answers),
        len(msg.authority), len(msg.additional),
    )
    body = b"".join(encode_name(q.name) + struct.pack("!HH", q.type, q.cls) for q in msg.questions)
    for section in (msg.answers, msg.authority, msg.additional):
        body += b"".join(_encode_record(r) for r in section)
    return header + body


def encode_query(name: str, qtype: int, qid: int) -> bytes:
    """A recursive-desired query for one name and type."""
    return encode_message(Message(qid, FLAG_RD, (Question(name.rstrip("."), qtype),)))


# --------------------------------------------------------------------------- decoding


def _decode_name(data: bytes, offset: int) -> tuple[str, int]:
    """The name at ``offset`` (following compression pointers) and the offset after it."""
    labels: list[str] = []
    end: int | None = None
    jumps = 0
    while True:
        if offset >= len(data):
            raise DNSError("truncated DNS name")
        length = data[offset]
        if length & 0xC0 == 0xC0:
            if offset + 1 >= len(data):
                raise DNSError("truncated DNS name pointer")
            jumps += 1
            if jumps > _MAX_POINTER_JUMPS:
                raise DNSError("DNS name compression loop")
            if end is None:
                end = offset + 2
            offset = ((length & 0x3F) << 8) | data[offset + 1]
            continue
        if length & 0xC0:
            raise DNSError(f"unsupported DNS label type {length:#x}")
        offset += 1
        if length == 0:
            break
        if offset + length > len(data):
            raise DNSError("truncated DNS label")
        labels.append(data[offset:offset + length].decode("ascii", "replace"))
        offset += length
    return ".".join(labels), end if end is not None else offset


def _unpack(fmt: str, data: bytes, offset: int) -> tuple[tuple[int, ...], int]:
    size = struct.calcsize(fmt)
    if offset + size > len(data):
        raise DNSError("truncated DNS message")
    return struct.unpack_from(fmt, data, offset), offset + size


def _decode_rdata(data: bytes, offset: int, rtype: int, length: int) -> RData:
    raw = data[offset:offset + length]
    if rtype == A and length == 4:
        return str(IPv4Address(raw))
    if rtype == AAAA and length == 16:
        return str(IPv6Address(raw))
    if rtype == CNAME:
        return _decode_name(data, offset)[0]
    if rtype == SRV and length >= 7:
        (priority, weight, port), _ = _unpack("!HHH", data, offset)
        return SrvData(priority, weight, port, _decode_name(data, offset + 6)[0])
    return raw


def _decode_record(data: bytes, offset: int) -> tuple[Record, int]:
    name, offset = _decode_name(data, offset)
    (rtype, cls, ttl, length), offset = _unpack("!HHIH", data, offset)
    if offset + length > len(data):
        raise DNSError("truncated DNS record data")
    return Record(name, rtype, ttl, _decode_rdata(data, offset, rtype, length), cls), (
        offset + length
    )


def decode_message(data: bytes) -> Message:
    """Parse a message in wire format; raise DNSError when malformed."""
    (qid, flags, qd, an, ns, ar), offset = _unpack("!HHHHHH", data, 0)
    questions = []
    for _ in range(qd):
        name, offset = _decode_name(data, offset)
        (qtype, qcls), offset = _unpack("!HH", data, offset)
        questions.append(Question(name, qtype, qcls))
    sections: list[tuple[Record, ...]] = []
    for count in (an, ns, ar):
        records = []
        for _ in range(count):
            record, offset = _decode_record(data, offset)
            records.append(record)
        sections.append(tuple(records))
    return Message(qid, flags, tuple(questions), *sections)


def srv_endpoints(msg: Message) -> list[tuple[str, int]]:
    """(address, port) of each SRV answer, in answer order. The address is the target's A
    or AAAA record from the message when there is one, else the target name itself."""
    addresses: dict[str, list[str]] = {}
    for rec in (*msg.answers, *msg.additional):
        if rec.type in (A, AAAA) and isinstance(rec.data, str):
            addresses.setdefault(rec.name.lower(), []).append(rec.data)
    out = []
    for rec in msg.answers:
        if rec.type == SRV and isinstance(rec.data, SrvData):
            found = addresses.get(rec.data.target.lower()) or [rec.data.target]
            out.extend((address, rec.data.port) for address in found)
    return out


# --------------------------------------------------------------------------- I/O


def query(
    name: str, qtype: int, server: tuple[str, int] = ("127.0.0.1", 8600), timeout: float = 2.0
) -> Message:
    """Ask ``server`` once over UDP (over TCP when the answer is truncated).

    Returns the answer, NXDOMAIN included; raises DNSError on other errors or no answer.
    """
    qid = secrets.randbelow(0x10000)
    packet = encode_query(name, qtype, qid)
    try:
        msg = _udp(packet, qid, server, timeout)
        if msg.truncated:
            msg = _tcp(packet, qid, server, timeout)
    except OSError as exc:
        raise DNSError(f"no DNS answer from {server[0]}:{server[1]} for {name}: {exc}") from None
    if msg.rcode not in (0, RCODE_NXDOMAIN):
        raise DNSError(f"DNS server {server[0]}:{server[1]} answered rcode {msg.rcode} "
                       f"for {name}")
    return msg


def _udp(packet: bytes, qid: int, server: tuple[str, int], timeout: float) -> Message:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.connect(server)
        sock.send(packet)
        while True:
            msg = decode_message(sock.recv(65535))
            if msg.id == qid and msg.flags & FLAG_QR:
                return msg


def _tcp(packet: bytes, qid: int, server: tuple[str, int], timeout: float) -> Message:
    with socket.create_connection(server, timeout=timeout) as sock:
        sock.sendall(struct.pack("!H", len(packet)) + packet)
        (length,) = struct.unpack("!H", _recv_exact(sock, 2))
        msg = decode_message(_recv_exact(sock, length))
    if msg.id != qid:
        raise DNSError("DNS answer over TCP has the wrong ID")
    return msg


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    buf = b""
    while len(buf) < size:
        chunk = sock.recv(size - len(buf))
        if not chunk:
            raise DNSError("DNS server closed the TCP connection early")
        buf += chunk
    return buf
