# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 4 · The adapter and the decoder input
#
# The encoder runs at 50 Hz (20 ms frames); the decoder at 12.5 Hz (80 ms tokens). The adapter glues four
# consecutive encoder frames into one vector and projects it to the decoder width; the decoder's input at
# position $p$ is that audio embedding **plus** the embedding of the token at $p$:
#
# $$x_p = A_p + \mathrm{Emb}[t_p]$$
#
# Then the rest of the decoder in one screen — GQA with a sliding window, ADA RMSNorm, tied LM head —
# checked against the oracle's logits (`oracle/adapter.py`, `oracle/decoder.py`, `oracle/forward.py`).
#
# Spec: `docs/MODEL.md` §4, §5, §6.3. Official code: HF `VoxtralRealtimeMultiModalProjector`,
# `VoxtralRealtimeModel.forward` (`inputs_embeds += audio_embeds`); vLLM `voxtral.py` `AudioLanguageAdapter`,
# `voxtral_realtime.py` `forward` ("sum pool text and audio embeddings").
#
# Shapes: S = 4N encoder frames, De encoder width, N positions, D decoder width, V vocabulary.

# %%
import os

CHECKPOINT = os.environ.get("VOXTRAL_CHECKPOINT")  # a checkpoint directory; None: the built-in tiny one
AUDIO = os.environ.get("VOXTRAL_AUDIO")  # an audio file; None: the built-in speech clip

import matplotlib.pyplot as plt
import numpy as np
from scipy.special import erf

from oracle import builtin
from oracle.adapter import adapter, group_frames
from oracle.audio import load_audio
from oracle.forward import forward
from oracle.pipeline import load_setup, offline_mel
from oracle.precision import FLOAT32, FLOAT64
from oracle.streaming import Model, generate_offline
from oracle.taps import Taps

setup = load_setup(CHECKPOINT or builtin.tiny_checkpoint())
ckpt, proto, tekken = setup.ckpt, setup.protocol, setup.tekken
cfg, D = ckpt.config, ckpt.config.decoder
# float64 is the truth mode; a real checkpoint runs in float32 (greedy decoding keeps the decoder resident: ~18 GB).
P = FLOAT64 if CHECKPOINT is None else FLOAT32
TOL = dict(rtol=1e-12, atol=1e-12) if P is FLOAT64 else dict(rtol=2e-3, atol=2e-3)

mel = offline_mel(load_audio(AUDIO or builtin.speech_clip()), proto, P)  # [M, 8N]
N = mel.shape[1] // 8
generated = generate_offline(Model(ckpt, P), mel, proto)  # greedy tokens (notebook 05)
tokens = np.concatenate([proto.prompt, generated])[:N]  # the token fed at each position p
taps = Taps("enc.out", "adapter.*", "dec.embed", "dec.in", "logits")
logits_ref = forward(ckpt, mel, tokens, proto.delay_tokens, P, tap=taps)  # [N, V]
enc = taps["enc.out"]  # [S, De], notebook 02
print(f"encoder output {enc.shape} -> N = {N} positions; {len(generated)} generated tokens")

# %% [markdown]
# ## Grouping four frames
#
# Row-major reshape `[4N, De] → [N, 4·De]`: row $p$ is frames $4p, 4p+1, 4p+2, 4p+3$ side by side, in that
# order (HF `reshape`, vLLM's pooling). Reshaping the channel-first `[De, 4N]` layout that the convs
# produce, without transposing it first, gives an array of the right shape and the wrong contents.

# %%
grouped = np.concatenate([enc[r::4] for r in range(4)], axis=1)  # [N, 4 De]: frame 4p+r in block r
np.testing.assert_array_equal(grouped, enc.reshape(N, 4 * enc.shape[1]))
np.testing.assert_array_equal(grouped, group_frames(enc, cfg.downsample_factor))
np.testing.assert_array_equal(grouped, taps["adapter.in"])
wrong = np.ascontiguousarray(enc.T).reshape(N, -1)  # the slip: reshaping the channel-first [De, 4N] conv layout
print(f"reshaping [De, 4N] instead of [4N, De]: same shape {wrong.shape}, max |diff| {np.abs(wrong - grouped).max():.2f}")

