# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 6 · Streaming equals offline (and where vLLM's realtime framing departs)
#
# A live session receives audio in chunks of any size and emits each token as soon as the audio it
# depends on has arrived. Done right (HF's streaming recipe, the oracle's `offline` framing) it is
# **mathematically the offline model**: same mel frames, same conv outputs, same attention, same tokens.
# This notebook rebuilds the two ingredients that make that true — per-token mel windows on the offline grid,
# and a conv stem with carried state — then feeds an `oracle.streaming.StreamingSession` irregular chunks,
# watches its caches stay within their windows, and measures vLLM's realtime framing, whose mel grid sits
# 40 samples early.
#
# Spec: `docs/MODEL.md` §2.3, §3.1 (conv state), §6.5, §11.10. Official code: HF
# `processing_voxtral_realtime.py` and `VoxtralRealtimeConv1dPaddingCache`; vLLM `voxtral_realtime.py`
# `VoxtralRealtimeBuffer` (look-back 840, look-ahead 40).

# %%
import os

CHECKPOINT = os.environ.get("VOXTRAL_CHECKPOINT")  # a checkpoint directory; None: the built-in tiny one
AUDIO = os.environ.get("VOXTRAL_AUDIO")  # an audio file; None: the built-in speech clip

import matplotlib.pyplot as plt
import numpy as np
from scipy.special import erf

from oracle import builtin
from oracle.audio import load_audio, quantize_int16
from oracle.mel import log_mel
from oracle.pipeline import load_setup, offline_mel
from oracle.precision import FLOAT32, FLOAT64
from oracle.streaming import Model, StreamingSession, generate_offline
from oracle.taps import Taps

setup = load_setup(CHECKPOINT or builtin.tiny_checkpoint())
ckpt, proto = setup.ckpt, setup.protocol
cfg = ckpt.config
P = FLOAT64 if CHECKPOINT is None else FLOAT32  # a real checkpoint: float32 keeps the resident model at ~18 GB
TOL = dict(rtol=1e-12, atol=1e-12) if P is FLOAT64 else dict(rtol=1e-4, atol=1e-4)
model = Model(ckpt, P)

# The offline reference paths quantize to int16 and the realtime ones do not: feed int16-exact audio
# to both so they see the same samples (§2.1, §11.8). The built-in clip already is.
x = quantize_int16(load_audio(AUDIO or builtin.speech_clip()))
xp = proto.pad_offline(x)  # the offline padded stream (notebook 1)
mel = offline_mel(x, proto, P)  # [M, 8N]
N = mel.shape[1] // 8
offline_tokens = generate_offline(model, mel, proto)
SPT = proto.samples_per_token  # 1280
print(f"{len(x)} samples, N = {N} positions, {len(offline_tokens)} offline tokens")

# %% [markdown]
# ## Mel windows on the offline grid
#
# Offline, frame $m$ is centred on padded sample $160m$ and reads $[160m - 200,\ 160m + 200)$. Token $p$
# owns frames $8p .. 8p+7$, so its frames can be computed on their own, without centring, from the slice
# $[1280p - 200,\ 1280p + 1320)$ — 1520 samples — as soon as sample $1280p + 1320$ has arrived (40 samples
# of look-ahead). Consecutive slices overlap by 240 samples. Before sample 0 the offline STFT reflects the
# left pad: zeros either way.

# %%
def token_mel(stream, p):
    """The 8 mel frames of token p from its own 1520 samples (center=False: whole windows only)."""
    lo, hi = SPT * p - 200, SPT * p + 1320
    window = np.concatenate([np.zeros(max(0, -lo)), stream[max(lo, 0) : hi]])
    window = np.concatenate([window, np.zeros(hi - lo - len(window))])  # past the end: the zero right pad
    return log_mel(window.astype(P.dtype), P.dtype, center=False)  # [M, 8]


streamed_mel = np.concatenate([token_mel(xp, p) for p in range(N)], axis=1)
np.testing.assert_allclose(streamed_mel, mel, **TOL)

fig, ax = plt.subplots(figsize=(10, 1.9))
for p in range(3):
    ax.add_patch(plt.Rectangle((SPT * p - 200, p - 0.3), 1520, 0.6, color=f"C{p}", alpha=0.35))
    ax.add_patch(plt.Rectangle((SPT * p, p - 0.3), SPT, 0.6, fill=False, ec=f"C{p}", lw=1.5))
    ax.text(SPT * p + 640, p, f"token {p}: [{SPT * p - 200}, {SPT * p + 1320})", ha="center", va="center", fontsize=8)
