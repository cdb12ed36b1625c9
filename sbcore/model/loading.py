"""Loading a topology file: YAML with line numbers, and problems as sentences."""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Iterator, Mapping
from os import PathLike
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ValidationError

from sbcore.model.base import _DEFER, Path, TopologyError, _dotted, _Problems
from sbcore.model.topology import Topology

MAX_VALUES = 100_000  # values a file may expand to, aliases included (a topology is far less)
MAX_DEPTH = 32  # nesting of mappings and lists (a topology needs about 6)


class _TooLarge(Exception):
    """The document is nested too deeply or expands to too many values (aliases)."""

    def __init__(self, message: str, line: int | None) -> None:
        super().__init__(message)
        self.line = line


class _LineLoader(yaml.SafeLoader):
    """SafeLoader that records the line of every mapping key and sequence item by key path,
    and reports duplicate keys. Only true/false are booleans (not yes/no/on/off). It stops
    at MAX_DEPTH levels and MAX_VALUES values, so that no file makes it recurse or expand
    aliases without end."""

    yaml_implicit_resolvers = {
        first: [r for r in resolvers if r[0] != "tag:yaml.org,2002:bool"]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.lines: dict[Path, int] = {}
        self.problems: list[tuple[Path, str, int | None]] = []
        self.built = 0
        self.depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        """PyYAML composes one level per call: stop at MAX_DEPTH, before Python's limit."""
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                raise _TooLarge(f"nested more than {MAX_DEPTH} levels deep; a topology needs "
                                "a few", self.peek_event().start_mark.line + 1)
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def load_with_lines(self) -> Any:
        node = self.get_single_node()
        if node is None:
            return None
        return self._build(node, (), set())

    def _build(self, node: yaml.Node, path: Path, active: set[int]) -> Any:
        self.built += 1
        if self.built > MAX_VALUES:
            raise _TooLarge(f"the file expands to more than {MAX_VALUES} values (through "
                            "aliases?); a topology is far smaller", node.start_mark.line + 1)
        if len(path) > MAX_DEPTH:
            raise _TooLarge(f"nested more than {MAX_DEPTH} levels deep; a topology needs a "
                            "few", node.start_mark.line + 1)
        if id(node) in active:
            raise yaml.constructor.ConstructorError(None, None, "recursive alias", node.start_mark)
        if isinstance(node, yaml.MappingNode):
            return self._build_mapping(node, path, active | {id(node)})
        if isinstance(node, yaml.SequenceNode):
            items = []
            for i, item in enumerate(node.value):
                line = item.start_mark.line + 1
                self.lines.setdefault((*path, i), line)
                value = self._build(item, (*path, i), active | {id(node)})
                if isinstance(value, str):
                    self.lines.setdefault((*path, value), line)
                items.append(value)
            return items
        return self.construct_object(node, deep=True)

    def _build_mapping(self, node: yaml.MappingNode, path: Path, active: set[int]) -> dict:
        explicit = sum(1 for k, _ in node.value if k.tag != "tag:yaml.org,2002:merge")
        self.flatten_mapping(node)
        n_merged = len(node.value) - explicit
        result: dict[Any, Any] = {}
        seen: dict[Any, int] = {}
        for index, (key_node, value_node) in enumerate(node.value):
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                hash(key)
            except TypeError:
                self.problems.append((path, "a mapping key must be a plain name", line))
                continue
            if index >= n_merged:
                if key in seen:
                    self.problems.append(
                        (
                            (*path, key),
                            f"duplicate key {key!r} (lines {seen[key]} and {line}); "
                            "each name may appear once",
                            line,
                        )
                    )
                    continue
                seen[key] = line
                self.lines[(*path, key)] = line
            else:
                self.lines.setdefault((*path, key), line)
            result[key] = self._build(value_node, (*path, key), active)
        return result


def _line_of(lines: Mapping[Path, int], path: Path) -> int | None:
    for end in range(len(path), 0, -1):
        line = lines.get(path[:end])
        if line is not None:
            return line
    return None


def _format(source: str, line: int | None, path: Path, message: str) -> str:
    where = f"{source} line {line}" if line is not None else source
    return f"{where}: {_dotted(path)}: {message}" if path else f"{where}: {message}"


def _model_at(path: Path) -> type[BaseModel] | None:
    """The model class validating the object at ``path`` (for 'known keys' hints)."""
    tp: Any = Topology
    for part in path:
        tp = _unwrap(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            field = next((f for n, f in tp.model_fields.items() if part in (n, f.alias)), None)
            if field is None:
                return None
            tp = field.annotation
        elif typing.get_origin(tp) is dict:
            tp = typing.get_args(tp)[1]
        elif typing.get_origin(tp) is list:
            tp = typing.get_args(tp)[0]
        else:
            return None
    tp = _unwrap(tp)
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


def _unwrap(tp: Any) -> Any:
    while True:
        origin = typing.get_origin(tp)
        if origin is Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(args) != 1:
                return tp
            tp = args[0]
        else:
            return tp


def _keys_of(model: type[BaseModel]) -> list[str]:
    return [f.alias or n for n, f in model.model_fields.items()]


_TYPE_WORDS = {
    "string_type": "a string",
    "int_type": "an integer",
    "dict_type": "a mapping",
    "list_type": "a list",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
}


def _describe(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value)


def _pydantic_problems(err: ValidationError) -> Iterator[tuple[Path, str]]:
    for e in err.errors(include_url=False):
        loc: Path = tuple(p for p in e["loc"] if p != "[key]")
        kind, ctx = e["type"], e.get("ctx") or {}
        original = ctx.get("error")
        if isinstance(original, _Problems):
            for rel, msg in original.items:
                yield ((*loc, *rel), msg)
        elif kind == "extra_forbidden":
            key = loc[-1] if loc else "?"
            model = _model_at(loc[:-1])
            hint = ""
            if model is not None:
                known = _keys_of(model)
                close = difflib.get_close_matches(str(key), known, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                hint += f"; known keys here: {', '.join(known)}"
            yield (loc, f"unknown key {key!r}{hint}")
        elif kind == "missing":
            yield (loc, f"required key {loc[-1]!r} is missing")
        elif kind in _TYPE_WORDS:
            what = _TYPE_WORDS[kind]
            model = _model_at(loc) if kind.startswith("model") else None
            if model is not None:
                what += f" with keys {', '.join(_keys_of(model))}"
            yield (loc, f"expected {what}, got {_describe(e['input'])}")
        elif kind == "value_error" and original is not None:
            yield (loc, str(original))
        else:
            msg = e["msg"]
            yield (loc, f"{msg[:1].lower()}{msg[1:]} (got {_describe(e['input'])})")


def validation_problems(err: ValidationError) -> list[str]:
    """A pydantic error on a topology as 'key.path: problem' sentences (no source or line:
    for data that was not read from a file, such as Consul KV)."""
    return [_format("", None, path, msg).removeprefix(": ") for path, msg in
            _pydantic_problems(err)]


def load_topology(text: str, source: str = "<topology>") -> Topology:
    """Parse and validate a topology file's text; raise TopologyError listing every problem."""
    loader: _LineLoader | None = None
    try:
        loader = _LineLoader(text)
        data = loader.load_with_lines()
    except _TooLarge as exc:
        raise TopologyError(_format(source, exc.line, (), str(exc))) from None
    except RecursionError:  # the parser nests one call per level of the document
        raise TopologyError(_format(source, None, (), f"nested more than {MAX_DEPTH} levels "
                                    "deep; a topology needs a few")) from None
    except yaml.reader.ReaderError as exc:
        raise TopologyError(_format(source, None, (), f"YAML syntax error: character "
                                    f"{chr(exc.character)!r} at position {exc.position} is "
                                    "not allowed in YAML")) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        what = exc.problem or "cannot parse"
        if exc.context:
            what += f" ({exc.context})"
        message = f"YAML syntax error: {what}; check the indentation and quoting of this line"
        raise TopologyError(_format(source, line, (), message)) from None
    except yaml.YAMLError as exc:
        raise TopologyError(_format(source, None, (), f"YAML syntax error: {exc}")) from None
    finally:
        if loader is not None:
            loader.dispose()

    found: list[tuple[int | None, str]] = [
        (line, _format(source, line, path, msg)) for path, msg, line in loader.problems
    ]
    if data is None:
        found.append(
            (
                None,
                _format(
                    source,
                    None,
                    (),
                    "the file is empty; a topology needs at least 'name' and 'networks'",
                ),
            )
        )
    elif not isinstance(data, dict):
        found.append(
            (
                1,
                _format(
                    source,
                    1,
                    (),
                    f"a topology must be a mapping with keys {', '.join(_keys_of(Topology))}",
                ),
            )
        )
    else:
        try:
            topology = Topology.model_validate(data, by_name=False, context={_DEFER: True})
        except ValidationError as err:
            for path, msg in _pydantic_problems(err):
                line = _line_of(loader.lines, path)
                found.append((line, _format(source, line, path, msg)))
        else:
            if not found:
                return topology
    found.sort(key=lambda item: item[0] if item[0] is not None else 0)
    raise TopologyError([msg for _, msg in found])


def load_topology_file(path: str | PathLike[str]) -> Topology:
    """Read and validate a topology file (the only function here that reads a file)."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise TopologyError(f"{path}: cannot read the topology file: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise TopologyError(f"{path}: the topology file is not UTF-8 text") from None
    return load_topology(text, str(path))
