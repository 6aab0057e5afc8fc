"""Fast twins of the hot layers in ``layers.py``: the same signatures, the same numbers to rounding.

Shape legend (as in ``layers.py``):
    N  query positions          S  key positions (cache + new)     D  model width
    H  query heads              K  kv heads (H % K == 0)            Dh head dim
    F  FFN width                B  queries in one block             G  query heads per kv head (H / K)

Read ``layers.py`` for the math; this file is only how to compute it fast on a CPU with numpy. Each
layer there dispatches here in one line while ``layers.KERNELS`` is on (the default; the switch is
``voxtral-oracle --plain-layers`` or ``VOXTRAL_ORACLE_KERNELS=plain``). Each docstring says what differs
from the plain body and why; ``git log -p oracle/layers.py`` has the measurements that motivated each
one. ``tests/test_kernels.py`` holds every kernel to its plain layer: float64 within 1e-13 relative,
float32 within the rounding bound of the dot products involved, the tiny forward's logits within 1e-12.

Three kinds of change, in decreasing order of how much they can move a number:
- matmul orientation or blocking (``linear``, ``attention``): the same dot products, summed in the
  order the BLAS kernel picks for that shape (and thread count): last bits may move;
- a large finite score instead of −inf for masked keys (``attention``, ``attention_probs``): the
  masked weights are exactly 0 either way;
- threads over disjoint rows or heads (``swiglu``, ``apply_rope``, the softmaxes, via
  ``parallel.split``) and in-place arithmetic (``silu``): element-wise, so every bit is the same.
"""

from __future__ import annotations

import numpy as np

from . import parallel

FEW_ROWS = 512  # linear, float32: below this many rows (and above one) ...
WIDE_INNER = 2048  # ... and at least this wide an inner dimension, compute W xᵀ (the decoder, not the encoder's 1280)
MASKED_SCORE = -1e30  # the score of a masked key (see masked_softmax_)
QUERY_BLOCK = 128  # queries per block in ``attention``


def linear(x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None, out: np.ndarray | None = None) -> np.ndarray:
    """``layers.linear``: y = x Wᵀ (+ b), [.., in] x [out, in] -> [.., out]; ``out`` (no bias): write y there.

    Differs: in float32, for few rows (1 < N < FEW_ROWS) against a wide weight (in ≥ WIDE_INNER: the
    decoder and LM head offline, a streaming prefill) it computes (W xᵀ)ᵀ. Why: OpenBLAS's sgemm runs
    W xᵀ 10-20% faster than x Wᵀ for these shapes (measured: [174, 9216] x [3072, 9216]ᵀ 145 -> 163
    GFLOP/s on AVX-512, 109 -> 128 on AVX2). It is the same dot products; the summation order is the
    kernel's: the same bits on OpenBLAS's AVX-512 kernels, a last-bit change (≤ 4.5e-7 relative) on its
    AVX2 kernels, where the thread count and the row count move those bits as well. Not in float64:
    there dgemm is slower this way round. With ``out`` it writes the LM head's column blocks straight
    into the logits (no [N, block] temporary).
    """
    assert x.shape[-1] == w.shape[1], (x.shape, w.shape)
    assert out is None or b is None, "linear: out= takes no bias"
    if x.dtype == np.float32 and x.ndim == 2 and 1 < x.shape[0] < FEW_ROWS and w.shape[1] >= WIDE_INNER:
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


def silu(x: np.ndarray) -> np.ndarray:
    """``layers.silu``: x / (1 + exp(−x)).

    Differs: one scratch array, every step in place (the plain body makes three temporaries). Why: it
    is the FFN's widest activation, [N, F]; fewer fresh pages, same operations in the same order, so
    the same bits.
    """
    d = np.negative(x)
    np.exp(d, out=d)
    d += 1.0
    return np.divide(x, d, out=d)


