"""The fault catalogue's entries from real ports (docs/case-studies/real-port-mistakes.md): on the tiny
checkpoint and on two odd configurations, each injected mistake is the first likely mistake compare
names, no other real-port entry is named beside it, and an entry whose precondition the golden
contradicts is never named (run-on tokens after a golden that stopped at EOS; the clamp below 1.0; the
DFT-angle signature on honest direct-DFT front ends)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from safetensors.numpy import save_file

from oracle import builtin, mel_variants
from oracle.audio import load_audio, quantize_int16
from oracle.checkpoint import read_safetensors_header, read_tensor, sha256_file
from oracle.compare import compare
from oracle.diagnose import Evidence, attach_diagnosis
from oracle.faults import FAULTS, faulty_set
from oracle.goldenset import load_golden
from oracle.mel import log_mel, n_mel_frames
from oracle.mel_variants import mel_upper_clamp, stft_pad_120
from oracle.pipeline import load_setup
from oracle.precision import FLOAT32
from oracle.protocol import EOS
from oracle.synth import write_checkpoint
from oracle_tools.cli import main
from test_conformance import ODD_A, ODD_B

REAL_PORT = ("dft_angle_f32", "extra_final_token", "decode_past_audio", "mel_upper_clamp", "stft_pad_120",
             "left_pad_76", "ada_silu", "ada_extra_norm", "peak_normalize")
CONFIGS = {"odd_a": ODD_A, "odd_b": ODD_B}
COMMITTED = Path(__file__).parents[1] / "golden" / "tiny_goldens"


@pytest.fixture(scope="module", params=["tiny", "odd_a", "odd_b"])
def port_set(request, tmp_path_factory):
    """(checkpoint, golden set, the audio before quantization): the dithered built-in clip, so that the
    unquantized-mel entry competes (its audio is not int16-exact), with the rope and time_ada block cases
    that separate look-alikes."""
    d = tmp_path_factory.mktemp(request.param)
    if request.param == "tiny":
        ckpt = builtin.tiny_checkpoint()
    else:
        ckpt = d / "ckpt"
        write_checkpoint(ckpt, CONFIGS[request.param], seed=5)
    clip = load_audio(builtin.speech_clip())
    original = clip + 1e-4 * np.random.default_rng(3).standard_normal(len(clip))
    sf.write(d / "dithered.wav", original.astype(np.float32), 16000, subtype="FLOAT")
    original = load_audio(d / "dithered.wav")
    out = d / "set"
    args = ["golden"] + ([] if request.param == "tiny" else [str(ckpt)])
    assert main(args + ["--audio", str(d / "dithered.wav"), "--out", str(out), "--components", "rope,time_ada,e2e",
                        "--quiet"]) == 0
    return ckpt, load_golden(out), original


def candidate(ckpt, golden, original, key):
    return faulty_set(key, load_setup(ckpt), golden, FLOAT32, original)


@pytest.mark.parametrize("key", REAL_PORT)
def test_each_real_port_mistake_is_named_first(port_set, key):
    ckpt, golden, original = port_set
    cand = candidate(ckpt, golden, original, key)
    report = attach_diagnosis(compare(golden, cand), golden, cand)
    named = [d["key"] for d in report.likely_mistakes]
    assert named and named[0] == key, (key, named, report.verdict)
    assert report.likely_mistakes[0]["score"] == 1.0
    assert not set(named[1:]) & set(REAL_PORT), (key, named)  # no other real-port entry fits beside it
    first = report.first_divergence
    stage, kind = FAULTS[key].shows_at
    if key in ("ada_silu", "ada_extra_norm"):  # the block case fails first; in the e2e case, the first decoder layer
        assert first.name == ("time_ada.scale" if key == "ada_silu" else "time_ada.out")
        assert next(t for t in report.failing if t.case == "e2e").name == "dec.L00.out"
    else:
        assert first.name == stage and first.case == "e2e", (first.name, stage)


def _tokens_evidence(golden: list[int], cand: list[int]) -> Evidence:
    g, a = np.array(golden, np.int64), np.array(cand, np.int64)
    return Evidence("tokens", "SHAPE", g.shape, a.shape, golden_raw=g, candidate_raw=a)


def test_run_on_tokens_are_never_named_when_the_golden_stopped_at_eos():
    """Precondition: a port that feeds A[N−1] or decodes past the audio shows only when the golden ran its
    whole N − P schedule; a golden that ended at EOS stops a port there too, so extra tokens after it are
    another mistake (not stopping at EOS), not these."""
    extra, past = FAULTS["extra_final_token"].score, FAULTS["decode_past_audio"].score
    assert extra(_tokens_evidence([5, 6, 7], [5, 6, 7, 8]))[0] == 1.0
    assert past(_tokens_evidence([5, 6, 7], [5, 6, 7, 8, 9, 10]))[0] == 1.0
    assert extra(_tokens_evidence([5, 6, EOS], [5, 6, EOS, 8])) is None
    assert past(_tokens_evidence([5, 6, EOS], [5, 6, EOS, 8, 9])) is None
    # one pattern each: one extra token is not "several", a changed prefix is neither
    assert past(_tokens_evidence([5, 6, 7], [5, 6, 7, 8])) is None
    assert extra(_tokens_evidence([5, 6, 7], [5, 6, 9, 8])) is None and past(_tokens_evidence([5, 6, 7], [5, 9, 7, 8, 9])) is None


def test_mel_upper_clamp_cannot_show_on_audio_that_never_reaches_it():
    """Precondition: the clamp only bites where the golden mel exceeds 1.0, and its score asks every failing
    element to sit there. On audio 20 dB quieter no element does: the clamped front end is the reference."""
    clip = quantize_int16(0.1 * load_audio(builtin.speech_clip()))
    quiet = load_setup(builtin.tiny_checkpoint()).protocol.pad_offline(clip).astype(np.float32)
    ref = log_mel(quiet, np.float32)
    assert ref.max() < 1.0 and np.array_equal(mel_upper_clamp(quiet, np.float32), ref)
    loud = log_mel(quiet * 10, np.float32)
    assert loud.max() > 1.0 and not np.array_equal(mel_upper_clamp(quiet * 10, np.float32), loud)


def test_front_end_variants_keep_the_frame_count():
    """stft_pad_120 has the reference's floor(L/160) frames (no shape check fires), each half a hop late."""
    rng = np.random.default_rng(0)
    x = np.concatenate([np.zeros(2000), rng.standard_normal(4000), np.zeros(2000)])
    ref, late = log_mel(x), stft_pad_120(x)
    assert late.shape == ref.shape == (128, n_mel_frames(len(x)))
    shifted = log_mel(np.concatenate([x[80:], np.zeros(80)]))  # zero edges: pad 120 = the signal 80 samples early
    np.testing.assert_allclose(late, shifted, rtol=0, atol=1e-9)


