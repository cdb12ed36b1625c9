"""An "outside" for tests: a network namespace with a veth to the root namespace, addresses
from 198.18.0.0/15 (never a real external address), and servers that tell who they saw.

``Outside(index)`` uses 198.18.<index>.1/24 on the root side and .2 inside. Its servers:
TCP (HTTP) on 8080 answering the client's address, a UDP echo on 5353 answering the
client's address, and ping. ``close`` removes the namespace and the veth, and any route it
added, whatever happened."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from tests.harness import sh, wait_until

SERVER = textwrap.dedent("""
    import http.server, socket, socketserver, sys, threading
    addr = sys.argv[1]
    class Who(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = self.client_address[0].encode()
            self.send_response(200); self.send_header("Content-Length", str(len(body)))
            self.end_headers(); self.wfile.write(body)
        def log_message(self, *args): pass
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); udp.bind((addr, 5353))
    def echo():
        while True:
            data, peer = udp.recvfrom(2048); udp.sendto(peer[0].encode(), peer)
    threading.Thread(target=echo, daemon=True).start()
    socketserver.TCPServer.allow_reuse_address = True
    http.server.ThreadingHTTPServer((addr, 8080), Who).serve_forever()
""")

DNS_SERVER = textwrap.dedent("""
    import socket, sys
    import dns.message, dns.rcode, dns.rrset
    addr, zone, answer = sys.argv[1:4]
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); udp.bind((addr, 53))
    while True:
        data, peer = udp.recvfrom(4096)
        query = dns.message.from_wire(data)
        reply = dns.message.make_response(query)
        q = query.question[0]
        if q.name.to_text().rstrip(".").endswith(zone) and q.rdtype == 1:
            reply.answer.append(dns.rrset.from_text(q.name, 30, "IN", "A", answer))
        else:
            reply.set_rcode(dns.rcode.NXDOMAIN)
        udp.sendto(reply.to_wire(), peer)
""")


class Outside:
    """The outside namespace ``index`` (0-255): ``root_ip`` is the host's side."""

    def __init__(self, index: int) -> None:
        tag = f"{os.getpid() % 100000}{index}"
        self.netns = f"sbt-out{tag}"
        self.veth = f"sbto{tag}"[:15]
        self.root_ip = f"198.18.{index}.1"
        self.ip = f"198.18.{index}.2"
        self.server: subprocess.Popen[bytes] | None = None
        self.dns: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Outside:
        try:
            self._make()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _make(self) -> None:
        for cmd in (f"ip netns add {self.netns}",
                    f"ip link add {self.veth} type veth peer name out0 netns {self.netns}",
                    f"ip addr add {self.root_ip}/24 dev {self.veth}",
                    f"ip link set {self.veth} up",
                    f"ip -n {self.netns} addr add {self.ip}/24 dev out0",
                    f"ip -n {self.netns} link set out0 up",
                    f"ip -n {self.netns} link set lo up"):
            sh(cmd, check=True)
        self.server = subprocess.Popen(
            ["ip", "netns", "exec", self.netns, sys.executable, "-c", SERVER, self.ip],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        if not wait_until(lambda: self.run(f"curl -s -m 1 http://{self.ip}:8080/")
                          .stdout == self.ip, 20):
            raise AssertionError("the outside server never answered")

    def run(self, cmd: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """A command inside the outside namespace."""
        return sh(f"ip netns exec {self.netns} {cmd}", timeout=timeout)

    def serve_dns(self, zone: str, answer: str) -> None:
        """A DNS server on UDP port 53: A names under ``zone`` are ``answer``, the rest
        NXDOMAIN."""
        self.dns = subprocess.Popen(
            ["ip", "netns", "exec", self.netns, sys.executable, "-c", DNS_SERVER, self.ip, zone,
             answer], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)
        if not wait_until(lambda: answer in self.run(
                f"dig +short +time=1 +tries=1 @{self.ip} www.{zone} A").stdout, 20):
            raise AssertionError("the outside DNS server never answered")

    def stop_dns(self) -> None:
        if self.dns is not None and self.dns.poll() is None:
            self.dns.kill()
            self.dns.wait(10)

    def close(self) -> None:
        self.stop_dns()
        if self.server is not None and self.server.poll() is None:
            self.server.kill()
            self.server.wait(10)
        sh(f"ip link del {self.veth}")  # also removes the routes through it
        sh(f"ip netns del {self.netns}")
