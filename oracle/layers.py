"""The building blocks, each a short pure function of arrays (picoGPT style).

Shape legend:
    N  query positions          S  key positions (cache + new)     D  model width
    H  query heads              K  kv heads (H % K == 0)            Dh head dim
    Cin/Cout conv channels      T  conv input frames               F  FFN width

Every function computes in the dtype of its inputs (float64 or float32) and returns that dtype.
Rounding to BF16 (the bf16 emulation) is not done here: callers apply ``Precision.store`` at the
points where the reference materializes a BF16 tensor.
"""

from __future__ import annotations

import numpy as np
from scipy.special import erf

from . import parallel


def linear(x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None, out: np.ndarray | None = None) -> np.ndarray:
    """y = x W^T (+ b). [.., in] x [out, in] -> [.., out]; PyTorch Linear layout kept from the checkpoint.
    ``out`` (no bias): write y there, e.g. a column block of the LM head's logits (BLAS writes it directly)."""
    assert x.shape[-1] == w.shape[1], (x.shape, w.shape)
    assert out is None or b is None, "linear: out= takes no bias"
    if x.dtype == np.float32 and x.ndim == 2 and 1 < x.shape[0] < FEW_ROWS and w.shape[1] >= WIDE_INNER:
        # Few rows against a wide weight (the decoder and LM head offline, a streaming prefill): OpenBLAS's
        # sgemm runs W xᵀ 10-20% faster than x Wᵀ (measured: [174, 9216] x [3072, 9216]ᵀ 145 -> 163 GFLOP/s
        # on AVX-512, 109 -> 128 on AVX2). It is the same dot products; the summation order is the
        # kernel's: the same bits on OpenBLAS's AVX-512 kernels, a last-bit change (≤ 4.5e-7 relative) on
        # its AVX2 kernels, where the thread count and the row count move those bits as well. Not in
        # float64: there dgemm is slower this way round. tests/test_layers.py bounds the difference.
        yt = np.matmul(w, x.T)  # [out, N]
        if out is None:
            y = np.ascontiguousarray(yt.T)
            return y if b is None else np.add(y, b, out=y)
        np.copyto(out, yt.T)
        return out
    if out is not None:
        return np.matmul(x, w.T, out=out)
    y = x @ w.T
    return y if b is None else y + b


FEW_ROWS = 512  # linear, float32: below this many rows (and above one) ...
WIDE_INNER = 2048  # ... and at least this wide an inner dimension, compute W xᵀ (the decoder, not the encoder's 1280)


def gelu(x: np.ndarray) -> np.ndarray:
    """Exact (erf) GELU: used after both convs, in the adapter and in the ADA MLP (never tanh)."""
    return 0.5 * x * (1.0 + erf(x / np.sqrt(x.dtype.type(2.0))))


def silu(x: np.ndarray) -> np.ndarray:
    """x / (1 + exp(−x)), in one scratch array (the FFN's widest activation: [N, F])."""
    d = np.negative(x)
    np.exp(d, out=d)
    d += 1.0
    return np.divide(x, d, out=d)