@pytest.mark.parametrize("variant,named", [("dft_angle_f32_tables_f32", True), ("dft_angle_f32", True),
                                           ("dft_tables_f32", False), ("dft_tables_f64", False)])
def test_the_dft_angle_signature_is_voxtral_c_as_shipped_and_no_honest_front_end(variant, named):
    """The committed golden's e2e mel replaced by a direct float32 DFT's: voxtral.c as shipped (float32
    tables too) is named dft_angle_f32 first; honest tables (angle reduced, or built in float64) never."""
    golden = load_golden(COMMITTED)
    cand = {f"{o.case}/{o.name}": np.asarray(o.array()) for c, o in golden.outputs() if c.name == "e2e"}
    e2e = next(c for c in golden.cases if c.name == "e2e")
    audio = np.asarray(read_tensor(read_safetensors_header(e2e.dir / "tensors.safetensors")["audio"]), np.float64)
    padded = load_setup(builtin.tiny_checkpoint()).protocol.pad_offline(audio).astype(np.float32)
    cand["e2e/mel"] = getattr(mel_variants, variant)(padded)
    report = attach_diagnosis(compare(golden, cand, only=["e2e/*"]), golden, cand)
    keys = [d["key"] for d in report.likely_mistakes]
    if named:
        assert report.first_divergence.name == "mel" and keys[0] == "dft_angle_f32", keys
    else:
        assert "dft_angle_f32" not in keys, keys


def _golden_that_stopped_at_eos(root):
    """A copy of the committed e2e case whose generation ended at EOS (its last token made EOS), the
    sha256 chain rewritten: what a golden of audio the model finishes early looks like."""
    e2e = next(c for c in load_golden(COMMITTED).cases if c.name == "e2e")
    shutil.copytree(COMMITTED, root)
    case = root / e2e.dir.name
    header = read_safetensors_header(case / "tensors.safetensors")
    tensors = {k: np.ascontiguousarray(read_tensor(v)) for k, v in header.items() if k != "__metadata__"}
    tensors["tokens"] = np.concatenate([tensors["tokens"][:-1], [EOS]]).astype(np.int64)
    save_file(tensors, str(case / "tensors.safetensors"))
    manifest = json.loads((case / "manifest.json").read_text())
    manifest["sha256"] = sha256_file(case / "tensors.safetensors")
    (case / "manifest.json").write_text(json.dumps(manifest))
    index = json.loads((root / "index.json").read_text())
    next(c for c in index["cases"] if c["name"] == "e2e")["sha256"] = sha256_file(case / "manifest.json")
    (root / "index.json").write_text(json.dumps(index))
    return load_golden(root)


def test_run_on_tokens_are_not_named_through_compare_when_the_golden_stopped_at_eos(tmp_path):
    """The same precondition end to end: the tokens plus one more are extra_final_token on a golden that
    ran its whole schedule, and nothing of the catalogue on one that stopped at EOS."""
    eos = _golden_that_stopped_at_eos(tmp_path / "eos")
    for golden, expected in ((load_golden(COMMITTED), "extra_final_token"), (eos, None)):
        cand = {f"{o.case}/{o.name}": np.asarray(o.array()) for c, o in golden.outputs() if c.name == "e2e"}
        cand["e2e/tokens"] = np.concatenate([cand["e2e/tokens"], [int(cand["e2e/tokens"][0])]])
        report = attach_diagnosis(compare(golden, cand, only=["e2e/*"]), golden, cand)
        assert report.first_divergence.name == "tokens"
        assert [d["key"] for d in report.likely_mistakes][:1] == [expected], report.likely_mistakes
