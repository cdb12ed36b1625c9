"""Loading the OVS and os-ken parts leaves dnspython's query functions alone (eventlet's green
DNS replaced them with functions of other arguments, which broke every DNS lookup made after
in the same process)."""

from __future__ import annotations

import subprocess
import sys


def test_importing_the_switch_parts_keeps_dnspythons_query_functions():
    code = ("import ovsdb.bridge, controller.switch.app, dns.query; "
            "print(dns.query.udp.__module__, dns.query.tcp.__module__)")
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True,
                         text=True, check=True)
    assert out.stdout.split() == ["dns.query", "dns.query"], out.stdout