def swiglu(x: np.ndarray, w1: np.ndarray, w3: np.ndarray, w2: np.ndarray, b2: np.ndarray | None = None,
           operand=None) -> np.ndarray:
    """``layers.swiglu``: W2 (SiLU(W1 x) ⊙ W3 x) (+ b2), [N, D] -> [N, D].

    Differs: the gate SiLU(gate) ⊙ up runs in row ranges on every core, written into ``up`` (and the
    three matmuls are ``kernels.linear``). Why: the gate is one-core element-wise work on the widest
    activation (measured [696, 5120]: 17 -> 13 ms per encoder layer); element-wise, so the same bits.
    """
    assert x.shape[-1] == w1.shape[1] == w3.shape[1] and w1.shape == w3.shape, (x.shape, w1.shape, w3.shape)
    gate, up = linear(x, w1), linear(x, w3)  # [N, F] each
    parallel.split(lambda a, b: np.multiply(silu(gate[a:b]), up[a:b], out=up[a:b]), up.shape[0],
                   elements_per_item=up.size // max(1, up.shape[0]))
    return linear(operand(up) if operand else up, w2, b2)


def apply_rope(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """``layers.apply_rope``: rotate interleaved pairs (x[2i], x[2i+1]) by angle_i, [N, h, Dh] -> [N, h, Dh].

    Differs: positions in row ranges on every core. Why: one-core element-wise work (measured encoder
    RoPE 7.5 -> 3.1 ms per layer); element-wise, so the same bits.
    """
    n, h, dh = x.shape
    assert cos.shape == (n, dh // 2) and sin.shape == cos.shape, (x.shape, cos.shape)
    x0, x1 = x[..., 0::2], x[..., 1::2]
    c, s = cos[:, None, :].astype(x.dtype), sin[:, None, :].astype(x.dtype)
    out = np.empty_like(x)

    def rows(a: int, b: int) -> None:  # positions [a, b)
        out[a:b, :, 0::2] = x0[a:b] * c[a:b] - x1[a:b] * s[a:b]
        out[a:b, :, 1::2] = x0[a:b] * s[a:b] + x1[a:b] * c[a:b]
    parallel.split(rows, n, elements_per_item=h * dh)
    return out


def attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, mask: np.ndarray, operand=None) -> np.ndarray:
    """``layers.attention``: softmax(q kᵀ / √Dh + mask) v, grouped kv heads.
    [N,H,Dh],[S,K,Dh],[S,K,Dh],[N,S] -> [N,H,Dh].

    Differs, and why:
    - queries in blocks of QUERY_BLOCK, each against only the band of keys its mask lets it see (a
      causal window makes that a contiguous slice): masked keys have weight exactly 0, so it is the
      same softmax with about half the work for causal attention over long sequences;
    - batched matmuls (BLAS) instead of einsum's own multiply-add loop;
    - kv heads in threads, each calling a one-thread BLAS: per head these are small matmuls
      (B x Dh x S') that BLAS cannot spread well over the cores (encoder attention 58 -> ~36 ms per
      layer). On OpenBLAS's AVX2 kernels one thread sums some elements in another order than two
      (``parallel.split``);
    - the softmax is in place, with a finite MASKED_SCORE for masked keys (``masked_softmax_``).
    The blocking and BLAS move last bits against the plain einsum; the weights of masked keys are 0.
    """
    n, h, dh = q.shape
    s, kh, _ = k.shape
    g = h // kh
    assert v.shape == k.shape and h % kh == 0 and mask.shape == (n, s), (q.shape, k.shape, v.shape, mask.shape)
    assert mask.any(axis=1).all(), "attention: a query sees no key"
    out = np.empty((n, h, dh), dtype=q.dtype)
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
            p = (operand(p) if operand else p).reshape(b - a, g, i1 - i0, -1)  # [K', G, B, S']
            o = p @ vb.transpose(1, 0, 2)[:, None]  # [K', G, B, S'] @ [K', 1, S', Dh] -> [K', G, B, Dh]
            out[i0:i1, qa:qb] = o.transpose(2, 0, 1, 3).reshape(i1 - i0, qb - qa, dh)

    parallel.split(kv_heads, kh, elements_per_item=g * n * s * dh, blas_single=True)  # work ~ multiply-adds
    return out


def attention_probs(q: np.ndarray, k: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``layers.attention_probs``: softmax(q kᵀ / √Dh + mask) per query head, [N,H,Dh],[S,K,Dh],[N,S] -> [H, N, S].

    Differs: scores by batched matmul; the softmax in place (``masked_softmax_``), heads in threads.
    Why: the softmax is one-core numpy work and the matmul before it is not; the heads are disjoint,
    so the threads change no bit (the matmul may move last bits against the plain einsum).
    """
    n, h, dh = q.shape
    assert k.shape[2] == dh and h % k.shape[1] == 0 and mask.shape == (n, k.shape[0]), (q.shape, k.shape, mask.shape)
    scores = attention_scores(q, k)
    parallel.split(lambda a, b: masked_softmax_(scores[a:b], mask, q.dtype.type(dh)), h, elements_per_item=n * k.shape[0])
    return scores


def attention_scores(q: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Raw q·k per query head (no scale, no mask), by batched BLAS. [N,H,Dh],[S,K,Dh] -> [H, N, S]."""
    n, h, dh = q.shape
    s, kh, _ = k.shape
    qg = q.reshape(n, kh, h // kh, dh).transpose(1, 2, 0, 3)  # [K, G, N, Dh]; head h = kv * G + r
    return (qg @ k.transpose(1, 2, 0)[:, None]).reshape(h, n, s)  # [K, G, N, S] -> [H, N, S]


def masked_softmax_(scores: np.ndarray, mask: np.ndarray, dh) -> np.ndarray:
    """In place: softmax(scores / √Dh + mask) over the last axis.  [H, N, S], [N, S] -> [H, N, S].

    Masked keys get a large finite negative score (MASKED_SCORE) rather than −inf: exp underflows to
    exactly 0 either way, but numpy's SIMD exp takes a slow path on −inf (about 8x slower on
    [32, 684, 684]). In place: no [H, N, S] temporaries.
    """
    scores /= np.sqrt(dh)
    if not mask.all():
        np.copyto(scores, scores.dtype.type(MASKED_SCORE), where=~mask)
    scores -= scores.max(axis=-1, keepdims=True)
    np.exp(scores, out=scores)
    scores /= scores.sum(axis=-1, keepdims=True)
    return scores
