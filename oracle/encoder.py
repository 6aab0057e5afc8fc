"""The causal audio encoder: conv stem, sliding-window transformer layers, final norm (MODEL.md §3).

Shape legend:
    M  mel bins (128)     T  mel frames (8 per token)     S  encoder frames (T / 2, 50 Hz)
    De encoder width      He heads = kv heads             Dhe head dim     Fe FFN width

    mel [M, T] --conv1 k3 s1 (2 frames of left context) + GELU--> [De, T]
               --conv2 k3 s2 (1 frame of left context)  + GELU--> [De, T/2] -> transpose -> [S, De]
    x [S, De] --L x (pre-norm sliding-window MHA with q/v/o biases, pre-norm SwiGLU with w2 bias)-->
              --final RMSNorm--> [S, De]

Positions are absolute encoder-frame indices from the start of the left-padded stream.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .cache import KV
from .config import CONV_KERNEL, CONV_STRIDE, EncoderConfig
from .layers import apply_rope, conv1d, gelu, linear, rms_norm, rope_angles, swiglu, window_attention
from .precision import Precision
from .taps import no_tap
from .weights import ConvStemWeights, EncoderLayerWeights, NormWeights


@dataclass(frozen=True)
class ConvState:
    """The conv stem's streaming state: the input frames each conv still needs from the past."""

    mel_tail: np.ndarray  # [M, 2]  last 2 mel frames (conv1 context, k − 1)
    conv1_tail: np.ndarray  # [De, 1]  last conv1 output frame (conv2 context, k − stride)

    @staticmethod
    def zeros(n_mels: int, dim: int, dtype) -> "ConvState":
        """Stream start: the causal left padding is zeros (HF pads with zeros; so does the padding cache)."""
        return ConvState(np.zeros((n_mels, CONV_KERNEL - 1), dtype), np.zeros((dim, CONV_KERNEL - CONV_STRIDE), dtype))


def conv_stem(mel: np.ndarray, w: ConvStemWeights, p: Precision, state: ConvState | None = None,
              tap=no_tap, act=None) -> tuple[np.ndarray, ConvState]:
    """[M, T] mel (T even) -> ([T/2, De], new state). Offline: state=None means zeros before frame 0.

    Streaming feeds consecutive even-length chunks with the returned state and gets exactly the
    offline frames (conv2's stride-2 phase stays aligned because every chunk has an even length).
    ``act`` is the activation, the exact GELU by default; the fault catalogue passes another (a port's
    tanh approximation).
    """
    n_mels, t = mel.shape
    de = w.w1.shape[0]
    assert w.w1.shape == (de, n_mels, CONV_KERNEL) and t % 2 == 0, (mel.shape, w.w1.shape)
    if state is None:
        state = ConvState.zeros(n_mels, de, mel.dtype)
    h1 = stem_conv1(mel, w, p, state.mel_tail, act=act)  # [De, T]
    tap("enc.conv1.out", h1.T)
    h2 = stem_conv2(h1, w, p, state.conv1_tail, act=act)  # [De, T/2]
    out = np.ascontiguousarray(h2.T)  # [S, De]
    tap("enc.conv.out", out)
    mel_hist = np.concatenate([state.mel_tail, mel], axis=1)[:, -(CONV_KERNEL - 1):]
    h1_hist = np.concatenate([state.conv1_tail, h1], axis=1)[:, -(CONV_KERNEL - CONV_STRIDE):]
    return out, ConvState(mel_hist, h1_hist)


def stem_conv1(mel: np.ndarray, w: ConvStemWeights, p: Precision, history: np.ndarray, act=None) -> np.ndarray:
    """The stem's first conv + GELU: [M, T] mel with [M, 2] past frames -> [De, T]. Its own function so
    that compare can replay this stage alone on a port's own mel (oracle.local)."""
    act = act or gelu  # looked up per call (tests swap the module's GELU)
    # p.operand: the conv inputs as the kernel reads them (ggml's im2col writes F16 in a float16 port).
    return p.store(act(p.store(conv1d(p.operand(mel), w.w1, w.b1, stride=1, history=p.operand(history)))))


