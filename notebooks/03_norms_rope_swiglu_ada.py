# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 3 · RMSNorm, RoPE, SwiGLU, and the delay-conditioned ADA RMSNorm
#
# The small pieces every layer is made of, each in a few lines of numpy, checked against the oracle
# (`oracle/layers.py`, `oracle/weights.py`, `oracle/decoder.py`) and against the intermediate tensors of a
# real forward pass (taps).
#
# Spec: `docs/MODEL.md` §1.4–1.5 (q/k layout), §3.2, §5.2–5.3, §9, §11.4, §11.6, §11.7. Official code:
# HF `modeling_voxtral_realtime.py` (`VoxtralRealtimeRMSNorm`, `VoxtralRealtimeTimeEmbedding`,
# `VoxtralRealtimeTextDecoderLayer`, `convert_voxtral_realtime_weights_to_hf.py` `permute`); vLLM
# `whisper_causal.py` (`is_neox_style=False`), `mistral.py` (`MistralDecoderLayer`, `maybe_remap_mistral`).

# %%
import os

CHECKPOINT = os.environ.get("VOXTRAL_CHECKPOINT")  # a checkpoint directory; None: the built-in tiny one
AUDIO = os.environ.get("VOXTRAL_AUDIO")  # an audio file; None: the built-in speech clip

import matplotlib.pyplot as plt
import ml_dtypes
import numpy as np
from scipy.special import erf

from oracle import builtin
from oracle import layers as ref
from oracle.audio import load_audio
from oracle.forward import forward
from oracle.pipeline import load_setup, offline_mel
from oracle.precision import FLOAT64
from oracle.taps import Taps
from oracle.weights import permute_rows, unpermute_rows

setup = load_setup(CHECKPOINT or builtin.tiny_checkpoint())
ckpt, proto = setup.ckpt, setup.protocol
E, D = ckpt.config.encoder, ckpt.config.decoder
P = FLOAT64
TOL = dict(rtol=1e-12, atol=1e-12)

mel = offline_mel(load_audio(AUDIO or builtin.speech_clip()), proto, P)
N = mel.shape[1] // 8
tokens = np.concatenate([proto.prompt, np.full(N - len(proto.prompt), proto.pad)])  # any ids do for layer checks
taps = Taps("enc.conv.out", "enc.L00.*", "dec.in", "dec.t_cond", "dec.L*.ada_scale", "dec.L00.*")
forward(ckpt, mel, tokens, proto.delay_tokens, P, tap=taps)
L0e, L0d = ckpt.encoder_layer(0, P), ckpt.decoder_layer(0, P)
print(f"encoder: De {E.dim}, {E.n_heads} heads x {E.head_dim};  decoder: D {D.dim}, {D.n_heads} q / {D.n_kv_heads} kv heads x {D.head_dim}")

# %% [markdown]
# ## RMSNorm
#
# $$\mathrm{RMSNorm}(x; w) = \frac{x}{\sqrt{\tfrac1D \sum_i x_i^2 + \varepsilon}} \odot w,\qquad \varepsilon = 10^{-5}$$
#
# No mean subtraction, no bias, **no $(1 + w)$ offset** (Gemma-style), and $\varepsilon$ inside the square
# root. Every norm in the model is this one: encoder pre-attention/pre-FFN/final, decoder likewise.

# %%
def rms_norm(x, w, eps=1e-5):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


x_enc = taps["enc.conv.out"]  # [S, De], encoder layer 0's input
np.testing.assert_allclose(rms_norm(x_enc, L0e.attn_norm, E.norm_eps), taps["enc.L00.attn_norm"], **TOL)
np.testing.assert_allclose(rms_norm(taps["dec.in"], L0d.attn_norm, D.norm_eps), taps["dec.L00.attn_norm"], **TOL)
np.testing.assert_allclose(rms_norm(x_enc, L0e.attn_norm), ref.rms_norm(x_enc, L0e.attn_norm, 1e-5), **TOL)

