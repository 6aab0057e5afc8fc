"""Layer invariants, as properties (hypothesis, derandomized CI profile) and edge semantics.

RoPE is a rotation (norms kept) and q·k depends only on the relative position; causal attention at
position i ignores inputs after i; sliding-window attention ignores inputs older than the window;
RMSNorm is scale-invariant; the conv stem is causal. These hold for any weights, so they are checked
on random arrays rather than on a checkpoint.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from oracle import layers
from oracle.cache import KV
from oracle.config import TINY
from oracle.encoder import conv_stem, encoder_layer
from oracle.layers import (
    apply_rope,
    attention,
    conv1d,
    rms_norm,
    rope_angles,
    rope_rotate_half,
    time_embedding,
    window_mask,
)
from oracle.precision import BFLOAT16, FLOAT32, FLOAT64
from oracle.weights import ConvStemWeights, EncoderLayerWeights, permute_rows, unpermute_rows

seeds = st.integers(0, 2**32 - 1)
# The invariants hold for the plain bodies and for their fast kernels (tests/test_kernels.py compares the two).
both_paths = pytest.mark.parametrize("kernels", [True, False], ids=["fast", "plain"])


@contextmanager
def path(kernels: bool):
    before = layers.KERNELS
    layers.KERNELS = kernels
    try:
        yield
    finally:
        layers.KERNELS = before


@both_paths
@given(seed=seeds, n=st.integers(1, 40), heads=st.integers(1, 4), half=st.integers(1, 12),
       theta=st.sampled_from([1e4, 1e6]), offset=st.integers(0, 5000))
def test_rope_preserves_norms(kernels, seed, n, heads, half, theta, offset):
    with path(kernels):
        rng = np.random.default_rng(seed)
        x = rng.standard_normal((n, heads, 2 * half))
        cos, sin = rope_angles(np.arange(offset, offset + n), 2 * half, theta, np.float64)
        y = apply_rope(x, cos, sin)
        np.testing.assert_allclose(np.linalg.norm(y, axis=-1), np.linalg.norm(x, axis=-1), rtol=1e-12)


@given(seed=seeds, half=st.integers(1, 16), i=st.integers(0, 3000), j=st.integers(0, 3000),
       shift=st.integers(0, 100000))
def test_rope_dot_product_depends_only_on_relative_position(seed, half, i, j, shift):
    rng = np.random.default_rng(seed)
    q, k = rng.standard_normal((2, 1, 1, 2 * half))
    def dot(pq, pk):
        cq, sq = rope_angles(np.array([pq]), 2 * half, 1e6, np.float64)
        ck, sk = rope_angles(np.array([pk]), 2 * half, 1e6, np.float64)
        return float((apply_rope(q, cq, sq) * apply_rope(k, ck, sk)).sum())
    assert dot(i, j) == pytest.approx(dot(i + shift, j + shift), rel=1e-9, abs=1e-9)


@given(seed=seeds, half=st.integers(1, 8), heads=st.integers(1, 3))
def test_interleaved_rope_on_mistral_rows_equals_rotate_half_on_hf_rows(seed, half, heads):
    """The layout fact the loader relies on (MODEL.md §1.4/1.5): permuting q/k rows turns one RoPE into the other."""
    rng = np.random.default_rng(seed)
    dh = 2 * half
    w = rng.standard_normal((heads * dh, 5))
    x = rng.standard_normal((7, 5))
    cos, sin = rope_angles(np.arange(7), dh, 1e6, np.float64)
    mistral = apply_rope((x @ w.T).reshape(7, heads, dh), cos, sin)
    hf_w = permute_rows(w, heads, dh)
    hf = rope_rotate_half((x @ hf_w.T).reshape(7, heads, dh), cos, sin)
    np.testing.assert_allclose(permute_rows(mistral.reshape(7, -1).T, heads, dh).T.reshape(7, heads, dh), hf, atol=1e-12)
    np.testing.assert_array_equal(unpermute_rows(hf_w, heads, dh), w)


def _rand_attention(rng, n, h, k, dh):
    return rng.standard_normal((n, h, dh)), rng.standard_normal((n, k, dh)), rng.standard_normal((n, k, dh))


@both_paths
@given(seed=seeds, n=st.integers(2, 30), groups=st.integers(1, 3), kv=st.integers(1, 3), window=st.integers(1, 40),
       cut=st.data())
def test_attention_is_causal(kernels, seed, n, groups, kv, window, cut):
    with path(kernels):
        i = cut.draw(st.integers(0, n - 2))
        rng = np.random.default_rng(seed)
        q, k, v = _rand_attention(rng, n, groups * kv, kv, 6)
        pos = np.arange(n)
        out = attention(q, k, v, window_mask(pos, pos, window))
        k2, v2 = k.copy(), v.copy()
        k2[i + 1:] = rng.standard_normal(k2[i + 1:].shape)
        v2[i + 1:] = rng.standard_normal(v2[i + 1:].shape)
        out2 = attention(q, k2, v2, window_mask(pos, pos, window))
        np.testing.assert_array_equal(out[: i + 1], out2[: i + 1])


@both_paths
@given(seed=seeds, n=st.integers(3, 40), window=st.integers(1, 12))
def test_sliding_window_ignores_keys_older_than_the_window(kernels, seed, n, window):
    with path(kernels):
        rng = np.random.default_rng(seed)
        q, k, v = _rand_attention(rng, n, 4, 2, 8)
        pos = np.arange(n)
        out = attention(q, k, v, window_mask(pos, pos, window))
        for i in range(n):
            old = pos <= i - window  # exactly the keys with i - j >= W
            k2, v2 = k.copy(), v.copy()
            k2[old], v2[old] = 1e3, -1e3
            out2 = attention(q, k2, v2, window_mask(pos, pos, window))
            np.testing.assert_allclose(out2[i], out[i], rtol=0, atol=1e-12)
            if i >= window >= 2:  # the oldest visible key does matter: the window is not one key too narrow
                # (with W = 1 the only key is the query itself and its softmax weight is 1 whatever it is)
                k3 = k.copy()
                k3[i - window + 1] += 5.0
                assert not np.allclose(attention(q, k3, v, window_mask(pos, pos, window))[i], out[i])


def test_window_mask_boundary():
    """0 <= i - j < W: W keys including the query itself; one more is the §11.2 mistake."""
    m = window_mask(np.arange(10), np.arange(10), 3)
    assert m.sum(axis=1).tolist() == [1, 2, 3, 3, 3, 3, 3, 3, 3, 3]
    assert m[5, 3] and not m[5, 2] and not m[5, 6]


@both_paths
def test_gqa_head_mapping_is_repeat_interleave(kernels):
    """Query head h reads kv head floor(h / (H/K)); tiling (h mod K) is a known mistake."""
    with path(kernels):
        rng = np.random.default_rng(0)
        q, k, v = _rand_attention(rng, 5, 6, 2, 4)
        mask = window_mask(np.arange(5), np.arange(5), 100)
        out = attention(q, k, v, mask)
        for h in range(6):
            single = attention(q[:, h:h + 1], k[:, h // 3: h // 3 + 1], v[:, h // 3: h // 3 + 1], mask)
            np.testing.assert_allclose(out[:, h], single[:, 0], atol=1e-14)


@both_paths
def test_fully_masked_row_is_an_error(kernels):
    with path(kernels):
        q, k, v = _rand_attention(np.random.default_rng(0), 2, 1, 1, 4)
        with pytest.raises(AssertionError, match="sees no key"):
            attention(q, k, v, np.array([[True, False], [False, False]]))


@given(seed=seeds, d=st.integers(2, 64), scale=st.floats(1e-3, 1e3), dtype=st.sampled_from([np.float64, np.float32]))
def test_rms_norm_is_scale_invariant(seed, d, scale, dtype):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((3, d)).astype(dtype)
    w = rng.standard_normal(d).astype(dtype)
    # eps = 0: the invariance is exact in math; eps only matters where mean(x^2) is comparable to it
    a, b = rms_norm(x, w, 0.0), rms_norm((x * dtype(scale)).astype(dtype), w, 0.0)
    assert a.dtype == b.dtype == dtype
    np.testing.assert_allclose(a, b, rtol=1e-4 if dtype == np.float32 else 1e-9, atol=1e-6)


def test_rms_norm_eps_inside_the_root():
    x = np.array([[3.0, 4.0]])
    np.testing.assert_allclose(rms_norm(x, np.ones(2), 1.0), x / np.sqrt(12.5 + 1.0))


@given(seed=seeds, t=st.integers(2, 30).map(lambda t: 2 * t), cut=st.data())
def test_conv_stem_is_causal(seed, t, cut):
    rng = np.random.default_rng(seed)
    de, m = 6, 5
    w = ConvStemWeights(rng.standard_normal((de, m, 3)), rng.standard_normal(de), rng.standard_normal((de, de, 3)),
                        rng.standard_normal(de))
    mel = rng.standard_normal((m, t))
    out, _ = conv_stem(mel, w, FLOAT64)
    i = cut.draw(st.integers(0, t - 1))
    mel2 = mel.copy()
    mel2[:, i:] = rng.standard_normal(mel2[:, i:].shape)
    out2, _ = conv_stem(mel2, w, FLOAT64)
    # encoder frame j reads mel frames up to 2j + 1: frames with 2j + 1 < i are unchanged
    keep = (i - 1) // 2 if i > 0 else 0
    np.testing.assert_array_equal(out[:keep], out2[:keep])
    assert out.shape == (t // 2, de)


def test_conv1d_left_context_only():
    """Output i of a k=3 s=1 conv reads inputs i-2, i-1, i (zeros before the start), nothing to the right."""
    x = np.zeros((1, 6))
    x[0, 2] = 1.0
    y = conv1d(x, np.array([[[1.0, 10.0, 100.0]]]), np.zeros(1), stride=1, history=np.zeros((1, 2)))
    assert y.tolist() == [[0.0, 0.0, 100.0, 10.0, 1.0, 0.0]]
    y2 = conv1d(x, np.array([[[1.0, 10.0, 100.0]]]), np.zeros(1), stride=2, history=np.zeros((1, 1)))
    assert y2.tolist() == [[0.0, 10.0, 0.0]]  # output j reads inputs 2j-1, 2j, 2j+1


def test_time_embedding_layout():
    t = time_embedding(6.0, 8, np.float64)
    f = 10000.0 ** (-np.arange(4) / 4)
    np.testing.assert_allclose(t, np.concatenate([np.cos(6 * f), np.sin(6 * f)]), rtol=1e-15)


@both_paths
@pytest.mark.parametrize("p", [FLOAT64, FLOAT32, BFLOAT16])
def test_layers_keep_the_policy_dtype(p, kernels):
    """No silent downcast or upcast: an encoder layer given dtype D returns D."""
    rng = np.random.default_rng(1)
    e = TINY.encoder
    hd = e.n_heads * e.head_dim
    shapes = dict(attn_norm=(e.dim,), wq=(hd, e.dim), bq=(hd,), wk=(hd, e.dim), wv=(hd, e.dim), bv=(hd,),
                  wo=(e.dim, hd), bo=(e.dim,), ffn_norm=(e.dim,), w1=(e.hidden_dim, e.dim), w3=(e.hidden_dim, e.dim),
                  w2=(e.dim, e.hidden_dim), b2=(e.dim,))
    w = EncoderLayerWeights(**{k: p.weight(rng.standard_normal(s) * 0.1) for k, s in shapes.items()})
    x = p.array(rng.standard_normal((20, e.dim)))
    with path(kernels):
        y, kv = encoder_layer(x, np.arange(20), w, e, p)
    assert y.dtype == p.dtype and kv.k.dtype == p.dtype
    if p is BFLOAT16:  # stored activations are exactly representable in bf16
        np.testing.assert_array_equal(y, p.store(y))


def test_kv_cache_keeps_only_what_the_window_needs():
    kv = KV.empty(1, 2, np.float64).extend(np.zeros((10, 1, 2)), np.zeros((10, 1, 2)), np.arange(10))
    kept = kv.keep_for_window(4)
    assert kept.pos.tolist() == [7, 8, 9]  # the next query (10) sees 7, 8, 9 and itself
