"""What every model class shares: the frozen base class and how problems are raised."""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import BaseModel, ConfigDict, ValidationInfo

Path = tuple[str | int, ...]


class TopologyError(ValueError):
    """Any problem in a topology a user can make; ``problems`` lists every one found."""

    def __init__(self, problems: str | Iterable[str]) -> None:
        self.problems: list[str] = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))

    def __str__(self) -> str:
        return "\n".join(self.problems)


class _Problems(ValueError):
    """Raised inside validators: problems as (path relative to the validated object, text)."""

    def __init__(self, problems: list[tuple[Path, str]]) -> None:
        self.items = problems
        super().__init__(str(self))

    def __str__(self) -> str:
        return "; ".join(f"{_dotted(p)}: {m}" if p else m for p, m in self.items)


def _dotted(path: Path) -> str:
    return ".".join(str(p) for p in path)


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


_DEFER = "switchboard.defer_checks"


def _raise_unless_deferred(info: ValidationInfo, problems: Iterable[tuple[Path, str]]) -> None:
    """Raise the problems now, unless the Topology validator will report them all at once."""
    if info.context and info.context.get(_DEFER):
        return
    found = list(problems)
    if found:
        raise _Problems(found)
