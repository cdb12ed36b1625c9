"""Where a Plumber keeps its state, under one directory (root's only).

``pids/<topology>/<container>.pid`` (with ``.exit``, ``.restarts`` and, for an image
container, ``.cid`` beside it: see plumbing.processes, plumbing.supervisor and
plumbing.images), ``logs/<topology>/<container>.log`` and
``netns/<name>`` (a marker per namespace the Plumber made or named, holding its topology: only
marked namespaces are ever deleted).
"""

from __future__ import annotations

from pathlib import Path

from plumbing import processes
from plumbing.plan import process_key


class StateFiles:
    """The paths of a state directory, and the namespace markers in it."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def pid_path(self, topology: str, container: str) -> Path:
        return self.root / "pids" / topology / f"{container}.pid"

    def cid_path(self, topology: str, container: str) -> Path:
        """Where an image container's runtime writes its container's ID (``--cidfile``)."""
        return processes.cid_path(self.pid_path(topology, container))

    def log_path(self, topology: str, container: str) -> Path:
        return processes.log_path(self.root, topology, container)

    def pid_files(self) -> dict[str, Path]:
        """Process key -> PID file, for every PID file there is."""
        folder = self.root / "pids"
        if not folder.is_dir():
            return {}
        return {process_key(p.parent.name, p.stem): p for p in folder.glob("*/*.pid")}

    def marker(self, name: str) -> Path:
        return self.root / "netns" / name

    def mark(self, names: dict[str, str]) -> None:
        """Mark each namespace as ours, with its topology."""
        for name, topology in names.items():
            self.marker(name).parent.mkdir(parents=True, exist_ok=True)
            self.marker(name).write_text(topology + "\n")

    def unmark(self, name: str) -> None:
        self.marker(name).unlink(missing_ok=True)

    def marked(self) -> dict[str, str]:
        """Namespace name -> topology, for the namespaces marked as ours."""
        folder = self.root / "netns"
        if not folder.is_dir():
            return {}
        return {p.name: p.read_text().strip() for p in folder.iterdir()}