ax.set(xlim=(-400, 3 * SPT + 200), ylim=(-0.6, 2.6), yticks=[], xlabel="padded sample")
ax.set_title("each token's mel frames read 1520 samples: its own 1280 (outlined), 200 before, 40 after", fontsize=9)
plt.tight_layout()

# %% [markdown]
# ## The conv stem with carried state
#
# conv1 needs the 2 previous mel frames and conv2 the previous conv1 frame (left pad = kernel − stride).
# Carry exactly those between chunks — zeros at stream start — and chunked convs equal the offline ones.
# Chunks of 8 mel frames keep conv2's stride-2 phase aligned.

# %%
def gelu(z):
    return 0.5 * z * (1 + erf(z / np.sqrt(2)))


def conv(x, w, b, stride, history):
    """[Cin, T] with [Cin, k - stride] frames of history -> [Cout, T // stride]."""
    xpad = np.concatenate([history, x], axis=1)
    t_out = x.shape[1] // stride
    return b[:, None] + sum(w[:, :, j] @ xpad[:, j : j + stride * t_out : stride] for j in range(w.shape[2]))


cw = model.conv()
mel_tail, c1_tail = np.zeros((mel.shape[0], 2), P.dtype), np.zeros((cfg.encoder.dim, 1), P.dtype)
chunks = []
for p in range(N):
    m8 = streamed_mel[:, 8 * p : 8 * p + 8]
    h1 = gelu(conv(m8, cw.w1, cw.b1, 1, mel_tail))  # [De, 8]
    chunks.append(gelu(conv(h1, cw.w2, cw.b2, 2, c1_tail)))  # [De, 4]
    mel_tail, c1_tail = np.concatenate([mel_tail, m8], 1)[:, -2:], np.concatenate([c1_tail, h1], 1)[:, -1:]

taps = Taps("enc.conv.out")
generate_offline(model, mel, proto, tap=taps)
np.testing.assert_allclose(np.concatenate(chunks, axis=1).T, taps["enc.conv.out"], **TOL)
print("token-by-token conv stem == offline conv stem")

# %% [markdown]
# ## A session fed irregular chunks
#
# From there on the encoder layers run on 4 new frames at a time with KV caches (window 750 frames in the
# real model), and the decoder as in notebook 5. Feed chunks of 1 sample, 17, 3001, a whole second…: the
# tokens are the offline ones, and each arrives exactly when its audio is complete. The output at position
# $p$ needs $A_p$, i.e. padded sample $1280p + 1320$, so after $L$ real samples the session has emitted
# $\lfloor (L + 40960 - 1320)/1280 \rfloor - (n_\text{prompt} - 2)$ tokens: at 480 ms ($n_\text{prompt} = 39$),
# **the first one after 9000 samples (562.5 ms)**.

# %%
sizes = [1, 17, 3001, 640, 16000, 5, 2222, 1280, 9999]
session = StreamingSession(model, proto)
got, i, k = [], 0, 0
trace = []  # (real samples received, tokens so far, encoder cache, decoder cache, state bytes)
while i < len(x):
    chunk = x[i : i + sizes[k % len(sizes)]]
    got += session.feed(chunk)
    i, k = i + len(chunk), k + 1
    trace.append((i, len(got), len(session.enc.kv[0]), len(session.dec.kv[0]), sum(session.state_nbytes().values())))
got += session.finish()
assert got == offline_tokens

