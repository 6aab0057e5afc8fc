"""Writing a golden set: run each case in float64 (the goldens) and in every port precision (the
measured tolerances), then store inputs, outputs, tolerances and provenance as safetensors + manifests
(golden/SPEC.md). What a case *is* lives in ``oracle.golden``; this module only runs and writes them.

Shape legend: none beyond the cases' own (``oracle.golden``); a manifest lists every tensor's shape.
"""

from __future__ import annotations

import hashlib
import json
import platform
from pathlib import Path

import numpy as np

from . import __version__, blas
from .builtin import BUILTIN_CLIP_LABEL, SPEECH_CLIP_WHERE
from .checkpoint import read_tensor, sha256_file, write_safetensors
from .errors import OracleError
from .float16_range import overflow_count
from .golden import (
    CASES,
    CONVENTIONS,
    PORT_PRECISIONS,
    SAFETY,
    STORED_NAMES,
    CaseSpec,
    Context,
    as_float64,
    run_case,
    safetensors_name,
    stored_dtype,
    stored_inputs,
)
from .layers import path as layers_path
from .local import measure_local
from .precision import FLOAT64
from .weights import specs_of


def measure_tolerances(spec: CaseSpec, inputs: dict, golden: dict[str, np.ndarray], stored: np.dtype) -> dict:
    """Per float output and port dtype: the deviation from float64 of the oracle's own run, or the largest
    over the case's honest implementations (``spec.envelope``), and the tolerance."""
    # floor: unit roundoff x2 of the dtype each port computes in (a float16 port computes in float32 and
    # rounds only matmul inputs, which the measured deviation already holds)
    eps = {"float32": float(np.finfo(np.float32).eps), "bf16": 2.0 ** -8, "float16": float(np.finfo(np.float32).eps)}
    tol: dict[str, dict] = {k: {} for k in golden if k not in spec.token_outputs and k not in spec.int_outputs}
    for port, p in PORT_PRECISIONS.items():
        runs = spec.envelope(as_float64(inputs), p, golden) if spec.envelope else None
        if runs is None:  # the oracle's own run in p
            runs = {"oracle": spec.tolerance_run(as_float64(inputs), p, golden) if spec.tolerance_run
                    else run_case(spec, inputs, p)}
        for k in tol:
            devs = {}
            for name, got in runs.items():
                rows = spec.prefix_of(golden, got) if spec.prefix_of else {}
                g, a = golden[k], got[k].astype(np.float64)
                if k in rows:
                    g, a = g[: rows[k]], a[: rows[k]]
                if g.shape != a.shape:
                    raise AssertionError(f"{spec.name}: {p.name} run {name} gives {k} shape {a.shape}, float64 {g.shape}")
                devs[name] = float(np.abs(a - g).max()) if g.size else 0.0
            dev = max(devs.values())  # g: the rows compared (prefix_of), the same for every run here
            floor = eps[port] * (float(np.abs(g).max()) if g.size else 1.0)
            if port == "float16":  # never tighter than float32: the stages it computes in float32 (mel, norms)
                floor = max(floor, tol[k]["float32"]["atol"] / SAFETY[port])
            tol[k][port] = {"atol": SAFETY[port] * max(dev, floor), "rtol": 0.0, "measured_max_abs": dev,
                            "floor": floor, "safety": SAFETY[port]}
            if len(devs) > 1:  # where measured_max_abs comes from: each honest implementation's deviation
                tol[k][port]["envelope"] = devs
            if port == "float16":  # golden values float16 cannot hold (|x| > 65504): inf in a float16 port
                tol[k][port]["overflow"] = overflow_count(golden[k])[0]
    return tol


def _tensor_sha(arr: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest()


def weight_refs(ctx: Context, groups: list[tuple[str, int | None]]) -> dict:
    if groups == [("all", None)]:
        return {"all": "every tensor of the checkpoint (see provenance.checkpoint_sha256)"}
    refs = {}
    for group, layer in groups:
        for s in specs_of(group):
            e = ctx.ckpt.entry(group, layer, s.field)
            m, h = s.names(layer)
            refs[m] = {"mistral": m, "hf": h, "dtype": e.dtype, "shape": list(e.shape), "sha256": _tensor_sha(read_tensor(e))}
    return refs


def _layout(name: str, shape: tuple) -> str:
    legends = {1: "[n]", 2: "[rows, cols]", 3: "[n, heads, head_dim]"}
    if name == "mel" or name.endswith(".mel"):
        return "[128, T] bins x frames"
    if name.endswith("logits"):
        return "[N, V]"
    return legends.get(len(shape), f"{len(shape)}-d") + " row-major"


def _json_value(x):
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating,)):
        return float(x)
    return x


