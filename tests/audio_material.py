"""Test audio made on the spot, deterministically: espeak-ng speech, then sox and soundfile.

    speech_16k(dir)             espeak-ng (voice "en", its native 22.05 kHz) -> sox, no dither, to a
                                16 kHz mono 16-bit WAV: the base material, ~1.7 s
    at_rate(base, rate, dir)    the base taken to ``rate`` by sox (its own resampler, not soxr, so the
                                oracle never sees audio made by the library it is tested with), float32
    with_channels(x, C)         [L] -> [L, C]: channel c is the signal delayed by 3c samples, scaled by
                                0.9 − 0.1c (channels differ, so the average is a real computation)
    write(path, data, rate, kind)   one of KINDS, written by soundfile (libsndfile)

Both tools are deterministic (sox with -D: no dither; -R: repeatable), so the same files come out on
every run. CI installs espeak-ng and sox (.ci/run).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import soundfile as sf

TEXT = "Real recordings, bit for bit."
RATES = (8000, 11025, 16000, 22050, 32000, 44100, 48000, 96000)
CHANNELS = (1, 2, 6)
# name -> (soundfile format, subtype, file extension)
KINDS = {
    "wav_pcm16": ("WAV", "PCM_16", "wav"),
    "wav_pcm24": ("WAV", "PCM_24", "wav"),
    "wav_float": ("WAV", "FLOAT", "wav"),
    "flac": ("FLAC", "PCM_16", "flac"),
    "ogg_vorbis": ("OGG", "VORBIS", "ogg"),
    "mp3": ("MP3", "MPEG_LAYER_III", "mp3"),
}
MP3_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)  # MPEG-1/2/2.5 only


def encodable(kind: str, rate: int, channels: int) -> bool:
    """MP3 carries at most 2 channels at the MPEG rates (no 96 kHz); every other kind takes the whole grid."""
    return kind != "mp3" or (channels <= 2 and rate in MP3_RATES)


def _run(cmd: list[str]) -> None:
    subprocess.run(cmd, check=True, capture_output=True, timeout=60)


def speech_16k(directory: Path, text: str = TEXT) -> Path:
    out = directory / "speech16k.wav"
    if not out.exists():
        raw = directory / "espeak.wav"
        _run(["espeak-ng", "-v", "en", "-w", str(raw), text])
        _run(["sox", "-D", "-R", str(raw), "-r", "16000", "-c", "1", "-b", "16", "-e", "signed-integer", str(out)])
    return out


def at_rate(base: Path, rate: int, directory: Path) -> np.ndarray:
    out = directory / f"speech_{rate}.wav"
    if not out.exists():
        _run(["sox", "-D", "-R", str(base), "-r", str(rate), "-e", "floating-point", "-b", "32", str(out)])
    x, r = sf.read(out, dtype="float32")
    assert r == rate and x.ndim == 1
    return x


def with_channels(x: np.ndarray, channels: int) -> np.ndarray:
    cols = [(0.9 - 0.1 * c) * np.concatenate([np.zeros(3 * c, np.float32), x[:len(x) - 3 * c]]) for c in range(channels)]
    return np.stack(cols, axis=1).astype(np.float32)  # [L, C]


def write(path: Path, data: np.ndarray, rate: int, kind: str) -> Path:
    fmt, subtype, _ = KINDS[kind]
    sf.write(path, data, rate, format=fmt, subtype=subtype)
    return path


def make(directory: Path, rate: int, channels: int, kind: str) -> Path:
    """The base speech at ``rate`` with ``channels`` channels, as a ``kind`` file (cached in ``directory``)."""
    path = directory / f"speech_{rate}_{channels}ch_{kind}.{KINDS[kind][2]}"
    if not path.exists():
        assert encodable(kind, rate, channels), (kind, rate, channels)
        write(path, with_channels(at_rate(speech_16k(directory), rate, directory), channels), rate, kind)
    return path
