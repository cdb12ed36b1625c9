"""Acting as a lab host from the ``switchboard`` command itself (``SWITCHBOARD_LAB_HOST``,
``--lab-host``): enter the host's network namespace and take its environment."""

from __future__ import annotations

import ctypes
import os
import sys

from lab import state
from lab.config import NETNS_DIR, LabError, lab_name
from sbcore.state.token import CHILD_SECRETS

CLONE_NEWNET = 0x40000000


def setns(path: str) -> None:
    """Move the calling thread into the network namespace at ``path`` (before any thread)."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise LabError(f"cannot enter {path}: {os.strerror(err)}")
    finally:
        os.close(fd)


def enter_host(host_name: str) -> None:
    """Run the rest of this process as if on lab host ``host_name``; one-line error and exit
    status 1 when that is not possible."""
    try:
        if os.geteuid() != 0:
            raise LabError("entering a lab host needs root; run it with sudo")
        lab = state.require(lab_name())
        host = lab.host(host_name)
        setns(str(NETNS_DIR / host.netns))
    except LabError as exc:
        print(f"error: {exc} (from SWITCHBOARD_LAB_HOST/--lab-host)", file=sys.stderr)
        sys.exit(1)
    for key in CHILD_SECRETS:  # the host's own token is its $SWITCHBOARD_STATE/token
        os.environ.pop(key, None)
    for key, value in host.env().items():
        os.environ[key] = value
