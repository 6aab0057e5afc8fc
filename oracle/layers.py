"""The building blocks, each a short pure function of arrays (picoGPT style): the formula, plainly.

Shape legend:
    N  query positions          S  key positions (cache + new)     D  model width
    H  query heads              K  kv heads (H % K == 0)            Dh head dim
    G  query heads per kv head  Cin/Cout conv channels              T  conv input frames
    F  FFN width

Every function computes in the dtype of its inputs (float64 or float32) and returns that dtype.
Rounding to BF16 (the bf16 emulation) is not done here: callers apply ``Precision.store`` at the
points where the reference materializes a BF16 tensor.

Fast kernels beside the formulas: each hot layer (``linear``, ``silu``, ``swiglu``, ``apply_rope``,
``attention``, ``attention_probs``) starts with one line handing its arrays to its twin in
``kernels.py`` (same signature, same numbers to rounding, held to this body by tests/test_kernels.py).
``KERNELS`` below is the one switch, read at every dispatch: True (the default) runs the kernels,
False the bodies written here. Entry points set it: ``voxtral-oracle --plain-layers`` or
``VOXTRAL_ORACLE_KERNELS=plain``; a library caller sets ``oracle.layers.KERNELS = False``. Goldens
record which bodies ran (``layers`` in their provenance, from ``path()``).
"""

from __future__ import annotations

import numpy as np
from scipy.special import erf

from . import kernels

KERNELS = True  # the switch: True: hot layers run oracle/kernels.py (default); False: the plain bodies below


def path() -> str:
    """Which bodies the hot layers run now: "fast" (kernels.py) or "plain" (this file)."""
    return "fast" if KERNELS else "plain"


def linear(x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None, out: np.ndarray | None = None) -> np.ndarray:
    """y = x Wᵀ (+ b). [.., in] x [out, in] -> [.., out]; PyTorch Linear layout kept from the checkpoint.
    ``out`` (no bias): write y there, e.g. a column block of the LM head's logits."""
    assert x.shape[-1] == w.shape[1], (x.shape, w.shape)
    assert out is None or b is None, "linear: out= takes no bias"
    if KERNELS: return kernels.linear(x, w, b, out)  # fast: few rows x wide weight: W xᵀ
    y = x @ w.T  # [.., in] @ [in, out] -> [.., out]
    if out is not None:
        out[...] = y
        return out
    return y if b is None else y + b


def gelu(x: np.ndarray) -> np.ndarray:
    """Exact (erf) GELU: used after both convs, in the adapter and in the ADA MLP (never tanh)."""
    return 0.5 * x * (1.0 + erf(x / np.sqrt(x.dtype.type(2.0))))


def gelu_tanh(x: np.ndarray) -> np.ndarray:
    """The tanh approximation 0.5 x (1 + tanh(√(2/π) (x + 0.044715 x³))). NOT this model's GELU (exact erf,
    above): it is what many ports write (antirez/voxtral.c ``voxtral_kernels.c``), so the fault catalogue
    injects it and compare's stage-local view tests a port's error against it. |tanh − erf| ≤ 4.7e-4."""
    c = x.dtype.type(np.sqrt(2.0 / np.pi))
    return 0.5 * x * (1.0 + np.tanh(c * (x + x.dtype.type(0.044715) * x * x * x)))


def silu(x: np.ndarray) -> np.ndarray:
    """x · σ(x) = x / (1 + exp(−x)), element-wise."""
    if KERNELS: return kernels.silu(x)  # fast: in place, one scratch array
    return x / (1.0 + np.exp(-x))


