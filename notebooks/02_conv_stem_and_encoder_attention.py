# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 2 · Causal conv stem and sliding-window encoder attention
#
# The encoder turns the `[128, 8N]` log-mel into `[4N, De]` frames at 50 Hz: two **causal** convolutions,
# then pre-norm transformer layers whose attention looks back over a **window of W frames, including
# itself**. Everything here is built in numpy and checked against the oracle's taps
# (`oracle/encoder.py`, `oracle/layers.py`).
#
# Spec: `docs/MODEL.md` §3 (encoder), §11.1, §11.2, §11.5. Official code: HF
# `modeling_voxtral_realtime.py` `VoxtralRealtimeCausalConv1d`, `…EncoderLayer`; vLLM `whisper_causal.py`
# `WhisperCausalConv1d`, `WhisperCausalEncoderLayer`; the window is vLLM's flash-attn `(W − 1, 0)`.
#
# Shapes: M = 128 mel bins, T = 8N mel frames, S = T/2 = 4N encoder frames, De width, He heads × Dhe.

# %%
import os

CHECKPOINT = os.environ.get("VOXTRAL_CHECKPOINT")  # a checkpoint directory; None: the built-in tiny one
AUDIO = os.environ.get("VOXTRAL_AUDIO")  # an audio file; None: the built-in speech clip

import matplotlib.pyplot as plt
import numpy as np
from scipy.special import erf

from oracle import builtin
from oracle.audio import load_audio
from oracle.encoder import conv_stem
from oracle.forward import audio_embeddings
from oracle.layers import attention_probs, window_mask
from oracle.pipeline import load_setup, offline_mel
from oracle.precision import FLOAT64
from oracle.taps import Taps

setup = load_setup(CHECKPOINT or builtin.tiny_checkpoint())
ckpt, E = setup.ckpt, setup.ckpt.config.encoder
P = FLOAT64  # the truth mode; the encoder is read one layer at a time, so even the real one fits
TOL = dict(rtol=1e-12, atol=1e-12)  # float64 against float64: only summation order differs

mel = offline_mel(load_audio(AUDIO or builtin.speech_clip()), setup.protocol, P)  # [M, 8N], notebook 01
taps = Taps("enc.*")  # record every encoder intermediate of the oracle's forward pass
audio_embeddings(ckpt, mel, P, tap=taps)
print(f"mel {mel.shape}; encoder: {E.n_layers} layers, De {E.dim}, {E.n_heads} heads x {E.head_dim}, window W = {E.sliding_window}")

# %% [markdown]
# ## The conv stem: left padding only
#
# $$y[:, t] = b + \sum_{j=0}^{k-1} W[:, :, j]\; x_\text{pad}[:, s t + j],\qquad
#   x_\text{pad} = [\underbrace{0, \dots, 0}_{k - s},\ x]$$
#
# - conv1: $k = 3$, stride $s = 1$, **2 zeros on the left**, `[M, T] → [De, T]`, then exact (erf) GELU;
# - conv2: $k = 3$, stride $s = 2$, **1 zero on the left**, `[De, T] → [De, T/2]`, then GELU.
#
# Nothing on the right: output $t$ never reads a future frame. (vLLM right-pads to complete the last stride
# window; for the even lengths the pipeline produces, that is nothing.)

# %%
def gelu(z):
    return 0.5 * z * (1 + erf(z / np.sqrt(2)))  # exact GELU, not the tanh approximation


def causal_conv1d(x, w, b, stride):
    """[Cin, T] -> [Cout, T // stride]; k - stride zeros on the left, none on the right."""
    cout, cin, k = w.shape
    xpad = np.concatenate([np.zeros((cin, k - stride)), x], axis=1)
    t_out = x.shape[1] // stride
    return b[:, None] + sum(w[:, :, j] @ xpad[:, j : j + stride * t_out : stride] for j in range(k))


cw = ckpt.conv(P)  # w1 [De, M, 3], b1, w2 [De, De, 3], b2
h1 = gelu(causal_conv1d(mel, cw.w1, cw.b1, stride=1))  # [De, T]
h2 = gelu(causal_conv1d(h1, cw.w2, cw.b2, stride=2))  # [De, S]
x0 = h2.T  # [S, De], the transformer's input

np.testing.assert_allclose(h1.T, taps["enc.conv1.out"], **TOL)
np.testing.assert_allclose(x0, taps["enc.conv.out"], **TOL)
np.testing.assert_allclose(x0, conv_stem(mel, cw, P)[0], **TOL)
print(f"conv1 {h1.shape}, conv2 {h2.shape}: T = {mel.shape[1]} mel frames -> S = {x0.shape[0]} encoder frames")