frame_of = np.arange(4 * 6).reshape(6, 4)  # which encoder frame fills block r of row p
fig, ax = plt.subplots(figsize=(5, 2.6))
ax.imshow(frame_of % 4, cmap="Pastel1", aspect="auto")
for (p, r), f in np.ndenumerate(frame_of):
    ax.text(r, p, f"frame {f}", ha="center", va="center", fontsize=9)
ax.set(title="adapter input row p = [frame 4p | 4p+1 | 4p+2 | 4p+3]", xticks=range(4),
       xticklabels=[f"channels {r}·De..{r + 1}·De" for r in range(4)], ylabel="position p")
ax.tick_params(axis="x", labelsize=7)
plt.tight_layout()

# %% [markdown]
# ## The adapter
#
# $$A = W_\text{out}\,\mathrm{GELU}(W_\text{in}\,\text{row}),\qquad W_\text{in}\ [D, 4D_e],\ W_\text{out}\ [D, D]$$
#
# (`audio_language_projection.0` and `.2`, no biases, exact GELU.)

# %%
def gelu(z):
    return 0.5 * z * (1 + erf(z / np.sqrt(2)))


aw = ckpt.adapter(P)
A = gelu(grouped @ aw.w_in.T) @ aw.w_out.T  # [N, D]
np.testing.assert_allclose(A, taps["adapter.out"], **TOL)
np.testing.assert_allclose(A, adapter(enc, aw, cfg.downsample_factor, P), **TOL)
print(f"A {A.shape}")

# %% [markdown]
# ## The decoder input $x_p = A_p + \mathrm{Emb}[t_p]$
#
# A plain sum, no scaling. Every position has both parts: the audio of its own 80 ms and a token —
# BOS at 0, `[STREAMING_PAD]` at 1..38 (the prompt), then **the token predicted at the previous
# position**. The embedding table is also the LM head (tied).

# %%
emb = P.weight(ckpt.embedding_table())  # [V, D]
x = A + emb[tokens]  # [N, D]
np.testing.assert_allclose(emb[tokens], taps["dec.embed"], **TOL)
np.testing.assert_allclose(x, taps["dec.in"], **TOL)

kind = np.select([tokens == proto.bos, tokens == proto.pad, tokens == tekken.streaming_word_id, tokens < 1000],
                 [0, 1, 2, 3], 4)
pred = np.argmax(logits_ref, axis=1)  # what each position predicts; fed back at p + 1 once past the prompt
fig, ax = plt.subplots(3, 1, figsize=(11, 5.2), sharex=True, gridspec_kw={"height_ratios": [1.2, 0.5, 1]})
ax[0].plot(np.linalg.norm(A, axis=1), ".-", label="‖A_p‖ audio")
ax[0].plot(np.linalg.norm(emb[tokens], axis=1), ".-", label="‖Emb[t_p]‖ token")
ax[0].plot(np.abs(A - A[20]).max(axis=1), ".-", lw=0.8, label="max |A_p − A_20| (silence is one vector)")
ax[0].axvspan(-0.5, 31.5, color="c", alpha=0.15)
ax[0].axvspan(N - proto.right_pad_tokens - 0.5, N - 0.5, color="c", alpha=0.15)
ax[0].legend(fontsize=8, ncol=3, loc="upper center")
ax[1].imshow(kind[None], aspect="auto", cmap="tab10", vmin=0, vmax=9, interpolation="nearest")
ax[1].set(yticks=[], title="token fed at p: blue BOS, orange [STREAMING_PAD], green [STREAMING_WORD], purple text",
          )
ax[1].title.set_fontsize(9)
ax[2].plot(np.arange(N), tokens, "o", ms=3, label="token fed t_p")
ax[2].plot(np.arange(N), pred, "x", ms=4, label="argmax of logits at p")
ax[2].axvline(len(proto.prompt) - 1, color="g", lw=1)
ax[2].set(xlabel="position p   (real time (p − 32)·80 ms)", ylabel="token id")
ax[2].legend(fontsize=8)
plt.tight_layout()
assert np.array_equal(pred[len(proto.prompt) - 1 : -1], tokens[len(proto.prompt) :])  # fed back one step later

