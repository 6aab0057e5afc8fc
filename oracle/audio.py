"""Audio I/O: files -> 16 kHz mono waveforms equal to the reference's, and the offline int16 quantization.

Shape legend
    L   samples (mono, at the target rate unless stated)
    B   frames of one decoded block
    C   channels of a file

The reference reads a file with mistral-common (MC) ``Audio.from_file(strict=False)`` and brings it to
16 kHz with ``Audio.resample`` (MODEL.md §2.1):

    soundfile (libsndfile) ``SoundFile(...).read(dtype="float32")``   [L, C] float32 (mono: [L])
    ``audio_array.mean(axis=1)`` when C > 1                          [L] float32, averaged in float32
    ``soxr.resample(x, rate, 16000, quality="HQ")`` unless rate == 16000   [L'] float32

``load_audio`` / ``stream_audio`` do exactly that, with the same libraries and dtypes, block by block so
memory stays bounded: B frames are decoded as float32, averaged with the same ``mean(axis=1)`` (a
row's mean depends on that row only), and pushed through python-soxr's ``ResampleStream`` at quality
"HQ" in float32, which gives the same samples as its one-shot ``soxr.resample`` whatever the block
sizes (measured on 448 random lengths × block sizes × 7 rates; tests/test_audio.py re-checks it, and
tests/test_audio_conformance.py checks the whole path against MC itself). The float32 result is
returned widened to float64, exactly: the values are the reference's. A 16 kHz int16 file therefore
gives k/32768 as before.

Limits, checked from the header BEFORE anything is decoded (a 32 KB file may declare hours of audio
at 1 Hz): duration at most ``max_seconds`` (default ``MAX_AUDIO_SECONDS``, 2 hours; the CLI's
``--max-audio-seconds`` raises it), source rate 1 Hz .. ``MAX_SOURCE_RATE``. Peak memory of a load is
the 16 kHz result (12 bytes a sample while it is assembled), not the file's size or rate.

Quantization (``quantize_int16``): the offline reference paths (HF processor non-streaming, vLLM
``get_generation_prompt``) round-trip the 16 kHz waveform through MC ``Audio.to_base64("wav")``, i.e. a
soundfile PCM_16 WAV, so their features are those of int16-quantized audio (MODEL.md §2.1, §11.8).
``quantize_int16`` is libsndfile's float -> PCM_16 rule, bit for bit.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import soundfile as sf
import soxr

from oracle.config import FRONT_END
from oracle.errors import OracleError, where

SAMPLING_RATE = FRONT_END.sampling_rate  # the model's one input rate; every file is resampled to it
MAX_AUDIO_SECONDS = 7200.0  # default bound on a file's duration (2 hours); raise it with --max-audio-seconds
MAX_SOURCE_RATE = 768_000  # highest file sample rate accepted (8x 96 kHz)
SOXR_QUALITY = "HQ"  # MC Audio.resample
BLOCK_VALUES = 1 << 20  # decoded values per block (4 MiB of float32), and about as many output samples at most


@dataclass(frozen=True)
class AudioInfo:
    """What the file's header declares (libsndfile's view)."""
    path: Path
    samplerate: int
    channels: int
    frames: int
    format: str
    subtype: str

    @property
    def seconds(self) -> float:
        return self.frames / self.samplerate


def _open_regular(p: Path):
    """Open ``p`` for reading without ever blocking: a FIFO or device is refused before any read.

    O_NONBLOCK makes open() of a FIFO return at once; fstat of the opened descriptor then decides
    (no window between a check and the open). The returned file object has no ``.name`` ending in an
    extension, so soundfile never guesses a format from the name (a ``*.raw`` name would make it ask
    for RAW parameters: a TypeError); libsndfile detects the format from the bytes, as it does for
    MC's in-memory ``BytesIO``.
    """
    try:
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise OracleError(where(p, "no such file")) from None
    except IsADirectoryError:
        raise OracleError(where(p, "not a regular file")) from None
    except OSError as err:
        raise OracleError(where(p, f"cannot open ({err.strerror})")) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OracleError(where(p, "not a regular file"))
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _check_target(p, sampling_rate, max_seconds) -> None:
    if not isinstance(sampling_rate, (int, np.integer)) or isinstance(sampling_rate, bool) or sampling_rate <= 0:
        raise OracleError(where(p, f"sampling rate must be a positive integer, got {sampling_rate!r}"))
    if not isinstance(max_seconds, (int, float, np.integer, np.floating)) or not 0 < float(max_seconds) < float("inf"):
        raise OracleError(where(p, f"maximum audio duration must be a positive number of seconds, got {max_seconds!r}"))


class AudioReader:
    """An open audio file whose header has been checked; ``blocks()`` decodes it to ``sampling_rate``.

    Construction validates everything the header tells (format, rate, channels, duration) and raises
    ``OracleError`` (one line, starting with the path) before a sample is decoded. Use as a context
    manager, or call ``close()``.
    """

    def __init__(self, path, sampling_rate: int = SAMPLING_RATE, max_seconds: float = MAX_AUDIO_SECONDS,
                 block_values: int = BLOCK_VALUES):
        p = Path(path)
        _check_target(p, sampling_rate, max_seconds)
        assert block_values >= 1, block_values
        self.path, self.rate, self.max_seconds = p, int(sampling_rate), float(max_seconds)
        self.block_values = int(block_values)
        self._file = _open_regular(p)
        try:
            self._sf = sf.SoundFile(self._file)
        except sf.LibsndfileError as err:
            self._file.close()
            # libsndfile's own reason ("Format not recognised.", ...), kept on the same line.
            raise OracleError(where(p, f"not a readable audio file ({err.error_string})")) from None
        except (OSError, RuntimeError, ValueError, TypeError) as err:
            self._file.close()
            raise OracleError(where(p, f"not a readable audio file ({err})")) from None
        try:
            self.info = self._check_header()
        except BaseException:
            self.close()
            raise

    def _check_header(self) -> AudioInfo:
        p, f = self.path, self._sf
        info = AudioInfo(p, int(f.samplerate), int(f.channels), int(f.frames), str(f.format), str(f.subtype))
        if not 1 <= info.samplerate <= MAX_SOURCE_RATE:
            raise OracleError(where(p, f"sample rate {info.samplerate} Hz is outside the accepted 1 .. {MAX_SOURCE_RATE} Hz"))
        if info.channels < 1:
            raise OracleError(where(p, f"{info.channels} channels"))
        if info.frames <= 0:
            raise OracleError(where(p, "empty audio (zero samples)"))
        if info.frames > self.frame_limit:
            raise OracleError(where(p, self._too_long(info.frames)))
        return info

    @property
    def frame_limit(self) -> int:
        return int(self.max_seconds * self._sf.samplerate)

    def _too_long(self, frames: int) -> str:
        r = self._sf.samplerate
        return (f"audio is {frames / r:.1f} s long ({frames} frames at {r} Hz), over the limit of "
                f"{self.max_seconds:g} s (raise it with --max-audio-seconds)")

    def blocks(self) -> Iterator[np.ndarray]:
        """The waveform at ``sampling_rate`` in pieces, float32, as MC computes it.  -> [L_i] each

        Each block of at most ``block_values`` (2^20) decoded values (and at most ~2^20 output samples) is averaged over
        channels in float32 and resampled by one soxr HQ stream; the pieces concatenated are MC's
        ``Audio.from_file(strict=False)`` + ``Audio.resample`` result, sample for sample."""
        info, p = self.info, self.path
        per_block = max(1, min(self.block_values // info.channels, self.block_values * info.samplerate // self.rate))
        stream = (None if info.samplerate == self.rate else
                  soxr.ResampleStream(info.samplerate, self.rate, 1, dtype="float32", quality=SOXR_QUALITY))
        done = 0  # frames decoded so far
        for data in self._decoded(per_block):
            n = data.shape[0]
            if done + n > self.frame_limit:  # the header under-declared the length
                raise OracleError(where(p, self._too_long(done + n)))
            finite = np.isfinite(data) if data.ndim == 1 else np.isfinite(data).all(axis=1)
            if not finite.all():
                first = int(np.argmin(finite))
                name = "NaN" if np.isnan(data[first]).any() else "Inf"
                why = "; a 64-bit value beyond ±3.4e38 reads as Inf in float32" if info.subtype == "DOUBLE" else ""
                raise OracleError(where(p, f"contains {name} samples (first at sample {done + first}{why})"))
            if data.ndim != 1:
                with np.errstate(over="ignore", invalid="ignore"):
                    data = data.mean(axis=1)  # [B] float32: MC's strict=False downmix, same call, same dtype
                if not np.isfinite(data).all():
                    first = done + int(np.argmin(np.isfinite(data)))
                    raise OracleError(where(p, f"the channel average overflows float32 at sample {first} "
                                               "(samples near ±3.4e38; the reference averages in float32)"))
            done += n
            if stream is not None:
                data = self._resampled(stream, data, last=False)
            if len(data):
                yield data
        if stream is not None:
            tail = self._resampled(stream, np.zeros(0, dtype=np.float32), last=True)
            if len(tail):
                yield tail

    def _decoded(self, per_block: int) -> Iterator[np.ndarray]:
        """Decoded float32 blocks of at most ``per_block`` frames, [B] mono or [B, C], until the end.

        MP3 is read in ONE call, as MC does: soundfile re-seeks to the current position after every
        read, and libsndfile's MPEG decoder (mpg123) restarts at a frame boundary on a seek, which
        changes the samples after each block edge (measured: a 2046-frame block read of an 8 kHz MP3
        differs from the single read from sample 2049 on). WAV, FLAC and OGG/Vorbis decode the same
        either way (tests/test_audio_conformance.py reads them with tiny blocks). The whole MP3 read is
        bounded by the duration limit (MPEG: at most 2 channels at 48 kHz)."""
        p = self.path
        whole = self.info.format == "MP3"
        while True:
            try:
                data = self._sf.read(-1 if whole else per_block, dtype="float32")  # as MC: no always_2d
            except sf.LibsndfileError as err:
                raise OracleError(where(p, f"cannot decode audio ({err.error_string})")) from None
            except (OSError, RuntimeError, ValueError, MemoryError) as err:
                raise OracleError(where(p, f"cannot decode audio ({err})")) from None
            if data.shape[0] == 0:
                return
            if whole:
                for i in range(0, data.shape[0], per_block):
                    yield data[i:i + per_block]
                return
            yield data

    def _resampled(self, stream, x: np.ndarray, last: bool) -> np.ndarray:
        with np.errstate(over="ignore", invalid="ignore"):
            y = stream.resample_chunk(x, last=last)  # float32
        assert y.dtype == np.float32 and y.ndim == 1, (y.dtype, y.shape)
        if not np.isfinite(y).all():
            raise OracleError(where(self.path, "resampling overflows float32 (samples near ±3.4e38; the "
                                               "reference resamples in float32)"))
        return y

    def close(self) -> None:
        try:
            self._sf.close()
        finally:
            self._file.close()

    def __enter__(self) -> "AudioReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def load_audio(path, sampling_rate: int = SAMPLING_RATE, max_seconds: float = MAX_AUDIO_SECONDS,
               block_values: int = BLOCK_VALUES) -> np.ndarray:
    """Read an audio file as the reference's mono waveform at ``sampling_rate``, float64.  file -> [L]

    - Decoding: soundfile (libsndfile) as float32, any format it reads (WAV PCM/float, FLAC,
      OGG/Vorbis, MP3 with libsndfile >= 1.1, ...). Integer PCM comes back as k / 2^(bits-1); float
      files come back unchanged (no clipping).
    - Channels: [L, C] -> [L] by ``mean(axis=1)`` in float32, as MC ``Audio.from_bytes(strict=False)``.
    - Rate: a file already at ``sampling_rate`` is passed through untouched. Any other rate goes
      through python-soxr at quality "HQ" in float32, as MC ``Audio.resample``: identical samples and
      length (tests/test_audio_conformance.py).
    - The float32 result is widened exactly to float64 (the project's carrier dtype).

    User errors raise ``OracleError`` with one line starting with the path: missing, not a regular
    file (directory, FIFO, device), unreadable, not decodable as audio, zero samples, longer than
    ``max_seconds``, a sample rate outside 1 .. 768 kHz, NaN or Inf samples, float32 overflow in the
    channel average or the resampler, or too short to give one sample at ``sampling_rate``.
    """
    with AudioReader(path, sampling_rate, max_seconds, block_values) as reader:
        pieces = list(reader.blocks())
        info = reader.info
    if not pieces:
        raise OracleError(where(Path(path), f"too short to resample: {info.frames} frame(s) at {info.samplerate} Hz "
                                            f"give no sample at {sampling_rate} Hz"))
    out = np.concatenate(pieces, dtype=np.float64)  # exact widening of the float32 samples
    assert out.ndim == 1 and out.dtype == np.float64, (out.shape, out.dtype)
    return out


def resample(x: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """MC ``Audio.resample`` on an array: ``soxr.resample(x, from_rate, to_rate, quality="HQ")`` in
    float32; an equal rate returns ``x`` unchanged.  [L] float32 -> [L'] float32"""
    assert x.ndim == 1 and x.dtype == np.float32, (x.shape, x.dtype)
    assert from_rate > 0 and to_rate > 0, (from_rate, to_rate)
    if from_rate == to_rate:
        return x
    y = soxr.resample(x, from_rate, to_rate, quality=SOXR_QUALITY)
    assert y.ndim == 1 and y.dtype == np.float32, (y.shape, y.dtype)
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
