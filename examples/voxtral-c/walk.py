#!/usr/bin/env python3
"""The voxtral.c case study end to end: run voxtral.c as shipped, then after each fix, and compare each run.

    python examples/voxtral-c/walk.py CHECKOUT --ckpt CKPT_DIR --golden GOLDEN_DIR --out OUT_DIR [--audio WAV]

For step k (0 = as shipped, then fixes/1-*.patch, 1+2, ...) it writes OUT_DIR/<step>/ (the candidate
.npy files, via run.py) and OUT_DIR/<step>.md / .json / .txt (`voxtral-oracle compare --port-dtype
float32`, with its stage-local view). docs/case-studies/voxtral-c.md shows these reports for the
synthetic full-size checkpoint and the built-in clip (run with ``--front-end-steps 1 2``).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
FIXES = sorted(p.stem for p in (HERE / "fixes").glob("*.patch"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkout", type=Path)
    ap.add_argument("--ckpt", type=Path, required=True)
    ap.add_argument("--golden", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--audio", type=Path)
    ap.add_argument("--steps", type=int, nargs="*", help="only these steps (0 = as shipped, k = fixes 1..k)")
    ap.add_argument("--front-end-steps", type=int, nargs="*", default=[],
                    help="run these steps with run.py --encoder-only (stops after adapter.out) and compare only the"
                         " front-end taps (the case study: 1 2)")
    a = ap.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    steps = [("0-as-shipped", [])] + [(FIXES[k - 1], FIXES[:k]) for k in range(1, len(FIXES) + 1)]
    for k, (name, fixes) in enumerate(steps):
        if a.steps is not None and k not in a.steps:
            continue
        cand = a.out / name
        cmd = [sys.executable, str(HERE / "run.py"), str(a.checkout), "--ckpt", str(a.ckpt), "--golden", str(a.golden),
               "--out", str(cand)] + (["--audio", str(a.audio)] if a.audio else [])
        for f in fixes:
            cmd += ["--fix", f]
        front = k in a.front_end_steps
        if front:
            cmd.append("--encoder-only")
        print(f"== step {k}: {name} (fixes: {', '.join(fixes) or 'none'})", flush=True)
        subprocess.run(cmd, check=True)
        only = ["--only", "mel", "--only", "enc.*", "--only", "adapter.out"] if front else []
        r = subprocess.run(["voxtral-oracle", "compare", str(a.golden), str(cand), "--port-dtype", "float32", *only,
                            "--markdown", str(a.out / f"{name}.md"), "--json", str(a.out / f"{name}.json")],
                           capture_output=True, text=True)
        (a.out / f"{name}.txt").write_text(r.stdout + r.stderr)
        print(r.stdout.strip().splitlines()[-1] if r.stdout.strip() else r.stderr, f"(exit {r.returncode})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
