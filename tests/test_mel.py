"""oracle.mel against the official front ends: HF VoxtralRealtimeFeatureExtractor (float32, torch FFT),
the same recipe run in float64 through torch, and mistral-common's / HF's filter banks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.signal
import torch
from hypothesis import given
from hypothesis import strategies as st
from mistral_common.audio import mel_filter_bank as mc_mel_filter_bank
from transformers import VoxtralRealtimeFeatureExtractor

from oracle import mel
from oracle.audio import is_int16_exact, load_audio
from oracle.errors import OracleError

CLIP = Path(__file__).resolve().parent.parent / "oracle" / "data" / "clip.wav"
TOL_VS_HF32 = 5e-5  # oracle (f32 or f64) vs HF float32: torch's float32 FFT rounding
TOL_VS_TORCH64 = 1e-9  # oracle f64 vs the recipe in torch float64


def assert_close(actual, expected, atol, what):
    """Fail like torch.testing: mismatch count, greatest difference at its index, both values, tolerance."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    diff = np.abs(actual.astype(np.float64) - expected.astype(np.float64))
    bad = diff > atol
    if bad.any():
        i = np.unravel_index(np.argmax(diff), diff.shape)
        raise AssertionError(
            f"{what}: mismatched elements {bad.sum()} / {diff.size} ({100 * bad.mean():.2f}%); "
            f"greatest absolute difference {diff[i]:.3g} at index {i} "
            f"(actual {actual[i]!r}, expected {expected[i]!r}); allowed {atol:g}"
        )
    return float(diff.max())


@pytest.fixture(scope="module")
def fe():
    return VoxtralRealtimeFeatureExtractor()


def hf_features(fe, x):
    return fe(x, sampling_rate=16000, return_tensors="np")["input_features"][0]  # [M, T] float32


def torch_recipe_f64(fe, x, global_log_mel_max=1.5):
    """§2.2 in torch float64: torch.stft + the extractor's float64 filter bank, nothing in float32."""
    xt = torch.from_numpy(np.asarray(x, dtype=np.float64))
    window = torch.hann_window(400, dtype=torch.float64)
    stft = torch.stft(xt, 400, 160, window=window, return_complex=True, center=True, pad_mode="reflect")
    power = stft[..., :-1].abs() ** 2
    mel_spec = torch.from_numpy(fe.mel_filters).T @ power
    log_spec = torch.clamp(mel_spec, min=1e-10).log10()
    log_spec = torch.maximum(log_spec, torch.tensor(global_log_mel_max - 8.0, dtype=torch.float64))
    return ((log_spec + 4.0) / 4.0).numpy()


def _signals():
    rng = np.random.default_rng(20240601)
    t = np.arange(32000) / 16000.0
    # Amplitude 0.1: a loud pure tone leaves mel bins near the -6.5 floor whose float32 FFT error
    # exceeds 5e-5 in HF itself; see test_loud_tone_hf_float32_error_is_its_own.
    chirp_up = 0.1 * scipy.signal.chirp(t, f0=50.0, t1=2.0, f1=7900.0, method="logarithmic")
    chirp_lin = 0.05 * scipy.signal.chirp(t[:16001], f0=7000.0, t1=1.0, f1=100.0, method="linear")
    quiet = 3e-4 * rng.standard_normal(12345)  # about half the mel values on the -6.5 floor
    return {
        "speech_clip": load_audio(CLIP),
        "white_noise": 0.1 * rng.standard_normal(24000),
        "chirp_log_2s": chirp_up,
        "chirp_lin_16001": chirp_lin,
        "noise_12345": 0.3 * rng.standard_normal(12345),
        "quiet_noise_12345": quiet,
        "noise_401": 0.2 * rng.standard_normal(401),
        "short_1000": 0.2 * rng.standard_normal(1000),  # < 1280: shorter than one decoder token
        "minimal_201": 0.2 * rng.standard_normal(201),  # shortest signal reflect padding allows
    }


SIGNALS = _signals()


def test_clip_is_int16_speech():
    x = SIGNALS["speech_clip"]
    assert is_int16_exact(x)
    assert 4 * 16000 <= x.shape[0] <= 6 * 16000
    assert 0.1 < np.abs(x).max() < 1.0