good = rms_norm(x_enc, L0e.attn_norm)
variants = {
    "(1 + w) offset": rms_norm(x_enc, 1 + L0e.attn_norm),
    "eps outside sqrt": x_enc / (np.sqrt(np.mean(x_enc**2, -1, keepdims=True)) + 1e-5) * L0e.attn_norm,
    "LayerNorm (mean removed)": rms_norm(x_enc - x_enc.mean(-1, keepdims=True), L0e.attn_norm),
}
for name, v in variants.items():
    print(f"{name:>26}: max |diff| from RMSNorm = {np.abs(v - good).max():.2e}")

# %% [markdown]
# ## RoPE: interleaved pairs, and why rotate-half is the same rotation
#
# Each head vector $x \in \mathbb{R}^{D_h}$ is split into $D_h/2$ pairs and pair $i$ is rotated by
# $\phi_i = \text{pos} \cdot \theta^{-2i/D_h}$ ($\theta = 10^6$ in both encoder and decoder).
# **Which two coordinates form pair $i$ is a property of the weight layout**, not of the model:
#
# - Mistral's consolidated checkpoint (what the oracle loads): pair $i$ = rows $(2i,\ 2i+1)$ of $W_q$/$W_k$
#   within each head — "interleaved", GPT-J style (vLLM encoder `is_neox_style=False`).
# - HF's converted checkpoint: pair $i$ = rows $(i,\ i + D_h/2)$ — "rotate-half", NeoX style; HF's converter
#   reorders each head's rows to *all even rows, then all odd rows*.
#
# So the rotation matrices differ only by that permutation $\Pi$: $R_\text{half} = \Pi\, R_\text{interleaved}\, \Pi^\top$.

# %%
def rope_interleaved(x, pos, theta):
    """[S, H, Dh]: pairs (2i, 2i+1)."""
    dh = x.shape[-1]
    phi = pos[:, None, None] * theta ** (-np.arange(0, dh, 2) / dh)  # [S, 1, Dh/2]
    c, s = np.cos(phi), np.sin(phi)
    out = np.empty_like(x)
    out[..., 0::2] = x[..., 0::2] * c - x[..., 1::2] * s
    out[..., 1::2] = x[..., 0::2] * s + x[..., 1::2] * c
    return out


