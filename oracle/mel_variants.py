"""Other ways a port computes the float32 log-mel: honest ones (tolerances must pass them) and real mistakes.

Shape legend
    L   samples (16 kHz mono)
    T   mel frames
    F   frequency bins = 201
    M   mel bins = 128
    N   window length = n_fft = 400

Every variant has ``oracle.mel.log_mel``'s signature and differs from it in one named way; framing,
centring, the dropped last frame, the mel product and the log normalisation are ``oracle.mel``'s own
functions, called with a swapped window, transform or filter bank. They are the data behind the float32
mel tolerance: a tolerance every honest variant passes with margin and every mistaken one fails.

Honest (a float32 port may do exactly this):
    numpy_fft              the oracle's float32 path: pocketfft single precision, tables from float64
    dft_tables_f64         a direct DFT in float32 arithmetic (what a C port writes), cos/sin tables
                           computed in float64 and rounded once to float32
    dft_tables_f32         the same with every table built in float32 (window, DFT, filter bank), the
                           DFT angle 2 pi ((k n) mod N) / N reduced before the float32 multiply

Mistaken (seen in a real port, antirez/voxtral.c voxtral_audio.c):
    dft_angle_f32          DFT table angle 2 pi k n / N in float32 without reducing k n mod N: for
                           k n up to 200 * 399 the float32 angle is off by up to ~1e-4 rad (the phase
                           error grows with k n), window and bank as in dft_tables_f64
    dft_angle_f32_tables_f32   the same with the window and bank also built in float32 (voxtral.c as
                           shipped)

Mistaken, any dtype (the fault catalogue's other front ends, oracle.faults; not in MISTAKES, whose
members are float32 pipelines the float32 tolerance is measured against):
    stft_pad_120           centred STFT padded (n_fft - hop)/2 = 120 instead of n_fft/2, no frame dropped
                           (TrevorS/voxtral-mini-realtime-rs src/audio/mel.rs at 1efe5f8)
    mel_upper_clamp        Whisper's clamp of the normalised log-mel to [-1, 1] (same file and commit)
    peak_normalize         the audio scaled to peak 0.95 before the mel (same repository, 780fa3b)
"""

from __future__ import annotations

import functools
from typing import Callable

import numpy as np

from oracle.config import AudioConfig
from oracle.mel import (REFERENCE_AUDIO, apply_mel, freq_bins, hann_window, log_mel, mel_filter_bank,
                        normalize_log_mel, stft_power)

F32 = np.dtype(np.float32)


@functools.lru_cache(maxsize=8)
def dft_tables(build_dtype: str, reduce: bool, n_fft: int = REFERENCE_AUDIO.window_size) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin of 2 pi k n / N as float32 tables.  -> ([N, F], [N, F])

    build_dtype "float64": angles and cos/sin in float64, rounded once to float32 (honest).
    build_dtype "float32": the C expression ``2.0f * (float)M_PI * (float)m / (float)N_FFT`` with
    m = (k n) mod N when ``reduce`` (honest: the angle stays below 2 pi, where float32 spacing is
    ~2.4e-7) or m = k n when not (the mistake: at k n ~ 8e4 the product's float32 rounding is ~1e-4 rad
    and cos/sin of it carry that error into every bin k > 0).
    """
    assert build_dtype in ("float32", "float64"), build_dtype
    build = np.dtype(build_dtype)
    k = np.arange(n_fft // 2 + 1, dtype=np.int64)  # [F]
    n = np.arange(n_fft, dtype=np.int64)  # [N]
    c = build.type
    two_pi = c(2.0) * c(np.pi)
    if reduce:  # 2 pi ((k n) mod N) / N: the integer product reduced exactly, then one rounding per step
        angle = two_pi * (np.outer(n, k) % n_fft).astype(build) / c(n_fft)  # [N, F]
    else:  # ((2 pi k) n) / N, each product rounded in build_dtype, as C evaluates it left to right
        angle = (two_pi * k.astype(build))[None, :] * n.astype(build)[:, None] / c(n_fft)  # [N, F]
    cos, sin = np.cos(angle).astype(F32), np.sin(angle).astype(F32)
    cos.setflags(write=False)
    sin.setflags(write=False)
    return cos, sin


def _dft_power(build_dtype: str, reduce: bool, n_fft: int) -> Callable[[np.ndarray], np.ndarray]:
    """A direct DFT in float32: re = frames @ cos, im = frames @ sin, power = re^2 + im^2.  [T, N] -> [T, F]"""
    cos, sin = dft_tables(build_dtype, reduce, n_fft)

    def power(frames: np.ndarray) -> np.ndarray:
        assert frames.dtype == F32 and frames.shape[-1] == n_fft, (frames.dtype, frames.shape)
        re, im = frames @ cos, frames @ sin  # [T, F] each; sign of im is irrelevant to the power
        return re * re + im * im

    return power


def _direct_dft_log_mel(x: np.ndarray, *, tables: str, reduce: bool, window_and_bank: str, center: bool,
                        audio: AudioConfig, floor: str) -> np.ndarray:
    n_fft = audio.window_size
    window = hann_window(n_fft, F32, build_dtype=window_and_bank)  # [N]
    bank = None if window_and_bank == "float64" else mel_filter_bank(
        freq_bins(audio), audio.num_mel_bins, audio.sampling_rate, 0.0, audio.sampling_rate / 2,
        build_dtype=np.float32)  # [F, M] or the default
    power = stft_power(x, F32, center=center, audio=audio, window=window,
                       power_of=_dft_power(tables, reduce, n_fft))  # [F, T]
    out = normalize_log_mel(apply_mel(power, bank, audio=audio), global_log_mel_max=audio.global_log_mel_max, floor=floor)
    assert out.dtype == F32 and out.shape[1] == power.shape[1]
    return out


def _variant(tables: str, reduce: bool, window_and_bank: str, doc: str):
    def variant(x: np.ndarray, dtype=np.float32, *, center: bool = True,
                audio: AudioConfig = REFERENCE_AUDIO, floor: str = "global") -> np.ndarray:
        assert np.dtype(dtype) == F32, f"mel variant: float32 only (a port's float32 front end), got {dtype}"
        return _direct_dft_log_mel(x, tables=tables, reduce=reduce, window_and_bank=window_and_bank, center=center,
                                   audio=audio, floor=floor)
    variant.__doc__ = doc + "  [L] -> [M, T] float32 (signature of oracle.mel.log_mel)"
    return variant


def numpy_fft(x: np.ndarray, dtype=np.float32, *, center: bool = True,
              audio: AudioConfig = REFERENCE_AUDIO, floor: str = "global") -> np.ndarray:
    """The oracle's own float32 log-mel (pocketfft single precision).  [L] -> [M, T] float32"""
    assert np.dtype(dtype) == F32, f"mel variant: float32 only, got {dtype}"
    return log_mel(x, F32, center=center, audio=audio, floor=floor)