# %% [markdown]
# ### Receptive field, measured
#
# conv1 output $i$ reads mel $i-2..i$; conv2 output $j$ reads conv1 $2j-1..2j+1$; so encoder frame $j$ reads
# **mel frames $2j-3 .. 2j+1$**, and token $p$ (encoder frames $4p..4p+3$) reads mel $8p-3 .. 8p+7$.
# Below, each mel frame is perturbed in turn and we record which conv outputs move. Right: the same with
# symmetric padding (1 zero on each side for conv1, the `PaddingConfig1d::Explicit(1)` trap of §11.1),
# which reads one frame of the future.

# %%
def dependency(stem, n_mel=32):
    base = stem(mel[:, :n_mel])
    dep = np.zeros((base.shape[1], n_mel), bool)
    for m in range(n_mel):
        bumped = mel[:, :n_mel].copy()
        bumped[:, m] += 1.0
        dep[:, m] = np.abs(stem(bumped) - base).max(axis=0) > 0
    return dep  # [encoder frame j, mel frame m]


def stem(m):
    return gelu(causal_conv1d(gelu(causal_conv1d(m, cw.w1, cw.b1, 1)), cw.w2, cw.b2, 2))


def stem_symmetric(m):  # the mistake: conv1 padded (1, 1) instead of (2, 0)
    mp = np.concatenate([np.zeros((m.shape[0], 1)), m, np.zeros((m.shape[0], 1))], axis=1)
    c1 = gelu(cw.b1[:, None] + sum(cw.w1[:, :, j] @ mp[:, j : j + m.shape[1]] for j in range(3)))
    return gelu(causal_conv1d(c1, cw.w2, cw.b2, 2))


dep, dep_sym = dependency(stem), dependency(stem_symmetric)
j, m = np.indices(dep.shape)
np.testing.assert_array_equal(dep, (m >= 2 * j - 3) & (m <= 2 * j + 1))  # encoder frame j reads mel 2j-3..2j+1
tok = dep.reshape(-1, 4, dep.shape[1]).any(axis=1)  # [token p, mel frame]
assert all(np.flatnonzero(tok[p]).tolist() == list(range(max(8 * p - 3, 0), 8 * p + 8)) for p in range(len(tok)))
np.testing.assert_array_equal(dep_sym, (m >= 2 * j - 2) & (m <= 2 * j + 2))  # one frame into the future

fig, ax = plt.subplots(1, 2, figsize=(10, 3.3), sharey=True)
for a, d, title in [(ax[0], dep, "causal (reference): frame j reads mel 2j−3..2j+1"),
                    (ax[1], dep_sym, "symmetric padding (§11.1): reads mel 2j+2")]:
    a.imshow(d, cmap="Greys", aspect="auto", interpolation="nearest")
    a.plot(np.arange(16) * 2 + 1, np.arange(16), "r.", ms=4, label="mel 2j+1 = the newest frame allowed")
    a.set(title=title, xlabel="mel frame m")
ax[0].set_ylabel("encoder frame j")
ax[1].legend(loc="lower right", fontsize=8)
plt.tight_layout()

# %% [markdown]
# ## Sliding-window attention: the mask
#
# Key $j$ is visible to query $i$ iff $\;0 \le i - j < W$: causal, and at most $W$ keys **including the query
# itself** (W = 750 frames = 15 s in the real encoder; 16 in the tiny one). vLLM passes $(W-1, 0)$ to
# flash-attn; HF's mask is the same. A mask written as $|i - j| \le W$ on top of causal (§11.2) admits
# $W + 1$ keys: identical until frame $W$, then every query sees one extra, old key.

# %%
W = E.sliding_window
i, jj = np.indices((3 * W, 3 * W))
causal = jj <= i
mask = (i - jj >= 0) & (i - jj < W)  # the reference
off_by_one = (i - jj >= 0) & (i - jj <= W)  # W + 1 keys

pos = np.arange(3 * W)
np.testing.assert_array_equal(mask, window_mask(pos, pos, W))
np.testing.assert_array_equal(mask.sum(axis=1), np.minimum(pos + 1, W))  # keys per query

fig, ax = plt.subplots(1, 3, figsize=(11, 3.6), sharey=True)
for a, mk, title in [(ax[0], causal, "causal only"), (ax[1], mask, f"reference: 0 ≤ i−j < W = {W}"),
                     (ax[2], off_by_one.astype(int) + (off_by_one & ~mask), "off by one: i−j ≤ W (red: extra key)")]:
    a.imshow(mk, cmap="Greys" if mk.max() == 1 else "Reds", interpolation="nearest", vmin=0, vmax=mk.max())
    a.set(title=title, xlabel="key j")
ax[0].set_ylabel("query i")
plt.tight_layout()

# %% [markdown]
# ## RoPE, in brief
#
# Queries and keys are rotated by their absolute frame index (from the start of the padded stream):
# the checkpoint's q/k rows are **interleaved**, pair $(2i, 2i+1)$ turns by angle $\text{pos} \cdot
# \theta^{-2i/D_h}$, $\theta = 10^6$. Notebook 03 takes this apart.

