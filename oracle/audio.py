"""Audio I/O: files -> 16 kHz mono float64 waveforms, and the int16 quantization of the offline reference.

Shape legend
    L   samples (mono, at the target rate unless stated)
    C   channels of a file

Reading (``load_audio``) goes through soundfile/libsndfile (WAV, FLAC, OGG, ... whatever it decodes),
averages channels to mono and resamples to 16 kHz. The reference reads with MC
``Audio.from_file(strict=False)``: soundfile as float32, ``mean(axis=1)`` over channels, soxr "HQ"
resampling (MODEL.md §2.1). Here samples are read as float64; for int16, int24 and float32
files this is the same set of values, only carried with more precision.

Quantization (``quantize_int16``): the offline reference paths (HF processor non-streaming, vLLM
``get_generation_prompt``) round-trip the waveform through MC ``Audio.to_base64("wav")``, i.e. a
soundfile PCM_16 WAV, so their features are those of int16-quantized audio (MODEL.md §2.1,
§11.8). ``quantize_int16`` is libsndfile's float -> PCM_16 rule, bit for bit.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import scipy.signal
import soundfile as sf

from oracle.errors import OracleError, where

SAMPLING_RATE = 16000


def load_audio(path, sampling_rate: int = SAMPLING_RATE) -> np.ndarray:
    """Read an audio file as a mono float64 waveform at ``sampling_rate``.  file -> [L]

    - Decoding: soundfile (libsndfile), any format it reads (WAV, FLAC, OGG/Vorbis, ...). Integer
      PCM comes back as k / 2^(bits-1) in [-1, 1); float files come back unchanged (no clipping).
    - Channels: [L, C] -> [L] by the mean over C, as MC ``Audio.from_bytes(strict=False)``.
    - Rate: a file already at ``sampling_rate`` is passed through untouched (bit-exact). Any other
      rate is resampled with ``scipy.signal.resample_poly(x, up, down)``, up/down the reduced ratio
      (e.g. 44.1 kHz -> 16 kHz: up 160, down 441), L_out = ceil(L * up / down). The reference uses
      soxr ``quality="HQ"`` (MC ``Audio.resample``). Both are bandlimited resamplers that keep the
      passband and remove content above the new Nyquist, but with different filter designs
      (resample_poly: a Kaiser-windowed FIR, zero phase; soxr HQ: its own linear-phase design), so
      resampled audio matches the reference only approximately. Measured against soxr 1.1 HQ:
      a 0.5-amplitude 440 Hz sine differs by <= 1e-3 per sample, broadband noise by up to 0.03-0.08
      (the transition bands near 8 kHz differ), lengths agree or differ by one sample; on the
      speech clip taken to 22.05/44.1/48 kHz and back, the log-mel differs by 7e-4 on average and
      0.13 at most (top mel bins); from 8 kHz, 0.9 at most (near-empty bins above 4 kHz). For exact
      comparisons feed 16 kHz audio.

    User errors raise ``OracleError`` with one line starting with the path: missing or unreadable
    file, not decodable as audio, zero samples, NaN or Inf samples.
    """
    p = Path(path)
    if not isinstance(sampling_rate, (int, np.integer)) or sampling_rate <= 0:
        raise OracleError(where(p, f"sampling rate must be a positive integer, got {sampling_rate!r}"))
    if not p.exists():
        raise OracleError(where(p, "no such file"))
    if not p.is_file():
        raise OracleError(where(p, "not a regular file"))
    try:
        with open(p, "rb"):  # permissions etc. get the OS's words, not libsndfile's "System error."
            pass
    except OSError as err:
        raise OracleError(where(p, f"cannot open ({err.strerror})")) from None
    try:
        data, file_rate = sf.read(str(p), dtype="float64", always_2d=True)  # [L, C]
    except sf.LibsndfileError as err:
        # libsndfile's own reason ("Format not recognised.", ...), kept on the same line.
        raise OracleError(where(p, f"not a readable audio file ({err.error_string})")) from None
    except (OSError, RuntimeError, ValueError) as err:
        raise OracleError(where(p, f"cannot read audio ({err})")) from None
    if data.shape[0] == 0:
        raise OracleError(where(p, "empty audio (zero samples)"))
    for name, bad in (("NaN", np.isnan(data)), ("Inf", np.isinf(data))):
        if bad.any():
            first = int(np.argmax(bad.any(axis=1)))
            raise OracleError(where(p, f"contains {name} samples (first at sample {first})"))
    x = data.mean(axis=1)  # [L]; MC strict=False averages channels
    return resample(x, int(file_rate), int(sampling_rate))


def resample(x: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Bandlimited polyphase resampling from ``from_rate`` to ``to_rate``.  [L] -> [ceil(L*up/down)]

    ``scipy.signal.resample_poly`` with up/down = to_rate/from_rate reduced by their gcd; an equal
    rate returns ``x`` itself. See ``load_audio`` for how this differs from the reference's soxr.
    """
    assert x.ndim == 1 and x.dtype.kind == "f", (x.shape, x.dtype)
    assert from_rate > 0 and to_rate > 0, (from_rate, to_rate)
    if from_rate == to_rate:
        return x
    g = math.gcd(from_rate, to_rate)
    up, down = to_rate // g, from_rate // g
    y = scipy.signal.resample_poly(x, up, down)  # [ceil(L*up/down)], dtype of x
    assert y.shape == (-(-x.shape[0] * up // down),) and y.dtype == x.dtype, (y.shape, y.dtype)
    return y


def quantize_int16(x: np.ndarray) -> np.ndarray:
    """libsndfile's float -> PCM_16 conversion, returned as float64 k/32768.  [L] -> [L] float64

        q = floor(clip(rint(x * 2^31), -2^31, 2^31 - 1) / 2^16) / 32768

    soundfile turns on libsndfile's clipping (``SFC_SET_CLIPPING``), so writes take pcm.c's clipping
    float/double -> short conversion: scale to the int32 range, clip, round half to even (``lrint``),
    keep the top 16 bits by an arithmetic shift ``>> 16`` (a floor, not a rounding). Measured equal
    to a soundfile 0.14 / libsndfile 1.2.2 PCM_16 round trip (tests/test_audio.py). It is NOT round(x * 32768): values within 2^-16 of a
    step round the other way. Out-of-range input clips to [-1, 32767/32768]. Returns float64 for any
    float input (every k/32768 is exact in float32 and float64 alike).
    """
    x = np.asarray(x)
    assert x.dtype.kind == "f", f"audio: quantize_int16 expects floats, got {x.dtype}"
    x = x.astype(np.float64)  # exact widening; x * 2^31 is then exact too
    assert np.isfinite(x).all(), "audio: quantize_int16 given NaN/Inf (libsndfile's result is undefined)"
    i32 = np.clip(np.rint(x * 2.0**31), -(2.0**31), 2.0**31 - 1)
    return np.floor(i32 / 2.0**16) / 32768.0


def is_int16_exact(x: np.ndarray) -> bool:
    """True iff a PCM_16 WAV round trip leaves ``x`` unchanged: every sample is k/32768, k in int16.

    Such audio gives the same features on the offline (quantizing) and streaming (not quantizing)
    reference paths (MODEL.md §11.8).
    """
    x = np.asarray(x)
    if x.dtype.kind != "f" or not np.isfinite(x).all():
        return False
    return bool(np.array_equal(quantize_int16(x), x))


def write_wav_int16(path, x: np.ndarray, sampling_rate: int = SAMPLING_RATE) -> None:
    """Write a mono 16-bit PCM WAV holding exactly ``quantize_int16(x)``.  [L] -> file

    The int16 samples are formed here (k = 32768 * quantize_int16(x)) rather than by libsndfile's
    float path, so the file content is explicit; the two agree bit for bit. Reading the file back with
    ``load_audio`` gives ``quantize_int16(x)``.
    """
    x = np.asarray(x)
    assert x.ndim == 1 and x.dtype.kind == "f", (x.shape, x.dtype)
    k = (quantize_int16(x) * 32768.0).astype(np.int16)  # exact: values are integers in int16 range
    try:
        sf.write(str(path), k, int(sampling_rate), format="WAV", subtype="PCM_16")
    except (sf.LibsndfileError, OSError, RuntimeError) as err:
        raise OracleError(where(path, f"cannot write WAV ({err})")) from None
