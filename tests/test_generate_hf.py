"""The oracle's decode schedules equal transformers 5.23.0 ``generate()`` token for token (MODEL.md §6.4, §6.5).

Both sides run the same synthetic Mistral-layout checkpoint in float32 (HF: eager attention, loaded
through the project's name table by tests/hf_reference.py). The audio is the built-in speech clip,
which is int16-exact, so the offline processor's WAV round trip is a no-op and both paths see the
same samples.

    offline     oracle ``generate_offline(FLOAT32)`` vs HF ``model.generate(input_ids=prompt,
                input_features=mel, num_delay_tokens=n_delay, do_sample=False)`` on the same mel;
                tiny + the two odd configs of test_conformance, delays 80 / 480 / 2400 ms.
                Also the length HF picks: ``max_length = N`` (the padded stream's positions), so it
                generates N − P tokens, and so does the oracle.
    processor   the real ``VoxtralRealtimeProcessor`` (MistralCommonBackend on a tekken.json whose
                ``transcription_delay_ms`` sets the delay, MODEL.md §6.2) on the raw clip: its input_ids
                are our prompt, its features are ``offline_mel(FLOAT32, quantize=True)`` within 5e-5,
                and generate() on them gives the oracle's tokens.
    streaming   the HF model-doc / integration-test streaming recipe (processor with
                ``is_streaming=True``, first chunk, then overlapping 1680-sample chunks fed to
                ``generate()`` as a Python generator) vs the oracle's ``StreamingSession`` (framing
                "offline") and its offline tokens.

HF's generated ids include the prompt; the oracle's lists hold only the generated tokens.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import MistralCommonBackend, VoxtralRealtimeFeatureExtractor, VoxtralRealtimeProcessor
from transformers.generation.streamers import BaseStreamer

from oracle import builtin
from oracle.audio import load_audio, quantize_int16
from oracle.checkpoint import Checkpoint
from oracle.config import TINY, ModelConfig
from oracle.pipeline import Setup, load_setup, offline_mel
from oracle.precision import FLOAT32
from oracle.protocol import BOS, EOS, STREAMING_PAD, Protocol
from oracle.streaming import Model, StreamingSession, generate_offline
from oracle.synth import write_checkpoint

from hf_reference import build_hf_model, hf_stream_chunks
from test_conformance import ODD_A, ODD_B

# generate() warns that it uses the "model-agnostic default max_length": that default is the one
# modeling_voxtral_realtime.py sets on purpose (N offline, 1e9 streaming), checked below.
pytestmark = pytest.mark.filterwarnings("ignore:Using the model-agnostic default `max_length`:UserWarning")

DELAYS_MS = (80, 480, 2400)
MEL_TOL = 5e-5  # oracle float32 mel (numpy pocketfft) vs HF float32 mel (torch.stft)


# -- fixtures -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pair:
    """One checkpoint on both sides."""
    name: str
    directory: Path  # params.json + consolidated.safetensors + tekken.json
    ckpt: Checkpoint
    hf: torch.nn.Module  # VoxtralRealtimeForConditionalGeneration, float32, eager

    def setup(self, delay_ms: int) -> Setup:
        return load_setup(self.directory, delay_ms)


CONFIGS: dict[str, tuple[ModelConfig, int | None]] = {
    "tiny": (TINY, None),  # the built-in golden/tiny (synth seed 0)
    "odd_a": (ODD_A, 12),  # test_conformance's configs and seeds
    "odd_b": (ODD_B, 13),
}


@pytest.fixture(scope="module")
def clip() -> np.ndarray:
    audio = load_audio(builtin.speech_clip())
    assert np.array_equal(quantize_int16(audio), audio), "the built-in clip must be int16-exact"
    return audio


@pytest.fixture(scope="module", params=list(CONFIGS))
def pair(request, tmp_path_factory) -> Pair:
    cfg, seed = CONFIGS[request.param]
    if seed is None:
        directory = builtin.tiny_checkpoint()
    else:
        cfg.validate(request.param)
        directory = write_checkpoint(tmp_path_factory.mktemp(f"gen_{request.param}"), cfg, seed=seed)
    setup = load_setup(directory)
    assert setup.ckpt.config == cfg
    return Pair(request.param, Path(directory), setup.ckpt, build_hf_model(setup.ckpt, torch.float32))


@pytest.fixture(scope="module")
def tiny() -> Pair:
    directory = builtin.tiny_checkpoint()
    setup = load_setup(directory)
    return Pair("tiny", Path(directory), setup.ckpt, build_hf_model(setup.ckpt, torch.float32))


# -- helpers ------------------------------------------------------------------------------------


@contextlib.contextmanager
def recorded_max_length(model):
    """Record the ``max_length`` generate() settles on: HF's ``_prepare_generated_length`` override
    (modeling_voxtral_realtime.py L1278-1308) is wrapped on the instance for the block's duration."""
    seen: list[int] = []
    original = model._prepare_generated_length

    def spy(generation_config, *args, **kwargs):
        out = original(generation_config, *args, **kwargs)
        seen.append(int(out.max_length))
        return out

    model._prepare_generated_length = spy
    try:
        yield seen
    finally:
        del model._prepare_generated_length  # back to the class method
    assert len(seen) == 1, seen


