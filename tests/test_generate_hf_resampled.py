"""Greedy tokens equal transformers 5.23.0 ``generate()`` on real-recording-like files: non-16 kHz,
multi-channel, compressed (issue "real recordings", item 2).

The files are espeak-ng speech (tests/audio_material.py): 44.1 kHz stereo OGG/Vorbis and 22.05 kHz
mono WAV PCM_16. On each of the tiny checkpoint and test_conformance's two odd configurations:

    reference offline   mistral-common ``Audio.from_file(strict=False)`` + ``Audio.resample(16000)``
                        -> the real ``VoxtralRealtimeProcessor`` (its WAV round trip quantizes to int16)
                        -> ``model.generate(**inputs)``
    oracle offline      ``read_audio`` -> ``offline_tokens`` (what ``transcribe`` runs)
    reference stream    the same MC waveform through the HF streaming recipe (test_generate_hf)
    oracle stream       ``stream_audio`` (decoded and resampled as consumed) -> ``stream_tokens``
                        (what ``transcribe --stream`` runs)

Offline tokens are equal. The streamed tokens are those of the oracle's offline schedule on the
unquantized waveform (the real-time paths never quantize; a resampled waveform is not int16-exact, so
these may differ from the offline tokens: the references differ the same way), and HF's streamed
tokens are the prefix test_generate_hf establishes for 16 kHz input (one token short iff
0 < L mod 1280 <= 200).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from mistral_common.tokens.tokenizers.audio import Audio

import audio_material as am
from oracle.audio import quantize_int16
from oracle.precision import FLOAT32
from oracle.protocol import EOS
from oracle.pipeline import load_setup, offline_tokens, read_audio, stream_audio, stream_tokens
from oracle.streaming import Model, StreamingSession
from oracle.synth import write_checkpoint
from oracle import builtin

from hf_reference import build_hf_model
from test_generate_hf import CONFIGS, first_divergence, hf_streaming_generate, processor_for

pytestmark = pytest.mark.filterwarnings("ignore:Using the model-agnostic default `max_length`:UserWarning")

FILES = {  # name -> (rate, channels, kind)
    "44k1_stereo_ogg": (44100, 2, "ogg_vorbis"),
    "22k05_mono_wav": (22050, 1, "wav_pcm16"),
}


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("resampled_speech")
    return {name: am.make(d, *spec) for name, spec in FILES.items()}


@pytest.fixture(scope="module", params=list(CONFIGS))
def model(request, tmp_path_factory):
    cfg, seed = CONFIGS[request.param]
    if seed is None:
        directory = Path(builtin.tiny_checkpoint())
    else:
        directory = Path(write_checkpoint(tmp_path_factory.mktemp(f"res_{request.param}"), cfg, seed=seed))
    setup = load_setup(directory)
    assert setup.ckpt.config == cfg
    return request.param, directory, setup, build_hf_model(setup.ckpt, torch.float32)


def mc_waveform(path: Path) -> np.ndarray:
    audio = Audio.from_file(str(path), strict=False)
    audio.resample(16000)
    return audio.audio_array  # float32 [L]


@pytest.mark.parametrize("name", list(FILES))
def test_tokens_equal_transformers(model, files, name, tmp_path):
    label, directory, setup, hf = model
    proto = setup.protocol
    path = files[name]
    ref = mc_waveform(path)
    audio = read_audio(path, 16000)
    assert np.array_equal(audio, ref.astype(np.float64)), "the loader is not MC's (see test_audio_conformance)"
    tag = f"[{label} {name}, L={len(ref)}, L mod 1280={len(ref) % 1280}]"

    # offline: the real processor on MC's waveform, generate() on its inputs
    proc = processor_for(directory, proto.delay_ms, tmp_path)
    inputs = proc(ref, return_tensors="pt", sampling_rate=16000)
    assert inputs["input_ids"][0].tolist() == proto.prompt.tolist()
    with torch.no_grad():
        ids = hf.generate(**inputs, do_sample=False)[0].tolist()
    theirs = ids[len(proto.prompt):]
    ours = offline_tokens(setup, audio, FLOAT32)
    assert ours == theirs, f"{tag} offline: {first_divergence(ours, theirs)}"
    assert len(set(ours)) >= 3, (tag, ours)  # a non-degenerate transcript

    # streamed: the real-time references never quantize (MODEL.md §11.8), and a resampled waveform is
    # not int16-exact, so the streamed tokens are those of the UNQUANTIZED offline schedule, which may
    # differ from the quantized offline tokens above. The oracle decodes + resamples the file as it goes.
    assert not np.array_equal(quantize_int16(audio), audio), "expected a non-int16-exact waveform"
    unquantized = offline_tokens(setup, audio, FLOAT32, quantize=False)
    streamed = stream_tokens(setup, stream_audio(path, 16000, 1280), FLOAT32)
    assert streamed == unquantized, f"{tag} stream vs offline: {first_divergence(streamed, unquantized)}"
    hf_ids, _, _ = hf_streaming_generate(hf, proc, ref)
    hf_stream = hf_ids[len(proto.prompt):]
    short = 0 < len(ref) % 1280 <= 200 and EOS not in unquantized
    assert len(hf_stream) == len(unquantized) - short, (tag, len(hf_stream), len(unquantized))
    assert hf_stream == unquantized[:len(hf_stream)], f"{tag} HF stream: {first_divergence(unquantized, hf_stream)}"


def test_stream_audio_chunks_are_the_loaded_waveform(files):
    for path in files.values():
        whole = read_audio(path, 16000)
        for size in (1, 1280, 7777):
            chunks = list(stream_audio(path, 16000, size))
            assert all(len(c) == size for c in chunks[:-1]) and 0 < len(chunks[-1]) <= size
            assert all(c.dtype == np.float64 for c in chunks)
            assert np.array_equal(np.concatenate(chunks), whole)


def test_file_stream_caches_bounded(tmp_path):
    """30 s of 44.1 kHz stereo FLAC streamed from the file on the tiny checkpoint (encoder window 16
    frames, decoder window 8 tokens): after every 80 ms chunk the caches hold at most window − 1 keys,
    the session's state stops growing once the windows are full, and the reader holds one block."""
    setup = load_setup(builtin.tiny_checkpoint())
    cfg = setup.ckpt.config
    speech = am.at_rate(am.speech_16k(tmp_path), 44100, tmp_path)
    unit = np.concatenate([speech, np.zeros(22050, np.float32)])
    long = np.resize(unit, 30 * 44100)
    path = am.write(tmp_path / "long.flac", am.with_channels(long, 2), 44100, "flac")
    session = StreamingSession(Model(setup.ckpt, FLOAT32), setup.protocol)
    sizes = []
    for chunk in stream_audio(path, 16000, 1280):
        session.feed(chunk)
        assert all(len(kv) <= cfg.encoder.sliding_window - 1 for kv in session.enc.kv)
        assert all(len(kv) <= cfg.decoder.sliding_window - 1 for kv in session.dec.kv)
        sizes.append(sum(session.state_nbytes().values()))
    session.finish()
    assert session.n_audio >= 375  # 30 s = 375 tokens of audio, all encoded
    assert len(sizes) == -(-30 * 16000 // 1280)
    # full windows after the first second: from then on the state is a constant size
    assert max(sizes[25:]) <= max(sizes[:25]), (max(sizes[:25]), max(sizes[25:]))