# %%
def rope(x, pos, theta):
    """[S, H, Dh]: rotate the interleaved pairs (x[2i], x[2i+1]) by pos * theta^(-2i/Dh)."""
    dh = x.shape[-1]
    ang = pos[:, None, None] * theta ** (-np.arange(0, dh, 2) / dh)  # [S, 1, Dh/2]
    c, s = np.cos(ang), np.sin(ang)
    out = np.empty_like(x)
    out[..., 0::2] = x[..., 0::2] * c - x[..., 1::2] * s
    out[..., 1::2] = x[..., 0::2] * s + x[..., 1::2] * c
    return out

# %% [markdown]
# ## One encoder layer
#
# $$\begin{aligned}
# n &= \mathrm{RMSNorm}(x;\ \texttt{attention\_norm}) \\
# h &= x + W_o\,\mathrm{Attn}\big(\mathrm{RoPE}(W_q n + b_q),\ \mathrm{RoPE}(W_k n),\ W_v n + b_v\big) + b_o \\
# m &= \mathrm{RMSNorm}(h;\ \texttt{ffn\_norm}) \\
# y &= h + W_2\big(\mathrm{SiLU}(W_1 m) \odot W_3 m\big) + b_2
# \end{aligned}$$
#
# q, v, o and $w_2$ have biases; **k does not** (the checkpoint has no `wk.bias`; vLLM adds zeros, §11.5).
# Attention is plain multi-head (32 × 64 in the real model), scale $1/\sqrt{D_h}$, the mask above.

# %%
def rms_norm(x, w, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def encoder_layer(x, L):
    S, H, Dh = len(x), E.n_heads, E.head_dim
    pos = np.arange(S)
    n = rms_norm(x, L.attn_norm, E.norm_eps)
    q = rope((n @ L.wq.T + L.bq).reshape(S, H, Dh), pos, E.rope_theta)
    k = rope((n @ L.wk.T).reshape(S, H, Dh), pos, E.rope_theta)  # no k bias
    v = (n @ L.wv.T + L.bv).reshape(S, H, Dh)
    scores = np.einsum("ihd,jhd->hij", q, k) / np.sqrt(Dh)  # [H, S, S]
    d = pos[:, None] - pos[None, :]
    scores = np.where((d >= 0) & (d < E.sliding_window), scores, -np.inf)
    probs = np.exp(scores - scores.max(axis=-1, keepdims=True))
    probs /= probs.sum(axis=-1, keepdims=True)
    h = x + np.einsum("hij,jhd->ihd", probs, v).reshape(S, H * Dh) @ L.wo.T + L.bo
    m = rms_norm(h, L.ffn_norm, E.norm_eps)
    silu = lambda z: z / (1 + np.exp(-z))  # noqa: E731
    return h + (silu(m @ L.w1.T) * (m @ L.w3.T)) @ L.w2.T + L.b2, probs


x = x0
for layer in range(E.n_layers):
    x, probs = encoder_layer(x, ckpt.encoder_layer(layer, P))
    np.testing.assert_allclose(x, taps[f"enc.L{layer:02d}.out"], **TOL)
    if layer == 0:
        probs0 = probs
enc_out = rms_norm(x, ckpt.encoder_norm(P).weight, E.norm_eps)  # the final transformer.norm
np.testing.assert_allclose(enc_out, taps["enc.out"], **TOL)
print(f"{E.n_layers} layers + final norm match the oracle: encoder output {enc_out.shape}")

# %% [markdown]
# The attention weights of layer 0, head 0, around the start of the audio (frame 128 = token 32): each row
# spreads over at most W keys on or left of the diagonal; the first frames of the stream see fewer.

# %%
S = len(x0)
n0 = rms_norm(x0, ckpt.encoder_layer(0, P).attn_norm, E.norm_eps)
L0 = ckpt.encoder_layer(0, P)
q0 = rope((n0 @ L0.wq.T + L0.bq).reshape(S, E.n_heads, E.head_dim), np.arange(S), E.rope_theta)
k0 = rope((n0 @ L0.wk.T).reshape(S, E.n_heads, E.head_dim), np.arange(S), E.rope_theta)
np.testing.assert_allclose(probs0, attention_probs(q0, k0, window_mask(np.arange(S), np.arange(S), W)), **TOL)

fig, ax = plt.subplots(1, 2, figsize=(10.5, 3.8), layout="constrained")
top = probs0[0].max()
ax[0].imshow(probs0[0, :48, :48], cmap="viridis", interpolation="nearest", vmin=0, vmax=top)
ax[0].set(title="layer 0, head 0: frames 0–47 (stream start)", xlabel="key j", ylabel="query i")
lo = 128 - 24
im = ax[1].imshow(probs0[0, lo : lo + 48, lo : lo + 48], cmap="viridis", interpolation="nearest", vmin=0, vmax=top,
                  extent=(lo - 0.5, lo + 47.5, lo + 47.5, lo - 0.5))
ax[1].set(title="frames 104–151 (audio starts at 128)", xlabel="key j")
plt.colorbar(im, ax=ax);