def rms_norm(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    """x · rsqrt(mean(x²) + eps) · w over the last axis. [.., D] -> [.., D].

    No (1 + w) offset (MODEL.md §3.2). eps sits inside the square root, added to the mean, as in
    HF ``VoxtralRealtimeRMSNorm`` and vLLM ``RMSNorm``.
    """
    assert x.shape[-1] == w.shape[-1], (x.shape, w.shape)
    ms = np.mean(x * x, axis=-1, keepdims=True)
    return x / np.sqrt(ms + x.dtype.type(eps)) * w


def swiglu(x: np.ndarray, w1: np.ndarray, w3: np.ndarray, w2: np.ndarray, b2: np.ndarray | None = None) -> np.ndarray:
    """W2 (SiLU(W1 x) ⊙ W3 x) (+ b2). [N, D] -> [N, D]; w1 is the gate, w3 the up projection.
    The encoder's w2 carries a bias (its only MLP bias); the decoder's has none."""
    gate, up = linear(x, w1), linear(x, w3)  # [N, F] each
    # The gate is element-wise one-core work on the widest activation: rows in threads, same bits.
    parallel.split(lambda a, b: np.multiply(silu(gate[a:b]), up[a:b], out=up[a:b]), up.shape[0],
                   elements_per_item=up.size // max(1, up.shape[0]))
    return linear(up, w2, b2)


# -- rotary position embedding ------------------------------------------------------------------


def rope_angles(positions: np.ndarray, head_dim: int, theta: float, dtype) -> tuple[np.ndarray, np.ndarray]:
    """cos, sin of pos · inv_freq_i, inv_freq_i = theta^(−2i/Dh), i < Dh/2.  [N] -> ([N, Dh/2], [N, Dh/2]).

    Built in ``dtype``: float32 reproduces the references (HF/vLLM build inv_freq and the angles in
    float32, MODEL.md §3.2, §9: the rounding grows with position); float64 is the exact rotation.
    """
    dtype = np.dtype(dtype)
    exponent = np.arange(0, head_dim, 2, dtype=dtype) / dtype.type(head_dim)
    inv_freq = dtype.type(1.0) / (dtype.type(theta) ** exponent)
    angles = positions.astype(dtype)[:, None] * inv_freq[None, :]
    return np.cos(angles), np.sin(angles)


def apply_rope(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """Rotate interleaved pairs: (x[2i], x[2i+1]) by angle_i.  [N, h, Dh] -> [N, h, Dh].

    The pairing is "GPT-J"/interleaved because Mistral-layout q/k rows are stored that way (spec
    §1.4); HF's rotate-half pairs (i, i + Dh/2) on permuted weights and is the same rotation.
    """
    n, h, dh = x.shape
    assert cos.shape == (n, dh // 2) and sin.shape == cos.shape, (x.shape, cos.shape)
    x0, x1 = x[..., 0::2], x[..., 1::2]
    c, s = cos[:, None, :].astype(x.dtype), sin[:, None, :].astype(x.dtype)
    out = np.empty_like(x)

    def rows(a: int, b: int) -> None:  # positions [a, b): element-wise, so threads change no bit
        out[a:b, :, 0::2] = x0[a:b] * c[a:b] - x1[a:b] * s[a:b]
        out[a:b, :, 1::2] = x0[a:b] * s[a:b] + x1[a:b] * c[a:b]
    parallel.split(rows, n, elements_per_item=h * dh)
    return out


def rope_rotate_half(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """NeoX rotate-half RoPE: pairs (i, i + Dh/2). Correct only on HF-permuted weights; applied to
    Mistral-layout weights it is a known porting mistake (MODEL.md §11.4), kept for the fault catalogue."""
    n, h, dh = x.shape
    half = dh // 2
    c, s = cos[:, None, :].astype(x.dtype), sin[:, None, :].astype(x.dtype)
    x0, x1 = x[..., :half], x[..., half:]
    return np.concatenate([x0 * c - x1 * s, x0 * s + x1 * c], axis=-1)


# -- attention ----------------------------------------------------------------------------------


MASKED_SCORE = -1e30  # the score of a masked key (see attention_probs)
QUERY_BLOCK = 128  # queries per block in ``attention``


def window_mask(q_pos: np.ndarray, k_pos: np.ndarray, window: int) -> np.ndarray:
    """Key j is visible to query i iff 0 ≤ pos_i − pos_j < window (the window counts the query itself).

    [N], [S] -> bool [N, S]. Mirrors vLLM's flash-attn (window−1, 0) and HF's sliding-window mask.
    """
    d = q_pos[:, None] - k_pos[None, :]
    return (d >= 0) & (d < window)


def attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Softmax(q k^T / sqrt(Dh) + mask) v with grouped kv heads.  [N,H,Dh],[S,K,Dh],[S,K,Dh],[N,S] -> [N,H,Dh].

    Query head h reads kv head ⌊h / (H/K)⌋ (repeat-interleave, as HF ``repeat_kv``; tiling is a known
    mistake). Every row must see at least its own key: a fully masked row is a caller bug, not NaN.
    """
    n, h, dh = q.shape
    s, kh, _ = k.shape
    g = h // kh
    assert v.shape == k.shape and h % kh == 0 and mask.shape == (n, s), (q.shape, k.shape, v.shape, mask.shape)
    assert mask.any(axis=1).all(), "attention: a query sees no key"
    out = np.empty((n, h, dh), dtype=q.dtype)
    # Queries in blocks, each against only the keys its mask lets it see (a causal window makes that a
    # contiguous band): masked keys have weight exactly 0, so this is the same softmax, with about half
    # the work for causal attention over long sequences.
    blocks = []
    for i0 in range(0, n, QUERY_BLOCK):
        i1 = min(i0 + QUERY_BLOCK, n)
        cols = np.flatnonzero(mask[i0:i1].any(axis=0))
        if cols[-1] - cols[0] + 1 == len(cols):
            cols = slice(cols[0], cols[-1] + 1)
        blocks.append((i0, i1, cols))

    def kv_heads(a: int, b: int) -> None:  # kv heads [a, b) and their query heads [a·G, b·G)
        qa, qb = a * g, b * g
        for i0, i1, cols in blocks:
            kb, vb, mb = k[cols, a:b], v[cols, a:b], mask[i0:i1, cols]
            p = masked_softmax_(attention_scores(q[i0:i1, qa:qb], kb), mb, q.dtype.type(dh))
            p = p.reshape(b - a, g, i1 - i0, -1)  # [K', G, B, S']
            o = p @ vb.transpose(1, 0, 2)[:, None]  # [K', G, B, S'] @ [K', 1, S', Dh] -> [K', G, B, Dh]
            out[i0:i1, qa:qb] = o.transpose(2, 0, 1, 3).reshape(i1 - i0, qb - qa, dh)

    # Per head these are small matmuls (B x Dh x S') that BLAS cannot spread well over the cores: kv heads
    # run in threads instead, each calling a one-thread BLAS (the same kernels; on OpenBLAS's AVX2 kernels
    # one thread sums some elements in another order than two, see ``parallel.split``).
    parallel.split(kv_heads, kh, elements_per_item=g * n * s * dh, blas_single=True)  # work ~ multiply-adds
    return out


def window_attention(q: np.ndarray, q_pos: np.ndarray, k: np.ndarray, v: np.ndarray, k_pos: np.ndarray,
                     window: int) -> np.ndarray:
    """``attention(q, k, v, window_mask(q_pos, k_pos, window))`` without the [N, S] mask.  -> [N, H, Dh]

    The whole-sequence mask is quadratic in the length (an hour of audio: 180,000 encoder frames, a
    32 GB mask and 260 GB of position differences), while each block of QUERY_BLOCK queries only sees
    the band of keys (q_pos[i0] − window, q_pos[i1−1]]. Calling ``attention`` per block on that band
    performs the very same products (the same block boundaries, the same key columns, in the same
    order), so the result is bit-identical; memory is O(N + QUERY_BLOCK · (QUERY_BLOCK + window))."""
    n = q.shape[0]
    assert q_pos.shape == (n,) and k_pos.shape == (k.shape[0],), (q_pos.shape, k_pos.shape, q.shape, k.shape)
    assert (np.diff(q_pos) > 0).all() and (np.diff(k_pos) > 0).all(), "window_attention: positions must increase"
    out = np.empty_like(q)
    for i0 in range(0, n, QUERY_BLOCK):
        i1 = min(i0 + QUERY_BLOCK, n)
        lo = int(np.searchsorted(k_pos, q_pos[i0] - window, side="right"))
        hi = int(np.searchsorted(k_pos, q_pos[i1 - 1], side="right"))
        out[i0:i1] = attention(q[i0:i1], k[lo:hi], v[lo:hi], window_mask(q_pos[i0:i1], k_pos[lo:hi], window))
    return out


def attention_scores(q: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Raw q·k per query head (no scale, no mask). [N,H,Dh],[S,K,Dh] -> [H, N, S]."""
    n, h, dh = q.shape
    s, kh, _ = k.shape
    qg = q.reshape(n, kh, h // kh, dh).transpose(1, 2, 0, 3)  # [K, G, N, Dh]; head h = kv * G + r
    return (qg @ k.transpose(1, 2, 0)[:, None]).reshape(h, n, s)  # [K, G, N, S] -> [H, N, S]


def attention_probs(q: np.ndarray, k: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """softmax(q k^T / sqrt(Dh) + mask) per query head. [N,H,Dh],[S,K,Dh],[N,S] -> [H, N, S] (the weights
    ``attention`` uses; traces draw them)."""
    n, h, dh = q.shape
    scores = attention_scores(q, k)
    # The softmax is one-core numpy work, the matmul before it is not: heads run on every core.
    parallel.split(lambda a, b: masked_softmax_(scores[a:b], mask, q.dtype.type(dh)), h, elements_per_item=n * k.shape[0])
    return scores


def masked_softmax_(scores: np.ndarray, mask: np.ndarray, dh) -> np.ndarray:
    """In place: softmax(scores / sqrt(Dh) + mask) over the last axis.  [H, N, S], [N, S] -> [H, N, S]."""
    scores /= np.sqrt(dh)
    # Masked keys get a large finite negative score rather than -inf: exp underflows to exactly 0 either
    # way, but numpy's SIMD exp takes a slow path on -inf (about 8x slower on [32, 684, 684]).
    if not mask.all():
        np.copyto(scores, scores.dtype.type(MASKED_SCORE), where=~mask)
    scores -= scores.max(axis=-1, keepdims=True)
    np.exp(scores, out=scores)
    scores /= scores.sum(axis=-1, keepdims=True)
    return scores


# -- convolution --------------------------------------------------------------------------------


def conv1d(x: np.ndarray, w: np.ndarray, b: np.ndarray, stride: int, history: np.ndarray) -> np.ndarray:
    """Causal 1-D convolution over time with explicit left context.  [Cin, T] -> [Cout, T_out].

    ``history`` [Cin, k − stride] holds the frames before x: zeros at stream start (the causal left
    pad), the carried tail of the previous chunk when streaming. Nothing is padded on the right
    (HF ``VoxtralRealtimeCausalConv1d``; symmetric padding is a known mistake, MODEL.md §11.1).
    T_out = (T + k − stride − k) // stride + 1 = T // stride for the stride 1 and 2 used here.
    """
    cout, cin, k = w.shape
    assert x.shape[0] == cin and history.shape == (cin, k - stride), (x.shape, w.shape, history.shape)
    xp = np.concatenate([history.astype(x.dtype), x], axis=1)
    t_out = (xp.shape[1] - k) // stride + 1
    # cols[t, c, j] = xp[c, t*stride + j]: im2col, then one matmul against w viewed as [Cout, Cin*k].
    idx = np.arange(t_out)[:, None] * stride + np.arange(k)[None, :]
    cols = xp[:, idx].transpose(1, 0, 2).reshape(t_out, cin * k)
    return (cols @ w.reshape(cout, cin * k).T + b).T


# -- time conditioning --------------------------------------------------------------------------


def time_embedding(t: float, dim: int, dtype, theta: float = 10000.0, store=None) -> np.ndarray:
    """Sinusoidal embedding of the delay t (in tokens): [cos(t f_j), sin(t f_j)], f_j = theta^(−j/(dim/2)).

    -> [dim]. First half cos, second half sin (HF ``VoxtralRealtimeTimeEmbedding``). The references
    build f_j in float32, cast it to the model dtype, and multiply and take cos/sin in that dtype
    (MODEL.md §5.3). ``store`` is where a BF16 model rounds (f_j, t·f_j, the result): in bf16 that moves
    t_cond by up to 0.024 at dim 3072. None (float32/float64): no rounding.
    """
    store = store or (lambda x: x)
    dtype = np.dtype(dtype)
    half = dim // 2
    inv_freq = store(np.exp(-np.log(dtype.type(theta)) * np.arange(half, dtype=dtype) / dtype.type(half)))
    emb = store(dtype.type(t) * inv_freq)
    return store(np.concatenate([np.cos(emb), np.sin(emb)]))


def ada_scale(t_cond: np.ndarray, down: np.ndarray, up: np.ndarray) -> np.ndarray:
    """1 + W_up GELU(W_down t_cond): the per-layer, position-independent scale applied after the pre-MLP
    RMSNorm (MODEL.md §5.2). [D] -> [D]."""
    return 1.0 + linear(gelu(linear(t_cond, down)), up)