def rope_rotate_half(x, pos, theta):
    """[S, H, Dh]: pairs (i, i + Dh/2)."""
    dh = x.shape[-1]
    phi = pos[:, None, None] * theta ** (-np.arange(0, dh, 2) / dh)
    c, s = np.cos(phi), np.sin(phi)
    a, b = x[..., : dh // 2], x[..., dh // 2 :]
    return np.concatenate([a * c - b * s, a * s + b * c], axis=-1)


def as_matrix(rope, dh, pos, theta):
    """The [Dh, Dh] matrix R with rope(x) = R x."""
    return rope(np.eye(dh)[:, None, :], np.full(dh, pos), theta)[:, 0, :].T


dh8 = 8
perm = np.concatenate([np.arange(0, dh8, 2), np.arange(1, dh8, 2)])  # HF row k = Mistral row perm[k]
Pi = np.eye(dh8)[perm]
R_int = as_matrix(rope_interleaved, dh8, 3.0, 10.0)
R_half = as_matrix(rope_rotate_half, dh8, 3.0, 10.0)
np.testing.assert_allclose(R_half, Pi @ R_int @ Pi.T, rtol=0, atol=1e-15)

fig, ax = plt.subplots(1, 3, figsize=(11, 3.8))
for a, Rm, title in [(ax[0], R_int, "interleaved: pairs (2i, 2i+1)"), (ax[1], Pi, "Π: even rows, then odd rows"),
                     (ax[2], R_half, "rotate-half = Π R Πᵀ: pairs (i, i+4)")]:
    a.imshow(np.where(np.abs(Rm) > 1e-12, Rm, np.nan), cmap="coolwarm", vmin=-1, vmax=1)
    a.set(title=title, xticks=range(dh8), yticks=range(dh8))
    for (r, c_), v in np.ndenumerate(Rm):
        if abs(v) > 1e-12 and Rm is not Pi:
            pair = (c_ // 2) if Rm is R_int else (c_ % (dh8 // 2))
            label = f"c{pair}" if r == c_ else (f"−s{pair}" if v < 0 else f"s{pair}")
            a.text(c_, r, label, ha="center", va="center", fontsize=8)
plt.suptitle("RoPE at pos 3 for Dh = 8 (θ = 10 for visible angles): cᵢ = cos φᵢ, sᵢ = sin φᵢ", fontsize=10)
plt.tight_layout()

# %% [markdown]
# On the model's weights: permute each head's q/k rows into HF order and apply rotate-half, and you get the
# same q, permuted the same way — and therefore **the same attention scores** $q \cdot k$, since a
# permutation applied to both vectors leaves their dot product unchanged. HF's inverse map (§1.5):
# consolidated row $2i$ = HF row $i$, row $2i+1$ = HF row $i + D_h/2$.

# %%
H, Dh = E.n_heads, E.head_dim
n = taps["enc.L00.attn_norm"]  # [S, De]
S = len(n)
pos = np.arange(S)
head_perm = (np.arange(H)[:, None] * Dh + np.concatenate([np.arange(0, Dh, 2), np.arange(1, Dh, 2)])).ravel()
wq_hf, bq_hf, wk_hf = L0e.wq[head_perm], L0e.bq[head_perm], L0e.wk[head_perm]  # the converter's permutation
np.testing.assert_array_equal(wq_hf, permute_rows(L0e.wq, H, Dh))
np.testing.assert_array_equal(unpermute_rows(wq_hf, H, Dh), L0e.wq)

q = rope_interleaved((n @ L0e.wq.T + L0e.bq).reshape(S, H, Dh), pos, E.rope_theta)
k = rope_interleaved((n @ L0e.wk.T).reshape(S, H, Dh), pos, E.rope_theta)
q_hf = rope_rotate_half((n @ wq_hf.T + bq_hf).reshape(S, H, Dh), pos, E.rope_theta)
k_hf = rope_rotate_half((n @ wk_hf.T).reshape(S, H, Dh), pos, E.rope_theta)

np.testing.assert_allclose(q, taps["enc.L00.q"], **TOL)  # the oracle's rotated queries
np.testing.assert_allclose(k, taps["enc.L00.k"], **TOL)
cos, sin = ref.rope_angles(pos, Dh, E.rope_theta, np.float64)
np.testing.assert_allclose(q, ref.apply_rope((n @ L0e.wq.T + L0e.bq).reshape(S, H, Dh), cos, sin), **TOL)
np.testing.assert_allclose(q_hf, q.reshape(S, H, Dh)[..., head_perm[:Dh]], **TOL)  # same q, permuted
scores = np.einsum("ihd,jhd->hij", q, k)
np.testing.assert_allclose(np.einsum("ihd,jhd->hij", q_hf, k_hf), scores, **TOL)  # same scores
print("interleaved on Mistral rows == rotate-half on HF rows: identical attention scores")

# %% [markdown]
# The porting mistake (§11.4) is mixing the two: rotate-half applied to the Mistral rows. Position 0 is
# the identity rotation, so it still matches there — and nowhere else.

# %%
q_wrong = rope_rotate_half((n @ L0e.wq.T + L0e.bq).reshape(S, H, Dh), pos, E.rope_theta)
np.testing.assert_allclose(q_wrong, ref.rope_rotate_half((n @ L0e.wq.T + L0e.bq).reshape(S, H, Dh), cos, sin), **TOL)
err = np.abs(q_wrong - q).max(axis=(1, 2))
assert err[0] < 1e-12 and err[1:].min() > 1e-3

fig, ax = plt.subplots(figsize=(7, 2.4))
ax.semilogy(pos[:64], np.maximum(err[:64], 1e-17), ".-")
ax.set(title="rotate-half on interleaved weights: max |q error| per position", xlabel="encoder frame")
plt.tight_layout()

# %% [markdown]
# ### Angles in float32
#
# The references build $\text{inv\_freq}_i$ and $\phi = \text{pos} \cdot \text{inv\_freq}$ in float32 (§3.2, §9).
# The rounding of inv_freq is multiplied by the position, so the float32 angle drifts from the exact one as
# the stream gets longer: at decoder position 131072 it is off by milliradians. A port that wants to match
# a float32 reference bit-for-bit computes the angles the same way (`oracle.layers.rope_angles`).

# %%
positions = np.unique(np.logspace(0, np.log10(131072), 60).astype(np.int64))
exact = positions[:, None] * D.rope_theta ** (-np.arange(0, D.head_dim, 2) / D.head_dim)
exponent32 = np.arange(0, D.head_dim, 2, dtype=np.float32) / np.float32(D.head_dim)
inv32 = np.float32(1) / np.float32(D.rope_theta) ** exponent32
phi32 = positions.astype(np.float32)[:, None] * inv32  # as HF/vLLM compute it
cos32, _ = ref.rope_angles(positions, D.head_dim, D.rope_theta, np.float32)
np.testing.assert_array_equal(np.cos(phi32), cos32)

fig, ax = plt.subplots(figsize=(7, 2.6))
ax.loglog(positions, np.abs(phi32.astype(np.float64) - exact).max(axis=1), ".-")
ax.set(title=f"max over pairs |φ_float32 − φ_exact| (decoder, Dh = {D.head_dim})", xlabel="position", ylabel="radians")
plt.tight_layout()

# %% [markdown]
# ## SwiGLU
#
# $$\mathrm{MLP}(m) = W_2\big(\mathrm{SiLU}(W_1 m) \odot W_3 m\big) + b_2,\qquad \mathrm{SiLU}(z) = z\,\sigma(z)$$
#
# $W_1$ is the gate, $W_3$ the up projection, $W_2$ the down projection. The encoder's $W_2$ has a bias (its
# only MLP bias); the decoder has none. The activation is SiLU in **both** — HF's encoder config says
# `activation_function: "gelu"`, but that field is unused (§3.2). GELU (exact, erf) appears only after the
# convs, in the adapter and in the ADA MLP.

# %%
def silu(z):
    return z / (1 + np.exp(-z))


def gelu(z):
    return 0.5 * z * (1 + erf(z / np.sqrt(2)))


def swiglu(m, w1, w3, w2, b2=None):
    y = (silu(m @ w1.T) * (m @ w3.T)) @ w2.T
    return y if b2 is None else y + b2


h_enc = x_enc + taps["enc.L00.attn.out"]  # after the attention residual
m_enc = rms_norm(h_enc, L0e.ffn_norm, E.norm_eps)
np.testing.assert_allclose(swiglu(m_enc, L0e.w1, L0e.w3, L0e.w2, L0e.b2), taps["enc.L00.mlp.out"], **TOL)
np.testing.assert_allclose(swiglu(m_enc, L0e.w1, L0e.w3, L0e.w2, L0e.b2),
                           ref.swiglu(m_enc, L0e.w1, L0e.w3, L0e.w2, L0e.b2), **TOL)
m_dec = taps["dec.L00.ffn_norm"]
np.testing.assert_allclose(swiglu(m_dec, L0d.w1, L0d.w3, L0d.w2), taps["dec.L00.mlp.out"], **TOL)

z = np.linspace(-5, 3, 400)
fig, ax = plt.subplots(figsize=(6, 2.6))
ax.plot(z, silu(z), label="SiLU z·σ(z): the MLP gate")
ax.plot(z, gelu(z), "--", label="exact GELU: convs, adapter, ADA")
ax.plot(z, 0.5 * z * (1 + np.tanh(np.sqrt(2 / np.pi) * (z + 0.044715 * z**3))), ":", label="tanh GELU: never")
ax.legend(fontsize=8)
ax.grid(alpha=0.3)
plt.tight_layout()

# %% [markdown]
# ## The time embedding $t_\text{cond}$
#
# The decoder is told its transcription delay $t = n_\text{delay}$ (6 tokens = 480 ms by default) through a
# sinusoidal embedding of width $D$ (3072 in the real model):
#
# $$f_j = 10000^{-j/(D/2)},\quad j = 0..\tfrac D2 - 1,\qquad t_\text{cond} = \big[\cos(t f_0), \dots, \cos(t f_{D/2-1}),\ \sin(t f_0), \dots, \sin(t f_{D/2-1})\big]$$
#
# First half cosines, second half sines; nothing about time is learned except the per-layer ADA MLP below.

# %%
def time_embedding(t, dim, theta=10000.0):
    f = np.exp(-np.log(theta) * np.arange(dim // 2) / (dim // 2))
    return np.concatenate([np.cos(t * f), np.sin(t * f)])


t_cond = time_embedding(proto.delay_tokens, D.dim)
np.testing.assert_allclose(t_cond, taps["dec.t_cond"], **TOL)
np.testing.assert_allclose(t_cond, ref.time_embedding(proto.delay_tokens, D.dim, np.float64), **TOL)

fig, ax = plt.subplots(figsize=(9, 2.6))
for t in (1, 6, 30):
    ax.plot(time_embedding(t, 3072), lw=0.8, label=f"t = {t} ({80 * t} ms)")
ax.axvline(1536, color="k", lw=0.5)
ax.set(title="t_cond for D = 3072: cos half | sin half", xlabel="component")
ax.legend(fontsize=8, loc="lower left")
plt.tight_layout()

# %% [markdown]
# Under BF16 both references cast `inv_freq` to the model dtype **before** multiplying (HF
# `VoxtralRealtimeTimeEmbedding.forward`: `inv_freq.to(dtype=time_tensor.dtype)`), so $f_j$, $t f_j$ and the
# cos/sin are each rounded to BF16. For $D = 3072$ that moves $t_\text{cond}$ by up to 0.024 from float32 —
# ten times more than rounding the float32 result once (§5.3, §11.7).

# %%
bf16 = ml_dtypes.bfloat16
f32 = np.exp(-np.float32(np.log(10000.0)) * np.arange(1536, dtype=np.float32) / np.float32(1536))
tf = (np.float32(6) * f32.astype(bf16).astype(np.float32)).astype(bf16).astype(np.float32)  # bf16 product
t_bf16_ref = np.concatenate([np.cos(tf), np.sin(tf)]).astype(bf16).astype(np.float32)
t_f32 = np.concatenate([np.cos(np.float32(6) * f32), np.sin(np.float32(6) * f32)])
print(f"BF16 reference t_cond vs float32: max {np.abs(t_bf16_ref - t_f32).max():.4f};"
      f" float32 rounded once to BF16: max {np.abs(t_f32.astype(bf16).astype(np.float32) - t_f32).max():.4f}")

# %% [markdown]
# ## ADA RMSNorm: where the delay enters
#
# Each decoder layer turns $t_\text{cond}$ into a per-channel scale through a 32-wide bottleneck
# (`ada_rms_norm_t_cond.0` `[32, D]`, `.2` `[D, 32]`, no biases):
#
# $$g = W_\text{up}\,\mathrm{GELU}(W_\text{down}\, t_\text{cond}) \in \mathbb{R}^D$$
#
# and multiplies the **pre-FFN norm's output** by $(1 + g)$ — after its weight, before the MLP. Not the
# attention norm, not the residual (§5.2, §11.6):
#
# ```
# x ─┬─ RMSNorm(attention_norm) ─ GQA attention ─┐
#    └───────────────────────────────────────────+── h ─┬─ RMSNorm(ffn_norm) ⊙ (1+g) ─ SwiGLU ─┐
#                                                       └──────────────────────────────────────+── y
# ```
#
# $g$ depends only on the delay, so $(1 + g)$ is one vector per layer, computed once.

# %%
scales = []
for i in range(D.n_layers):
    Li = ckpt.decoder_layer(i, P)
    scale = 1 + Li.ada_up @ gelu(Li.ada_down @ t_cond)  # [D]
    np.testing.assert_allclose(scale, taps[f"dec.L{i:02d}.ada_scale"][0], **TOL)
    np.testing.assert_allclose(scale, ref.ada_scale(t_cond, Li.ada_down, Li.ada_up), **TOL)
    scales.append(scale)

h_dec = taps["dec.in"] + taps["dec.L00.attn.out"]  # decoder layer 0 after attention
m = rms_norm(h_dec, L0d.ffn_norm, D.norm_eps) * scales[0]  # ADA: after the norm and its weight
np.testing.assert_allclose(m, taps["dec.L00.ffn_norm"], **TOL)
print(f"ADA scale of layer 0 ranges over [{scales[0].min():.3f}, {scales[0].max():.3f}]")

fig, ax = plt.subplots(figsize=(9, 2.6))
for i, sc in enumerate(scales[:4]):
    ax.plot(sc, lw=0.8, label=f"layer {i}")
ax.axhline(1, color="k", lw=0.5)
ax.set(title=f"(1 + g) per channel, t = {proto.delay_tokens}", xlabel="channel")
ax.legend(fontsize=8)
plt.tight_layout()
