"""The e2e and stream golden cases' float64 greedy tokens, found as fixpoints (oracle.fixpoint).

Shape legend: N decoder positions   P prompt length   V vocab   n fed positions of a stream

Each is one float64 teacher-forced forward (e2e) or layer-major session (stream) checking a float32
guess, instead of a float64 step per generated token; ``ctx`` is the case's ``oracle.golden.Context``.
"""

from __future__ import annotations

import numpy as np

from .fixpoint import first_mismatch, greedy_fixpoint
from .forward import audio_embeddings, decode_positions
from .layer_major import Plan, feed_all, stream_teacher_forced
from .pipeline import offline_mel
from .precision import FLOAT32, FLOAT64
from .streaming import StreamingSession, generate_offline, greedy_decode
from .taps import Taps, e2e_tap_names

STREAM_CHUNK = 1280  # samples per feed in the stream case: one token's worth (80 ms)


def fed_tokens(proto, tokens, n: int) -> np.ndarray:
    """tokens_in: prompt + the generated tokens, cut to n and padded with PAD after an EOS. -> [n] int64"""
    fed = np.concatenate([proto.prompt, np.asarray(tokens, dtype=np.int64)])[:n]
    return np.concatenate([fed, np.full(n - len(fed), proto.pad, dtype=np.int64)]).astype(np.int64)


def offline_guess(ctx, audio: np.ndarray, prefix: list[int]) -> list[int]:
    """float32 offline greedy tokens of ``audio`` (starting with ``prefix``): the fixpoints' guess. The
    encoder runs once per audio, one layer at a time; the decoder is ``ctx.model(FLOAT32)`` (resident when
    it fits, so a token costs no weight conversion)."""
    def embeddings():
        mel32 = offline_mel(audio, ctx.setup.protocol, FLOAT32, quantize=False)
        return audio_embeddings(ctx.ckpt, mel32, FLOAT32, variant=ctx.variant)

    a32 = ctx.shared(("a32", audio.tobytes()), embeddings)
    return greedy_decode(ctx.model(FLOAT32), a32, ctx.setup.protocol, forced=prefix)


def e2e_fixpoint(ctx) -> dict:
    """The float64 greedy tokens of the offline pipeline and the float64 forward teacher-forced on them.

    A float32 greedy run (``ctx.model(FLOAT32)``: resident decoder when it fits) guesses; one float64
    forward, one layer at a time, checks and is the e2e golden itself (oracle.fixpoint). The tokens are
    those of float64 step-by-step ``generate_offline`` (today's definition), in minutes at full size."""
    proto, cfg = ctx.setup.protocol, ctx.ckpt.config
    names = e2e_tap_names(cfg)
    audio = ctx.audio.astype(np.float32).astype(np.float64)  # what the stored (float32) input holds
    mel64 = offline_mel(audio, proto, FLOAT64, quantize=False)
    enc_taps = Taps(*names)
    a64 = audio_embeddings(ctx.ckpt, mel64, FLOAT64, tap=enc_taps, variant=ctx.variant)
    n, n_prompt = len(a64), len(proto.prompt)
    last = {}

    def guess(prefix):
        return offline_guess(ctx, audio, prefix)

    def check(tokens):
        fed = fed_tokens(proto, tokens, n)
        taps = Taps(*names)
        logits = decode_positions(ctx.ckpt, a64, fed, proto.t, FLOAT64, tap=taps, variant=ctx.variant)
        last.update(fed=fed, taps=taps)
        return logits

    def exact():
        return generate_offline(ctx.model(FLOAT64), mel64, proto)

    fx = greedy_fixpoint(guess, check, exact, n_prompt, n - n_prompt, proto.eos)
    out = None
    if fx.logits is not None:  # the last check was fed exactly tokens_in: it is the e2e golden forward
        taps = {**enc_taps.values, **last["taps"].values}
        out = {k: taps[k] for k in names}
    return {"tokens": fx.tokens, "fixpoint": fx, "audio": audio, "fed": fed_tokens(proto, fx.tokens, n), "outputs": out}


def stream_fixpoint(ctx, audio: np.ndarray) -> dict:
    """The float64 streaming session's tokens, emission feeds, cache lengths and logits, computed
    layer-major (oracle.layer_major) and checked as a greedy fixpoint (oracle.fixpoint).

    Guess, offline framing (which streams the offline tokens): e2e's float64 tokens when that case ran,
    else float32 offline greedy, also for repairs; vllm framing: a float32 session."""
    proto = ctx.setup.protocol
    n_prompt = len(proto.prompt)
    n = proto.n_positions(len(audio))
    model64 = ctx.model(FLOAT64)
    last = {}
    e2e = ctx.computed("e2e")
    if ctx.framing == "offline" and e2e is not None and e2e["outputs"] is not None and np.array_equal(e2e["audio"], audio):
        # Offline framing: every position's audio embedding is the offline one and the tokens fed are
        # e2e's, so the session's logits are the rows of the e2e forward already computed (causal: row
        # p sees positions <= p only). Equal to the step-by-step session to ~1e-15 (tests/test_layer_major.py).
        plan = Plan(model64, proto, "offline", e2e["tokens"])
        record = feed_all(plan, audio, STREAM_CHUNK)
        logits = e2e["outputs"]["logits"][:plan.n_fed]
        if first_mismatch(logits, record.tokens, n_prompt, n - n_prompt, proto.eos) is None:
            return {"record": record, "logits": logits, "fixpoint": e2e["fixpoint"], "audio": audio}

    def guess(prefix):
        fx = ctx.computed("e2e")
        if not prefix and ctx.framing == "offline" and fx is not None and np.array_equal(fx["audio"], audio):
            return list(fx["tokens"])
        if ctx.framing == "offline":
            return offline_guess(ctx, audio, prefix)
        session = StreamingSession(ctx.model(FLOAT32), proto, framing=ctx.framing, forced=prefix)
        return feed_all(session, audio, STREAM_CHUNK).tokens

    def check(tokens):
        record, logits = stream_teacher_forced(model64, proto, ctx.framing, audio, STREAM_CHUNK, tokens)
        last.update(record=record, logits=logits)
        return logits

    def exact():
        return feed_all(StreamingSession(model64, proto, framing=ctx.framing), audio, STREAM_CHUNK).tokens

    fx = greedy_fixpoint(guess, check, exact, n_prompt, n - n_prompt, proto.eos)
    if fx.logits is None:  # a near-tie: the step-by-step session decided, so take everything from it
        taps = Taps("logits")
        record = feed_all(StreamingSession(model64, proto, framing=ctx.framing, tap=taps), audio, STREAM_CHUNK)
        return {"record": record, "logits": taps["logits"], "fixpoint": fx, "audio": audio}
    return {"record": last["record"], "logits": last["logits"], "fixpoint": fx, "audio": audio}
