"""Run the oracle on a golden set's own inputs, in a chosen precision, and write its outputs as a candidate.

    voxtral-oracle forward COMPONENT --golden DIR --out CANDIDATE.safetensors [--dtype float32|bf16|float64]
                                     [--checkpoint CKPT]

COMPONENT is a case name (rms_norm, conv_stem, e2e, ...), a comma-separated list, or "all". The output
file is exactly what a port should produce: every output tensor of those cases under its golden name.
The checkpoint is the golden set's (from its provenance) unless --checkpoint is given.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from oracle import builtin
from oracle_tools import argtypes
from oracle_tools.outputs import output_file
from oracle.checkpoint import read_safetensors_header, read_tensor, write_safetensors
from oracle.errors import OracleError, where
from oracle.jsonio import read_json_object
from oracle.golden import Context, replay, select_cases
from oracle.pipeline import load_setup
from oracle.precision import policy


def add_arguments(p) -> None:
    p.add_argument("component", metavar="COMPONENT", type=argtypes.name_list, help="case name(s), comma-separated, or 'all'")
    p.add_argument("--golden", required=True, metavar="DIR", help="golden set whose inputs to replay")
    p.add_argument("--out", required=True, metavar="FILE")
    p.add_argument("--dtype", choices=["float32", "bf16", "float64"], default="float32")
    p.add_argument("--checkpoint", metavar="CKPT", help="override the checkpoint named in the golden provenance")


def load_index(golden: Path) -> dict:
    path = golden / "index.json"
    try:
        is_dir = golden.is_dir()
    except OSError as err:
        raise OracleError(where(golden, f"cannot read: {err.strerror or err}")) from None
    if not is_dir:
        raise OracleError(where(golden, "not a golden set directory"))
    return read_json_object(path)


def replay_set(golden: Path, components: str, precision: str, checkpoint: str | None = None) -> dict[str, np.ndarray]:
    index = load_index(golden)
    prov = index["provenance"]
    ckpt = checkpoint or (builtin.tiny_checkpoint() if prov["checkpoint"] == "builtin:tiny" else prov["checkpoint"])
    setup = load_setup(ckpt, prov["delay_ms"])
    wanted = set(select_cases(components))
    p = policy(precision)
    out: dict[str, np.ndarray] = {}
    for entry in index["cases"]:
        if entry["name"] not in wanted:
            continue
        case_dir = golden / entry["dir"]
        manifest = read_json_object(case_dir / "manifest.json")
        header = read_safetensors_header(case_dir / manifest["file"])
        inputs = {k: np.asarray(read_tensor(header[k])) for k in manifest["inputs"]}
        audio = inputs["audio"].astype(np.float64) if "audio" in inputs else None
        ctx = Context(setup, audio, prov["seed"], prov["framing"])
        out.update(replay(ctx, entry["name"], inputs, p))
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
