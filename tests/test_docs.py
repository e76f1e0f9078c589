"""Every relative link in the documentation leads somewhere, and the README stays short.

The README was split into docs/ pages; a moved section leaves links behind that point at a file or
heading that is gone. These tests resolve each relative markdown link of README.md, docs/*.md,
deploy/**/README.md and bench/README.md: the target file must exist and a `#anchor` must match a
heading of the target, with GitHub's slug rules.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README_MAX_BYTES = 20_000  # the anchors' READMEs are near 15 KB; ours was 60 KB before the split

FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
# [text](target) or ![alt](target), the target up to whitespace or ")"; an optional title after it.
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
INLINE_CODE = re.compile(r"`+[^`]*`+")


def documents() -> list[Path]:
    """The markdown files whose links are checked."""
    files = [ROOT / "README.md", ROOT / "bench" / "README.md"]
    files += sorted((ROOT / "docs").glob("*.md"))
    files += sorted((ROOT / "deploy").glob("**/README.md"))
    return [f for f in files if f.is_file()]


def prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks: a link or heading inside one is not one."""
    lines, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
        elif not fenced:
            lines.append(line)
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower-case, markup and punctuation other than '-' and '_'
    dropped, spaces to '-'."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every anchor GitHub makes for the headings of a markdown file (repeats get -1, -2, ...)."""
    seen: dict[str, int] = {}
    result = set()
    for line in prose_lines(path.read_text(encoding="utf-8")):
        match = HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        result.add(base if count == 0 else f"{base}-{count}")
    return result


def links(path: Path) -> list[str]:
    """The link targets of a markdown file, outside code blocks and inline code."""
    found = []
    for line in prose_lines(path.read_text(encoding="utf-8")):
        found += LINK.findall(INLINE_CODE.sub("", line))
    return found


def broken_links(path: Path, root: Path = ROOT) -> list[str]:
    """One line per relative link of `path` whose file or anchor does not exist."""
    problems = []
    for target in links(path):
        if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        resolved = (path.parent / file_part).resolve() if file_part else path
        where = f"{path.relative_to(root)}: ({target})"
        if not resolved.exists():
            problems.append(f"{where}: no such file {file_part}")
        elif anchor:
            if resolved.is_dir() or resolved.suffix != ".md":
                problems.append(f"{where}: an anchor into a file that is not markdown")
            elif anchor not in anchors(resolved):
                problems.append(f"{where}: no heading #{anchor} in {file_part or path.name}")
    return problems


def test_every_relative_link_and_anchor_in_the_docs_resolves() -> None:
    problems = [p for doc in documents() for p in broken_links(doc)]
    assert problems == [], "\n".join(problems)


def test_the_checked_documents_have_links_to_check() -> None:
    # A pattern that stopped matching would pass the test above with nothing checked.
    docs = {doc.relative_to(ROOT).as_posix() for doc in documents()}
    assert {"README.md", "docs/configuration.md", "docs/metrics.md", "docs/operations.md"} <= docs
    relative = [t for doc in documents() for t in links(doc) if not re.match(r"^\w+:", t)]
    assert len([t for t in relative if "#" in t]) >= 20
    assert len(relative) >= 50


def test_the_checker_reports_a_missing_file_and_a_missing_anchor(tmp_path: Path) -> None:
    (tmp_path / "target.md").write_text("# Title\n\n## Fleets: /probe and sharding\n\n## Title\n")
    page = tmp_path / "page.md"
    page.write_text(
        "[ok](target.md#fleets-probe-and-sharding) [ok](target.md#title-1) [ok](#here)\n"
        "[web](https://example.invalid/x#y) `[code](nothing.md)`\n"
        "```\n[fenced](nothing.md)\n```\n"
        "## Here\n"
        "[gone](missing.md) [stale](target.md#no-such-heading) [self](#nowhere)\n"
    )
    problems = broken_links(page, root=tmp_path)
    assert [p.split(": ", 2)[1] for p in problems] == [
        "(missing.md)",
        "(target.md#no-such-heading)",
        "(#nowhere)",
    ]


@pytest.mark.parametrize(
    ("heading", "expected"),
    [
        ("Calls, cache and HA pairs", "calls-cache-and-ha-pairs"),
        ("Fleets: /probe and sharding", "fleets-probe-and-sharding"),
        ("OAuth 2", "oauth-2"),
        ("`token_file` and snake_case", "token_file-and-snake_case"),
        ("Network limits, redirects and proxies", "network-limits-redirects-and-proxies"),
    ],
)
def test_slugs_follow_github(heading: str, expected: str) -> None:
    assert slug(heading) == expected


def test_the_readme_stays_under_20_kb() -> None:
    size = (ROOT / "README.md").stat().st_size
    assert size < README_MAX_BYTES, f"README.md is {size} bytes; move detail into docs/"
