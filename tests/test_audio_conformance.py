"""Loading equals the reference's, bit for bit, over the whole grid (issue "real recordings").

The reference: mistral-common ``Audio.from_file(path, strict=False)`` then ``Audio.resample(16000)``
(soundfile float32, ``mean(axis=1)`` over channels, soxr "HQ"), then the offline WAV round trip
``Audio.to_base64("wav")`` that gives the int16 samples the offline features are computed from.

For every rate (8 .. 96 kHz) × channel count (1, 2, 6) × file kind (WAV PCM_16/PCM_24/FLOAT, FLAC,
OGG/Vorbis, MP3 where MPEG can carry it), ``oracle.audio.load_audio`` must return:
  - the same float32 samples (widened exactly to float64) and the same length, both with its default
    blocks and with tiny blocks (many block boundaries inside the downmix and the soxr stream);
  - the same int16 samples as the reference's own WAV round trip.
"""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
import soundfile as sf
from mistral_common.tokens.tokenizers.audio import Audio

import audio_material as am
from oracle.audio import load_audio, quantize_int16

GRID = [(r, c, k) for r in am.RATES for c in am.CHANNELS for k in am.KINDS if am.encodable(k, r, c)]


@pytest.fixture(scope="module")
def material(tmp_path_factory):
    return tmp_path_factory.mktemp("conformance_audio")


def reference_16k(path) -> np.ndarray:
    audio = Audio.from_file(str(path), strict=False)
    audio.resample(16000)
    assert audio.sampling_rate == 16000 and audio.audio_array.ndim == 1
    return audio.audio_array


def reference_int16(x: np.ndarray) -> np.ndarray:
    """The offline reference's quantization: MC's WAV serialization, decoded back to int16."""
    wav = base64.b64decode(Audio(audio_array=x, sampling_rate=16000, format="wav").to_base64("wav"))
    k, rate = sf.read(io.BytesIO(wav), dtype="int16")
    assert rate == 16000
    return k


def test_grid_is_complete():
    # the installed libsndfile decodes (and encodes) MP3, so the MP3 column is part of the proof
    assert "MP3" in sf.available_formats(), sf.__libsndfile_version__
    assert len(GRID) == 8 * 3 * 5 + 7 * 2  # MP3: 1 and 2 channels at the 7 rates below 96 kHz
    assert {(r, c) for r, c, _ in GRID} == {(r, c) for r in am.RATES for c in am.CHANNELS}


@pytest.mark.parametrize("rate,channels,kind", GRID, ids=[f"{r}-{c}ch-{k}" for r, c, k in GRID])
def test_load_equals_mistral_common(material, rate, channels, kind):
    path = am.make(material, rate, channels, kind)
    info = sf.info(path)
    assert (info.samplerate, info.channels) == (rate, channels)
    ref = reference_16k(path)
    assert ref.dtype == np.float32

    ours = load_audio(path)
    assert ours.dtype == np.float64 and ours.shape == ref.shape, (ours.shape, ref.shape)
    assert np.array_equal(ours, ref.astype(np.float64)), f"max |diff| {np.abs(ours - ref).max():.3g}"
    assert np.array_equal(ours.astype(np.float32), ref)

    small = load_audio(path, block_values=4093)  # prime: block edges fall everywhere
    assert np.array_equal(small, ours)

    k = reference_int16(ref)
    assert k.shape == ours.shape
    assert np.array_equal((quantize_int16(ours) * 32768.0).astype(np.int16), k)
    # a non-trivial case: speech, not silence, survives every conversion
    assert 0.05 < float(np.abs(ours).max()) < 1.0 and len(ours) > 16000
