"""docs/example_report.md and the report shown in docs/PORTING.md §5 are what compare prints today for
the example port (tools/make_example_report.py): regenerated here and compared byte for byte."""

from __future__ import annotations

import re

from oracle_tools.make_example_report import ROOT, build


def test_example_report_is_current(tmp_path):
    report = build(tmp_path)
    assert (ROOT / "docs" / "example_report.md").read_text(encoding="utf-8") == report.markdown(), \
        "docs/example_report.md is stale: run python tools/make_example_report.py"
    porting = (ROOT / "docs" / "PORTING.md").read_text(encoding="utf-8")
    shown = re.search(r"Here is a real one:.*?```text\n(.*?)```", porting, re.S).group(1)
    assert shown == report.text() + "\n", "docs/PORTING.md §5 shows a stale report: paste tools/make_example_report.py --text"
