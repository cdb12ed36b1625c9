"""Files that may hold secrets are root's only, whatever the umask (sbcore.state.private)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from sbcore.state.private import open_private, private_dir, write_private


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture(autouse=True)
def _open_umask() -> Iterator[None]:
    old = os.umask(0o022)  # the usual umask: what the modes must not depend on
    yield
    os.umask(old)


def test_missing_directories_are_created_root_only(tmp_path: Path) -> None:
    os.chmod(tmp_path, 0o755)
    made = private_dir(tmp_path / "state" / "logs" / "shop")
    assert [_mode(p) for p in (made, made.parent, made.parent.parent)] == [0o700] * 3
    assert _mode(tmp_path) == 0o755  # an existing parent is not ours to change


def test_an_existing_wide_directory_is_narrowed(tmp_path: Path) -> None:
    wide = tmp_path / "state"
    wide.mkdir(mode=0o777)
    os.chmod(wide, 0o777)
    private_dir(wide)
    assert _mode(wide) == 0o700


def test_a_file_is_created_0600_and_an_existing_wide_one_narrowed(tmp_path: Path) -> None:
    fresh = tmp_path / "logs" / "web.log"
    os.close(open_private(fresh))
    assert _mode(fresh) == 0o600 and _mode(fresh.parent) == 0o700
    old = tmp_path / "old.log"
    old.write_text("kept\n")
    os.chmod(old, 0o644)
    with os.fdopen(open_private(old), "a") as f:
        f.write("more\n")
    assert _mode(old) == 0o600 and old.read_text() == "kept\nmore\n"


def test_a_symlink_planted_at_the_path_is_not_followed(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("")
    link = tmp_path / "web.log"
    link.symlink_to(target)
    with pytest.raises(OSError):
        open_private(link)


def test_write_private_replaces_the_file_whole_and_root_only(tmp_path: Path) -> None:
    path = tmp_path / "pids" / "web.pid"
    write_private(path, "1\n")
    write_private(path, "42\n{\"command\": \"DB_PASSWORD=x app\"}\n")
    assert path.read_text().startswith("42\n") and _mode(path) == 0o600
    assert sorted(p.name for p in path.parent.iterdir()) == ["web.pid"]
