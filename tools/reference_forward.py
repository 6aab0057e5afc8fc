"""Run the oracle on a golden set's own inputs, in a chosen precision, and write its outputs as a candidate.

    voxtral-oracle forward COMPONENT --golden DIR --out CANDIDATE.safetensors [--dtype float32|bf16|float16|float64]
                                     [--checkpoint CKPT]

COMPONENT is a case name (rms_norm, conv_stem, e2e, ...), a comma-separated list, or "all". The output
file is exactly what a port should produce: every output tensor of those cases under its golden name.
The golden set is read as compare reads it (oracle/goldenset.py): every sha256 checked, no file outside
the golden directory. The checkpoint is the golden set's (from its provenance) unless --checkpoint is given.
"""

from __future__ import annotations

from oracle.blas import quiet_idle_threads

quiet_idle_threads()  # this file also runs as a script: before numpy loads OpenBLAS (see oracle/blas.py)

from pathlib import Path

import numpy as np

from oracle import builtin
from oracle_tools import argtypes
from oracle_tools.outputs import output_file
from oracle.checkpoint import write_safetensors
from oracle.errors import OracleError, shown, where
from oracle.golden import Context, replay, select_cases
from oracle.goldenset import GoldenSet, load_golden
from oracle.pipeline import load_setup
from oracle.precision import policy

REPLAY_PROVENANCE = ("checkpoint", "delay_ms", "seed", "framing")  # what replaying a case needs to know


def add_arguments(p) -> None:
    p.add_argument("component", metavar="COMPONENT", type=argtypes.name_list, help="case name(s), comma-separated, or 'all'")
    p.add_argument("--golden", required=True, metavar="DIR", help="golden set whose inputs to replay")
    p.add_argument("--out", required=True, metavar="FILE")
    p.add_argument("--dtype", choices=["float32", "bf16", "float16", "float64"], default="float32")
    p.add_argument("--checkpoint", metavar="CKPT", help="override the checkpoint named in the golden provenance")


def provenance(golden: GoldenSet) -> dict:
    """The set's provenance (a single case directory: the case's), with every key replay needs."""
    prov = golden.provenance or golden.cases[0].provenance
    source = golden.path / ("index.json" if golden.index is not None else "manifest.json")
    missing = [k for k in REPLAY_PROVENANCE if k not in prov]
    if missing:
        raise OracleError(where(source, f"provenance lacks {', '.join(missing)}: cannot replay its cases"), exit_code=2)
    checks = {"checkpoint": lambda v: isinstance(v, str) and v.strip() != "",
              "delay_ms": lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 10_000),
              "seed": lambda v: isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**63,
              "framing": lambda v: v in ("offline", "vllm")}
    for key, ok in checks.items():
        if not ok(prov[key]):
            raise OracleError(where(source, f"provenance {key} is {shown(prov[key])}: cannot replay its cases"), exit_code=2)
    return prov


def replay_set(golden: Path, components: str, precision: str, checkpoint: str | None = None) -> dict[str, np.ndarray]:
    """Every output of the selected cases, computed by the oracle from the cases' own (verified) inputs."""
    try:
        gs = load_golden(golden)
    except OracleError as err:  # compare's usage code is 3; every other command's bad input is 2
        err.exit_code = 2
        raise
    prov = provenance(gs)
    ckpt = checkpoint or (builtin.tiny_checkpoint() if prov["checkpoint"] == "builtin:tiny" else prov["checkpoint"])
    setup = load_setup(ckpt, prov["delay_ms"])
    wanted = set(select_cases(components))
    p = policy(precision)
    out: dict[str, np.ndarray] = {}
    for case in gs.cases:
        if case.name not in wanted:
            continue
        inputs = {k: np.asarray(v) for k, v in case.read_inputs().items()}
        audio = inputs["audio"].astype(np.float64) if "audio" in inputs else None
        params = case.manifest.get("params") if isinstance(case.manifest.get("params"), dict) else {}
        stop = params.get("stop_after") if case.kind == "e2e" else None  # a front-end golden (golden --stop-after)
        ctx = Context(setup, audio, prov["seed"], prov["framing"], stop_after=stop if isinstance(stop, str) else None)
        out.update(replay(ctx, case.name, inputs, p))
    return out


def run(args) -> int:
    out = output_file(args.out)  # checked before the (long) replay, so a bad path costs nothing
    outputs = replay_set(Path(args.golden), args.component, args.dtype, args.checkpoint)
    tensors = [(k, v.dtype if v.dtype.kind in "iu" else np.dtype(np.float32), v.shape,
                v if v.dtype.kind in "iu" else v.astype(np.float32)) for k, v in outputs.items()]
    write_safetensors(out, tensors, metadata={"format": "np", "producer": f"voxtral-oracle forward {args.dtype}"})
    print(f"wrote {len(tensors)} tensors to {args.out}")
    return 0


if __name__ == "__main__":
    from oracle_tools.cli import run_as_script

    run_as_script("forward")
