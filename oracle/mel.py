"""Log-mel front end: 16 kHz waveform -> [128, T] features, exactly the reference recipe.

Shape legend (numbers of the real model)
    L   samples (16 kHz mono)
    T   mel frames (100 Hz; T = floor(L/hop) = floor(L/160) for the centred offline STFT)
    F   frequency bins = n_fft//2 + 1 = 201
    M   mel bins = 128
    N   window length = n_fft = 400

Recipe (MODEL.md §2.2; HF ``VoxtralRealtimeFeatureExtractor._torch_extract_fbank_features``,
vLLM ``compute_whisper_melspec``, MC ``mistral_common.audio.mel_filter_bank``):

    w      = periodic Hann(400)
    X      = STFT(x; n_fft 400, hop 160, window w, centre with 200 reflected samples each side)
    P      = |X|^2, last frame dropped                                        [F, T]
    mel    = bank^T P, bank = Slaney mel filters 0..8 kHz (float64, then cast) [M, T]
    y      = (max(log10(max(mel, 1e-10)), global_log_mel_max - 8) + 4) / 4     [M, T]

The numbers (hop, window = n_fft, mel bins, sampling rate, global log-mel max) are the checkpoint's
``AudioConfig`` (params.json ``audio_encoding_args``, read in ``oracle.config``): every function takes
``audio=`` and the pipeline passes the loaded checkpoint's; the default is the real model's
(``REFERENCE_AUDIO``), which is what a notebook or a test without a checkpoint means.

Each step is its own public function (``hann_window``, ``mel_filter_bank``, ``stft_power``,
``apply_mel``, ``normalize_log_mel``) so a notebook can run them one at a time; ``log_mel`` composes
them.

Precision: every function computes in the dtype it is asked for (float64 truth mode or float32) and
returns that dtype. The window and the filter bank are constants computed in float64 and rounded once
to the working dtype, as the reference does for the bank (``torch.from_numpy(mel_filters).to(float32)``).
The float32 FFT is a genuine float32 FFT: NumPy >= 2 ``np.fft.rfft`` maps float32 input to complex64
(pocketfft's single-precision transform), so no step of the float32 path runs in float64. (On NumPy 1.x,
which has no float32 FFT, the float32 path computes the FFT in float64 and rounds |X|^2 once to float32.)
Its rounding differs from torch's float32 FFT (a different FFT library); that difference is what the
float32 tolerance against HF covers. FFT rounding is relative to a frame's peak energy, so it shows most
in mel bins far below the peak yet above the -6.5 floor, i.e. in loud narrowband frames (a 0.5-amplitude
pure tone: HF float32 is ~1e-4 from the float64 truth there; this module's float32 path ~3e-5).
"""

from __future__ import annotations

import functools

import numpy as np

from oracle.config import FULL, AudioConfig
from oracle.errors import OracleError

# The real model's front end: hop 160, window = n_fft 400 (no zero padding to 512, MODEL.md §11 "Other
# traps"), 128 mel bins, 16 kHz, global log-mel max 1.5 (floor 1.5 - 8 = -6.5). Its home is oracle.config.
REFERENCE_AUDIO = FULL.audio
FMIN = 0.0  # Hz; the bank runs from 0 to the Nyquist frequency, sampling_rate / 2 (8 kHz)
FLOORS = ("global", "utterance")

_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _check_dtype(dtype) -> np.dtype:
    dtype = np.dtype(dtype)
    assert dtype in _DTYPES, f"mel: dtype must be float32 or float64, got {dtype}"
    return dtype


def freq_bins(audio: AudioConfig = REFERENCE_AUDIO) -> int:
    """F = n_fft // 2 + 1 one-sided STFT bins (201); n_fft is the window length."""
    return audio.window_size // 2 + 1


def n_mel_frames(n_samples: int, audio: AudioConfig = REFERENCE_AUDIO) -> int:
    """Mel frames of the centred offline STFT of L samples: floor(L/hop) = floor(L/160).

    torch.stft(center=True) gives 1 + floor(L/160) frames and the reference drops the last one
    (``stft[..., :-1]``); MC's ``num_audio_tokens`` counts the same way.
    """
    assert n_samples >= 0, n_samples
    return int(n_samples) // audio.hop_length


