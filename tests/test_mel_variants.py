"""oracle.mel_variants: honest float32 front ends stay inside the golden float32 mel tolerance with margin,
the real-port mistakes (float32 DFT angle without reduction) fail it, and the hooks they use leave the
oracle's own mel bit-identical."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from transformers import VoxtralRealtimeFeatureExtractor

from oracle import mel, mel_variants
from oracle.audio import load_audio
from oracle.builtin import speech_clip, tiny_checkpoint
from oracle.pipeline import load_setup

GOLDEN = Path(__file__).resolve().parent.parent / "golden" / "tiny_goldens"


def mel_atol() -> float:
    index = json.loads((GOLDEN / "index.json").read_text())
    case = next(c["dir"] for c in index["cases"] if c["name"] == "e2e")
    return json.loads((GOLDEN / case / "manifest.json").read_text())["outputs"]["mel"]["tolerance"]["float32"]["atol"]


@pytest.fixture(scope="module")
def e2e_input():
    """What the e2e golden's mel is computed from: the built-in clip, offline-padded, as float32."""
    return load_setup(tiny_checkpoint()).protocol.pad_offline(load_audio(speech_clip())).astype(np.float32)


@pytest.fixture(scope="module")
def truth(e2e_input):
    return mel.log_mel(e2e_input.astype(np.float64), np.float64)


@pytest.mark.parametrize("name", sorted(mel_variants.HONEST))
def test_honest_variants_pass_with_margin(name, e2e_input, truth):
    dev = np.abs(mel_variants.HONEST[name](e2e_input).astype(np.float64) - truth).max()
    assert dev <= 0.8 * mel_atol(), (name, dev, mel_atol())


def test_official_float32_extractor_passes(e2e_input, truth):
    hf = VoxtralRealtimeFeatureExtractor()(e2e_input, sampling_rate=16000, return_tensors="np")["input_features"][0]
    assert np.abs(hf.astype(np.float64) - truth).max() <= 0.8 * mel_atol()


@pytest.mark.parametrize("name", sorted(mel_variants.MISTAKES))
def test_unreduced_float32_angle_fails(name, e2e_input, truth):
    """The tolerance is 10x the worst honest chain (dft_tables_f32, 6.7x numpy's own deviation here), and
    the unreduced angle still lands at ~4.9x it on the tiny golden (33x numpy's-own-based tolerance)."""
    dev = np.abs(mel_variants.MISTAKES[name](e2e_input).astype(np.float64) - truth).max()
    assert dev > 3 * mel_atol(), (name, dev)


def test_the_mistake_is_the_angle_not_the_table_precision():
    """Reducing k n mod N before the float32 multiply is what keeps the table exact to float32 rounding."""
    cos64 = np.cos(2 * np.pi * (np.outer(np.arange(400), np.arange(201)) % 400) / 400)
    reduced, _ = mel_variants.dft_tables("float32", reduce=True)
    unreduced, _ = mel_variants.dft_tables("float32", reduce=False)
    assert np.abs(reduced - cos64).max() < 1e-6
    assert np.abs(unreduced - cos64).max() > 1e-5


def test_hooks_leave_the_oracle_mel_unchanged(e2e_input):
    """stft_power/apply_mel with the default window, transform and bank passed explicitly = the defaults."""
    x = e2e_input[:16000]
    for dtype in (np.float32, np.float64):
        explicit = mel.apply_mel(mel.stft_power(x, dtype, window=mel.hann_window(400, dtype), power_of=mel.fft_power),
                                 mel.mel_filter_bank())
        assert np.array_equal(explicit, mel.apply_mel(mel.stft_power(x, dtype)))
    assert mel.mel_filter_bank(build_dtype=np.float32).dtype == np.float32
    assert np.abs(mel.mel_filter_bank(build_dtype=np.float32) - mel.mel_filter_bank()).max() < 1e-5


def test_variants_refuse_float64(e2e_input):
    with pytest.raises(AssertionError):
        mel_variants.dft_tables_f64(e2e_input, np.float64)