dft_tables_f64 = _variant("float64", True, "float64", "Direct float32 DFT, all tables computed in float64 and rounded once.")
dft_tables_f32 = _variant("float32", True, "float32",
                          "Direct float32 DFT, window, DFT and filter bank built in float32, DFT angle reduced mod N.")
dft_angle_f32 = _variant("float32", False, "float64",
                         "MISTAKE: float32 DFT angle 2 pi k n / N without reducing k n mod N (window, bank float64).")
dft_angle_f32_tables_f32 = _variant("float32", False, "float32",
                                    "MISTAKE: float32 DFT angle without reduction and float32 window and bank "
                                    "(antirez/voxtral.c as shipped).")

HONEST = {"numpy_fft": numpy_fft, "dft_tables_f64": dft_tables_f64, "dft_tables_f32": dft_tables_f32}
MISTAKES = {"dft_angle_f32": dft_angle_f32, "dft_angle_f32_tables_f32": dft_angle_f32_tables_f32}


def stft_pad_120(x: np.ndarray, dtype=np.float64, *, center: bool = True,
                 audio: AudioConfig = REFERENCE_AUDIO, floor: str = "global") -> np.ndarray:
    """MISTAKE: reflect padding (n_fft - hop)/2 instead of n_fft/2 and no frame dropped: the same
    floor(L/160) frames, each centred 80 samples (half a hop) late.  [L] -> [M, T]"""
    pad = (audio.window_size - audio.hop_length) // 2
    power = stft_power(x, dtype, center=center, audio=audio, center_pad=pad if center else None)  # [F, T]
    return normalize_log_mel(apply_mel(power, audio=audio), global_log_mel_max=audio.global_log_mel_max, floor=floor)


def mel_upper_clamp(x: np.ndarray, dtype=np.float64, *, center: bool = True,
                    audio: AudioConfig = REFERENCE_AUDIO, floor: str = "global") -> np.ndarray:
    """MISTAKE: the normalised log-mel clamped to at most 1.0 (Whisper's [-1, 1]); the model clamps only
    from below (MODEL.md §2.2).  [L] -> [M, T]"""
    out = log_mel(x, dtype, center=center, audio=audio, floor=floor)
    return np.minimum(out, out.dtype.type(1.0))


def peak_normalize(x: np.ndarray, dtype=np.float64, *, center: bool = True,
                   audio: AudioConfig = REFERENCE_AUDIO, floor: str = "global") -> np.ndarray:
    """MISTAKE: the waveform scaled to peak 0.95 before the mel (the model reads it as it is): every
    element above the floor moves by the constant log10(s)/2, s = 0.95 / peak.  [L] -> [M, T]"""
    peak = float(np.abs(x).max())
    return log_mel(x * (0.95 / peak) if peak > 0 else x, dtype, center=center, audio=audio, floor=floor)


def as_port_front_end(variant: Callable) -> Callable:
    """A float32-only variant as a front end of any dtype: the port computes its mel in float32 and the
    pipeline reads it in its own dtype (a float32 front end feeding a float64 trace).  [L] -> [M, T]"""
    def front_end(x: np.ndarray, dtype=np.float64, **kw) -> np.ndarray:
        return variant(np.asarray(x).astype(F32), F32, **kw).astype(dtype)
    front_end.__doc__ = variant.__doc__
    return front_end