def rms_norm(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    """x · rsqrt(mean(x²) + eps) · w over the last axis. [.., D] -> [.., D].

    No (1 + w) offset (MODEL.md §3.2). eps sits inside the square root, added to the mean, as in
    HF ``VoxtralRealtimeRMSNorm`` and vLLM ``RMSNorm``.
    """
    assert x.shape[-1] == w.shape[-1], (x.shape, w.shape)
    ms = np.mean(x * x, axis=-1, keepdims=True)
    return x / np.sqrt(ms + x.dtype.type(eps)) * w


def swiglu(x: np.ndarray, w1: np.ndarray, w3: np.ndarray, w2: np.ndarray, b2: np.ndarray | None = None,
           operand=None) -> np.ndarray:
    """W2 (SiLU(W1 x) ⊙ W3 x) (+ b2). [N, D] -> [N, D]; w1 is the gate, w3 the up projection.
    The encoder's w2 carries a bias (its only MLP bias); the decoder's has none. ``operand`` is how
    W2's input is rounded (``Precision.operand``: float16 in a ggml port); None: not at all."""
    assert x.shape[-1] == w1.shape[1] == w3.shape[1] and w1.shape == w3.shape, (x.shape, w1.shape, w3.shape)
    if KERNELS: return kernels.swiglu(x, w1, w3, w2, b2, operand)  # fast: the gate in row threads
    gate = silu(linear(x, w1))  # [N, D] -> [N, F]
    up = linear(x, w3)  # [N, D] -> [N, F]
    h = gate * up  # [N, F]
    return linear(operand(h) if operand else h, w2, b2)  # [N, F] -> [N, D]


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

    The pairing is "GPT-J"/interleaved because Mistral-layout q/k rows are stored that way (MODEL.md
    §1.4); HF's rotate-half pairs (i, i + Dh/2) on permuted weights and is the same rotation.
    """
    n, h, dh = x.shape
    assert cos.shape == (n, dh // 2) and sin.shape == cos.shape, (x.shape, cos.shape)
    if KERNELS: return kernels.apply_rope(x, cos, sin)  # fast: positions in row threads
    x0, x1 = x[..., 0::2], x[..., 1::2]  # [N, h, Dh/2] each: the pair (x[2i], x[2i+1])
    c, s = cos[:, None, :].astype(x.dtype), sin[:, None, :].astype(x.dtype)  # [N, 1, Dh/2]
    out = np.empty_like(x)  # [N, h, Dh]
    out[..., 0::2] = x0 * c - x1 * s
    out[..., 1::2] = x0 * s + x1 * c
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


def window_mask(q_pos: np.ndarray, k_pos: np.ndarray, window: int) -> np.ndarray:
    """Key j is visible to query i iff 0 ≤ pos_i − pos_j < window (the window counts the query itself).

    [N], [S] -> bool [N, S]. Mirrors vLLM's flash-attn (window−1, 0) and HF's sliding-window mask.
    """
    d = q_pos[:, None] - k_pos[None, :]
    return (d >= 0) & (d < window)


def attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, mask: np.ndarray, operand=None) -> np.ndarray:
    """Softmax(q kᵀ / √Dh + mask) v with grouped kv heads.  [N,H,Dh],[S,K,Dh],[S,K,Dh],[N,S] -> [N,H,Dh].

    Query head h reads kv head ⌊h / (H/K)⌋ (repeat-interleave, as HF ``repeat_kv``; tiling is a known
    mistake). Every row must see at least its own key: a fully masked row is a caller bug, not NaN.
    ``operand`` is how the softmax weights are rounded as the input of the matmul with v
    (``Precision.operand``: float16 in a ggml port); None: not at all. q, k, v come rounded by the caller.
    """
    n, h, dh = q.shape
    s, kh, _ = k.shape
    assert v.shape == k.shape and h % kh == 0 and mask.shape == (n, s), (q.shape, k.shape, v.shape, mask.shape)
    assert mask.any(axis=1).all(), "attention: a query sees no key"
    if KERNELS: return kernels.attention(q, k, v, mask, operand)  # fast: key bands, kv heads in threads
    p = attention_probs(q, k, mask).reshape(kh, h // kh, n, s)  # [H, N, S] -> [K, G, N, S]
    p = operand(p) if operand else p
    out = np.einsum("kgns,skd->nkgd", p, v)  # Σ_j p_ij v_j per head: [N, K, G, Dh]
    return out.reshape(n, h, dh)  # head h = kv · G + r


def window_attention(q: np.ndarray, q_pos: np.ndarray, k: np.ndarray, v: np.ndarray, k_pos: np.ndarray,
                     window: int, operand=None) -> np.ndarray:
    """``attention(q, k, v, window_mask(q_pos, k_pos, window))`` without the [N, S] mask.  -> [N, H, Dh]

    The whole-sequence mask is quadratic in the length (an hour of audio: 180,000 encoder frames, a
    32 GB mask and 260 GB of position differences), while each block of ``kernels.QUERY_BLOCK`` queries only sees
    the band of keys (q_pos[i0] − window, q_pos[i1−1]]. Calling ``attention`` per block on that band
    performs the very same products (the same block boundaries, the same key columns, in the same
    order), so the result is bit-identical; memory is O(N + B · (B + window)), B the block."""
    n = q.shape[0]
    assert q_pos.shape == (n,) and k_pos.shape == (k.shape[0],), (q_pos.shape, k_pos.shape, q.shape, k.shape)
    assert (np.diff(q_pos) > 0).all() and (np.diff(k_pos) > 0).all(), "window_attention: positions must increase"
    out = np.empty_like(q)
    for i0 in range(0, n, kernels.QUERY_BLOCK):  # the fast kernel's blocks: bit-identical to one call
        i1 = min(i0 + kernels.QUERY_BLOCK, n)
        lo = int(np.searchsorted(k_pos, q_pos[i0] - window, side="right"))
        hi = int(np.searchsorted(k_pos, q_pos[i1 - 1], side="right"))
        out[i0:i1] = attention(q[i0:i1], k[lo:hi], v[lo:hi], window_mask(q_pos[i0:i1], k_pos[lo:hi], window), operand)
    return out


def attention_probs(q: np.ndarray, k: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """softmax(q kᵀ / √Dh + mask) per query head. [N,H,Dh],[S,K,Dh],[N,S] -> [H, N, S] (the weights
    ``attention`` uses; traces draw them). A masked key scores −inf: its weight is exactly 0."""
    n, h, dh = q.shape
    s, kh, _ = k.shape
    assert k.shape[2] == dh and h % kh == 0 and mask.shape == (n, s), (q.shape, k.shape, mask.shape)
    if KERNELS: return kernels.attention_probs(q, k, mask)  # fast: in place, heads in threads
    qg = q.reshape(n, kh, h // kh, dh)  # [N, K, G, Dh]: query head h = kv · G + r
    scores = np.einsum("nkgd,skd->kgns", qg, k) / np.sqrt(q.dtype.type(dh))  # [K, G, N, S]
    scores = np.where(mask, scores, -np.inf)  # [N, S] mask broadcast over heads
    p = np.exp(scores - scores.max(axis=-1, keepdims=True))  # the row max keeps exp ≤ 1
    p /= p.sum(axis=-1, keepdims=True)
    return p.reshape(h, n, s)


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


def ada_scale(t_cond: np.ndarray, down: np.ndarray, up: np.ndarray, operand=None, act=None) -> np.ndarray:
    """1 + W_up GELU(W_down t_cond): the per-layer, position-independent scale applied after the pre-MLP
    RMSNorm (MODEL.md §5.2). [D] -> [D]. ``operand`` rounds both matmul inputs (``Precision.operand``);
    ``act`` replaces the exact GELU only to replay a port's mistake (oracle.local)."""
    operand = operand or (lambda x: x)
    return 1.0 + linear(operand((act or gelu)(linear(operand(t_cond), down))), up)