@pytest.mark.parametrize("name", sorted(SIGNALS))
def test_log_mel_matches_hf_extractor(fe, name):
    x = SIGNALS[name]
    ref = hf_features(fe, x)
    assert ref.shape == (128, len(x) // 160)
    for dtype in (np.float32, np.float64):
        out = mel.log_mel(x, dtype)
        assert out.dtype == np.dtype(dtype)
        assert_close(out, ref, TOL_VS_HF32, f"{name} log_mel {np.dtype(dtype)} vs HF float32")


@pytest.mark.parametrize("name", sorted(SIGNALS))
def test_log_mel_f64_matches_torch_f64_recipe(fe, name):
    x = SIGNALS[name]
    assert_close(mel.log_mel(x, np.float64), torch_recipe_f64(fe, x), TOL_VS_TORCH64, f"{name} f64 vs torch f64")


def test_float32_path_stays_float32():
    x = SIGNALS["white_noise"].astype(np.float32)
    assert mel.hann_window(400, np.float32).dtype == np.float32
    power = mel.stft_power(x, np.float32)
    assert power.dtype == np.float32
    assert mel.apply_mel(power).dtype == np.float32
    assert mel.log_mel(x, np.float32).dtype == np.float32
    # float32 input asked for float64 is widened, never the other way round silently
    assert mel.log_mel(x, np.float64).dtype == np.float64


def test_hann_window_is_torch_periodic():
    w = mel.hann_window(400, np.float64)
    assert_close(w, torch.hann_window(400, dtype=torch.float64).numpy(), 1e-15, "hann f64")
    # Ours is the float64 window rounded once; torch evaluates the cosine in float32 (a few ulps off).
    assert_close(mel.hann_window(400, np.float32), torch.hann_window(400).numpy(), 5e-7, "hann f32")
    assert w[0] == 0.0 and w[200] == 1.0  # periodic: zero only at k = 0, peak at n/2


def test_stft_power_matches_torch_stft(fe):
    x = SIGNALS["speech_clip"]
    stft = torch.stft(
        torch.from_numpy(x), 400, 160, window=torch.hann_window(400, dtype=torch.float64), return_complex=True
    )
    ref = (stft[..., :-1].abs() ** 2).numpy()
    out = mel.stft_power(x, np.float64)
    assert_close(out / ref.max(), ref / ref.max(), 1e-13, "stft_power f64 vs torch (relative to peak)")


def test_filter_bank_matches_mistral_common_and_hf(fe):
    bank = mel.mel_filter_bank()
    assert bank.shape == (201, 128) and bank.dtype == np.float64
    mc = mc_mel_filter_bank(
        num_frequency_bins=201, num_mel_bins=128, min_frequency=0.0, max_frequency=8000.0, sampling_rate=16000
    )
    assert mc.shape == (201, 128)  # [F, M], whatever MC's docstring says
    assert_close(bank, mc, 1e-12, "filter bank vs mistral-common")
    assert_close(bank, fe.mel_filters, 1e-12, "filter bank vs HF fe.mel_filters")
    # Slaney scale: 1 kHz is mel 15, the linear/log split; 8 kHz is the last edge.
    assert mel._hz_to_mel(np.array([1000.0]))[0] == pytest.approx(15.0, abs=1e-12)
    assert mel._mel_to_hz(mel._hz_to_mel(np.array([8000.0])))[0] == pytest.approx(8000.0, rel=1e-13)


def test_utterance_floor_hand_example():
    # log10 of the mel energies: -12 (clamped to -10 by the 1e-10 floor), 0 and 2.
    m = 10.0 ** np.array([[-12.0, 0.0, 2.0]])
    glob = mel.normalize_log_mel(m)  # floor 1.5 - 8 = -6.5
    utt = mel.normalize_log_mel(m, floor="utterance")  # Whisper: floor = max - 8 = 2 - 8 = -6
    np.testing.assert_allclose(glob, [[(-6.5 + 4) / 4, 1.0, 1.5]], rtol=0, atol=1e-15)
    np.testing.assert_allclose(utt, [[(-6.0 + 4) / 4, 1.0, 1.5]], rtol=0, atol=1e-15)
    m32 = m.astype(np.float32)
    assert mel.normalize_log_mel(m32, floor="utterance").dtype == np.float32


def test_utterance_floor_is_hf_whisper_branch_and_differs(fe):
    x = SIGNALS["speech_clip"]
    glob = mel.log_mel(x)
    utt = mel.log_mel(x, floor="utterance")
    whisper_fe = VoxtralRealtimeFeatureExtractor(global_log_mel_max=None)  # HF's per-utterance max branch
    assert_close(utt, hf_features(whisper_fe, x), TOL_VS_HF32, "utterance floor vs HF global_log_mel_max=None")
    assert glob.min() == pytest.approx(-0.625)
    peak = glob.max() * 4 - 4  # utterance max of log10 mel
    assert utt.min() == pytest.approx((peak - 8 + 4) / 4)
    # The speech clip peaks just under 1.5, so the Whisper floor peak - 8 is slightly lower than -6.5:
    # values above -6.5 agree, values clamped at -6.5 by the reference drop to at most (peak - 4)/4 ...
    floored = glob == -0.625
    assert peak < 1.5 and floored.any()
    assert_close(utt[~floored], glob[~floored], 0.0, "unfloored values")
    assert (utt[floored] <= -0.625).all() and (utt[floored] >= (peak - 4) / 4 - 1e-12).all()
    assert np.abs(utt - glob).max() == pytest.approx((1.5 - peak) / 4)
    # ... but a quiet utterance's floor drops far below -6.5.
    quiet = SIGNALS["quiet_noise_12345"]
    assert np.abs(mel.log_mel(quiet, floor="utterance") - mel.log_mel(quiet)).max() > 0.5


def test_loud_tone_hf_float32_error_is_its_own(fe):
    # A loud (0.5) pure-tone chirp has mel bins near the -6.5 floor that are ~1e-9 of the frame's
    # peak energy: there float32 FFT rounding (relative to the peak) shows up in the log. HF float32
    # then differs from the float64 truth by ~1e-4, while the oracle's float64 path agrees with torch
    # float64 to ~1e-14 and its float32 path (pocketfft complex64) stays within 5e-5 of the truth.
    t = np.arange(32000) / 16000.0
    x = 0.5 * scipy.signal.chirp(t, f0=50.0, t1=2.0, f1=7900.0, method="logarithmic")
    truth = torch_recipe_f64(fe, x)
    assert_close(mel.log_mel(x, np.float64), truth, TOL_VS_TORCH64, "loud chirp f64 vs torch f64")
    assert_close(mel.log_mel(x, np.float32), truth, TOL_VS_HF32, "loud chirp oracle f32 vs torch f64")
    hf_err = assert_close(hf_features(fe, x), truth, 2e-4, "loud chirp HF f32 vs torch f64")
    assert hf_err > TOL_VS_HF32  # documents why the shared chirp above is quieter


def test_bad_floor_is_user_error():
    with pytest.raises(OracleError, match="floor must be one of global, utterance"):
        mel.log_mel(SIGNALS["noise_401"], floor="whisper")


@given(st.integers(min_value=201, max_value=20000))
def test_frame_count_is_floor_l_over_160(n):
    out = mel.log_mel(np.zeros(n), np.float32)
    assert out.shape == (128, n // 160) == (128, mel.n_mel_frames(n))
    assert (out == np.float32(-0.625)).all()  # silence sits exactly on the -6.5 floor


@given(st.integers(min_value=400, max_value=20000))
def test_frame_count_uncentred(n):
    assert mel.stft_power(np.zeros(n), center=False).shape == (201, 1 + (n - 400) // 160)


def test_too_short_is_user_error():
    with pytest.raises(OracleError, match="200 samples is too short"):
        mel.log_mel(np.zeros(200))
    with pytest.raises(OracleError, match="399 samples holds no full"):
        mel.stft_power(np.zeros(399), center=False)


@given(st.integers(min_value=0, max_value=470), st.integers(min_value=1, max_value=30))
def test_uncentred_window_equals_offline_columns(a, k):
    # Streaming computes frames a..a+k-1 from samples [160a, 160a + 160(k-1) + 400) of the padded
    # signal; they must be exactly the offline (centred) frames a..a+k-1.
    x = SIGNALS["speech_clip"][:76800]  # 480 frames offline
    xp = np.pad(x, 200, mode="reflect")
    a = min(a, 480 - k)
    for dtype in (np.float64, np.float32):
        offline = mel.stft_power(x, dtype)
        window = xp[160 * a : 160 * a + 160 * (k - 1) + 400]
        stream = mel.stft_power(window, dtype, center=False)
        assert stream.shape == (201, k)
        assert_close(stream, offline[:, a : a + k], 0.0, f"frames {a}..{a + k - 1} {np.dtype(dtype)}")


def test_checkpoint_global_log_mel_max_flows_through(tmp_path):
    """A checkpoint's global_log_mel_max (params.json audio_encoding_args) sets the floor, offline and
    streaming: silence maps to (g - 8 + 4) / 4, i.e. -0.625 for the real 1.5 and -0.5 for 2.0."""
    from dataclasses import replace

    from oracle.config import TINY
    from oracle.pipeline import load_setup, offline_mel
    from oracle.precision import FLOAT64
    from oracle.streaming import Model, StreamingSession
    from oracle.synth import write_checkpoint
    from oracle.taps import Taps

    silence = np.zeros(4000)
    for g in (1.5, 2.0):
        cfg = replace(TINY, audio=replace(TINY.audio, global_log_mel_max=g))
        setup = load_setup(write_checkpoint(tmp_path / f"g{g}", cfg))
        assert setup.ckpt.config.audio.global_log_mel_max == g
        floor = (g - 8 + 4) / 4
        assert np.all(offline_mel(silence, setup.protocol, FLOAT64, quantize=False) == floor)
        taps = Taps("mel")
        session = StreamingSession(Model(setup.ckpt, FLOAT64), setup.protocol, tap=taps)
        session.feed(silence)
        session.finish()
        assert taps["mel"].shape[1] > 0 and np.all(taps["mel"] == floor)
