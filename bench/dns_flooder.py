"""Flood a DNS server with one query from 127.0.0.2, as a container flooding its resolver
would: ``python bench/dns_flooder.py PORT NAME [RATE]`` sends an A query for NAME to
127.0.0.1:PORT, RATE queries/s (in bursts every 10 ms), or as fast as it can without RATE
or with 0. Runs until killed. Used by bench/dns_flood.py and
tests/integration/consul/test_dns_hostile.py."""

import contextlib
import socket
import sys
import time

import dns.message


def main() -> None:
    port, name = int(sys.argv[1]), sys.argv[2]
    per_tick = int(sys.argv[3]) // 100 if len(sys.argv) > 3 else 0  # 0: as fast as it can
    wire = dns.message.make_query(name, "A").to_wire()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.2", 0))
    while True:
        tick = time.monotonic() + 0.01
        for _ in range(per_tick or 1000):
            with contextlib.suppress(OSError):  # a full send buffer: drop, go on
                sock.sendto(wire, ("127.0.0.1", port))
        if per_tick:
            time.sleep(max(0.0, tick - time.monotonic()))


if __name__ == "__main__":
    main()