def hann_window(n: int = REFERENCE_AUDIO.window_size, dtype=np.float64, *, build_dtype=np.float64) -> np.ndarray:
    """Periodic Hann window w[k] = 0.5 - 0.5 cos(2 pi k / n), k = 0..n-1.  -> [n]

    Periodic (denominator n, not n-1) is torch.hann_window's default, which the reference uses.
    Computed in float64 and rounded once to ``dtype``; ``build_dtype=float32`` computes it in float32
    instead (a port's ``0.5f - 0.5f * cosf(...)``; ``oracle.mel_variants``).
    """
    dtype, build = _check_dtype(dtype), _check_dtype(build_dtype)
    k = np.arange(n, dtype=build)
    two_pi = build.type(2.0 * np.pi)  # float32(2 pi) when built in float32, as a C port writes it
    return (build.type(0.5) - build.type(0.5) * np.cos(two_pi * k / build.type(n))).astype(dtype)  # [n]


def _hz_to_mel(f: np.ndarray, dtype=np.float64) -> np.ndarray:
    # Slaney scale: linear 3f/200 below 1 kHz (15 mel), logarithmic above with 27 mel per ln(6.4).
    f = np.asarray(f, dtype=dtype)
    c = np.dtype(dtype).type
    tiny = np.finfo(dtype).tiny  # keeps log() finite on the branch np.where discards
    log_part = c(15.0) + np.log(np.maximum(f, tiny) / c(1000.0)) * (c(27.0) / np.log(c(6.4)))
    return np.where(f >= c(1000.0), log_part, c(3.0) * f / c(200.0))


def _mel_to_hz(m: np.ndarray, dtype=np.float64) -> np.ndarray:
    # Inverse of _hz_to_mel; the split point is mel 15 = 1000 Hz.
    m = np.asarray(m, dtype=dtype)
    c = np.dtype(dtype).type
    return np.where(m >= c(15.0), c(1000.0) * np.exp((m - c(15.0)) * (np.log(c(6.4)) / c(27.0))), c(200.0) * m / c(3.0))


@functools.lru_cache(maxsize=8)
def _cached_bank(n_freq, n_mels, sampling_rate, fmin, fmax) -> np.ndarray:
    bank = mel_filter_bank(n_freq, n_mels, sampling_rate, fmin, fmax)
    bank.setflags(write=False)  # shared between calls: nobody may modify it
    return bank


