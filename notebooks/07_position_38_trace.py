# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 7 · The position-38 anomaly, traced
#
# A Rust/Burn port reported that with the 39-token prompt (BOS + 38 `[STREAMING_PAD]`) its position 38
# had a collapsed hidden-state norm, very negative logits and always predicted `[STREAMING_PAD]`; it
# switched to 38 tokens and lost the first words of its transcript. This notebook rebuilds the two
# ingredients from scratch — the alignment of prompt positions to audio, and that port's conv stem —
# checks them against `oracle/trace.py` and `oracle/faults.py`, and reads the fault catalogue.
#
# Spec: `docs/MODEL.md` §3.1, §6.3, §6.6, §11.1, §11.9. The full report with every table:
# [docs/trace38/report.md](../docs/trace38/report.md).

# %%
import os

CHECKPOINT = os.environ.get("VOXTRAL_CHECKPOINT")  # a checkpoint directory; None: the built-in tiny one
AUDIO = os.environ.get("VOXTRAL_AUDIO")  # an audio file; None: the built-in speech clip

import matplotlib.pyplot as plt
import numpy as np
from scipy.special import erf

from oracle import builtin
from oracle.audio import load_audio, quantize_int16
from oracle.forward import audio_embeddings
from oracle.golden import Context
from oracle.mel import log_mel
from oracle.pipeline import load_setup
from oracle.precision import FLOAT32, FLOAT64
from oracle.trace import trace38

setup = load_setup(CHECKPOINT or builtin.tiny_checkpoint())
ckpt, proto = setup.ckpt, setup.protocol
P = FLOAT64 if CHECKPOINT is None else FLOAT32
audio = quantize_int16(load_audio(AUDIO or builtin.speech_clip()))
n_prompt, left, spt = len(proto.prompt), proto.left_pad_tokens, proto.samples_per_token
print(f"prompt {n_prompt} tokens, left pad {left} tokens, delay {proto.delay_tokens} tokens, {P.name}")

# %% [markdown]
# ## Which audio each prompt position covers
#
# Position $p$ covers padded samples $[1280p, 1280p+1280)$, i.e. real time $(p-32)\cdot 80$ ms. Its 8 mel
# frames are centred at $160m$ for $m = 8p..8p+7$ and reach 200 samples to each side, so position $p$
# *hears* samples up to $1280p + 1320$: position 31 already hears the first 40 real samples. The output
# at position $p$ predicts the token of position $p+1$; the prompt forces `[STREAMING_PAD]` for
# positions $1..38$, so the first free prediction is the output at position 38.

# %%
rows = []
for p in range(28, n_prompt + 2):
    first, last = spt * p - 200, spt * p + 1320  # the samples its mel frames read
    hears_real = last > spt * left  # any sample past the left pad?
    rows.append((p, (p - left) * 80, hears_real, "PAD (forced)" if p < n_prompt - 1 else
                 ("FIRST FREE" if p == n_prompt - 1 else "free")))
for r in rows:
    print(f"position {r[0]:2d}  real time {r[1]:5d} ms  reads real audio: {str(r[2]):5s}  output: {r[3]}")
assert [r[0] for r in rows if r[2]][0] == left - 1  # the 40-sample look-ahead reaches into the audio

# %% [markdown]
# ## The Burn port's conv stem, from scratch
#
# The reference stem: conv1 $k3\,s1$ with 2 zero frames on the left, conv2 $k3\,s2$ with 1 on the left
# (8 mel frames → 4 encoder frames → one token). The port built **both** convs with stride 2 and
# `PaddingConfig1d::Explicit(1)` — one zero frame on *each* side. Eight mel frames then give 2 encoder
# frames, half a token: every decoder position spans 160 ms.

# %%
w = ckpt.conv(P)
gelu = lambda x: 0.5 * x * (1 + erf(x / np.sqrt(2)))


def conv(x, wt, b, stride, left_pad, right_pad):
    """[Cin, T] -> [Cout, T_out]: the plain definition, zeros padded as asked."""
    xp = np.pad(x, ((0, 0), (left_pad, right_pad)))
    k = wt.shape[2]
    t_out = (xp.shape[1] - k) // stride + 1
    return np.stack([np.einsum("oik,ik->o", wt, xp[:, j * stride:j * stride + k]) for j in range(t_out)], 1) + b[:, None]


mel = log_mel(proto.pad_offline(audio).astype(P.dtype), P.dtype)
ref = gelu(conv(gelu(conv(mel, w.w1, w.b1, 1, 2, 0)), w.w2, w.b2, 2, 1, 0)).T
burn = gelu(conv(gelu(conv(mel, w.w1, w.b1, 2, 1, 1)), w.w2, w.b2, 2, 1, 1)).T
print(f"mel {mel.shape[1]} frames -> reference stem {ref.shape[0]} encoder frames, Burn stem {burn.shape[0]}")
print(f"decoder positions: reference {ref.shape[0] // 4}, Burn {burn.shape[0] // 4}")
assert burn.shape[0] * 2 == ref.shape[0]

