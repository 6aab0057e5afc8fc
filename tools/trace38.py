"""The position-38 trace: the streaming protocol position by position, with every known porting mistake.

    voxtral-oracle trace38 [CKPT] [--audio AUDIO] --out DIR [--delay-ms N] [--dtype float64|float32]
                           [--no-faults] [--dither X]

Writes DIR/report.md (readable on its own), report.json and PNG plots. Without CKPT / --audio: the
built-in tiny checkpoint and clip. --dither adds X-amplitude noise before the int16 quantization so the
unquantized-mel fault has something to show (the built-in clip is int16-exact); default 1e-4.
"""

from __future__ import annotations

from oracle.blas import quiet_idle_threads

quiet_idle_threads()  # this file also runs as a script: before numpy loads OpenBLAS (see oracle/blas.py)

from pathlib import Path

import numpy as np

from oracle_tools import argtypes
from oracle.audio import quantize_int16
from oracle.golden import Context
from oracle.precision import policy
from oracle.trace import trace38
from oracle.trace_report import write_report

from oracle_tools.golden_cmd import context_from
from oracle_tools.outputs import output_dir, staged_dir
from oracle_tools.progress import Progress


def add_arguments(p) -> None:
    p.add_argument("checkpoint", metavar="CKPT", nargs="?")
    p.add_argument("--audio", metavar="AUDIO")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--delay-ms", type=int, default=None)
    p.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    p.add_argument("--no-faults", action="store_true", help="only the reference and the 38-token prompt")
    p.add_argument("--dither", type=argtypes.nonneg_finite, default=1e-4, help="noise added before quantization (default 1e-4)")
    p.add_argument("--seed", type=argtypes.seed, default=0)
    p.add_argument("--quiet", action="store_true")


def run(args) -> int:
    output_dir(args.out)  # checked before the (long) trace
    ctx, (ckpt_label, audio_label, _, _) = context_from(args.checkpoint, args.audio, args.delay_ms, args.seed, "offline")
    original = ctx.audio + args.dither * np.random.default_rng(args.seed).standard_normal(len(ctx.audio))
    ctx = Context(ctx.setup, quantize_int16(original), ctx.seed)
    progress = Progress("trace38", enabled=False if args.quiet else None)
    report, runs = trace38(ctx, policy(args.dtype), faults=not args.no_faults, original_audio=original, progress=progress)
    parts = ["voxtral-oracle trace38"] + ([ckpt_label] if args.checkpoint else []) + (
        [f"--audio {audio_label}"] if args.audio else []) + ["--out <DIR>", f"--delay-ms {ctx.setup.protocol.delay_ms}",
                                                              f"--dtype {args.dtype}", f"--dither {args.dither:g}"]
    report.update({"checkpoint": ckpt_label, "checkpoint_label": ckpt_label, "audio_label": audio_label,
                   "command": " ".join(parts)})
    with staged_dir(args.out) as stage:
        write_report(report, runs, stage)
    print(f"wrote {Path(args.out) / 'report.md'}")
    for line in report["conclusion"]:
        print(line)
    return 0


if __name__ == "__main__":
    from oracle_tools.cli import run_as_script

    run_as_script("trace38")
