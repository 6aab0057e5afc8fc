"""float16 ports (ggml's F16 CPU kernels): the policy's rounding points, float16 tolerances that the
oracle's own float16 run passes and float32 tolerances it fails (tiny and odd configs), real mistakes
that float16 tolerances still catch at their own stage, float16's range, and the precision signature
that tells a float16 candidate from a float32 or bf16 one."""

from __future__ import annotations

import json
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

import oracle.adapter
import oracle.compare
import oracle.encoder
import oracle.layers
import oracle.mel as mel_mod
from oracle import builtin
from oracle.checkpoint import read_safetensors_header, read_tensor
from oracle.compare import compare, load_golden
from oracle.faults import faulty_outputs
from oracle.float16_range import FLOAT16_MAX, RangeTap, overflow, overflow_line, weight_range
from oracle.golden import PORT_PRECISIONS, Context
from oracle.golden_writer import provenance_for, write_golden_set
from oracle.pipeline import load_setup
from oracle.precision import BFLOAT16, FLOAT16, FLOAT32, FLOAT64, PORT_DTYPES, policy
from oracle.faults import gelu_tanh
from oracle.mel_variants import dft_angle_f32
from oracle.precision_signature import envelopes, signature
from oracle.synth import write_checkpoint
from oracle_tools.cli import main
from oracle_tools.reference_forward import replay_set
from test_conformance import ODD_A, ODD_B

COMMITTED = Path(__file__).parents[1] / "golden" / "tiny_goldens"
BLOCKS = ("rms_norm,rope,swiglu,time_ada,conv_stem,encoder_attention,encoder_layer,projector,"
          "decoder_attention,decoder_layer,lm_head")
GELU_BLOCKS = "time_ada,conv_stem,projector"


@pytest.fixture(scope="module")
def golden():
    return load_golden(COMMITTED)


@pytest.fixture(scope="module")
def blocks16():
    return replay_set(COMMITTED, BLOCKS, "float16")


def case_inputs(golden, name: str) -> dict[str, np.ndarray]:
    case = next(c for c in golden.cases if c.name == name)
    header = read_safetensors_header(case.dir / case.manifest["file"])
    return {k: np.asarray(read_tensor(header[k])) for k in case.manifest["inputs"]}


def stage_usage(report) -> dict[str, float]:
    return {t.name: t.tolerance_used_pct for t in report.tensors if t.tolerance_used_pct is not None}


# -- the policy --------------------------------------------------------------------------------


def test_operand_is_the_only_new_rounding():
    x = np.random.default_rng(0).standard_normal((7, 9)).astype(np.float32) * 3
    for p in (FLOAT64, FLOAT32, BFLOAT16):
        assert p.operand(x) is x and p.round_weight_(x) is x  # identity: those policies' bits do not move
    y = FLOAT16.operand(x)
    assert y.dtype == np.float32 and np.array_equal(y, x.astype(np.float16).astype(np.float32))
    assert FLOAT16.store(x) is x  # outputs stay float32: nothing but operands and weights is float16
    assert policy("float16") is FLOAT16 and set(PORT_PRECISIONS) == set(PORT_DTYPES)


def test_float16_weights_from_bf16():
    """BF16 -> float16 is exact in float16's normal range; tiny weights lose bits or vanish, huge ones overflow."""
    w = np.array([1.5, -0.0078125, 3.0e-3, 2.0 ** -14, 2.0 ** -20, 2.0 ** -30, 1.0e5, 0.0], np.float32)
    wb = w.astype(ml_dtypes.bfloat16)
    got = FLOAT16.weight(wb)
    exact = wb.astype(np.float32)
    assert np.array_equal(got[:4], exact[:4]) and got[-1] == 0.0
    assert got[5] == 0.0 and np.isinf(got[6])
    r = weight_range("w", wb)
    assert (r.overflow, r.subnormal, r.flushed, r.size) == (1, 1, 1, 8)


# -- the oracle's own float16 run --------------------------------------------------------------


def test_float16_run_passes_float16_and_fails_float32_tiny(golden, blocks16):
    report = compare(golden, blocks16, port_dtype="float16", only=[f"{c}/*" for c in BLOCKS.split(",")])
    assert report.exit_code == 0, report.text()
    assert max(stage_usage(report).values()) <= 30  # its own deviation x safety 4: 25% used
    r32 = compare(golden, blocks16, port_dtype="float32", only=[f"{c}/*" for c in BLOCKS.split(",")])
    assert r32.exit_code == 1
    # it fails float32 wherever a matmul rounds its inputs, by two orders of magnitude ...
    assert stage_usage(r32)["encoder_layer.out"] > 1e4 and stage_usage(r32)["conv_stem.conv1"] > 1e3
    # ... and is a float32 computation where it computes in float32 (norms, RoPE): same tolerance there
    assert stage_usage(r32)["rms_norm.out"] <= 100 and stage_usage(r32)["rope.out"] <= 100