L, emitted, enc_len, dec_len, nbytes = map(np.array, zip(*trace))
due = np.maximum(0, (L + proto.left_pad_samples - 1320) // SPT - (len(proto.prompt) - 2))
np.testing.assert_array_equal(emitted, np.minimum(due, len(offline_tokens)))
need = SPT * (len(proto.prompt) - 1) + 1320 - proto.left_pad_samples  # real samples before the first token
first = StreamingSession(model, proto)
assert first.feed(x[: need - 1]) == [] and first.feed(x[need - 1 : need]) == offline_tokens[:1]
assert enc_len.max() <= cfg.encoder.sliding_window - 1 and dec_len.max() <= cfg.decoder.sliding_window - 1
print(f"{len(got)} tokens from {k} chunks, identical to offline; first token after exactly {need} samples")

fig, ax = plt.subplots(1, 2, figsize=(11, 2.9))
ax[0].step(L / 16000, emitted, where="post", label="emitted by the session")
ax[0].plot(L / 16000, due, ".", ms=3, label="due: ⌊(L + 40960 − 1320)/1280⌋ − (n_prompt − 2)")
ax[0].set(xlabel="real audio received (s)", ylabel="tokens", title="tokens out vs audio in")
ax[0].legend(fontsize=8)
ax[1].plot(L / 16000, enc_len, label=f"encoder layer-0 KV (W_e − 1 = {cfg.encoder.sliding_window - 1})")
ax[1].plot(L / 16000, dec_len, label=f"decoder layer-0 KV (W_d − 1 = {cfg.decoder.sliding_window - 1})")
ax[1].set(xlabel="real audio received (s)", ylabel="cached keys", title="caches stay within their windows")
ax[1].legend(fontsize=8)
plt.tight_layout()
print(f"run-state bytes: max {nbytes.max()}, at the end {nbytes[-1]}")

# %% [markdown]
# ## vLLM's realtime framing: a 40-sample grid shift
#
# vLLM's realtime buffer (`VoxtralRealtimeBuffer`) computes step 0 from samples $[0,\ 1280 \cdot 39 + 40)$ —
# exact — and then, for each later token at $s = 1280p$, a fresh centred mel of the window
# $[s - 840,\ s + 1320)$: 2160 samples, 13 frames after dropping the last, an odd count so the first is
# dropped too, convs restarted from zeros, last 4 encoder frames kept. Its kept frames are centred on
# $s - 840 + 160m$ for $m = 5..12$, i.e. $s - 40 + 160j$: **the offline frames of the stream delayed by 40
# samples** (look-back 840 = 5.25 hops, §6.5, §11.10).

# %%
def vllm_mel(stream, n):
    first = log_mel(stream[: SPT * len(proto.prompt) + 40].astype(P.dtype), P.dtype)[:, : 8 * len(proto.prompt)]
    steps = []
    for p in range(len(proto.prompt), n):
        s = SPT * p
        m = log_mel(stream[s - 840 : s + SPT + 40].astype(P.dtype), P.dtype)  # 13 frames
        steps.append(m[:, 1:][:, -8:])  # drop the first (odd count), keep the token's 8
    return np.concatenate([first] + steps, axis=1)


vtaps = Taps("mel")
vsession = StreamingSession(model, proto, framing="vllm", tap=vtaps)
vtokens = []
for i in range(0, len(x), 4000):
    vtokens += vsession.feed(x[i : i + 4000])
vtokens += vsession.finish()
vmel = vtaps["mel"]  # the frames the vLLM framing fed to the convs, per token
n_v = vmel.shape[1] // 8

np.testing.assert_allclose(vllm_mel(xp, n_v), vmel, **TOL)
delayed = log_mel(np.concatenate([np.zeros(40), xp])[: len(xp)].astype(P.dtype), P.dtype)
first_step = 8 * len(proto.prompt)
np.testing.assert_allclose(vmel[:, :first_step], mel[:, :first_step], **TOL)  # step 0: exact
np.testing.assert_allclose(vmel[:, first_step:], delayed[:, first_step : vmel.shape[1]], **TOL)  # then: delayed
diff = vmel - mel[:, : vmel.shape[1]]
same = sum(a == b for a, b in zip(vtokens, offline_tokens))
print(f"vLLM framing: mel differs from offline by up to {np.abs(diff).max():.3f} after step 0; "
      f"{same}/{len(offline_tokens)} tokens equal offline (first: {vtokens[0] == offline_tokens[0]})")

# %%
fig, ax = plt.subplots(2, 1, figsize=(11, 4.6), sharex=True, gridspec_kw={"height_ratios": [1.4, 1]})
lim = np.abs(diff).max()
im = ax[0].imshow(diff, aspect="auto", origin="lower", cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest")
ax[0].axvline(first_step - 0.5, color="k", lw=1)
ax[0].set(ylabel="mel bin", title="vLLM-framing mel − offline mel (left of the line: step 0, exact)")
plt.colorbar(im, ax=ax, shrink=0.8)
ax[1].plot(np.abs(diff).max(axis=0), lw=0.8)
ax[1].axvline(first_step - 0.5, color="k", lw=1)
ax[1].set(xlabel="mel frame", ylabel="max |diff|");