def mel_filter_bank(
    n_freq: int = freq_bins(),
    n_mels: int = REFERENCE_AUDIO.num_mel_bins,
    sampling_rate: int = REFERENCE_AUDIO.sampling_rate,
    fmin: float = FMIN,
    fmax: float = REFERENCE_AUDIO.sampling_rate / 2,
    *,
    build_dtype=np.float64,
) -> np.ndarray:
    """Slaney mel filter bank with Slaney area normalisation.  -> [F, M] float64

    n_mels + 2 edge frequencies spaced evenly in mel between fmin and fmax; filter m is the triangle
    f[m] -> f[m+1] -> f[m+2] evaluated at the FFT bin frequencies, scaled by 2 / (f[m+2] - f[m]).
    Mirrors HF ``audio_utils.mel_filter_bank(norm="slaney", mel_scale="slaney")`` and MC
    ``mistral_common.audio.mel_filter_bank``; both return [F, M] (MC's docstring says [M, F]; the
    array is [F, M]). Float64: the reference builds it in float64 and casts at use.
    ``build_dtype=float32`` builds it in float32 throughout (a port's float tables;
    ``oracle.mel_variants``) and returns float32.
    """
    assert n_freq >= 2 and n_mels >= 1 and fmin <= fmax, (n_freq, n_mels, fmin, fmax)
    build = _check_dtype(build_dtype)
    c = build.type
    edges = _mel_to_hz(np.linspace(_hz_to_mel(fmin, build), _hz_to_mel(fmax, build), n_mels + 2, dtype=build),
                       build)  # [M+2] Hz
    # Bin frequencies use integer sampling_rate // 2, as both references do (same for even rates).
    bins = np.linspace(c(0.0), c(sampling_rate // 2), n_freq, dtype=build)  # [F] Hz
    lo, mid, hi = edges[:-2], edges[1:-1], edges[2:]  # [M] each
    rising = (bins[:, None] - lo) / (mid - lo)  # [F, M]
    falling = (hi - bins[:, None]) / (hi - mid)  # [F, M]
    tri = np.maximum(c(0.0), np.minimum(rising, falling))  # [F, M]
    bank = tri * (c(2.0) / (hi - lo))  # [F, M]
    assert bank.shape == (n_freq, n_mels) and bank.dtype == build
    assert (bank.max(axis=0) > 0).all(), "mel: an all-zero mel filter (too many mels for n_freq)"
    return bank


def _frames(x: np.ndarray, n: int, hop: int) -> np.ndarray:
    # Windows x[hop*t : hop*t + n] for every t whose window lies fully inside x (torch.stft's rule
    # once any centring pad has been applied): 1 + (L - n)//hop frames. A strided view, no copy.
    view = np.lib.stride_tricks.sliding_window_view(x, n)  # [L-n+1, n]
    return view[::hop]  # [1 + (L-n)//hop, n]


def fft_power(windowed: np.ndarray) -> np.ndarray:
    """|rfft|^2 of windowed frames in their own dtype, the oracle's transform.  [T, N] -> [T, F]

    NumPy >= 2 maps float32 input to complex64 (pocketfft's single-precision FFT); on NumPy 1.x
    (no float32 FFT) the power comes back in float64 and ``stft_power`` rounds it once.
    """
    spec = np.fft.rfft(windowed, n=windowed.shape[-1], axis=-1)  # [T, F]; complex64 for float32 (NumPy >= 2)
    # |X|^2 as the reference writes it (``stft.abs() ** 2``): magnitude first, then square.
    return np.abs(spec) ** 2  # [T, F]


def stft_power(x: np.ndarray, dtype=np.float64, center: bool = True, *,
               audio: AudioConfig = REFERENCE_AUDIO, window: np.ndarray | None = None,
               power_of=fft_power, center_pad: int | None = None) -> np.ndarray:
    """Power spectrogram |X|^2 of the 400-point, hop-160, periodic-Hann STFT.  [L] -> [F, T]

    center=True (offline): pad 200 reflected samples on each side (torch.stft center=True,
    pad_mode="reflect"), frame, and drop the last frame as the reference does (``stft[..., :-1]``):
    T = floor(L/160). Needs L >= 201 (reflect padding of 200 must not run off the signal; torch
    raises there too).

    center=False (streaming): frames only from windows lying fully inside x, nothing dropped:
    T = 1 + (L-400)//160 for L >= 400. Frame t of a slice ``xp[160a : 160a + 160(k-1) + 400]`` of the
    reflect-padded signal xp is offline frame a + t, which is what the streaming code relies on.

    ``x`` is cast to ``dtype`` (float32 or float64) and everything stays in that dtype.

    ``window`` ([N], default ``hann_window(n_fft, dtype)``) and ``power_of`` (windowed frames [T, N] ->
    power [T, F], default ``fft_power``) let ``oracle.mel_variants`` swap in another honest (or
    mistaken) way to build the window or transform the frames; framing, centring and the dropped last
    frame stay here, once. ``center_pad`` (default n_fft/2, the reference) is the reflect padding of the
    centred STFT; a port that pads (n_fft − hop)/2 = 120 gets floor(L/160) frames with nothing dropped,
    each centred 80 samples late (a real mistake, ``oracle.mel_variants.stft_pad_120``).
    """
    dtype = _check_dtype(dtype)
    x = np.asarray(x)
    assert x.ndim == 1, f"mel: expected a 1-D waveform [L], got shape {x.shape}"
    assert x.dtype.kind == "f", f"mel: expected a float waveform, got {x.dtype}"
    x = x.astype(dtype, copy=False)
    L = x.shape[0]
    n_fft, hop = audio.window_size, audio.hop_length
    pad = n_fft // 2 if center_pad is None else center_pad
    if center:
        if L <= pad:
            raise OracleError(
                f"mel: a signal of {L} samples is too short for the centred STFT "
                f"(reflect padding of {pad} needs at least {pad + 1} samples)"
            )
        x = np.pad(x, pad, mode="reflect")  # [L + 2 pad]; torch's reflect excludes the edge sample
    elif L < n_fft:
        raise OracleError(f"mel: a window of {L} samples holds no full {n_fft}-sample STFT frame")
    if window is None:
        window = hann_window(n_fft, dtype)
    assert window.shape == (n_fft,) and window.dtype == dtype, (window.shape, window.dtype)
    frames = _frames(x, n_fft, hop) * window  # [T(+1), N]
    power = power_of(frames).T  # [F, T(+1)]
    if power.dtype != dtype:
        # NumPy < 2 has no single-precision FFT (float32 -> complex128): the float32 path then takes
        # a float64 FFT and rounds the power once to float32. All later steps are float32 either way.
        power = power.astype(dtype)
    if center:
        power = power[:, :n_mel_frames(L, audio)]  # T = floor(L/160): pad 200 gives one more, dropped
    assert power.dtype == dtype, f"mel: FFT left the working dtype ({power.dtype} != {dtype})"
    assert power.shape == (freq_bins(audio), n_mel_frames(L, audio) if center else 1 + (L - n_fft) // hop)
    return power


def apply_mel(power: np.ndarray, bank: np.ndarray | None = None, *, audio: AudioConfig = REFERENCE_AUDIO) -> np.ndarray:
    """Mel energies bank^T P in the dtype of ``power``.  [F, T] -> [M, T]

    The float64 bank is rounded to the working dtype first, as HF does
    (``torch.from_numpy(self.mel_filters).to(device, torch.float32)``). ``bank`` ([F, M]) replaces
    it (``oracle.mel_variants``: a bank built in another precision); it is cast to the working dtype.
    """
    assert power.ndim == 2 and power.shape[0] == freq_bins(audio), power.shape
    dtype = _check_dtype(power.dtype)
    sr, n_mels = audio.sampling_rate, audio.num_mel_bins
    if bank is None:
        bank = _cached_bank(freq_bins(audio), n_mels, sr, FMIN, sr / 2)  # [F, M], built once
    assert bank.shape == (freq_bins(audio), n_mels), bank.shape
    bank = bank.astype(dtype)
    mel = bank.T @ power  # [M, T]
    assert mel.shape == (n_mels, power.shape[1]) and mel.dtype == dtype
    return mel


def normalize_log_mel(
    mel: np.ndarray, *, global_log_mel_max: float = REFERENCE_AUDIO.global_log_mel_max, floor: str = "global"
) -> np.ndarray:
    """(max(log10(max(mel, 1e-10)), ceiling - 8) + 4) / 4 in the dtype of ``mel``.  [M, T] -> [M, T]

    floor="global" (the reference): ceiling = global_log_mel_max (1.5 in the real params.json), so the
    floor is the constant -6.5 and silence maps to exactly -0.625. Only a lower clamp; no upper clamp.

    floor="utterance" is a known porting MISTAKE (MODEL.md §11.3), kept so a fault catalogue
    can inject it: Whisper's ``max(log_spec, log_spec.max() - 8)`` uses the utterance's own maximum
    (HF's ``global_log_mel_max=None`` branch). It agrees with the reference only when that maximum is
    exactly 1.5, and it makes every frame depend on future audio.
    """
    assert mel.ndim == 2, mel.shape
    dtype = _check_dtype(mel.dtype)
    if floor not in FLOORS:
        raise OracleError(f"mel: floor must be one of {', '.join(FLOORS)}; got {floor!r}")
    log_spec = np.log10(np.maximum(mel, dtype.type(1e-10)))  # torch.clamp(min=1e-10).log10()
    if floor == "global":
        ceiling = dtype.type(global_log_mel_max)
    else:
        ceiling = log_spec.max()  # Whisper: per-utterance maximum
    log_spec = np.maximum(log_spec, ceiling - dtype.type(8.0))
    out = (log_spec + dtype.type(4.0)) / dtype.type(4.0)
    assert out.dtype == dtype
    return out


def log_mel(
    x: np.ndarray,
    dtype=np.float64,
    *,
    center: bool = True,
    audio: AudioConfig = REFERENCE_AUDIO,
    floor: str = "global",
) -> np.ndarray:
    """The model's input features for a 16 kHz mono waveform.  [L] -> [M, T], T = floor(L/160)

    ``audio`` is the checkpoint's front end (hop, window, mel bins, global log-mel max); the default is
    the real model's.

    ``stft_power`` -> ``apply_mel`` -> ``normalize_log_mel``, all in ``dtype``. With center=False the
    frames are those of ``stft_power(center=False)`` (windows fully inside x). Equals HF's
    ``VoxtralRealtimeFeatureExtractor()(x, sampling_rate=16000)["input_features"][0]`` up to float32
    FFT rounding. The input is not quantized: int16 quantization of the offline reference paths is
    ``oracle.audio.quantize_int16`` (MODEL.md §2.1, §11.8).
    """
    power = stft_power(x, dtype, center=center, audio=audio)  # [F, T]
    out = normalize_log_mel(apply_mel(power, audio=audio), global_log_mel_max=audio.global_log_mel_max, floor=floor)
    assert out.shape == (audio.num_mel_bins, power.shape[1]) and out.dtype == np.dtype(dtype)
    return out
