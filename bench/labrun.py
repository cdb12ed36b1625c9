"""What the cluster benchmarks share: a private `switchboard lab` that is always removed, commands
on its hosts, sockets made inside a namespace, and percentiles.

A benchmark's lab runs under its own name (``--lab``), so a user's lab is never touched;
``lab down`` runs on the way out, on failure, Ctrl-C and SIGTERM too.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lab import state  # noqa: E402
from lab.config import NETNS_DIR, Host, Lab  # noqa: E402
from lab.hosts import host_environ, in_netns  # noqa: E402

CLONE_NEWNET = 0x40000000
T = TypeVar("T")


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (the same as bench/discovery.py)."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))]


class LabRun:
    """One private lab: ``lab up`` on enter, ``lab down`` on exit (whatever happened)."""

    def __init__(self, name: str, hosts: int, up_args: tuple[str, ...] = ()) -> None:
        self.name = name
        self.count = hosts
        self.up_args = up_args  # more `lab up` options
        self.lab: Lab | None = None

    def lab_cli(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if k != "SWITCHBOARD_LAB_HOST"}
        env["SWITCHBOARD_LAB_NAME"] = self.name
        return subprocess.run([sys.executable, "-m", "switchboard.cli", "lab", *args],
                              cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=timeout)

    def __enter__(self) -> LabRun:
        previous = signal.getsignal(signal.SIGTERM)
        if previous in (signal.SIG_DFL, None):  # SIGTERM unwinds, so `lab down` still runs
            signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        started = time.monotonic()
        out = self.lab_cli("up", "--hosts", str(self.count), *self.up_args)
        if out.returncode != 0:
            raise RuntimeError(f"lab {self.name} up failed:\n{out.stdout}{out.stderr}")
        self.up_seconds = time.monotonic() - started
        self.lab = state.require(self.name)
        self.wait_hosts_ready()
        return self

    def __exit__(self, *exc: object) -> None:
        out = self.lab_cli("down", timeout=600)
        if out.returncode != 0:
            print(f"lab {self.name} down failed:\n{out.stdout}{out.stderr}", file=sys.stderr)

    def host(self, name: str) -> Host:
        assert self.lab is not None
        return self.lab.host(name)

    @property
    def hosts(self) -> list[Host]:
        assert self.lab is not None
        return self.lab.hosts

    def run(self, host: str, *command: str, check: bool = True,
            timeout: float = 600) -> subprocess.CompletedProcess[str]:
        """``command`` on lab host ``host``, with its environment (what `lab exec` does)."""
        target = self.host(host)
        out = subprocess.run(in_netns(target, *command), cwd=ROOT, env=host_environ(target),
                             capture_output=True, text=True, timeout=timeout)
        if check and out.returncode != 0:
            raise RuntimeError(f"on {host}: {' '.join(command)} failed:\n{out.stdout}"
                               f"{out.stderr}")
        return out

    def sb(self, host: str, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        """``switchboard ARGS`` on lab host ``host``."""
        return self.run(host, sys.executable, "-m", "switchboard.cli", *args, timeout=timeout)

    def container_ns(self, host: str, topology: str, container: str) -> str:
        return f"{self.host(host).netns}-{topology}-{container}"

    def status(self, topology: str) -> dict[str, dict]:
        """container -> its status row (host, ip, netns, ...), as any host reports it."""
        data = json.loads(self.sb(self.hosts[0].name, "status", topology, "--json").stdout)
        topo = next(t for t in data["topologies"] if t["name"] == topology)
        return {row["container"]: row for row in topo["containers"]}

    def wait_hosts_ready(self, timeout: float = 60) -> None:
        """Until `switchboard hosts` shows every host ready (so `up` may use them all)."""
        deadline = time.monotonic() + timeout
        while True:
            out = self.sb(self.hosts[0].name, "hosts", "--json")
            ready = [h for h in json.loads(out.stdout)["hosts"] if h["state"] == "ready"]
            if len(ready) == self.count:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {len(ready)} of {self.count} hosts are ready")
            time.sleep(0.5)


def in_namespace(netns: str, make: Callable[[], T], timeout: float = 60) -> T:
    """``make()`` run by a thread that entered the named network namespace: a socket made
    there stays there (the calling thread never changes namespace). Waits for the name."""
    made: dict[str, T] = {}
    error: list[BaseException] = []
    libc = ctypes.CDLL(None, use_errno=True)

    def enter() -> None:
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(FileNotFoundError):
                fd = os.open(NETNS_DIR / netns, os.O_RDONLY)
                try:
                    if libc.setns(fd, CLONE_NEWNET) == 0:
                        try:
                            made["value"] = make()
                        except BaseException as exc:  # noqa: BLE001 - handed to the caller
                            error.append(exc)
                        return
                finally:
                    os.close(fd)
            if time.monotonic() > deadline:
                return
            time.sleep(0.005)

    worker = threading.Thread(target=enter)
    worker.start()
    worker.join()
    if error:
        raise error[0]
    if "value" not in made:
        raise RuntimeError(f"cannot enter namespace {netns}")
    return made["value"]


class NamespaceWorker:
    """A thread that lives in one network namespace and runs what it is given there (for
    clients, like py-consul's, that open their sockets lazily)."""

    def __init__(self, netns: str) -> None:
        self.netns = netns
        self._jobs: list[tuple[Callable[[], object], threading.Event, list[object]]] = []
        self._wake = threading.Condition()
        self._ready = threading.Event()
        self._failed: list[str] = []
        threading.Thread(target=self._loop, daemon=True).start()
        self._ready.wait(10)
        if self._failed or not self._ready.is_set():
            raise RuntimeError(f"cannot enter namespace {netns}")

    def _loop(self) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(NETNS_DIR / self.netns, os.O_RDONLY)
        try:
            if libc.setns(fd, CLONE_NEWNET) != 0:
                self._failed.append(os.strerror(ctypes.get_errno()))
        finally:
            os.close(fd)
        self._ready.set()
        while not self._failed:
            with self._wake:
                while not self._jobs:
                    self._wake.wait()
                job, done, result = self._jobs.pop(0)
            try:
                result.append(job())
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                result.append(exc)
            done.set()

    def call(self, job: Callable[[], T]) -> T:
        done = threading.Event()
        result: list[object] = []
        with self._wake:
            self._jobs.append((job, done, result))
            self._wake.notify()
        done.wait()
        if isinstance(result[0], BaseException):
            raise result[0]
        return result[0]  # type: ignore[return-value]


def raw_icmp_socket(netns: str) -> socket.socket:
    return in_namespace(netns, lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW,
                                                     socket.IPPROTO_ICMP))

