"""Threads change no number: the work ``parallel`` spreads over cores gives bit-identical results.

``parallel.MIN_ELEMENTS`` is lowered so that the tiny checkpoint's conversions and softmaxes split too
(at full size they split on their own); then the whole offline forward, in float64, float32 and the
bf16 emulation, must equal the one-thread forward bit for bit.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from oracle import builtin, parallel
from oracle.forward import forward
from oracle.kernels import masked_softmax_
from oracle.layers import attention, attention_probs, window_mask
from oracle.pipeline import load_setup, offline_mel
from oracle.audio import load_audio
from oracle.precision import BFLOAT16, FLOAT32, FLOAT64, widen_into




@given(st.integers(1, 500), st.integers(1, 8))
def test_ranges_cover_without_overlap(n, parts):
    r = parallel.ranges(n, parts)
    assert r[0][0] == 0 and r[-1][1] == n and len(r) == min(n, parts)
    assert all(b > a for a, b in r) and all(b == c for (_, b), (c, _) in zip(r, r[1:]))


def test_split_runs_every_range_and_reraises(split_everything):
    seen = []
    parallel.split(lambda a, b: seen.append((a, b)), 10)
    assert sorted(seen) == [(0, 5), (5, 10)]

    def boom(a, b):
        if a > 0:
            raise ValueError("worker failed")
    with pytest.raises(ValueError, match="worker failed"):
        parallel.split(boom, 10)


def test_small_work_stays_in_the_caller(monkeypatch):
    import threading

    monkeypatch.setattr(parallel, "MIN_ELEMENTS", 1 << 19)
    parallel.set_workers(2)
    names = []
    parallel.split(lambda a, b: names.append(threading.current_thread().name), 100, elements_per_item=10)
    assert names == [threading.current_thread().name]


def test_widening_is_exact_in_threads(split_everything):
    rng = np.random.default_rng(3)
    src = rng.standard_normal((301, 77)).astype(ml_dtypes.bfloat16)
    for dtype in (np.float32, np.float64):
        out = np.empty(src.shape, dtype)
        widen_into(out, src)
        assert np.array_equal(out, src.astype(dtype))


def test_softmax_in_threads_equals_one_thread(split_everything):
    rng = np.random.default_rng(4)
    q, k = rng.standard_normal((40, 6, 16)), rng.standard_normal((40, 3, 16))
    v = rng.standard_normal((40, 3, 16))
    mask = window_mask(np.arange(40), np.arange(40), 11)
    probs, out = attention_probs(q, k, mask), attention(q, k, v, mask)
    parallel.set_workers(1)
    assert np.array_equal(probs, attention_probs(q, k, mask)) and np.array_equal(out, attention(q, k, v, mask))
    # and the in-place softmax is the textbook one
    s = (q.reshape(40, 3, 2, 16).transpose(1, 2, 0, 3) @ k.transpose(1, 2, 0)[:, None]).reshape(6, 40, 40) / 4.0
    s = np.where(mask, s, -np.inf)
    ref = np.exp(s - s.max(-1, keepdims=True))
    ref /= ref.sum(-1, keepdims=True)
    np.testing.assert_allclose(probs, ref, rtol=1e-14, atol=1e-300)
    raw = (q.reshape(40, 3, 2, 16).transpose(1, 2, 0, 3) @ k.transpose(1, 2, 0)[:, None]).reshape(6, 40, 40)
    assert np.array_equal(masked_softmax_(raw, mask, 16.0), probs)


@pytest.mark.parametrize("p", [FLOAT64, FLOAT32, BFLOAT16], ids=lambda p: p.name)
def test_forward_does_not_depend_on_threads(split_everything, p):
    setup = load_setup(builtin.tiny_checkpoint())
    mel = offline_mel(load_audio(builtin.speech_clip()), setup.protocol, p, quantize=False)
    n = mel.shape[1] // 8
    ids = np.concatenate([setup.protocol.prompt, np.arange(n - len(setup.protocol.prompt)) % 700 + 1000])
    threaded = forward(setup.ckpt, mel, ids, setup.protocol.delay_tokens, p)
    parallel.set_workers(1)
    assert np.array_equal(threaded, forward(setup.ckpt, mel, ids, setup.protocol.delay_tokens, p))
