"""Write docs/example_report.md: compare's report on a port with one catalogued mistake (rotate-half RoPE
on Mistral-layout weights), float32, on the first block cases and end to end, with the stage-local view
and the likely mistakes. docs/PORTING.md §5 reads it; tests/test_example_report.py keeps it current.

    python tools/make_example_report.py [--out docs/example_report.md] [--text]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = "golden/tiny_goldens"
CASES = ("rms_norm", "rope", "swiglu", "conv_stem", "encoder_attention", "e2e")
FAULT = "rope_rotate_half"


def build(tmp: Path):
    """(report, its Markdown) for the example port."""
    from dataclasses import replace

    from oracle import builtin
    from oracle.checkpoint import write_safetensors
    from oracle.compare import compare, load_candidate, load_golden
    from oracle.diagnose import attach_diagnosis
    from oracle.faults import faulty_set
    from oracle.local_view import attach_local
    from oracle.pipeline import load_setup
    from oracle.precision import FLOAT32

    golden = load_golden(ROOT / GOLDEN)
    chosen = replace(golden, cases=tuple(c for c in golden.cases if c.name in CASES))
    tensors = faulty_set(FAULT, load_setup(builtin.tiny_checkpoint()), chosen, FLOAT32)
    path = tmp / "port_dump.safetensors"
    write_safetensors(path, [(k, v.dtype, v.shape, v) for k, v in tensors.items()])
    candidate = load_candidate(path)
    only = [f"{c}.*" for c in CASES if c != "e2e"] + ["e2e/*"]
    report = compare(golden, candidate, port_dtype="float32", only=only)
    attach_local(report, golden, candidate)
    attach_diagnosis(report, golden, candidate)
    report.golden, report.candidate = GOLDEN, "port_dump.safetensors"  # paths as a reader types them
    report.notes = [n.replace(str(ROOT) + "/", "") for n in report.notes]
    return report


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "docs" / "example_report.md"))
    ap.add_argument("--text", action="store_true", help="also print the plain-text report")
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        report = build(Path(tmp))
    Path(a.out).write_text(report.markdown(), encoding="utf-8")
    if a.text:
        print(report.text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