def hf_generate_offline(model, prompt: np.ndarray, mel: np.ndarray, n_delay) -> tuple[list[int], int]:
    """HF offline generate on our prompt and mel. -> (all ids incl. the prompt, the max_length it used)."""
    with torch.no_grad(), recorded_max_length(model) as seen:
        out = model.generate(input_ids=torch.as_tensor(prompt)[None], input_features=torch.as_tensor(mel)[None],
                             num_delay_tokens=n_delay, do_sample=False)
    assert out.shape[0] == 1
    return out[0].tolist(), seen[0]


def first_divergence(a: list[int], b: list[int]) -> str:
    i = next((k for k, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    return f"first difference at generated index {i}: oracle {a[i:i + 5]} vs hf {b[i:i + 5]} (lengths {len(a)}, {len(b)})"


def expected_count(proto: Protocol, tokens: list[int], n_positions: int) -> int:
    """N − P generated tokens (HF max_length = N), fewer only if EOS came first (it is kept)."""
    full = n_positions - len(proto.prompt)
    return tokens.index(proto.eos) + 1 if proto.eos in tokens[:full] else full


def processor_for(directory: Path, delay_ms: int, tmp: Path) -> VoxtralRealtimeProcessor:
    """The real processor; the delay comes from tekken.json's audio.transcription_delay_ms (MODEL.md §6.2),
    so for a non-default delay the tekken.json is copied with that one field changed."""
    source = directory / "tekken.json"
    tekken = json.loads(source.read_text())
    if tekken["audio"]["transcription_delay_ms"] != delay_ms:
        tekken["audio"]["transcription_delay_ms"] = delay_ms
        directory = tmp / f"tekken_{delay_ms}ms"
        directory.mkdir()
        (directory / "tekken.json").write_text(json.dumps(tekken))
    tokenizer = MistralCommonBackend.from_pretrained(str(directory))
    return VoxtralRealtimeProcessor(feature_extractor=VoxtralRealtimeFeatureExtractor(), tokenizer=tokenizer)


# -- 1. offline greedy == HF generate -------------------------------------------------------------


@pytest.mark.parametrize("delay_ms", DELAYS_MS)
def test_offline_greedy_equals_hf_generate(pair, delay_ms, clip):
    setup = pair.setup(delay_ms)
    proto = setup.protocol
    n_delay = delay_ms // 80
    assert proto.delay_tokens == n_delay
    assert proto.prompt.tolist() == [BOS] + [STREAMING_PAD] * (32 + n_delay)
    mel = offline_mel(clip, proto, FLOAT32, quantize=True)
    n = proto.n_positions(len(clip))
    assert mel.shape == (128, 8 * n) and mel.dtype == np.float32

    ours = generate_offline(Model(pair.ckpt, FLOAT32), mel, proto)
    ids, max_length = hf_generate_offline(pair.hf, proto.prompt, mel, n_delay)

    tag = f"[{pair.name} {delay_ms} ms, N={n}, P={len(proto.prompt)}]"
    # HF sets max_length = ceil(mel frames / audio_length_per_tok) = N when the caller gives no length
    # (modeling_voxtral_realtime.py L1255-1266, clamped to it again at L1304-1306).
    assert max_length == n, f"{tag} HF max_length {max_length}"
    assert ids[:len(proto.prompt)] == proto.prompt.tolist(), f"{tag} HF output does not start with the prompt"
    theirs = ids[len(proto.prompt):]
    assert ours == theirs, f"{tag} {first_divergence(ours, theirs)}"
    assert len(ours) == expected_count(proto, ours, n), f"{tag} {len(ours)} tokens"
    # a non-degenerate fixture: text and control tokens both occur, many distinct ones
    assert len(set(ours)) >= 8 and any(t >= 1000 for t in ours) and any(t < 1000 for t in ours), (tag, ours)


# -- the real HF processor, non-streaming -----------------------------------------------------------


@pytest.mark.parametrize("delay_ms", DELAYS_MS)
def test_hf_processor_path(tiny, delay_ms, clip, tmp_path):
    setup = tiny.setup(delay_ms)
    proto = setup.protocol
    proc = processor_for(tiny.directory, delay_ms, tmp_path)
    inputs = proc(clip, return_tensors="pt", sampling_rate=16000)

    assert inputs["input_ids"][0].tolist() == proto.prompt.tolist()
    assert int(inputs["num_delay_tokens"]) == proto.delay_tokens == proc.num_delay_tokens
    assert proc.num_right_pad_tokens == proto.right_pad_tokens

    ours_mel = offline_mel(clip, proto, FLOAT32, quantize=True)
    hf_mel = inputs["input_features"][0].numpy()
    assert hf_mel.shape == ours_mel.shape == (128, 8 * proto.n_positions(len(clip)))
    diff = float(np.abs(hf_mel.astype(np.float64) - ours_mel).max())
    print(f"\n[processor {delay_ms} ms] max |mel_hf - mel_oracle| = {diff:.3e}, N = {hf_mel.shape[1] // 8}")
    assert diff <= MEL_TOL, diff

    with torch.no_grad():
        ids = tiny.hf.generate(**inputs, do_sample=False)[0].tolist()
    ours = generate_offline(Model(tiny.ckpt, FLOAT32), ours_mel, proto)
    assert ids[:len(proto.prompt)] == proto.prompt.tolist()
    assert ids[len(proto.prompt):] == ours, first_divergence(ours, ids[len(proto.prompt):])


# -- 2. HF streaming generate ----------------------------------------------------------------------


class ChunkClock(BaseStreamer):
    """A streamer that records, for every batch generate() hands it, how many feature chunks the
    input generator had yielded by then."""

    def __init__(self):
        self.pulled = 0
        self.puts: list[tuple[int, list[int]]] = []

    def put(self, value):
        self.puts.append((self.pulled, value.reshape(-1).tolist()))

    def end(self):
        pass


def hf_streaming_generate(model, proc: VoxtralRealtimeProcessor, audio: np.ndarray):
    """The streaming recipe of the model doc (docs/source/en/model_doc/voxtral_realtime.md, "Streaming
    Transcription") as transformers' own integration test runs it (hf_reference.hf_stream_chunks).

    -> (all ids incl. prompt, the streaming features concatenated [M, frames], the ChunkClock)."""
    first, chunks = hf_stream_chunks(proc, audio)
    features: list[torch.Tensor] = []
    clock = ChunkClock()

    def input_features_generator():
        for chunk in chunks:
            features.append(chunk)
            clock.pulled += 1
            yield chunk

    with torch.no_grad(), recorded_max_length(model) as seen:
        out = model.generate(input_ids=first.input_ids, input_features=input_features_generator(),
                             num_delay_tokens=first.num_delay_tokens, do_sample=False, streamer=clock)
    # streaming: the length is left to stream exhaustion (modeling_voxtral_realtime.py L1270-1274)
    assert seen == [int(1e9)], seen
    return out[0].tolist(), torch.cat(features, dim=-1)[0].numpy(), clock


def oracle_stream(setup: Setup, audio: np.ndarray, first: int) -> tuple[list[int], list[int]]:
    """StreamingSession (framing "offline", FLOAT32) fed the raw audio: ``first`` samples, then 1280 at
    a time (the new samples per HF chunk), then finish(). -> (tokens, tokens returned per call)."""
    session = StreamingSession(Model(setup.ckpt, FLOAT32), setup.protocol, framing="offline")
    per_call = [len(toks := session.feed(audio[:first]))]
    out = list(toks)
    for i in range(first, len(audio), setup.protocol.samples_per_token):
        new = session.feed(audio[i:i + setup.protocol.samples_per_token])
        per_call.append(len(new))
        out += new
    new = session.finish()
    per_call.append(len(new))
    return out + new, per_call


# (delay, samples of the clip kept). The full clip has L mod 1280 = 819; 70500 has L mod 1280 = 100.
STREAM_CASES = [(480, None), (480, 70500), (80, None), (2400, None)]


@pytest.mark.parametrize("delay_ms,keep", STREAM_CASES, ids=[f"{d}ms-{k or 'full'}" for d, k in STREAM_CASES])
def test_hf_streaming_generate(tiny, delay_ms, keep, clip, tmp_path):
    audio = clip if keep is None else clip[:keep]
    setup = tiny.setup(delay_ms)
    proto = setup.protocol
    n, p_len = proto.n_positions(len(audio)), len(proto.prompt)
    proc = processor_for(tiny.directory, delay_ms, tmp_path)
    assert proc.num_samples_first_audio_chunk == (8 * (proto.delay_tokens + 1) - 1) * 160 + 200
    assert proc.num_samples_per_audio_chunk == 8 * 160 + 400

    offline = generate_offline(Model(tiny.ckpt, FLOAT32), offline_mel(audio, proto, FLOAT32, quantize=True), proto)
    streamed, per_call = oracle_stream(setup, audio, proc.num_samples_first_audio_chunk)
    ids, hf_mel, clock = hf_streaming_generate(tiny.hf, proc, audio)
    assert EOS not in offline, "the count relations below assume no early EOS"
    tag = f"[{delay_ms} ms, L={len(audio)}, L mod 1280={len(audio) % 1280}, N={n}, P={p_len}]"

    # the oracle's own streaming equals its offline schedule, emitting each token with the chunk that
    # completes its audio: 1 after the first chunk (prefill), then 1 per 1280 samples, the rest at finish
    assert streamed == offline, f"{tag} {first_divergence(streamed, offline)}"
    assert len(offline) == n - p_len
    n_full, partial = divmod(len(audio) - proc.num_samples_first_audio_chunk, proto.samples_per_token)
    assert per_call == [1] + [1] * n_full + [0] * (partial > 0) + [len(offline) - 1 - n_full], (tag, per_call)

    assert ids[:p_len] == proto.prompt.tolist()
    hf = ids[p_len:]
    # HF streaming consumes one position per chunk: the first chunk covers positions 0..P-1 (8P mel
    # frames), chunk k ≥ 1 position P-1+k, the k-th ending at raw sample 1280·(P−32+k)+200. The recipe's
    # loop `while end < len(padded)` (strict) over audio padded by (n_delay+11)·1280 zeros WITHOUT the
    # offline alignment to a whole token then yields the offline positions up to N−2 (the last one
    # offline consumes, oracle streaming.py generate_offline) iff L mod 1280 is 0 or > 200; for
    # 0 < L mod 1280 ≤ 200 the last position's 200-sample look-ahead falls in the alignment zeros
    # the recipe never appends, so HF stops one chunk (one token) early. generate() ends on
    # StopIteration of the feature generator (modeling_voxtral_realtime.py L1184-1189 sets
    # _stream_exhausted, L1161-1165 ends the loop), after the token of the last chunk.
    short = 0 < len(audio) % 1280 <= 200
    assert len(hf) == len(offline) - short, f"{tag} HF streaming generated {len(hf)}, offline {len(offline)}"
    assert hf == offline[:len(hf)], f"{tag} {first_divergence(offline, hf)}"

    # the streaming features are the offline features (on the offline 160·m grid), minus the frames
    # of the positions HF never reaches: HF's own offline processor features to the last float32 bit,
    # and within the mel tolerance of the oracle's. (Bit-identical on Intel Xeon; on AMD EPYC Zen 4
    # torch's float32 STFT of a chunk and of the whole clip differ by one ulp in ~0.5% of the values,
    # measured max 1.19e-7 on log-mels of magnitude <= 1.5: torch's kernels, not the recipe.)
    assert hf_mel.shape[1] == 8 * (n - 1 - short), (tag, hf_mel.shape)
    hf_offline_mel = proc(audio, return_tensors="pt", sampling_rate=16000)["input_features"][0].numpy()
    np.testing.assert_allclose(hf_mel, hf_offline_mel[:, :hf_mel.shape[1]], rtol=0, atol=2.5e-7, err_msg=tag)
    ours_mel = offline_mel(audio, proto, FLOAT32, quantize=True)[:, :hf_mel.shape[1]]
    diff = float(np.abs(hf_mel.astype(np.float64) - ours_mel).max())
    print(f"\n{tag} tokens: oracle offline {len(offline)}, oracle stream {len(streamed)}, hf stream {len(hf)}; "
          f"max |mel_hf_stream - mel_oracle| = {diff:.3e}")
    assert diff <= MEL_TOL, diff

    # HF's emission clock: the prompt is put first; every generated token is put only after the
    # generator has yielded the NEXT chunk, because _update_model_kwargs_for_generation pulls it
    # (L1184-1187) before the token is chosen and streamed (generation/utils.py _sample: forward,
    # _update_model_kwargs_for_generation, argmax, StopCheck -> streamer.put). So in a live stream HF
    # shows token j one chunk (80 ms) after its audio arrived; the last token is put after
    # StopIteration, with no further chunk. The oracle session returns token j from the feed that
    # completes its audio (per_call above).
    assert clock.puts[0] == (1, proto.prompt.tolist())
    generated = clock.puts[1:]
    assert [tok for _, batch in generated for tok in batch] == hf
    assert [pulled for pulled, _ in generated] == [j + 2 for j in range(len(hf) - 1)] + [len(hf)], tag
