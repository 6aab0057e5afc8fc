"""The decoder LM with ADA RMSNorm (MODEL.md §5).

Shape legend:
    N  positions    D  width    H  query heads    K  kv heads (query head h reads kv head ⌊h/(H/K)⌋)
    Dh head dim     F  FFN      V  vocab          A  ADA width (32)

    x_p = A_p + Emb[token_p]                                      (a plain sum, no scaling)
    h = x + Wo Attn(RoPE(Wq n), RoPE(Wk n), Wv n),                n = RMSNorm(x; attention_norm)
    y = h + W2 (SiLU(W1 m) ⊙ W3 m),    m = RMSNorm(h; ffn_norm) ⊙ (1 + W_up GELU(W_down t_cond))
    logits = RMSNorm(y_last_layer; norm) Emb^T                    (tied head)
"""

from __future__ import annotations

import numpy as np

from .cache import KV
from .config import DecoderConfig
from .layers import ada_scale, apply_rope, attention, linear, rms_norm, rope_angles, swiglu, time_embedding, window_mask
from .precision import Precision
from .taps import no_tap
from .weights import DecoderLayerWeights, NormWeights

LM_HEAD_CHUNK = 16384  # rows of the 131072-row embedding multiplied at a time: bounds peak memory


def time_condition(delay_tokens: float, cfg: DecoderConfig, p: Precision, tap=no_tap) -> np.ndarray:
    """t_cond [D] for a delay of ``delay_tokens`` (= delay_ms / 80), built in the compute dtype; the
    bf16 mode rounds f_j, t·f_j and the result as the BF16 reference does (MODEL.md §5.3)."""
    t = time_embedding(delay_tokens, cfg.dim, p.angle_dtype, store=p.store if p.bf16_storage else None).astype(p.dtype)
    tap("dec.t_cond", t)
    return t


def layer_ada_scale(t_cond: np.ndarray, w: DecoderLayerWeights, p: Precision, act=None) -> np.ndarray:
    """(1 + g) [D] for one layer: position-independent, so computed once per layer and delay."""
    return p.store(ada_scale(t_cond, w.ada_down, w.ada_up, operand=p.operand, act=act))


def decoder_input(audio: np.ndarray, token_emb: np.ndarray, p: Precision, tap=no_tap) -> np.ndarray:
    """x_p = A_p + Emb[t_p]. [N, D], [N, D] -> [N, D]."""
    assert audio.shape == token_emb.shape, (audio.shape, token_emb.shape)
    tap("dec.embed", token_emb)
    x = p.store(audio + token_emb)
    tap("dec.in", x)
    return x


def decoder_attention(n: np.ndarray, positions: np.ndarray, w: DecoderLayerWeights, cfg: DecoderConfig, p: Precision,
                      past: KV | None = None, tap=no_tap, name: str = "dec.L00") -> tuple[np.ndarray, KV]:
    """GQA with a sliding window, no biases, on the normed input.  [N, D] -> ([N, D], KV of past + N keys)."""
    n_pos, d = n.shape
    h_, k_, dh = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
    assert d == cfg.dim and positions.shape == (n_pos,), (n.shape, positions.shape)
    cos, sin = rope_angles(positions, dh, cfg.rope_theta, p.angle_dtype)
    cos, sin = p.store(cos.astype(n.dtype)), p.store(sin.astype(n.dtype))
    x = p.operand(n)  # the matmul input (float16 in a float16 port; identity otherwise)
    q = apply_rope(p.store(linear(x, w.wq)).reshape(n_pos, h_, dh), cos, sin)
    k = apply_rope(p.store(linear(x, w.wk)).reshape(n_pos, k_, dh), cos, sin)
    v = p.store(linear(x, w.wv)).reshape(n_pos, k_, dh)
    tap(f"{name}.q", q)
    tap(f"{name}.k", k)
    tap(f"{name}.v", v)
    # q, k, v and the softmax weights are matmul operands too (a ggml port's F16 KV cache holds k, v).
    kv = (past if past is not None else KV.empty(k_, dh, n.dtype)).extend(p.operand(k), p.operand(v), positions)
    a = p.store(attention(p.operand(q), kv.k, kv.v, window_mask(positions, kv.pos, cfg.sliding_window), operand=p.operand))
    out = p.store(linear(p.operand(a.reshape(n_pos, h_ * dh)), w.wo))
    tap(f"{name}.attn.out", out)
    return out, kv


def ada_norm(h: np.ndarray, w: DecoderLayerWeights, scale: np.ndarray, cfg: DecoderConfig, p: Precision) -> np.ndarray:
    """RMSNorm(h; ffn_norm) ⊙ (1 + g). ADA sits after the pre-FFN norm (weight included) and before the
    MLP; it touches neither the attention norm nor the residual (HF VoxtralRealtimeTextDecoderLayer,
    vLLM MistralDecoderLayer). [N, D] -> [N, D]."""
    return p.store(p.store(rms_norm(h, w.ffn_norm, cfg.norm_eps)) * scale)


def decoder_layer(x: np.ndarray, positions: np.ndarray, w: DecoderLayerWeights, scale: np.ndarray, cfg: DecoderConfig,
                  p: Precision, past: KV | None = None, tap=no_tap, name: str = "dec.L00") -> tuple[np.ndarray, KV]:
    """One layer. [N, D] -> ([N, D], KV of past + these N keys). ``scale`` is (1 + g) from ``layer_ada_scale``."""
    assert x.shape[1] == cfg.dim and scale.shape == (cfg.dim,), (x.shape, scale.shape)
    tap(f"{name}.ada_scale", scale[None, :])
    n = p.store(rms_norm(x, w.attn_norm, cfg.norm_eps))
    tap(f"{name}.attn_norm", n)
    attn_out, kv = decoder_attention(n, positions, w, cfg, p, past=past, tap=tap, name=name)
    h = p.store(x + attn_out)
    m = ada_norm(h, w, scale, cfg, p)
    tap(f"{name}.ffn_norm", m)
    mlp_out = p.store(swiglu(p.operand(m), w.w1, w.w3, w.w2, operand=p.operand))
    tap(f"{name}.mlp.out", mlp_out)
    y = p.store(h + mlp_out)
    tap(f"{name}.out", y)
    return y, kv


def final_norm(x: np.ndarray, w: NormWeights, cfg: DecoderConfig, p: Precision, tap=no_tap) -> np.ndarray:
    y = p.store(rms_norm(x, w.weight, cfg.norm_eps))
    tap("dec.norm", y)
    return y


def lm_head(h: np.ndarray, embedding_rows, vocab_size: int, p: Precision, tap=no_tap,
            chunk: int = LM_HEAD_CHUNK) -> np.ndarray:
    """logits = h Emb^T over the tied embedding, ``chunk`` vocab rows at a time.  [N, D] -> [N, V].

    ``embedding_rows(slice)`` returns those rows in the compute dtype (read lazily from the
    checkpoint), so the 131072 x 3072 table is never converted whole.
    """
    out = np.empty((h.shape[0], vocab_size), dtype=h.dtype)
    x = p.operand(h)  # the matmul input (float16 in a float16 port; identity otherwise)
    for start in range(0, vocab_size, chunk):
        rows = embedding_rows(slice(start, min(start + chunk, vocab_size)))
        linear(x, rows, out=out[:, start:start + rows.shape[0]])
    out = p.store(out)
    tap("logits", out)
    return out