def stem_conv2(h1: np.ndarray, w: ConvStemWeights, p: Precision, history: np.ndarray, act=None) -> np.ndarray:
    """The stem's stride-2 conv + GELU: [De, T] with [De, 1] past frame -> [De, T/2]."""
    act = act or gelu
    return p.store(act(p.store(conv1d(p.operand(h1), w.w2, w.b2, stride=CONV_STRIDE, history=p.operand(history)))))


def encoder_attention(n: np.ndarray, positions: np.ndarray, w: EncoderLayerWeights, cfg: EncoderConfig, p: Precision,
                      past: KV | None = None, tap=no_tap, name: str = "enc.L00") -> tuple[np.ndarray, KV]:
    """Sliding-window MHA with q/v/o biases and no k bias, on the normed input.  [S, De] -> ([S, De], KV).

        Wo Attn(RoPE(Wq n + bq), RoPE(Wk n), Wv n + bv) + bo,  key j visible to query i iff 0 <= i-j < W_e
    """
    s, de = n.shape
    hh, dh = cfg.n_heads, cfg.head_dim
    assert de == cfg.dim and positions.shape == (s,), (n.shape, positions.shape)
    cos, sin = rope_angles(positions, dh, cfg.rope_theta, p.angle_dtype)
    cos, sin = p.store(cos.astype(n.dtype)), p.store(sin.astype(n.dtype))
    x = p.operand(n)  # the matmul input (float16 in a float16 port; identity otherwise)
    q = apply_rope(p.store(linear(x, w.wq, w.bq)).reshape(s, hh, dh), cos, sin)
    k = apply_rope(p.store(linear(x, w.wk, w.bk)).reshape(s, hh, dh), cos, sin)
    v = p.store(linear(x, w.wv, w.bv)).reshape(s, hh, dh)
    tap(f"{name}.q", q)
    tap(f"{name}.k", k)
    tap(f"{name}.v", v)
    # q, k, v and the softmax weights are matmul operands too (a ggml port's F16 KV cache holds k, v).
    kv = (past if past is not None else KV.empty(hh, dh, n.dtype)).extend(p.operand(k), p.operand(v), positions)
    a = p.store(window_attention(p.operand(q), positions, kv.k, kv.v, kv.pos, cfg.sliding_window,
                                 operand=p.operand))  # no [S, S] mask: memory stays linear in the length
    out = p.store(linear(p.operand(a.reshape(s, hh * dh)), w.wo, w.bo))
    tap(f"{name}.attn.out", out)
    return out, kv


def encoder_layer(x: np.ndarray, positions: np.ndarray, w: EncoderLayerWeights, cfg: EncoderConfig, p: Precision,
                  past: KV | None = None, tap=no_tap, name: str = "enc.L00") -> tuple[np.ndarray, KV]:
    """One pre-norm layer. [S, De] -> ([S, De], KV of past + these S keys).

        h = x + Wo Attn(RoPE(Wq n + bq), RoPE(Wk n), Wv n + bv) + bo,   n = RMSNorm(x; attention_norm)
        y = h + W2 (SiLU(W1 m) ⊙ W3 m) + b2,                            m = RMSNorm(h; ffn_norm)
    """
    assert x.shape[1] == cfg.dim, x.shape
    n = p.store(rms_norm(x, w.attn_norm, cfg.norm_eps))
    tap(f"{name}.attn_norm", n)
    attn_out, kv = encoder_attention(n, positions, w, cfg, p, past=past, tap=tap, name=name)
    h = p.store(x + attn_out)
    m = p.store(rms_norm(h, w.ffn_norm, cfg.norm_eps))
    mlp_out = p.store(swiglu(p.operand(m), w.w1, w.w3, w.w2, w.b2, operand=p.operand))
    tap(f"{name}.mlp.out", mlp_out)
    y = p.store(h + mlp_out)
    tap(f"{name}.out", y)
    return y, kv


def encoder_norm(x: np.ndarray, w: NormWeights, cfg: EncoderConfig, p: Precision, tap=no_tap) -> np.ndarray:
    """The final ``transformer.norm``. [S, De] -> [S, De]."""
    y = p.store(rms_norm(x, w.weight, cfg.norm_eps))
    tap("enc.out", y)
    return y
