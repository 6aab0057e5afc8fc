"""Write golden/selftest: a tiny golden set, a candidate and the metrics compare reports for it.

    python tools/make_selftest.py [OUT_DIR]     (default: golden/selftest)

For a port author who writes their own comparator (in Rust, C, ...): run it on golden/selftest/set and
golden/selftest/candidate.safetensors and check its numbers against golden/selftest/expected.json,
which is exactly what `voxtral-oracle compare --json` reports (the numbers are defined in
oracle/metrics.py). The values are hand-shaped to hit the edge cases: zeros in the golden (no relative
difference there), rtol > 0, a mismatch that is not the largest difference, and a token sequence that
differs at step 2.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np

from oracle.checkpoint import sha256_file, write_safetensors
from oracle.compare import compare
from oracle.golden import CONVENTIONS
from oracle.goldenset import CASE_SCHEMA, INDEX_SCHEMA, load_candidate, load_golden
from oracle.metrics import compare_metrics


def build(out: Path) -> dict:
    rng = np.random.default_rng(20261124)
    g_pass = rng.standard_normal((4, 5)).astype(np.float32)
    c_pass = (g_pass + 1e-4 * rng.standard_normal((4, 5))).astype(np.float32)
    g_fail = np.array([[0.0, 1.0, -2.0, 0.5], [3.0, 0.0, -0.25, 8.0], [1e-3, -1e-3, 2.0, -4.0]], np.float32)
    c_fail = g_fail.copy()
    c_fail[0, 1] = 1.02  # beyond atol + rtol|g| = 0.01 + 0.001 = 0.011: the first mismatch in C order
    c_fail[1, 3] = 8.05  # beyond 0.01 + 0.008 = 0.018: the largest difference
    c_fail[2, 0] = 0.004  # within: 0.003 <= 0.01 + 1e-6
    g_tok = np.array([1121, 32, 1465, 1112, 32], np.int64)
    c_tok = np.array([1121, 32, 1092, 1112, 32], np.int64)
    tol_pass = {"atol": 1e-3, "rtol": 0.0}
    tol_fail = {"atol": 1e-2, "rtol": 1e-3}

    case = out / "set" / "01_selftest"
    case.mkdir(parents=True, exist_ok=True)
    tensors = {"selftest.x": np.zeros((1,), np.float32), "selftest.pass": g_pass, "selftest.fail": g_fail,
               "selftest.tokens": g_tok}
    write_safetensors(case / "tensors.safetensors", [(k, v.dtype, v.shape, v) for k, v in tensors.items()],
                      metadata={"format": "np"})

    def tol(t):
        return {p: {**t, "measured_max_abs": 0.0, "safety": 1.0} for p in ("float32", "bf16", "float16")}

    manifest = {
        "schema": CASE_SCHEMA, "name": "selftest", "order": 1, "kind": "block",
        "description": "hand-shaped tensors for testing a port's own comparator against expected.json",
        "oracle_function": "none (a comparator self-test)", "file": "tensors.safetensors",
        "sha256": sha256_file(case / "tensors.safetensors"), "params": {}, "weights": {},
        "inputs": {"selftest.x": {"shape": [1], "dtype": "F32", "layout": "[n] row-major"}},
        "outputs": {
            "selftest.pass": {"shape": [4, 5], "dtype": "F32", "kind": "float", "layout": "[rows, cols] row-major", "tolerance": tol(tol_pass)},
            "selftest.fail": {"shape": [3, 4], "dtype": "F32", "kind": "float", "layout": "[rows, cols] row-major", "tolerance": tol(tol_fail)},
            "selftest.tokens": {"shape": [5], "dtype": "I64", "kind": "tokens", "layout": "[n]"},
        },
        "aux": {}, "conventions": CONVENTIONS,
        "provenance": {"command": "python tools/make_selftest.py", "seed": 20261124},
    }
    text = json.dumps(manifest, indent=1) + "\n"
    (case / "manifest.json").write_text(text)
    index = {"schema": INDEX_SCHEMA, "cases": [{"name": "selftest", "dir": case.name, "kind": "block",
                                                "sha256": hashlib.sha256(text.encode()).hexdigest()}],
             "provenance": manifest["provenance"]}
    (out / "set" / "index.json").write_text(json.dumps(index, indent=1) + "\n")
    cand = {"selftest.pass": c_pass, "selftest.fail": c_fail, "selftest.tokens": c_tok}
    write_safetensors(out / "candidate.safetensors", [(k, v.dtype, v.shape, v) for k, v in cand.items()],
                      metadata={"format": "np"})
    report = compare(load_golden(out / "set"), load_candidate(out / "candidate.safetensors"))
    expected = {
        "metrics": {"selftest.pass": compare_metrics(c_pass, g_pass, **tol_pass),
                    "selftest.fail": compare_metrics(c_fail, g_fail, **tol_fail)},
        "tokens": {"selftest.tokens": {"first_step": 2, "golden": 1465, "candidate": 1092}},
        "exit_code": report.exit_code,
        "verdict": report.verdict,
    }
    (out / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")
    return expected


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parents[1] / "golden" / "selftest"
    exp = build(target)
    print(f"wrote {target}: exit {exp['exit_code']}; {exp['verdict']}")
