"""The layer-major streaming schedule (oracle.layer_major) equals the step-by-step StreamingSession.

On the tiny, odd and near-tie checkpoints (test_fixpoint): teacher-forced on the session's own tokens,
the plan reproduces what each feed emitted and the cache lengths exactly, and the logits of every
position to 1e-12 relative in float64; the stream golden's fixpoint gives the session's tokens.
"""

from __future__ import annotations

import numpy as np
import pytest

from oracle import builtin
from oracle.golden import Context, e2e_fixpoint, stream_fixpoint
from oracle.layer_major import feed_all, stream_teacher_forced
from oracle.pipeline import load_setup
from oracle.precision import FLOAT64
from oracle.streaming import StreamingSession
from oracle.synth import write_checkpoint
from oracle.taps import Taps

from test_conformance import ODD_A, ODD_B
from test_fixpoint import clip, make_near_tie

REL = 1e-12


@pytest.fixture(scope="module", params=["tiny", "odd_a", "odd_b", "near_tie"])
def model_setup(request, tmp_path_factory):
    if request.param == "tiny":
        return load_setup(builtin.tiny_checkpoint())
    d = tmp_path_factory.mktemp(request.param)
    if request.param == "near_tie":
        make_near_tie(d)
        return load_setup(d)
    cfg, seed = {"odd_a": (ODD_A, 12), "odd_b": (ODD_B, 13)}[request.param]
    return load_setup(write_checkpoint(d, cfg, seed=seed))


def stepwise(setup, audio, chunk, framing="offline"):
    taps = Taps("logits")
    model = Context(setup, audio, 0).model(FLOAT64)
    record = feed_all(StreamingSession(model, setup.protocol, framing=framing, tap=taps), audio, chunk)
    return record, taps["logits"], model


def rel(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.mark.parametrize("chunk,framing", [(1280, "offline"), (3001, "offline"), (1280, "vllm")])
def test_layer_major_equals_stepwise(model_setup, chunk, framing):
    audio = clip(40000).astype(np.float32).astype(np.float64)
    record, logits, model = stepwise(model_setup, audio, chunk, framing)
    got, got_logits = stream_teacher_forced(model, model_setup.protocol, framing, audio, chunk, record.tokens)
    assert got == record  # tokens, emitting feed, cache lengths after every feed
    assert got_logits.shape == logits.shape and rel(got_logits, logits) <= REL


@pytest.mark.parametrize("after_e2e", [False, True])
def test_stream_golden_fixpoint_equals_stepwise(model_setup, after_e2e):
    """The stream golden: alone, guessed from a float32 session and checked layer-major in float64; after
    the e2e case (offline framing), the rows of e2e's float64 forward on the same tokens."""
    audio = clip(40000).astype(np.float32).astype(np.float64)
    record, logits, _ = stepwise(model_setup, audio, 1280)
    ctx = Context(model_setup, audio, 0)
    if after_e2e:
        ctx.shared("e2e", lambda: e2e_fixpoint(ctx))
    fx = stream_fixpoint(ctx, audio)
    assert (fx["fixpoint"] is ctx._models.get(("shared", "e2e"), {}).get("fixpoint")) == after_e2e  # which path ran
    assert fx["record"] == record
    assert rel(fx["logits"], logits) <= REL
