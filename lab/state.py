"""The lab's state file (``/var/lib/switchboard/lab/<name>/lab.json``): hosts, addresses and
every PID started. Written atomically, so a crash leaves the old file or the new one."""

from __future__ import annotations

import json
import os
from pathlib import Path

from lab.config import STATE_ROOT, Lab, LabError


def state_file(name: str) -> Path:
    return STATE_ROOT / name / "lab.json"


def load(name: str) -> Lab | None:
    """The lab called ``name``, or None when there is none."""
    path = state_file(name)
    try:
        return Lab.from_json(json.loads(path.read_text()))
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError) as exc:
        raise LabError(f"the lab's state file {path} is unreadable ({exc}); "
                       "`switchboard lab down` removes what is left") from None


def require(name: str) -> Lab:
    """The lab called ``name``; a one-line error when it is not up."""
    lab = load(name)
    if lab is None:
        raise LabError(f"no lab {name} is up; start one with `switchboard lab up`")
    return lab


def save(lab: Lab) -> None:
    path = state_file(lab.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(lab.to_json(), indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
