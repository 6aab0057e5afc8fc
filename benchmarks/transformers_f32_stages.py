"""transformers float32, stage by stage, in % of a golden set's e2e float32 tolerance.

    .venv/bin/python benchmarks/transformers_f32_stages.py GOLDEN_DIR [--checkpoint DIR] [--json F]

The e2e case's stored inputs (audio, tokens_in) go through the official float32 pipeline:
``VoxtralRealtimeFeatureExtractor`` on the offline-padded audio (the mel), then one teacher-forced
forward of ``VoxtralRealtimeForConditionalGeneration`` (transformers 5.23.0, eager attention, weights
from the checkpoint, tests/hf_reference.py) with every stage captured by hooks (mel, conv stem, encoder
layers, adapter, dec.in, t_cond, decoder layers, final norm, logits). Each is compared with the golden
by ``oracle.compare`` (port dtype float32), and every stage is replayed on transformers' own input
taps (``oracle.local_view``); printed: max |diff|, atol, % of tolerance and % of the stage-local
tolerance per stage. The bar: <= 50% of both at every stage. Exit code 0 when every stage is within
it, 1 otherwise.

Checkpoint: the one the set was written from (default: the provenance's, ``builtin:tiny`` = the
built-in tiny one). Memory at full size: the float32 model once (~18 GB; weights are copied tensor by
tensor, no random init) plus eager attention's [heads, S, S] scores per layer (S = 8 x positions
encoder frames): use a golden set of a clip of a few tens of seconds. Needs torch + transformers (this
script only; oracle/ never imports them).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # hf_reference: the project's transformers harness

BAR_PCT = 50.0


def checkpoint_of(golden) -> str:
    from oracle.builtin import tiny_checkpoint

    label = golden.provenance.get("checkpoint")
    return str(tiny_checkpoint()) if label in (None, "builtin:tiny") else label


def transformers_f32_stages(golden_dir: str | Path, checkpoint: str | Path | None = None) -> dict[str, dict]:
    """{stage: {"max_abs_diff", "atol", "pct"}} for transformers float32 on the set's e2e case, in
    pipeline order (every float output of the case the hooks give)."""
    import torch
    from transformers import VoxtralRealtimeFeatureExtractor

    from hf_reference import build_hf_model, hf_intermediates
    from oracle.checkpoint import read_safetensors_header, read_tensor
    from oracle.compare import compare
    from oracle.errors import OracleError
    from oracle.goldenset import load_golden
    from oracle.local_view import attach_local
    from oracle.pipeline import load_setup

    golden = load_golden(golden_dir)
    case = next((c for c in golden.cases if c.name == "e2e"), None)
    if case is None:
        raise OracleError(f"{golden_dir}: the set has no e2e case")
    header = read_safetensors_header(case.dir / case.manifest["file"])
    inputs = {k: np.asarray(read_tensor(header[k])) for k in case.manifest["inputs"]}
    setup = load_setup(checkpoint or checkpoint_of(golden), case.manifest["params"]["delay_ms"])
    proto = setup.protocol
    padded = proto.pad_offline(inputs["audio"].astype(np.float64)).astype(np.float32)
    fe = VoxtralRealtimeFeatureExtractor()
    mel = fe(padded, sampling_rate=setup.ckpt.config.audio.sampling_rate, return_tensors="np")["input_features"][0]
    model = build_hf_model(setup.ckpt, torch.float32, low_memory=True)
    cand = {"mel": mel, **hf_intermediates(model, mel, inputs["tokens_in"], proto.delay_tokens)}
    del model  # the stage-local replay below reads the checkpoint itself
    floats = [o.name for o in case.outputs if o.kind == "float" and o.name in cand]
    cand = {k: cand[k] for k in floats}
    report = compare(golden, cand, port_dtype="float32", only=[f"e2e/{k}" for k in floats])
    attach_local(report, golden, cand, checkpoint)  # each stage replayed on transformers' own input taps
    local = {r["name"]: r.get("local_pct") for r in report.local}
    out = {}
    for t in report.tensors:
        m = t.metrics or {}
        out[t.name] = {"max_abs_diff": m.get("max_abs_diff"), "atol": t.tolerance["atol"], "pct": t.tolerance_used_pct,
                       "local_pct": local.get(t.name)}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("golden", type=Path, help="a golden set directory with an e2e case")
    ap.add_argument("--checkpoint", help="checkpoint directory (default: the set's provenance)")
    ap.add_argument("--json", type=Path, help="also write the figures as JSON here")
    a = ap.parse_args(argv)
    from oracle.errors import OracleError

    try:
        stages = transformers_f32_stages(a.golden, a.checkpoint)
    except OracleError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"transformers float32 vs {a.golden} (e2e, port dtype float32); bar: <= {BAR_PCT:g}% of tolerance")
    print(f"{'stage':16s} {'max |diff|':>11s} {'atol':>11s} {'% of tol':>9s} {'local %':>9s}")
    for name, s in stages.items():
        loc = "-" if s["local_pct"] is None else f"{s['local_pct']:.1f}%"
        print(f"{name:16s} {s['max_abs_diff']:11.3e} {s['atol']:11.3e} {s['pct']:8.1f}% {loc:>9s}")
    worst = max(stages, key=lambda k: stages[k]["pct"])
    worst_local = max(stages, key=lambda k: stages[k]["local_pct"] or 0.0)
    ok = all(s["pct"] <= BAR_PCT and (s["local_pct"] or 0.0) <= BAR_PCT for s in stages.values())
    print(f"{'PASS' if ok else 'OVER THE BAR'}: worst {worst} at {stages[worst]['pct']:.1f}% of tolerance;"
          f" worst stage-local {worst_local} at {stages[worst_local]['local_pct'] or 0.0:.1f}% of its local tolerance")
    if a.json:
        a.json.write_text(json.dumps(stages, indent=1) + "\n", encoding="utf-8")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