def test_float16_e2e_cli(tmp_path, capsys):
    """`forward --dtype float16` makes the oracle a float16 candidate; `compare --port-dtype float16` passes
    it and the float32 tolerances fail it, at the first matmul stage."""
    cand = tmp_path / "c16.safetensors"
    assert main(["forward", "e2e", "--golden", str(COMMITTED), "--out", str(cand), "--dtype", "float16"]) == 0
    capsys.readouterr()
    assert main(["compare", str(COMMITTED), str(cand), "--only", "e2e/*", "--port-dtype", "float16"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("PASS")
    assert main(["compare", str(COMMITTED), str(cand), "--only", "e2e/*", "--port-dtype", "float32"]) == 1
    assert "first divergence at enc.conv1.out" in capsys.readouterr().out


@pytest.mark.parametrize("name, cfg", [("odd_a", ODD_A), ("odd_b", ODD_B)])
def test_float16_run_on_odd_configs(name, cfg, tmp_path):
    write_checkpoint(tmp_path / name, cfg, seed=7)
    ctx = Context(load_setup(tmp_path / name), None, 3)
    cases = ["swiglu", "conv_stem", "encoder_layer", "projector", "decoder_layer", "lm_head"]
    prov = provenance_for(ctx, str(tmp_path / name), None, None, "float32", "test")
    gdir = write_golden_set(ctx, tmp_path / "g", cases, "float32", prov)
    golden = load_golden(gdir)
    cand = replay_set(gdir, ",".join(cases), "float16", checkpoint=str(tmp_path / name))
    assert compare(golden, cand, port_dtype="float16").exit_code == 0
    r32 = compare(golden, cand, port_dtype="float32")
    assert r32.exit_code == 1 and all(t.status == "FAIL" for t in r32.tensors), r32.text()


# -- real mistakes under float16 tolerances ------------------------------------------------------


def test_window_one_key_too_wide_fails_float16(golden):
    """The encoder window one key too wide: exact up to row W, then far beyond float16's tolerance."""
    inputs = case_inputs(golden, "e2e")
    ctx = Context(load_setup(builtin.tiny_checkpoint()), inputs["audio"].astype(np.float64), 0)
    cand = faulty_outputs("window_plus_one", ctx, "e2e", inputs, FLOAT16)
    report = compare(golden, cand, port_dtype="float16", only=["e2e/*"])
    assert report.exit_code == 1, report.text()
    assert "first divergence at enc.L00.out" in report.text().splitlines()[-1]
    assert stage_usage(report)["enc.L00.out"] > 500 and stage_usage(report)["enc.conv.out"] <= 30


tanh_gelu = gelu_tanh  # the catalogue's tanh GELU (oracle.faults): one formula


def test_tanh_gelu_shows_at_the_gelu_stages(golden, blocks16, monkeypatch):
    """tanh − erf is at most 4.7e-4 (at |x| = 2.70), the same size as float16's own rounding at the GELU
    stages (~5e-4 at the conv stem): a max-|diff| float16 tolerance on a tap cannot fail it without failing
    honest float16 ports. What holds here: float32 tolerances fail it at the first GELU stage, and under
    float16 it takes about twice the tolerance the honest float16 run takes at the GELU stages, nowhere
    else. What fails it under float16, at its own stage: the stage-local view of an e2e dump
    (tests/test_local.py::test_tanh_gelu_fails_locally_at_the_gelu_stages)."""
    for mod in (oracle.encoder, oracle.adapter, oracle.layers):
        monkeypatch.setattr(mod, "gelu", tanh_gelu)
    only = [f"{c}/*" for c in GELU_BLOCKS.split(",")]
    r32 = compare(golden, replay_set(COMMITTED, GELU_BLOCKS, "float32"), port_dtype="float32", only=only)
    assert r32.exit_code == 1 and "first divergence at time_ada.scale" in r32.text().splitlines()[-1]
    bad = stage_usage(compare(golden, replay_set(COMMITTED, GELU_BLOCKS, "float16"), port_dtype="float16", only=only))
    honest = stage_usage(compare(golden, blocks16, port_dtype="float16", only=only))
    assert bad["conv_stem.out"] > 1.8 * honest["conv_stem.out"] and bad["time_ada.scale"] > 1.5 * honest["time_ada.scale"]
    assert bad["time_ada.t_cond"] == honest["time_ada.t_cond"]  # before any GELU: unchanged


def test_float32_dft_angle_fails_float16_at_the_mel(golden):
    """The catalogue's float32 DFT angle 2π·k·n/400, k·n not reduced mod 400 (oracle.mel_variants)."""
    setup = load_setup(builtin.tiny_checkpoint())
    audio = case_inputs(golden, "e2e")["audio"].astype(np.float64)
    honest = mel_mod.log_mel(setup.protocol.pad_offline(audio).astype(np.float32), np.float32)
    bad = dft_angle_f32(setup.protocol.pad_offline(audio).astype(np.float32), np.float32)
    assert compare(golden, {"mel": honest}, port_dtype="float16", only=["e2e/mel"]).exit_code == 0
    report = compare(golden, {"mel": bad}, port_dtype="float16", only=["e2e/mel"])
    # float16's mel tolerance is float32's (its floor), 10x the honest float32 front ends' envelope: ~4x here
    assert report.exit_code == 1 and stage_usage(report)["mel"] > 200, report.text()


# -- float16's range ---------------------------------------------------------------------------


def test_overflow_scan():
    taps = {"a": np.ones((3, 4)), "b": np.array([[1e5, -7e4], [1.0, 65504.0]]), "t": np.arange(3)}
    found = overflow(taps)
    assert [(f.stage, f.count, f.max_abs) for f in found] == [("b", 2, 1e5)]
    assert "b: 2 element(s) beyond float16's range" in overflow_line(taps)
    assert overflow_line({"a": np.full(2, -3.0)}).startswith("float16 range: no activation overflows (largest |x| 3 at a")
    rt = RangeTap()
    rt("x", np.array([1.0, np.inf, -7e4]))
    rt("x", np.array([2e5]))
    assert [(f.count, f.max_abs) for f in rt.findings()] == [(2, 2e5)] and rt.nonfinite() == {"x": 1}


def test_tiny_goldens_record_no_float16_overflow(golden):
    counts = [o.tolerance["float16"] for c in golden.cases for o in c.outputs if o.tolerance]
    manifest = json.loads((COMMITTED / "15_e2e" / "manifest.json").read_text())
    assert all(t["float16"]["overflow"] == 0 for t in (o["tolerance"] for o in manifest["outputs"].values() if "tolerance" in o))
    assert len(counts) > 30 and FLOAT16_MAX == 65504.0


# -- which precision a candidate looks like -------------------------------------------------------


@pytest.mark.parametrize("port", ["float32", "float16", "bf16"])
def test_signature_names_the_precision(golden, blocks16, port):
    cand = blocks16 if port == "float16" else replay_set(COMMITTED, BLOCKS, port)
    report = compare(golden, cand, port_dtype="float32", only=[f"{c}/*" for c in BLOCKS.split(",")])
    dev = {f"{t.case}/{t.name}": t.metrics["max_abs_diff"] for t in report.tensors if t.metrics}
    env = envelopes({f"{c.name}/{o.name}": o.tolerance for c in golden.cases for o in c.outputs if o.tolerance})
    sig = signature(dev, env)
    assert sig.looks_like == port and sig.confident and sig.margin > 1.0, sig
    line = sig.line("float32")
    assert line in report.notes  # compare itself says it
    assert line.startswith("precision: looks like a float32 port, as --port-dtype says" if port == "float32"
                           else f"precision: looks like a {port} port; you ran --port-dtype float32")


def test_signature_with_a_bug_still_names_the_precision(golden, blocks16):
    """A real mistake at a few stages moves those stages, not the median: still float16."""
    env = envelopes({f"{c.name}/{o.name}": o.tolerance for c in golden.cases for o in c.outputs if o.tolerance})
    report = compare(golden, blocks16, port_dtype="float16", only=[f"{c}/*" for c in BLOCKS.split(",")])
    dev = {f"{t.case}/{t.name}": t.metrics["max_abs_diff"] for t in report.tensors if t.metrics}
    for k in ("conv_stem/conv_stem.conv1", "conv_stem/conv_stem.out"):
        dev[k] *= 100
    sig = signature(dev, env)
    assert sig.looks_like == "float16" and sig.confident
    assert signature({}, env).looks_like is None
