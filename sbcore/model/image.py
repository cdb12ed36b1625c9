"""What an image container carries besides its networks: the image reference, its
environment, its volumes, its working directory and its user. Pure checks of each value."""

from __future__ import annotations

import hashlib
import json
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from sbcore.model.base import Path

# a reference as Podman and Docker take it: [host[:port]/]path[:tag][@digest]
_IMAGE_RE = re.compile(r"[a-z0-9][a-z0-9._\-/:]*(@sha256:[0-9a-f]{64})?", re.IGNORECASE)
_ENV_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_USER_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*(:[A-Za-z0-9_][A-Za-z0-9_.\-]*)?")
IMAGE_ONLY = ("env", "volumes", "workdir", "user")  # keys that need `image`


def check_image(value: str) -> str:
    if not _IMAGE_RE.fullmatch(value) or "//" in value or value.endswith(("/", ":")):
        raise ValueError(f"bad image reference {value!r}: write NAME[:TAG] or NAME@sha256:DIGEST,"
                         " like localhost/switchboard/demo:latest")
    return value


def check_env_name(value: str) -> str:
    if not _ENV_RE.fullmatch(value):
        raise ValueError(f"bad environment variable name {value!r}: letters, digits and _, "
                         "not starting with a digit")
    return value


def check_user(value: str) -> str:
    if not _USER_RE.fullmatch(value):
        raise ValueError(f"bad user {value!r}: write USER, UID, USER:GROUP or UID:GID")
    return value


def _absolute(path: str, what: str) -> str | None:
    """Why ``path`` is not a clean absolute path (None: it is)."""
    if not path.startswith("/"):
        return f"the {what} path {path!r} is relative; write an absolute path"
    if any(part in (".", "..") for part in path.split("/")):
        return f"the {what} path {path!r} holds . or ..; write it without them"
    return None


def check_workdir(value: str) -> str:
    problem = _absolute(value, "working directory")
    if problem:
        raise ValueError(problem)
    return value


@dataclass(frozen=True)
class Volume:
    """A host path bound into the container, read-only or not."""

    host: str
    path: str
    read_only: bool = False

    def spec(self) -> str:
        """The ``-v`` value the runtimes take."""
        return f"{self.host}:{self.path}{':ro' if self.read_only else ''}"


def parse_volume(value: str) -> Volume:
    """``/host/path:/in/container[:ro|:rw]``; ValueError with what is wrong."""
    parts = value.split(":")
    if len(parts) not in (2, 3) or not all(parts):
        raise ValueError(f"bad volume {value!r}: write /host/path:/in/container, optionally "
                         "followed by :ro or :rw")
    if len(parts) == 3 and parts[2] not in ("ro", "rw"):
        raise ValueError(f"bad volume {value!r}: the option after the second ':' is ro or rw, "
                         f"not {parts[2]!r}")
    for path, what in ((parts[0], "host"), (parts[1], "container")):
        problem = _absolute(path, what)
        if problem:
            raise ValueError(f"bad volume {value!r}: {problem}")
    return Volume(parts[0], parts[1], len(parts) == 3 and parts[2] == "ro")


def check_volume(value: str) -> str:
    parse_volume(value)
    return value


class ImageKeys(Protocol):
    """The keys of a container that concern its image (``sbcore.model.container.Container``
    has them; a protocol keeps this module below it)."""

    image: str | None
    command: str | None
    env: dict[str, str]
    volumes: list[str]
    workdir: str | None
    user: str | None
    attach: object | None


def image_problems(c: ImageKeys) -> Iterator[tuple[Path, str]]:
    """What is wrong with the image keys of a container, as (path, sentence)."""
    if c.image is None:
        for key in IMAGE_ONLY:
            if getattr(c, key):
                yield ((key,), f"{key} is for an image container, and this container has no "
                       "image; add an image or remove it")
        return
    if c.attach is not None:
        yield (("image",), "a container with attach runs in an existing namespace and cannot "
               "have an image; remove one of them")
    if c.command is not None:
        try:
            shlex.split(c.command)
        except ValueError as err:
            yield (("command",), f"with image, command is the image's arguments, split as a "
                   f"shell would; it cannot be split: {err}")
    seen: dict[str, int] = {}
    for i, value in enumerate(c.volumes):
        path = parse_volume(value).path
        if path in seen:
            yield (("volumes", i), f"{path} is already bound by volumes.{seen[path]}")
        seen.setdefault(path, i)
        if path == "/etc/resolv.conf":
            yield (("volumes", i), "/etc/resolv.conf is the container's resolver file, "
                   "which Switchboard binds; bind another path")


@dataclass(frozen=True)
class ImageRun:
    """What the runtime is told about an image container (from the topology file)."""

    image: str
    args: tuple[str, ...] | None = None  # None: the image's own command
    env: tuple[tuple[str, str], ...] = ()
    volumes: tuple[str, ...] = ()  # /host:/in/container[:ro|:rw]
    workdir: str | None = None
    user: str | None = None

    def digest(self) -> str:
        """A short digest of the spec (the ``switchboard.spec`` label)."""
        text = json.dumps([self.image, self.args, self.env, self.volumes, self.workdir,
                           self.user])
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def image_run(container: ImageKeys) -> ImageRun | None:
    """The ImageRun of a model container (None: it has no image)."""
    if container.image is None:
        return None
    args = tuple(shlex.split(container.command)) if container.command is not None else None
    return ImageRun(container.image, args, tuple(sorted(container.env.items())),
                    tuple(container.volumes), container.workdir, container.user)