# %% [markdown]
# With half as many positions, the 32-token (2.56 s) left pad covers only 16 of them: positions
# 16..38 of the prompt now carry speech the model was trained to see as silence. That is measurable
# without the trace: a position *hears speech* if its audio embedding differs from the one an all-silent
# stream of the same length gives there (the encoder is causal).

# %%
from oracle.faults import burn_conv_stem
from oracle.variant import REFERENCE, Variant

silent = log_mel(np.zeros(len(proto.pad_offline(audio)), P.dtype), P.dtype)
hears = {}
for name, variant in (("reference", REFERENCE), ("Burn stem", Variant(conv_stem=burn_conv_stem))):
    a = audio_embeddings(ckpt, mel, P, variant=variant)
    s = audio_embeddings(ckpt, silent, P, variant=variant)
    hears[name] = np.abs(a - s).max(axis=1) > 1e-6 * np.abs(a).max()
    print(f"{name:10s}: {len(a)} positions; left-pad positions hearing speech: {int(hears[name][:left].sum())} of {left}; "
          f"first position hearing speech: {int(np.argmax(hears[name]))}")
assert hears["reference"][:left - 1].sum() == 0 and hears["Burn stem"][:left].sum() == left // 2

fig, ax = plt.subplots(figsize=(9, 1.8))
for k, (name, h) in enumerate(hears.items()):
    ax.scatter(np.flatnonzero(h[:n_prompt + 4]), np.full(int(h[:n_prompt + 4].sum()), k), marker="s", s=30)
ax.axvline(left - 0.5, color="gray", ls="--", label="end of the 32-token left pad")
ax.axvline(n_prompt - 1, color="red", label="last prompt position")
ax.set_yticks([0, 1], list(hears))
ax.set_xlabel("decoder position")
ax.set_title("positions whose audio embedding hears speech")
ax.legend(fontsize=7, loc="lower right")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## The trace and the catalogue
#
# `trace38` runs the reference and every catalogued mistake on the same audio and records where each
# first diverges (fed the reference's tokens), how long the sequence is, and how many left-pad positions
# hear speech. Our from-scratch numbers must match its record.

# %%
original = load_audio(AUDIO or builtin.speech_clip())
original = original + 1e-4 * np.random.default_rng(0).standard_normal(len(original))  # not int16-exact
report, runs = trace38(Context(setup, quantize_int16(original), 0), P, original_audio=original)
burn_row = next(f for f in report["faults"] if f["key"] == "stem_stride2_symmetric")
assert burn_row["n_positions"] == burn.shape[0] // 4
assert burn_row["anomaly"]["left_pad_positions_hearing_speech"] == int(hears["Burn stem"][:left].sum())
print(f"{'fault':26s} {'first divergence':22s} {'N':>4s} {'hears':>5s}  reproduces the cause?")
for f in report["faults"]:
    d = f["first_divergence"]
    print(f"{f['key']:26s} {str(d['stage']):22s} {f['n_positions']:4d} {f['anomaly']['left_pad_positions_hearing_speech']:5d}  "
          f"{f['reproduces'].split(':')[0].strip('*')}")
assert [f["key"] for f in report["faults"] if f["reproduces"].startswith("**yes**")] == ["stem_stride2_symmetric"]

# %% [markdown]
# ## 39 against 38 tokens
#
# The 38-token prompt changes no tensor before the tokens (every position still gets $A_p$), but the
# first free prediction comes one position — 80 ms — early, and one more token is generated. With a
# correct stem that only desynchronizes text and audio; with the broken stem it hid the real bug.

# %%
ref_run, p38 = runs["reference"], runs["prompt_38"]
pos = np.arange(30, min(46, ref_run.n_positions))
fig, axes = plt.subplots(1, 2, figsize=(10, 3))
axes[0].plot(pos, ref_run.norms[-1][pos], "-o", ms=3, label="39-token prompt")
axes[0].plot(pos, p38.norms[-1][pos], "--s", ms=3, label="38-token prompt")
axes[0].set_title("last decoder layer norm")
axes[1].plot(pos, ref_run.logits[pos, proto.pad], "-o", ms=3, label="PAD logit, 39")
axes[1].plot(pos, p38.logits[pos, proto.pad], "--s", ms=3, label="PAD logit, 38")
axes[1].set_title("STREAMING_PAD logit")
for ax in axes:
    ax.axvline(n_prompt - 1, color="red", lw=0.8)
    ax.axvline(n_prompt - 2, color="orange", lw=0.8, ls="--")
    ax.set_xlabel("decoder position")
    ax.legend(fontsize=7)
plt.tight_layout()
plt.show()
row38 = next(f for f in report["faults"] if f["key"] == "prompt_38")
assert row38["first_divergence"]["stage"] == "tokens" and len(p38.tokens) == len(ref_run.tokens) + 1
print("conclusion:")
for line in report["conclusion"]:
    print(" ", line.replace("**", ""))
