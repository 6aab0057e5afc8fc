"""Write a synthetic checkpoint (params.json + consolidated.safetensors + tekken.json) in the real format.

    voxtral-oracle synth OUT_DIR --size tiny|full [--params PARAMS_JSON] [--seed N] [--dry-run]

--size full writes the real dimensions (4,429,679,360 parameters, 8.86 GB) tensor by tensor, never
holding the model in memory; --params takes any valid params.json (any dims, heads, windows).
"""

from __future__ import annotations

import json

from oracle_tools import argtypes
from oracle.config import read_json
from oracle.synth import parameter_counts, size_config, write_checkpoint

from oracle_tools.outputs import staged_dir
from oracle_tools.progress import Progress


def add_arguments(p) -> None:
    p.add_argument("out_dir", metavar="OUT_DIR")
    p.add_argument("--size", choices=["tiny", "full"], default="tiny")
    p.add_argument("--params", metavar="PARAMS_JSON", help="use this params.json's dims instead of --size")
    p.add_argument("--seed", type=argtypes.seed, default=0)
    p.add_argument("--dry-run", action="store_true", help="print what would be written, write nothing")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--quiet", action="store_true")


def run(args) -> int:
    params = read_json(args.params) if args.params else None
    cfg = size_config(args.size, params, args.params or "params.json")
    counts = parameter_counts(cfg)
    summary = {"out_dir": args.out_dir, "size": "params" if params else args.size, "seed": args.seed,
               "parameters": counts, "bytes_bf16": 2 * counts["total"], "dry_run": args.dry_run}
    if not args.dry_run:
        progress = Progress("synth", enabled=False if args.quiet else None)
        with staged_dir(args.out_dir) as stage:
            write_checkpoint(stage, cfg, seed=args.seed, progress=progress)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        verb = "would write" if args.dry_run else "wrote"
        print(f"{verb} {args.out_dir}: {counts['tensors']} tensors, {counts['total']:,} parameters "
              f"({2 * counts['total']:,} bytes BF16)")
        for part in ("encoder", "adapter", "embedding", "decoder", "ada (in decoder)"):
            print(f"  {part:<18} {counts[part]:>15,}")
    return 0


if __name__ == "__main__":
    from oracle_tools.cli import run_as_script

    run_as_script("synth")
