"""Code, static JavaScript, templates, tests and docs cite the project's own docs/science.md by
section (``docs/science.md §n``); every such citation names a section that exists, and nothing
cites a document that users of the project do not have."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCIENCE = ROOT / "docs" / "science.md"
CITED = ("app", "synthesis", "static", "templates", "tests", "docs", "benchmarks", "demo/plans", "demo/experiments")
SUFFIXES = {".py", ".js", ".html", ".css", ".md", ".yaml", ".yml"}
CITATION = re.compile(r"docs/science\.md §(\d+)")


def sources() -> list[Path]:
    return sorted(p for d in CITED for p in (ROOT / d).rglob("*") if p.suffix in SUFFIXES and p.is_file())


def sections() -> set[int]:
    return {int(m.group(1)) for m in re.finditer(r"^## (\d+)\. ", SCIENCE.read_text(), flags=re.M)}


def test_every_citation_names_a_section_of_science_md() -> None:
    known = sections()
    dangling = [
        f"{p.relative_to(ROOT)}: §{m.group(1)}"
        for p in sources()
        for m in CITATION.finditer(p.read_text(errors="replace"))
        if int(m.group(1)) not in known
    ]
    assert known and dangling == []


def test_the_code_is_pointed_at_science_md() -> None:
    cited = [p for p in sources() if CITATION.search(p.read_text(errors="replace"))]
    assert {p.relative_to(ROOT).parts[0] for p in cited} >= {"app", "synthesis", "static", "tests"}


def test_nothing_cites_a_document_outside_the_project() -> None:
    outside = re.compile("REFER" + r"ENCE §\d")  # spelled apart so that this file does not match itself
    assert [str(p.relative_to(ROOT)) for p in sources() if outside.search(p.read_text(errors="replace"))] == []
