"""README.md and docs/*.md link only inside the repository, to files that exist.

A user's clone holds nothing else: a link to a web page or to a file beside the repository
is a dead end, as is a relative link to a file that was moved. Code (fenced blocks and
inline spans) is not scanned: `curl http://10.10.1.10/` is a command, not a link.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]

_FENCE = re.compile(r"^\s*(```|~~~)")
_CODE_SPAN = re.compile(r"(`+)(?!`).*?(?<!`)\1(?!`)", re.DOTALL)
_URL = re.compile(r"\b[a-z][a-z0-9+.-]*://", re.IGNORECASE)
_INLINE_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_REF_DEF = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)")
_HTML_ATTR = re.compile(r"\b(?:href|src)\s*=\s*[\"']([^\"']+)[\"']", re.IGNORECASE)


def _prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) for every line outside fenced code, with code spans (which may
    run over several lines) blanked out."""
    kept, fenced = [], False
    for line in text.splitlines():
        if _FENCE.match(line):
            fenced = not fenced
            kept.append("")
        else:
            kept.append("" if fenced else line)
    prose = _CODE_SPAN.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), "\n".join(kept))
    return [(n, line) for n, line in enumerate(prose.split("\n"), start=1) if line.strip()]


def _target_problem(doc: Path, target: str, root: Path) -> str | None:
    """Why a link target from ``doc`` leaves the repository or points nowhere; None if fine."""
    if _URL.match(target) or target.startswith(("//", "mailto:")):
        return f"links outside the repository: {target}"
    path = target.split("#", 1)[0].split("?", 1)[0]
    if not path:
        return None  # an anchor on the same page
    if path.startswith("/"):
        return f"uses an absolute path, which a clone does not have: {target}"
    resolved = (doc.parent / path).resolve()
    if not resolved.is_relative_to(root.resolve()):
        return f"links to a file outside the repository: {target}"
    if not resolved.exists():
        return f"links to a file that does not exist: {target}"
    return None


def link_problems(doc: Path, root: Path = REPO) -> list[str]:
    """Every bad link of a Markdown file, as 'FILE line N: problem'."""
    name = doc.resolve().relative_to(root.resolve())
    problems = []
    for number, line in _prose_lines(doc.read_text(encoding="utf-8")):
        targets = [m.group(1) for m in _INLINE_LINK.finditer(line)]
        targets += [m.group(1) for m in _REF_DEF.finditer(line)]
        targets += [m.group(1) for m in _HTML_ATTR.finditer(line)]
        found = [p for t in targets if (p := _target_problem(doc, t, root))]
        rest = _HTML_ATTR.sub("", _REF_DEF.sub("", _INLINE_LINK.sub("", line)))
        if _URL.search(rest):
            found.append(f"has a web address outside a link or code: {rest.strip()}")
        problems += [f"{name} line {number}: {p}" for p in found]
    return problems


def _documents() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").glob("**/*.md"))]


def test_the_docs_exist() -> None:
    assert (REPO / "README.md").is_file()
    assert len(_documents()) > 5, "docs/ holds the user's guide"


@pytest.mark.parametrize("doc", _documents(), ids=lambda p: str(p.relative_to(REPO)))
def test_every_link_stays_in_the_repository_and_resolves(doc: Path) -> None:
    problems = link_problems(doc)
    assert not problems, "\n".join(problems)


def _problems_of(tmp_path: Path, text: str) -> list[str]:
    (tmp_path / "docs").mkdir(exist_ok=True)
    (tmp_path / "docs" / "there.md").write_text("# there\n")
    doc = tmp_path / "docs" / "page.md"
    doc.write_text(text)
    return link_problems(doc, tmp_path)


def test_a_web_link_is_named_with_file_and_line(tmp_path: Path) -> None:
    problems = _problems_of(tmp_path, "# t\n\nSee [os-ken](https://opendev.org/os-ken).\n")
    assert problems == [
        "docs/page.md line 3: links outside the repository: https://opendev.org/os-ken"
    ]


def test_a_bare_or_angle_bracket_address_is_found(tmp_path: Path) -> None:
    problems = _problems_of(tmp_path, "see <http://example.org/x>\nor www at http://a.b/\n")
    assert [p.split(":")[0] for p in problems] == ["docs/page.md line 1", "docs/page.md line 2"]


def test_a_link_out_of_the_repository_is_found(tmp_path: Path) -> None:
    problems = _problems_of(tmp_path, "[format](../../shared/topology-format.md)\n")
    assert len(problems) == 1 and "outside the repository" in problems[0]


def test_a_link_to_a_missing_file_is_found(tmp_path: Path) -> None:
    problems = _problems_of(tmp_path, "[a](there.md) [b](there.md#x)\n\n[c]: gone.md\n")
    assert problems == ["docs/page.md line 3: links to a file that does not exist: gone.md"]


def test_code_is_not_taken_for_links(tmp_path: Path) -> None:
    text = ("Run `curl http://10.10.1.10/`, `ask\nhttp://127.0.0.1:8500` or:\n\n"
            "```console\n# curl http://x/ [a](gone.md)\n```\n")
    assert _problems_of(tmp_path, text) == []
