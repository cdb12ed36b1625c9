"""A DNS server of the tests' own, in a namespace of its own: the test daemon's upstream for
names outside Consul (``SWITCHBOARD_UPSTREAM_DNS``), so that the path for those names is
tested the same way on every machine, whatever its own resolvers answer."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading

import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
from pyroute2 import netns as pyroute_netns

from tests.harness import sh

ZONE = "sbtdns.test"  # names it answers; every other name is NXDOMAIN
ANSWER = "192.0.2.53"  # the address of every A name in ZONE


class UpstreamDns:
    """Namespace ``sbu<run>`` holding the server on UDP and TCP port 53, reached from the
    root namespace over a veth pair in 198.18.0.0/15 (one /30 per run)."""

    def __init__(self, run: int) -> None:
        slot = (run % 32768) * 4
        base = f"198.{18 + slot // 65536}.{slot // 256 % 256}.{slot % 256}"
        head, last = base.rsplit(".", 1)
        self.host_ip, self.ip = f"{head}.{int(last) + 1}", f"{head}.{int(last) + 2}"
        self.netns, self.link = f"sbu{run}", f"sbu{run}"
        self.asked: list[str] = []
        self._sockets: list[socket.socket] = []

    def start(self) -> None:
        self.stop()
        for cmd in (f"ip netns add {self.netns}",
                    f"ip link add {self.link} type veth peer name {self.link}p",
                    f"ip link set {self.link}p netns {self.netns}",
                    f"ip addr add {self.host_ip}/30 dev {self.link}",
                    f"ip link set {self.link} up",
                    f"ip -n {self.netns} addr add {self.ip}/30 dev {self.link}p",
                    f"ip -n {self.netns} link set {self.link}p up",
                    f"ip -n {self.netns} link set lo up"):
            sh(cmd, check=True)
        bound = threading.Event()
        threading.Thread(target=self._serve, args=(bound,), daemon=True).start()
        if not bound.wait(10):
            raise RuntimeError("the upstream DNS server did not start")

    def stop(self) -> None:
        for sock in self._sockets:
            sock.close()
        sh(f"ip link del {self.link}")
        sh(f"ip netns del {self.netns}")

    def _serve(self, bound: threading.Event) -> None:
        pyroute_netns.setns(self.netns, flags=0)  # this thread only; its sockets stay there
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind((self.ip, 53))
        tcp = socket.create_server((self.ip, 53))
        self._sockets = [udp, tcp]
        threading.Thread(target=self._serve_tcp, args=(tcp,), daemon=True).start()
        bound.set()
        while True:
            try:
                packet, peer = udp.recvfrom(4096)
            except OSError:
                return
            with contextlib.suppress(OSError):
                udp.sendto(self.answer(packet), peer)

    def _serve_tcp(self, tcp: socket.socket) -> None:
        while True:
            try:
                conn, _ = tcp.accept()
            except OSError:
                return
            with conn, contextlib.suppress(OSError, struct.error):
                (length,) = struct.unpack("!H", conn.recv(2))
                reply = self.answer(conn.recv(length))
                conn.sendall(struct.pack("!H", len(reply)) + reply)

    def answer(self, packet: bytes) -> bytes:
        asked = dns.message.from_wire(packet)
        question = asked.question[0]
        name = question.name.to_text().rstrip(".")
        self.asked.append(name)
        response = dns.message.make_response(asked)
        if name == ZONE or name.endswith(f".{ZONE}"):
            if question.rdtype == dns.rdatatype.A:
                response.answer.append(dns.rrset.from_text(question.name, 5, "IN", "A", ANSWER))
        else:
            response.set_rcode(dns.rcode.NXDOMAIN)
        return response.to_wire()
