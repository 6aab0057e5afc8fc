"""trace38 and the fault catalogue: the trace agrees with the offline forward, on any checkpoint, and
every fault leaves the signature the catalogue records."""

from __future__ import annotations

import json

import numpy as np
import pytest

from oracle import builtin
from oracle.audio import load_audio, quantize_int16
from oracle.faults import CATALOGUE
from oracle.forward import forward
from oracle.golden import Context
from oracle.mel import log_mel
from oracle.pipeline import load_setup
from oracle.precision import FLOAT64
from oracle.synth import write_checkpoint
from oracle.taps import Taps
from oracle.trace import trace38
from oracle_tools.cli import main
from test_conformance import ODD_A, ODD_B

def dithered_context(ckpt_dir, seed=0):
    setup = load_setup(ckpt_dir)
    clip = load_audio(builtin.speech_clip())
    original = clip + 1e-4 * np.random.default_rng(seed).standard_normal(len(clip))
    return Context(setup, quantize_int16(original), seed), original


@pytest.fixture(scope="module")
def tiny_trace():
    ctx, original = dithered_context(builtin.tiny_checkpoint())
    report, runs = trace38(ctx, FLOAT64, original_audio=original)
    return ctx, report, runs


def test_catalogue_entries_are_complete_records():
    """Each entry carries everything about its fault: text, injection, where it shows, its scoring."""
    assert len({f.key for f in CATALOGUE}) == len(CATALOGUE)
    for f in CATALOGUE:
        assert f.title and f.mistake and f.reference and f.expect, f.key
        assert callable(f.inject) and callable(f.score), f.key
        stage, kind = f.shows_at
        assert stage and kind in ("values", "shape", "tokens"), f.key
        for other in f.lookalikes:
            assert f.key in next(g for g in CATALOGUE if g.key == other).lookalikes, (f.key, other)
            assert f.separate


@pytest.mark.parametrize("fault", CATALOGUE, ids=lambda f: f.key)
def test_each_fault_leaves_its_signature(tiny_trace, fault):
    """Where each fault first shows is the catalogue's own record; a few mechanisms are checked closer."""
    ctx, report, _ = tiny_trace
    key = fault.key
    f = next(x for x in report["faults"] if x["key"] == key)
    d = f["first_divergence"]
    assert (d["stage"], d["kind"]) == fault.shows_at, d
    w_enc, n_prompt = report["windows"]["encoder"], report["prompt_length"]
    if key == "window_plus_one":
        assert d["first_row"] == w_enc  # rows before the window edge are exact
    if key in ("rope_rotate_half", "k_bias"):
        assert d["first_row"] == 1  # position 0: identity rotation / attends only to itself
    if key == "no_audio_last_prompt":
        assert (d["first_row"], d["rows"]) == (n_prompt - 1, 1)
    if key == "stem_stride2_symmetric":
        assert d["candidate"][0] * 2 == d["golden"][0]
        assert f["n_positions"] * 2 == report["n_positions"]
        assert f["anomaly"]["left_pad_positions_hearing_speech"] == report["left_pad_tokens"] // 2
    if key == "prompt_38":
        assert d["candidate"][0] == d["golden"][0] + 1 and f["prompt_length"] == n_prompt - 1
    if key != "stem_stride2_symmetric" and fault.shows_at[0] != "mel":
        assert f["anomaly"]["left_pad_positions_hearing_speech"] == 0


def test_only_the_burn_stem_reproduces_the_anomaly_mechanism(tiny_trace):
    _, report, _ = tiny_trace
    yes = [f["key"] for f in report["faults"] if f["reproduces"].startswith("**yes**")]
    assert yes == ["stem_stride2_symmetric"]
    assert report["anomaly_reference"]["left_pad_positions_hearing_speech"] == 0
    assert any("stem_stride2_symmetric" in line for line in report["conclusion"])


def test_trace_numbers_agree_with_offline_forward(tiny_trace):
    ctx, report, runs = tiny_trace
    ref = runs["reference"]
    taps = Taps("dec.L*.out", "logits")
    mel = log_mel(ctx.setup.protocol.pad_offline(ctx.audio))
    logits = forward(ctx.ckpt, mel, ref.fed, ctx.setup.protocol.delay_tokens, FLOAT64, tap=taps)
    np.testing.assert_allclose(ref.logits, logits, rtol=0, atol=1e-12 * np.abs(logits).max())
    for i in range(ctx.ckpt.config.decoder.n_layers):
        np.testing.assert_allclose(ref.norms[i], np.linalg.norm(taps[f"dec.L{i:02d}.out"], axis=-1), rtol=1e-12)
    assert report["tokens"] == [int(t) for t in ref.fed[len(ref.prompt):len(ref.prompt) + len(report["tokens"])]]
    # alignment: position p covers samples [1280p, 1280p+1280) and real time (p-32)*80 ms
    a38 = report["alignment"][38]
    assert a38["samples"] == [48640, 49920] and a38["real_time_ms"] == [480, 560]
    assert a38["trained_to_predict"].startswith("first free prediction")
    assert all(not a["hears_audio"] for a in report["alignment"][:31])


@pytest.mark.parametrize("name", ["odd_a", "odd_b"])
def test_trace_runs_on_other_checkpoints(name, tmp_path):
    cfg = {"odd_a": ODD_A, "odd_b": ODD_B}[name]
    write_checkpoint(tmp_path / name, cfg, seed=5)
    ctx, original = dithered_context(tmp_path / name)
    report, runs = trace38(ctx, FLOAT64, faults=False, original_audio=original)
    ref = runs["reference"]
    mel = log_mel(ctx.setup.protocol.pad_offline(ctx.audio))
    logits = forward(ctx.ckpt, mel, ref.fed, ctx.setup.protocol.delay_tokens, FLOAT64)
    np.testing.assert_allclose(ref.logits, logits, rtol=0, atol=1e-12 * np.abs(logits).max())
    assert len(report["norms"]) == cfg.decoder.n_layers
    assert [f["key"] for f in report["faults"]] == ["prompt_38"]


def test_trace38_cli_writes_a_readable_report(tmp_path, capsys):
    code = main(["trace38", "--out", str(tmp_path / "t"), "--no-faults", "--quiet"])
    assert code == 0
    md = (tmp_path / "t" / "report.md").read_text()
    for png in ("alignment.png", "norms.png", "prompts.png", "faults.png"):
        assert (tmp_path / "t" / png).stat().st_size > 5000
        assert f"({png})" in md
    data = json.loads((tmp_path / "t" / "report.json").read_text())
    assert data["prompt_length"] == 39 and data["alignment"][38]["position"] == 38
