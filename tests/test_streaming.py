"""Streaming with explicit caches: equal to offline, bounded, and vLLM's framing reproduced.

The built-in tiny checkpoint (windows: encoder 16 frames, decoder 8 tokens) and the built-in speech
clip are used, so every stream below runs far past both windows.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oracle import builtin
from oracle.audio import load_audio
from oracle.config import AudioConfig, DecoderConfig, EncoderConfig, ModelConfig
from oracle.errors import OracleError
from oracle.forward import forward
from oracle.mel import log_mel
from oracle.pipeline import load_setup, offline_mel
from oracle.precision import FLOAT32, FLOAT64
from oracle.protocol import SUPPORTED_DELAYS_MS, make_protocol
from oracle.streaming import Model, StreamingSession, generate_offline
from oracle.synth import write_checkpoint
from oracle.taps import Taps


@pytest.fixture(scope="module")
def setup():
    return load_setup(builtin.tiny_checkpoint())


@pytest.fixture(scope="module")
def clip():
    return load_audio(builtin.speech_clip())


@pytest.fixture(scope="module")
def offline(setup, clip):
    """Offline tokens and the full-sequence float64 logits they imply."""
    model = Model(setup.ckpt, FLOAT64)
    mel = offline_mel(clip, setup.protocol, FLOAT64, quantize=False)
    tokens = generate_offline(model, mel, setup.protocol)
    return mel, tokens


def run_stream(setup, audio, sizes, framing="offline", p=FLOAT64, tap=None):
    session = StreamingSession(Model(setup.ckpt, p), setup.protocol, framing=framing,
                               **({} if tap is None else {"tap": tap}))
    out, i, k = [], 0, 0
    while i < len(audio):
        n = sizes[k % len(sizes)]
        out += session.feed(audio[i:i + n])
        i, k = i + n, k + 1
    out += session.finish()
    return out, session


def test_offline_tokens_are_varied(offline):
    """The fixture is not degenerate: a tiny model that repeats one token would hide feedback bugs."""
    _, tokens = offline
    assert len(set(tokens)) >= 10, tokens
    assert any(t >= 1000 for t in tokens) and any(t in (32, 33) for t in tokens), tokens


@given(sizes=st.lists(st.one_of(st.integers(1, 50), st.integers(51, 4000), st.integers(4001, 48000)),
                      min_size=1, max_size=6))
@settings(max_examples=12)
def test_streaming_equals_offline_for_any_chunking(setup, clip, offline, sizes):
    _, tokens = offline
    out, _ = run_stream(setup, clip, sizes)
    assert out == tokens


def test_one_sample_chunks(setup, clip, offline):
    _, tokens = offline
    out, _ = run_stream(setup, clip[:20000], [1])
    mel = offline_mel(clip[:20000], setup.protocol, FLOAT64, quantize=False)
    assert out == generate_offline(Model(setup.ckpt, FLOAT64), mel, setup.protocol)


def test_streaming_logits_equal_offline_forward(setup, clip, offline):
    """Float64 logits of every streamed position equal the offline forward's within 1e-9 (relative)."""
    mel, tokens = offline
    taps = Taps("logits", "mel")
    out, _ = run_stream(setup, clip, [3001, 17, 640], tap=taps)
    assert out == tokens
    fed = np.concatenate([setup.protocol.prompt, tokens])  # positions 0..N-1
    ref = forward(setup.ckpt, mel, fed[: mel.shape[1] // 8], setup.protocol.delay_tokens, FLOAT64)
    got = taps["logits"]
    n = got.shape[0]
    assert n == mel.shape[1] // 8 - 1  # every position but the last (HF max_length = N)
    rel = np.abs(got - ref[:n]).max() / np.abs(ref[:n]).max()
    assert rel <= 1e-9, rel
    # and the streamed mel frames are the offline ones (the streaming grid is the offline grid)
    np.testing.assert_allclose(taps["mel"], mel[:, : taps["mel"].shape[1]], rtol=0, atol=1e-12)


def test_float32_streaming_equals_float32_offline(setup, clip):
    mel = offline_mel(clip, setup.protocol, FLOAT32, quantize=False)
    ref = generate_offline(Model(setup.ckpt, FLOAT32), mel, setup.protocol)
    out, _ = run_stream(setup, clip, [1280 * 3 + 7], p=FLOAT32)
    assert out == ref


@pytest.mark.parametrize("delay", [80, 2400])
def test_streaming_other_delays(clip, delay):
    s = load_setup(builtin.tiny_checkpoint(), delay)
    assert len(s.protocol.prompt) == 1 + 32 + delay // 80
    mel = offline_mel(clip, s.protocol, FLOAT64, quantize=False)
    ref = generate_offline(Model(s.ckpt, FLOAT64), mel, s.protocol)
    assert len(ref) == mel.shape[1] // 8 - len(s.protocol.prompt)
    out, _ = run_stream(s, clip, [5000])
    assert out == ref


def test_vllm_framing_step0_offline_then_40_sample_shift(setup, clip):
    """Step 0 is the offline mel; every later step's frames are the offline mel of the audio delayed 40 samples."""
    taps = Taps("mel")
    run_stream(setup, clip, [2000], framing="vllm", tap=taps)
    got = taps["mel"]
    proto = setup.protocol
    padded = proto.pad_offline(clip)
    first = 8 * len(proto.prompt)
    # equal up to BLAS summation order (the mel matmul sees a different number of frames)
    np.testing.assert_allclose(got[:, :first], log_mel(padded)[:, :first], rtol=0, atol=1e-12)
    delayed = log_mel(np.concatenate([np.zeros(40), padded])[: len(padded)])
    np.testing.assert_allclose(got[:, first:], delayed[:, first: got.shape[1]], rtol=0, atol=1e-12)
    # and it really differs from the offline grid (spec: by about 0.35 on speech)
    assert np.abs(got[:, first:] - log_mel(padded)[:, first: got.shape[1]]).max() > 0.05


def test_vllm_framing_tokens(setup, clip, offline):
    """Same number of steps as offline; the first token (step 0) is identical."""
    _, tokens = offline
    out, _ = run_stream(setup, clip, [777], framing="vllm")
    assert len(out) == len(tokens) and out[0] == tokens[0]


def test_unknown_framing_and_bad_chunks(setup):
    with pytest.raises(OracleError, match="unknown framing 'whisper'"):
        StreamingSession(Model(setup.ckpt, FLOAT64), setup.protocol, framing="whisper")
    s = StreamingSession(Model(setup.ckpt, FLOAT64), setup.protocol)
    with pytest.raises(OracleError, match="NaN or Inf"):
        s.feed(np.array([0.0, np.nan]))
    s.finish()
    with pytest.raises(OracleError, match="after finish"):
        s.feed(np.zeros(3))


@pytest.mark.parametrize("bad", [0, 40, 100, 1280, 2320, 4800, "abc", 480.5])
def test_bad_delays(setup, bad):
    with pytest.raises(OracleError, match=r"^delay .* (is not supported|is not a number)"):
        make_protocol(setup.ckpt.config, bad)


def test_supported_delays_give_the_mc_table(setup):
    """Prompt and right pad per delay, as MC produces them (MODEL.md §6.2 table)."""
    table = {80: (34, 12), 160: (35, 13), 480: (39, 17), 960: (45, 23), 1200: (48, 26), 2400: (63, 41)}
    for ms in SUPPORTED_DELAYS_MS:
        proto = make_protocol(setup.ckpt.config, ms)
        if ms in table:
            assert (len(proto.prompt), proto.right_pad_tokens) == table[ms]
    proto = make_protocol(setup.ckpt.config, 480)
    assert proto.n_positions(32333) == 75  # MODEL.md §6.3 example: 32,333 samples pad to 96,000 = 75 tokens


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    """An even smaller model for the 10-minute stream: windows 6 encoder frames / 5 tokens."""
    cfg = ModelConfig(
        encoder=EncoderConfig(dim=16, n_layers=1, n_heads=2, n_kv_heads=2, head_dim=8, hidden_dim=32,
                              rope_theta=1e6, norm_eps=1e-5, sliding_window=6),
        decoder=DecoderConfig(dim=32, n_layers=1, n_heads=2, n_kv_heads=1, head_dim=16, hidden_dim=48,
                              vocab_size=1280, rope_theta=1e6, norm_eps=1e-5, sliding_window=5, ada_dim=32,
                              tied_embeddings=True),
        audio=AudioConfig(16000, 12.5, 128, 160, 400, 1.5), downsample_factor=4)
    d = tmp_path_factory.mktemp("micro")
    write_checkpoint(d, cfg, seed=3)
    return load_setup(d)


def test_caches_bounded_over_ten_minutes(micro):
    """10 minutes of audio: the caches never exceed their windows and memory does not grow."""
    rng = np.random.default_rng(7)
    cfg = micro.ckpt.config
    session = StreamingSession(Model(micro.ckpt, FLOAT32), micro.protocol)
    chunk = 16000  # one second per feed
    sizes, n_tokens, eos = [], 0, False
    try:
        for second in range(600):
            audio = (0.1 * rng.standard_normal(chunk)).astype(np.float64)
            new = session.feed(audio)
            n_tokens += len(new)
            eos |= session.done
            for kv in session.enc.kv:
                assert len(kv) <= cfg.encoder.sliding_window - 1
            for kv in session.dec.kv:
                assert len(kv) <= cfg.decoder.sliding_window - 1
            # Trace only the end (tracemalloc slows numpy a lot); the first traced minute warms up
            # the interpreter's free lists, the last one must not grow.
            if second == 480:
                tracemalloc.start()
            if second == 540:
                base = tracemalloc.get_traced_memory()[0]
            sizes.append(sum(session.state_nbytes().values()))
        grown = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert not eos, "the stream stopped on EOS: pick another seed so it runs for the whole 10 minutes"
    assert session.enc.position == 4 * session.n_audio and session.n_audio > 7400
    assert n_tokens > 7400
    assert max(sizes[60:]) <= max(sizes[:60]) + 64, (max(sizes[:60]), max(sizes[60:]))
    assert grown < 64 * 1024, f"traced memory grew by {grown} bytes over the last minute of streaming"


def test_kv_appends_in_place_and_every_value_keeps_its_contents():
    """KV grows in its store (no whole-cache copy per step), yet every KV ever returned is unchanged by
    later steps, and extending an older snapshot (a rewind) copies instead of overwriting."""
    from oracle.cache import KV

    rng = np.random.default_rng(5)
    kv, ref_k, ref_p, p, snaps = KV.empty(2, 3, np.float64), np.zeros((0, 2, 3)), np.zeros(0, np.int64), 0, []
    for step in range(300):
        n = int(rng.integers(0, 5))
        k, pos = rng.standard_normal((n, 2, 3)), np.arange(p, p + n)
        kv, p = kv.extend(k, 2 * k, pos).keep_for_window(17), p + n
        ref_k, ref_p = np.concatenate([ref_k, k]), np.concatenate([ref_p, pos])
        keep = ref_p > ref_p[-1] + 1 - 17
        ref_k, ref_p = ref_k[keep], ref_p[keep]
        assert np.array_equal(kv.k, ref_k) and np.array_equal(kv.v, 2 * ref_k) and np.array_equal(kv.pos, ref_p)
        snaps.append((kv, kv.k.copy()))
    assert snaps[-1][0].k.base is snaps[-2][0].k.base  # the last steps shared one store
    old = snaps[100][0]
    again = old.extend(np.ones((1, 2, 3)), np.ones((1, 2, 3)), np.array([10 ** 6]))
    assert np.array_equal(again.k[:-1], snaps[100][1]) and again.k.base is not old.k.base
    assert all(np.array_equal(s.k, c) for s, c in snaps)


def test_model_keeps_only_the_groups_asked(setup):
    """A resident Model with ``keep`` converts those groups once and streams the rest (the golden keeps the
    float32 decoder and embedding: 13.7 GB at full size instead of 17)."""
    model = Model(setup.ckpt, FLOAT32, resident=True, keep=("dec_layer", "embedding"))
    assert model.decoder_layer(0) is model.decoder_layer(0)
    assert model.encoder_layer(0) is not model.encoder_layer(0)
    assert np.array_equal(model.encoder_layer(1).wq, setup.ckpt.encoder_layer(1, FLOAT32).wq)
    assert model.keeps("embedding") and not model.keeps("enc_layer")
    assert not Model(setup.ckpt, FLOAT32, resident=False).keeps("dec_layer")
