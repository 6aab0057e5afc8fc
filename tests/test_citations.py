"""Every "§" citation in the code and the documents resolves to a section that exists in the repository.

A bare "§6.3" (or "MODEL.md §6.3") means docs/MODEL.md, the project's model reference; a citation
qualified by another document on the same line ("SPEC.md §3") means that document's headings.
Recognised forms: "§6", "§6.3", ranges and alternatives ("§6.1–6.4", "§1.4/1.5"), and numbered items
("§2.2 item 6", which must be item 6 of the numbered list in §2.2). A section is a Markdown heading
whose text starts with its number: "## 6. Streaming protocol", "### 6.3 Prompt and padding".
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "docs" / "MODEL.md"
# Where citations live: the package, the tools, the tests, the notebooks (both forms), the documents.
SCANNED = [
    *sorted((ROOT / "oracle").rglob("*.py")),
    *sorted((ROOT / "tools").rglob("*.py")),
    *sorted(p for p in (ROOT / "tests").rglob("*.py") if p.name != "test_citations.py"),  # not its own examples
    *sorted((ROOT / "benchmarks").rglob("*.py")),
    *sorted((ROOT / "notebooks").glob("*.py")),
    *sorted((ROOT / "notebooks").glob("*.ipynb")),
    *sorted((ROOT / "notebooks").glob("*.md")),
    *sorted((ROOT / "docs").rglob("*.md")),
    *sorted((ROOT / "docs").rglob("*.json")),
    *sorted((ROOT / "golden").glob("*.md")),
    ROOT / "README.md",
]

NUM = r"\d+(?:\.\d+)?"
# One citation: "§6.3", optionally followed by more numbers joined by a range dash, a slash or "and"
# ("§6.1–6.4", "§1.4/1.5"), optionally followed by " item 6".
CITATION = re.compile(rf"§\s?({NUM}(?:\s?(?:–|-|/|and)\s?§?{NUM})*)(?:\s+item\s+(\d+))?")
# A document named just before a citation, with only citation text in between ("SPEC.md §3",
# "`docs/MODEL.md` §4, §5, §6.3").
QUALIFIER = re.compile(r"([\w./-]+\.md)`?(?:[\s,;§\d.–/()-]|and|item)*$")
HEADING = re.compile(rf"^(#{{1,6}})\s+({NUM})\.?\s")
ITEM = re.compile(r"^\s*(\d+)\.\s")


def sections(doc: Path) -> dict[str, list[str]]:
    """Section number -> the lines of its body (up to the next heading of any level)."""
    out: dict[str, list[str]] = {}
    current = None
    in_code = False
    for line in doc.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            in_code = not in_code
        m = None if in_code else HEADING.match(line)
        if m:
            current = m.group(2)
            assert current not in out, f"{doc.relative_to(ROOT)}: section {current} appears twice"
            out[current] = []
        elif line.startswith("#") and not in_code:
            current = None
        elif current is not None:
            out[current].append(line)
    return out


def texts(path: Path) -> list[str]:
    """The lines a reader sees: a notebook's cell sources, any other file as it is."""
    if path.suffix == ".ipynb":
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        return [line for c in cells for line in "".join(c["source"]).splitlines()]
    return path.read_text(encoding="utf-8").splitlines()


def citations(line: str):
    """(document or None for MODEL.md, [section numbers], item number or None) for each citation."""
    for m in CITATION.finditer(line):
        q = QUALIFIER.search(line[: m.start()])
        doc = q.group(1) if q and Path(q.group(1)).name != "MODEL.md" else None
        numbers = re.findall(NUM, m.group(1))
        yield doc, numbers, (int(m.group(2)) if m.group(2) else None)


def resolve(doc: str, cited_from: Path) -> Path | None:
    for base in (cited_from.parent, ROOT, ROOT / "docs", ROOT / "golden"):
        p = (base / doc).resolve()
        if p.is_file():
            return p
    return None


def test_model_reference_has_the_numbered_sections():
    s = sections(MODEL)
    expected = {str(n) for n in range(12)} | {
        *(f"1.{i}" for i in range(1, 6)), *(f"2.{i}" for i in range(1, 4)), "3.1", "3.2",
        *(f"5.{i}" for i in range(1, 4)), *(f"6.{i}" for i in range(1, 7)), *(f"7.{i}" for i in range(1, 4)),
        *(f"8.{i}" for i in range(1, 5)), *(f"11.{i}" for i in range(1, 11)),
    }
    assert expected <= set(s), f"docs/MODEL.md lacks sections {sorted(expected - set(s))}"
    assert "### Other traps" in MODEL.read_text(encoding="utf-8")


def test_every_citation_resolves():
    known = {MODEL: sections(MODEL)}
    bad, n = [], 0
    for path in SCANNED:
        for lineno, line in enumerate(texts(path), 1):
            for doc, numbers, item in citations(line):
                n += 1
                where = f"{path.relative_to(ROOT)}:{lineno}: {line.strip()[:120]}"
                target = MODEL if doc is None else resolve(doc, path)
                if target is None:
                    bad.append(f"{where}  ({doc} does not exist)")
                    continue
                if target not in known:
                    known[target] = sections(target)
                for number in numbers:
                    if number not in known[target]:
                        bad.append(f"{where}  ({target.relative_to(ROOT)} has no section {number})")
                    elif item is not None and number == numbers[-1]:
                        items = {int(i.group(1)) for i in map(ITEM.match, known[target][number]) if i}
                        if item not in items:
                            bad.append(f"{where}  ({target.relative_to(ROOT)} §{number} has no item {item})")
    assert n > 100, f"only {n} citations found: the scanner is broken"
    assert not bad, "unresolved citations:\n" + "\n".join(bad)


@pytest.mark.parametrize("line, expected", [
    ("(MODEL.md §2.2 item 6)", [(None, ["2.2"], 6)]),
    ("# Spec: `docs/MODEL.md` §4, §5, §6.3.", [(None, ["4"], None), (None, ["5"], None), (None, ["6.3"], None)]),
    ("§6.1–6.4, §1.4/1.5", [(None, ["6.1", "6.4"], None), (None, ["1.4", "1.5"], None)]),
    ("golden/SPEC.md §3", [("golden/SPEC.md", ["3"], None)]),
    ("see SPEC.md for the format; the mel is §2.2", [(None, ["2.2"], None)]),
])
def test_citation_parser(line, expected):
    assert list(citations(line)) == expected


def test_a_missing_section_is_reported(tmp_path):
    doc = tmp_path / "X.md"
    doc.write_text("## 1. One\n\n1. first\n2. second\n\n### 1.1 Sub\n\n```\n## 9. not a heading\n```\n")
    s = sections(doc)
    assert set(s) == {"1", "1.1"}
    items = {int(i.group(1)) for i in map(ITEM.match, s["1"]) if i}
    assert items == {1, 2}
