"""Files on the host that may hold secrets: directories 0700 and files 0600, root's only.

A container's output, the command line in its PID file and Consul's data can carry passwords
and tokens. Modes are set when a file is created, and an existing file or directory that is
wider is narrowed. They are not set through the process's umask: container commands inherit
it, and the files they make are the user's business.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600


def private_dir(path: Path | str) -> Path:
    """Make ``path`` a directory only root can enter: missing parts are created 0700; an
    existing ``path`` is narrowed to 0700 (its existing parents are left as they are)."""
    path = Path(path)
    missing = []
    for part in (path, *path.parents):
        if part.is_dir():
            break
        missing.append(part)
    for part in reversed(missing):
        with contextlib.suppress(FileExistsError):  # made meanwhile: narrowed below
            part.mkdir(mode=DIR_MODE)
    if os.stat(path).st_mode & 0o777 != DIR_MODE:
        os.chmod(path, DIR_MODE)
    for part in missing:  # mkdir's mode went through the umask
        os.chmod(part, DIR_MODE)
    return path


def open_private(path: Path | str, flags: int = os.O_WRONLY | os.O_APPEND) -> int:
    """Open (creating it) a file only root can read, its parent made private; the fd."""
    path = Path(path)
    private_dir(path.parent)
    fd = os.open(path, flags | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, FILE_MODE)
    try:
        if os.fstat(fd).st_mode & 0o777 != FILE_MODE:
            os.fchmod(fd, FILE_MODE)
    except OSError:
        os.close(fd)
        raise
    return fd


def write_private(path: Path | str, text: str) -> None:
    """Replace ``path`` with ``text`` at once (a temporary file renamed over it), 0600."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with os.fdopen(open_private(tmp, os.O_WRONLY | os.O_TRUNC), "w") as f:
        f.write(text)
    os.replace(tmp, path)