# %% [markdown]
# ## The rest of the decoder, full sequence
#
# $$\begin{aligned}
# h &= x + W_o\,\mathrm{Attn}\big(\mathrm{RoPE}(W_q n),\ \mathrm{RoPE}(W_k n),\ W_v n\big), & n &= \mathrm{RMSNorm}(x;\ \texttt{attention\_norm}) \\
# y &= h + W_2\big(\mathrm{SiLU}(W_1 m) \odot W_3 m\big), & m &= \mathrm{RMSNorm}(h;\ \texttt{ffn\_norm}) \odot (1 + g) \\
# \text{logits} &= \mathrm{RMSNorm}(y_\text{last};\ \texttt{norm})\ \mathrm{Emb}^\top
# \end{aligned}$$
#
# No biases. Grouped-query attention: H query heads share K kv heads, **query head $h$ reads kv head
# $\lfloor h/(H/K) \rfloor$** (`np.repeat`, HF `repeat_kv`; `np.tile` is the classic mistake). Causal with a
# window of W keys including self (8192 in the real model, 8 in the tiny one); RoPE as in notebook 03 with
# positions counted from BOS.

# %%
def rms_norm(x, w, eps=D.norm_eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def rope(x, pos, theta=D.rope_theta):
    dh = x.shape[-1]
    phi = pos[:, None, None] * theta ** (-np.arange(0, dh, 2) / dh)
    c, s = np.cos(phi), np.sin(phi)
    out = np.empty_like(x)
    out[..., 0::2] = x[..., 0::2] * c - x[..., 1::2] * s
    out[..., 1::2] = x[..., 0::2] * s + x[..., 1::2] * c
    return out


def time_embedding(t, dim, theta=10000.0):
    f = np.exp(-np.log(theta) * np.arange(dim // 2) / (dim // 2))
    return np.concatenate([np.cos(t * f), np.sin(t * f)])


def decoder_layer(x, L, scale):
    n_pos, H, K, Dh = len(x), D.n_heads, D.n_kv_heads, D.head_dim
    pos = np.arange(n_pos)
    n = rms_norm(x, L.attn_norm)
    q = rope((n @ L.wq.T).reshape(n_pos, H, Dh), pos)
    k = np.repeat(rope((n @ L.wk.T).reshape(n_pos, K, Dh), pos), H // K, axis=1)  # kv head h // (H/K)
    v = np.repeat((n @ L.wv.T).reshape(n_pos, K, Dh), H // K, axis=1)
    scores = np.einsum("ihd,jhd->hij", q, k) / np.sqrt(Dh)
    d = pos[:, None] - pos[None, :]
    scores = np.where((d >= 0) & (d < D.sliding_window), scores, -np.inf)
    probs = np.exp(scores - scores.max(axis=-1, keepdims=True))
    probs /= probs.sum(axis=-1, keepdims=True)
    h = x + np.einsum("hij,jhd->ihd", probs, v).reshape(n_pos, H * Dh) @ L.wo.T
    m = rms_norm(h, L.ffn_norm) * scale  # ADA RMSNorm
    return h + ((m @ L.w1.T) / (1 + np.exp(-(m @ L.w1.T))) * (m @ L.w3.T)) @ L.w2.T


t_cond = time_embedding(proto.delay_tokens, D.dim)
y = x
for i in range(D.n_layers):
    L = ckpt.decoder_layer(i, P)
    y = decoder_layer(y, L, 1 + L.ada_up @ gelu(L.ada_down @ t_cond))
logits = rms_norm(y, ckpt.decoder_norm(P).weight) @ emb.T  # [N, V], tied head

np.testing.assert_allclose(logits, taps["logits"], **TOL)
np.testing.assert_allclose(logits, logits_ref, **TOL)
print(f"logits {logits.shape} match the oracle; max |logit| {np.abs(logits).max():.2f}")
