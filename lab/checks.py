"""What the lab needs before it starts: root, and the programs it runs."""

from __future__ import annotations

import os
import shutil

from lab.config import LabError

PROGRAMS = {
    "ovsdb-server": "openvswitch-switch", "ovs-vswitchd": "openvswitch-switch",
    "ovs-vsctl": "openvswitch-switch", "ovsdb-tool": "openvswitch-switch",
    "consul": "consul", "ip": "iproute2", "nsenter": "util-linux", "curl": "curl",
}


def require_root() -> None:
    if os.geteuid() != 0:
        raise LabError("switchboard lab needs root (it creates network namespaces); "
                       "run it with sudo")


def require_programs() -> None:
    """Every program a host runs is on PATH; otherwise name the missing ones and their fix."""
    path = os.environ.get("PATH", "") + ":/usr/local/sbin:/usr/sbin:/sbin"
    missing = [p for p in PROGRAMS if shutil.which(p, path=path) is None]
    if missing:
        packages = " ".join(sorted({PROGRAMS[p] for p in missing}))
        raise LabError(f"missing {', '.join(missing)} (Debian packages: {packages}); "
                       "install them with scripts/install-deps.sh")


def kernel_datapath() -> str:
    """``system`` where the openvswitch kernel module is loaded, else ``netdev``."""
    return "system" if os.path.exists("/sys/module/openvswitch") else "netdev"
