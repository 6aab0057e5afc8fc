"""Inspect a checkpoint (Mistral or HF layout): names, shapes, dtypes, parameter counts, statistics.

    voxtral-oracle inspect CKPT [--filter GLOB] [--dump GLOB] [--json] [--no-stats]

Statistics per tensor (computed in float64, one tensor in memory at a time): min, max, mean, std,
L2 norm, NaN and Inf counts. --dump prints the values of the tensors matching GLOB.
"""

from __future__ import annotations

import fnmatch
import json

import numpy as np

from oracle.checkpoint import open_checkpoint, read_tensor
from oracle.synth import parameter_counts

from oracle_tools.progress import Progress

STAT_BLOCK = 1 << 24  # elements per block when computing statistics


def add_arguments(p) -> None:
    p.add_argument("checkpoint", metavar="CKPT")
    p.add_argument("--filter", metavar="GLOB", default="*", help="only tensors whose name matches")
    p.add_argument("--dump", metavar="GLOB", help="print the values of matching tensors")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--no-stats", action="store_true", help="names, shapes and dtypes only (fast)")
    p.add_argument("--quiet", action="store_true")


def tensor_stats(arr: np.ndarray) -> dict:
    """min/max/mean/std/L2/NaN/Inf of a (memory-mapped) tensor, blockwise in float64."""
    flat = arr.reshape(-1)
    n = flat.size
    s = s2 = 0.0
    lo, hi = np.inf, -np.inf
    nan = inf = 0
    for i in range(0, n, STAT_BLOCK):
        b = np.asarray(flat[i:i + STAT_BLOCK], dtype=np.float64)
        nan += int(np.isnan(b).sum())
        inf += int(np.isinf(b).sum())
        b = b[np.isfinite(b)]
        if b.size:
            lo, hi = min(lo, float(b.min())), max(hi, float(b.max()))
            s += float(b.sum())
            s2 += float(np.dot(b, b))
    finite = max(n - nan - inf, 1)
    mean = s / finite
    return {"min": lo, "max": hi, "mean": mean, "std": float(np.sqrt(max(s2 / finite - mean * mean, 0.0))),
            "l2": float(np.sqrt(s2)), "nan": nan, "inf": inf}


def run(args) -> int:
    ckpt = open_checkpoint(args.checkpoint)
    names = [n for n in sorted(ckpt.index) if fnmatch.fnmatchcase(n, args.filter)]
    progress = Progress("inspect", enabled=False if args.quiet or args.json else None)
    rows = []
    for k, name in enumerate(names):
        e = ckpt.index[name]
        row = {"name": name, "shape": list(e.shape), "dtype": e.dtype, "parameters": int(np.prod(e.shape)),
               "file": e.file.name}
        if not args.no_stats:
            row.update(tensor_stats(read_tensor(e)))
        rows.append(row)
        progress(k + 1, len(names), name)
    counts = parameter_counts(ckpt.config)
    if args.json:
        print(json.dumps({"checkpoint": str(ckpt.directory), "layout": ckpt.layout, "components": counts,
                          "tensors": rows}, indent=1))
    else:
        print(f"{ckpt.directory} ({ckpt.layout} layout): {counts['tensors']} tensors, {counts['total']:,} parameters")
        for part in ("encoder", "adapter", "embedding", "decoder", "ada (in decoder)"):
            print(f"  {part:<18} {counts[part]:>15,}")
        print()
        head = f"{'name':<78} {'shape':<18} {'dtype':<5}"
        if not args.no_stats:
            head += f" {'min':>10} {'max':>10} {'mean':>10} {'std':>10} {'l2':>10} nan inf"
        print(head)
        for r in rows:
            line = f"{r['name']:<78} {'x'.join(map(str, r['shape'])):<18} {r['dtype']:<5}"
            if not args.no_stats:
                line += (f" {r['min']:>10.4g} {r['max']:>10.4g} {r['mean']:>10.4g} {r['std']:>10.4g}"
                         f" {r['l2']:>10.4g} {r['nan']:>3} {r['inf']:>3}")
            print(line)
    if args.dump:
        with np.printoptions(precision=6, threshold=200, edgeitems=4, linewidth=120):
            for name in names:
                if fnmatch.fnmatchcase(name, args.dump):
                    print(f"\n{name} {ckpt.index[name].dtype}{list(ckpt.index[name].shape)}")
                    print(np.asarray(read_tensor(ckpt.index[name]), dtype=np.float32))
    return 0


if __name__ == "__main__":
    from oracle_tools.cli import run_as_script

    run_as_script("inspect")