def write_case(spec: CaseSpec, ctx: Context, out_dir: Path, order: int, stored: np.dtype, provenance: dict,
               progress=None, reuse=None) -> dict:
    """Run one case three ways and write its directory; returns its index entry. ``reuse``
    (``oracle.tolerance_reuse.ReusedTolerances``): take the tolerances from that set, checked, and skip
    the float32/bf16/float16 runs."""
    case_dir = out_dir / f"{order:02d}_{spec.name}"
    case_dir.mkdir(parents=True, exist_ok=True)
    if reuse is not None:
        reuse.check_case(spec.name, {k: _json_value(v) for k, v in spec.params.items()})  # before the (long) run
    inputs = stored_inputs(spec, stored)
    golden = run_case(spec, inputs, FLOAT64)
    if reuse is not None:
        tolerances = reuse.tolerances(spec.name, inputs, {k: v for k, v in golden.items()
                                                           if k not in spec.token_outputs and k not in spec.int_outputs})
        local = reuse.local(spec.name, list(tolerances))
    else:
        tolerances = measure_tolerances(spec, inputs, golden, stored)
        # Stage-local tolerances (oracle.local): each e2e stage alone, on the golden's own input taps.
        local = measure_local(spec.local_stages(), golden, as_float64(inputs)) if spec.local_stages else {}
    aux = spec.margins(golden) if spec.margins else {}

    def as_stored(k, v):
        return v.astype(np.int64) if k in spec.token_outputs or k in spec.int_outputs else v.astype(stored)

    tensors = {**inputs, **{k: as_stored(k, v) for k, v in golden.items()}, **{k: v.astype(stored) for k, v in aux.items()}}
    path = case_dir / "tensors.safetensors"
    write_safetensors(path, [(k, v.dtype, v.shape, v) for k, v in tensors.items()], metadata={"format": "np"})

    def meta(k, v, kind):
        m = {"shape": list(v.shape), "dtype": safetensors_name(v.dtype), "layout": _layout(k, v.shape)}
        if kind:
            m["kind"] = kind
        return m

    outputs = {}
    for k, v in golden.items():
        kind = "tokens" if k in spec.token_outputs else "int" if k in spec.int_outputs else "float"
        outputs[k] = meta(k, tensors[k], kind)
        if kind == "float":
            outputs[k]["tolerance"] = tolerances[k]
            if k in local:
                outputs[k]["local"] = local[k]
        if kind == "tokens":
            outputs[k]["text"] = ctx.setup.tekken.decode([int(t) for t in v])
        if k in spec.rows_follow:
            outputs[k]["rows_follow"] = spec.rows_follow[k]
    from .goldenset import CASE_SCHEMA  # here: the golden-set module loads what reading goldens needs

    manifest = {
        "schema": CASE_SCHEMA,
        "name": spec.name,
        "order": order,
        "kind": spec.kind,
        "description": spec.description,
        "oracle_function": spec.oracle_function,
        "file": "tensors.safetensors",
        "sha256": sha256_file(path),
        "params": {k: _json_value(v) for k, v in spec.params.items()},
        "weights": weight_refs(ctx, spec.weights),
        "inputs": {k: meta(k, v, None) for k, v in inputs.items()},
        "outputs": outputs,
        "aux": {k: meta(k, tensors[k], "float") for k in aux},
        "conventions": CONVENTIONS,
        "provenance": provenance,
    }
    text = json.dumps(manifest, indent=1, ensure_ascii=False) + "\n"
    (case_dir / "manifest.json").write_text(text, encoding="utf-8")
    return {"name": spec.name, "dir": case_dir.name, "kind": spec.kind,
            "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest()}


def provenance_for(ctx: Context, checkpoint_label: str, audio_label: str | None, audio_sha: str | None,
                   stored_name: str, command: str, audio_int16_exact: bool | None = None) -> dict:
    files = {f.name: sha256_file(f) for f in ctx.ckpt.files}
    tk = Path(ctx.ckpt.directory) / "tekken.json"
    return {
        "oracle_version": __version__,
        "numpy_version": np.__version__,
        "python_version": platform.python_version(),
        "blas_kernel": blas.kernel(),  # float32/float64 last bits depend on it (oracle/blas.py)
        "layers": layers_path(),  # "fast" (oracle/kernels.py) or "plain" (--plain-layers): last bits differ
        "checkpoint": checkpoint_label,
        "checkpoint_layout": ctx.ckpt.layout,
        "checkpoint_sha256": files,
        "tekken_sha256": sha256_file(tk) if tk.exists() else None,
        "audio": audio_label,
        # where the audio file is: the built-in clip's place and how to copy it out; null for a path given
        "audio_file": SPEECH_CLIP_WHERE if audio_label == BUILTIN_CLIP_LABEL else None,
        "audio_sha256": audio_sha,
        "audio_int16_exact": audio_int16_exact,  # the audio before the offline int16 round trip already was
        "seed": ctx.seed,
        "compute_dtype": "float64",
        "stored_dtype": stored_name,
        "framing": ctx.framing,
        "delay_ms": ctx.setup.protocol.delay_ms,
        "command": command,
    }


def write_golden_set(ctx: Context, out_dir: str | Path, cases: list[str], stored_name: str, provenance: dict,
                     progress=None, reuse=None) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if stored_name not in STORED_NAMES:
        raise OracleError(f"unknown golden dtype {stored_name!r}: choose one of {', '.join(STORED_NAMES)}")
    from .goldenset import INDEX_SCHEMA

    entries = []
    for k, name in enumerate(cases):
        entries.append(write_case(CASES[name](ctx), ctx, out, k + 1, stored_dtype(stored_name), provenance, reuse=reuse))
        if progress:
            progress(k + 1, len(cases), name)
    index = {"schema": INDEX_SCHEMA, "cases": entries, "provenance": provenance}
    (out / "index.json").write_text(json.dumps(index, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return out
