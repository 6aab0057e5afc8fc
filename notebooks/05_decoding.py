# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 5 · Decoding: prompt, delay, the greedy loop with KV caches, Tekken text
#
# Given the audio embeddings $A_0 .. A_{N-1}$ (notebook 4), transcription is a greedy loop: prefill a fixed
# prompt, then feed each predicted token back at the next position. This notebook writes the protocol,
# the loop with explicit KV caches, and the Tekken detokenizer in numpy, and checks them against
# `oracle/protocol.py`, `oracle/streaming.py` (`generate_offline`) and `oracle/tokenizer.py`.
#
# Spec: `docs/MODEL.md` §5.3, §6.1–6.4, §7.2, §11.9. Official code: MC `instruct.py`
# `_encode_streaming_transcription`, `audio.py` (`n_right_pad_tokens`, `OFFLINE_STREAMING_BUFFER_TOKENS`),
# `tekken.py` `Tekkenizer.decode`; HF `generate` with `max_length = N`; vLLM `voxtral_realtime.py`.

# %%
import os

CHECKPOINT = os.environ.get("VOXTRAL_CHECKPOINT")  # a checkpoint directory; None: the built-in tiny one
AUDIO = os.environ.get("VOXTRAL_AUDIO")  # an audio file; None: the built-in speech clip

import base64
import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from scipy.special import erf

from oracle import builtin
from oracle.audio import load_audio
from oracle.decoder import time_condition
from oracle.forward import audio_embeddings, forward
from oracle.pipeline import load_setup, offline_mel
from oracle.precision import FLOAT32, FLOAT64
from oracle.protocol import SUPPORTED_DELAYS_MS, make_protocol
from oracle.streaming import Model, generate_offline
from oracle.tokenizer import decode_incrementally

setup = load_setup(CHECKPOINT or builtin.tiny_checkpoint())
ckpt, proto, tekken = setup.ckpt, setup.protocol, setup.tekken
D = ckpt.config.decoder
# float64 is the truth mode; a real checkpoint is decoded in float32 (all 26 layers stay resident: ~18 GB).
P = FLOAT64 if CHECKPOINT is None else FLOAT32
TOL = dict(rtol=1e-12, atol=1e-12) if P is FLOAT64 else dict(rtol=2e-3, atol=2e-3)

mel = offline_mel(load_audio(AUDIO or builtin.speech_clip()), proto, P)
A = audio_embeddings(ckpt, mel, P)  # [N, D], notebooks 1-4
N = len(A)
print(f"N = {N} positions, delay {proto.delay_ms} ms, compute dtype {P.name}")

# %% [markdown]
# ## The protocol: three numbers that move together
#
# With $n_\text{delay} = \text{delay\_ms}/80$ (6 at the default 480 ms):
#
# | | formula | 480 ms |
# |---|---|---|
# | prompt | `[BOS] + [STREAMING_PAD] × (32 + n_delay)` | `[1] + [32]×38`, 39 tokens |
# | right pad | $(n_\text{delay} + 1) + 10$ tokens of silence | 17 |
# | $t$ in $t_\text{cond}$ | $n_\text{delay}$ | 6 |
#
# The prompt covers the 32 left-pad positions plus $n_\text{delay}$ positions of real audio: the text
# stream runs $n_\text{delay}$ tokens behind the audio, so the prompt forces "nothing to say yet" for
# the first 480 ms. Change the delay and all three change (§6.2).

# %%
def protocol(delay_ms):
    n_delay = delay_ms // 80
    return [1] + [32] * (32 + n_delay), n_delay + 1 + 10, n_delay


for ms in SUPPORTED_DELAYS_MS:
    prompt, right, t = protocol(ms)
    ref = make_protocol(ckpt.config, ms)
    assert prompt == ref.prompt.tolist() and right == ref.right_pad_tokens and t == ref.delay_tokens
print("delay ms :", *[f"{ms:>4}" for ms in (80, 160, 480, 960, 1200, 2400)])
print("prompt   :", *[f"{len(protocol(ms)[0]):>4}" for ms in (80, 160, 480, 960, 1200, 2400)])
print("right pad:", *[f"{protocol(ms)[1]:>4}" for ms in (80, 160, 480, 960, 1200, 2400)])
prompt, _, t_delay = protocol(proto.delay_ms)
n_prompt = len(prompt)

# %% [markdown]
# ## The schedule
#
# Position $p$ always gets its own audio $A_p$ (never shifted). The prompt is prefilled in one go; the
# output at its **last** position (38) is the first free prediction, the token for position 39; from then
# on each output is fed back one position later. HF's `generate` stops at `max_length = N`, so $N - 39$
# tokens come out and $A_{N-1}$ is never consumed (§6.4). EOS (id 2) also stops.

# %%
fig, ax = plt.subplots(figsize=(11, 2.3))
show = range(28, 46)
for p in show:
    audio_kind = "pad" if p < 32 else "audio"
    fed = "BOS" if p == 0 else ("PAD" if p < n_prompt else f"t{p}")
    out = "—" if p < n_prompt - 1 else f"t{p + 1}"
    for row, (text, color) in enumerate([(out, "#fde0c5" if out != "—" else "#eeeeee"),
                                         (fed, "#c7e9c0" if p >= n_prompt else "#fdd0a2"),
                                         (f"A{p}", "#c6dbef" if audio_kind == "audio" else "#e5f5f9")]):
        ax.add_patch(plt.Rectangle((p - 0.45, row - 0.4), 0.9, 0.8, color=color))
        ax.text(p, row, text, ha="center", va="center", fontsize=8)
    if p >= n_prompt - 1:
        ax.annotate("", xy=(p + 1, 1.4), xytext=(p, 0.4),
                    arrowprops=dict(arrowstyle="->", color="gray", lw=0.8))
ax.set(xlim=(27.4, 45.6), ylim=(-0.6, 2.6), yticks=[0, 1, 2], yticklabels=["output", "token fed", "audio"],
       xticks=list(show), xlabel="position p")
ax.set_title(f"positions 28–45: audio starts at 32; prompt ends at {n_prompt - 1}; each output is fed at p + 1",
             fontsize=9)
plt.tight_layout()

# %% [markdown]
# ## The greedy loop, with KV caches written out
#
# Each decoder layer keeps the rotated keys and the values of past positions, with their absolute
# positions. A step runs only the new positions through the layers, attends over cache + new keys with the
# window mask $0 \le i - j < W$, then **evicts every key the next query can no longer see**: the next query
# sits at $p_\text{last} + 1$, so only keys with $j > p_\text{last} + 1 - W$ stay — at most $W - 1$ of them.
# That is the whole cache policy; positions are never reset.

# %%
def rms_norm(x, w, eps=D.norm_eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def gelu(z):
    return 0.5 * z * (1 + erf(z / np.sqrt(2)))


def rope(x, pos, theta=D.rope_theta):
    dh = x.shape[-1]
    phi = pos[:, None, None] * theta ** (-np.arange(0, dh, 2, dtype=x.dtype) / dh)
    c, s = np.cos(phi).astype(x.dtype), np.sin(phi).astype(x.dtype)
    out = np.empty_like(x)
    out[..., 0::2] = x[..., 0::2] * c - x[..., 1::2] * s
    out[..., 1::2] = x[..., 0::2] * s + x[..., 1::2] * c
    return out


model = Model(ckpt, P)  # holds each layer's weights once converted (shared with generate_offline below)
layers = [model.decoder_layer(i) for i in range(D.n_layers)]
f = np.exp(-np.log(10000.0) * np.arange(D.dim // 2) / (D.dim // 2))
t_cond = np.concatenate([np.cos(t_delay * f), np.sin(t_delay * f)]).astype(P.dtype)
np.testing.assert_allclose(t_cond, time_condition(t_delay, D, P), **TOL)  # notebook 3
scales = [1 + L.ada_up @ gelu(L.ada_down @ t_cond) for L in layers]  # ADA (1 + g), once per layer
H, K, Dh, W = D.n_heads, D.n_kv_heads, D.head_dim, D.sliding_window


def decode(x, pos, caches):
    """New decoder inputs x [n, D] at absolute positions pos [n] -> logits [n, V]; updates caches."""
    for L, scale, c in zip(layers, scales, caches):
        n = rms_norm(x, L.attn_norm)
        q = rope((n @ L.wq.T).reshape(len(x), H, Dh), pos)
        c["k"] = np.concatenate([c["k"], rope((n @ L.wk.T).reshape(len(x), K, Dh), pos)])
        c["v"] = np.concatenate([c["v"], (n @ L.wv.T).reshape(len(x), K, Dh)])
        c["pos"] = np.concatenate([c["pos"], pos])
        k, v = np.repeat(c["k"], H // K, axis=1), np.repeat(c["v"], H // K, axis=1)  # GQA
        d = pos[:, None] - c["pos"][None, :]
        scores = np.where((d >= 0) & (d < W), np.einsum("ihd,jhd->hij", q, k) / np.sqrt(Dh), -np.inf)
        probs = np.exp(scores - scores.max(axis=-1, keepdims=True))
        probs /= probs.sum(axis=-1, keepdims=True)
        x = x + np.einsum("hij,jhd->ihd", probs, v).reshape(len(x), H * Dh) @ L.wo.T
        m = rms_norm(x, L.ffn_norm) * scale
        x = x + ((m @ L.w1.T) / (1 + np.exp(-(m @ L.w1.T))) * (m @ L.w3.T)) @ L.w2.T
        keep = c["pos"] > pos[-1] + 1 - W  # evict what the next query cannot see
        c["k"], c["v"], c["pos"] = c["k"][keep], c["v"][keep], c["pos"][keep]
    return rms_norm(x, model.decoder_norm().weight) @ model.embedding_rows(slice(None)).T


caches = [{"k": np.zeros((0, K, Dh), P.dtype), "v": np.zeros((0, K, Dh), P.dtype), "pos": np.zeros(0, int)}
          for _ in layers]
emb = model.embedding_rows  # rows of the tied embedding, in the compute dtype
logits = decode(A[:n_prompt] + emb(np.array(prompt)), np.arange(n_prompt), caches)  # prefill
rows, out = [logits], [int(np.argmax(logits[-1]))]
cache_len = [len(caches[0]["pos"])]
for p in range(n_prompt, N - 1):  # HF: max_length = N
    if out[-1] == proto.eos:
        break
    logits = decode(A[p : p + 1] + emb(np.array([out[-1]])), np.array([p]), caches)
    rows.append(logits)
    out.append(int(np.argmax(logits[-1])))
    cache_len.append(len(caches[0]["pos"]))

reference = generate_offline(model, mel, proto)
assert out == reference, "the loop above must give the oracle's tokens"
assert max(cache_len) <= W - 1
print(f"{len(out)} tokens, identical to generate_offline; cache never holds more than W - 1 = {W - 1} keys")

# %% [markdown]
# The cached incremental logits equal the full-sequence forward over `prompt + tokens` (teacher forcing,
# notebook 4) — the KV cache is an optimization, not a different model.

# %%
fed = np.concatenate([prompt, out])[:N]
full = forward(ckpt, mel, fed, t_delay, P)  # [N, V]
incremental = np.concatenate(rows)  # positions 0 .. N-2
np.testing.assert_allclose(incremental, full[: len(incremental)], **TOL)

srt = np.sort(full[n_prompt - 1 : N - 1], axis=1)
margin = srt[:, -1] - srt[:, -2]
fig, ax = plt.subplots(figsize=(9, 2.4))
ax.semilogy(np.arange(n_prompt - 1, N - 1), margin, ".-")
ax.set(title="greedy margin: top-1 minus top-2 logit at each free step (small = a port's rounding may flip it)",
       xlabel="position p (output = token p + 1)")
ax.title.set_fontsize(9)
plt.tight_layout()
print(f"smallest margin {margin.min():.2e} at position {n_prompt - 1 + int(np.argmin(margin))}")

# %% [markdown]
# ## Tekken: ids to text
#
# Ids below 1000 are control tokens (BOS, `[STREAMING_PAD]`, `[STREAMING_WORD]`, …) and are **dropped**. Id
# $1000 + r$ is the byte string `vocab[r].token_bytes` (base64 in `tekken.json`); only the first
# `default_vocab_size − 1000` entries exist as ids. Each maximal run of text ids is concatenated and
# decoded as UTF-8 with replacement — runs are decoded **separately**, so a multi-byte character cut by a
# control token becomes U+FFFD (MC `Tekkenizer.decode`, tiktoken `decode`; §7.2).

# %%
doc = json.loads(Path(tekken.path).read_text(encoding="utf-8"))
n_special = doc["config"]["default_num_special_tokens"]
vocab = [base64.b64decode(e["token_bytes"]) for e in doc["vocab"][: doc["config"]["default_vocab_size"] - n_special]]


def detokenize(ids):
    runs, run = [], b""
    for i in ids:
        if i < n_special:  # a control token ends the run
            runs.append(run)
            run = b""
        else:
            run += vocab[i - n_special]
    return "".join(r.decode("utf-8", errors="replace") for r in runs + [run])


text = detokenize(out)
assert text == tekken.decode(out)
print(repr(text))
for p, t in list(enumerate(out, start=n_prompt))[:12]:
    print(f"  position {p - 1} -> token {t:>6}  {tekken.token_text(t)!r}")

# %% [markdown]
# The euro sign is three bytes, `E2 82 AC`; ranks 0–255 are the single bytes, so id $1000 + b$ is byte $b$.
# Cut by `[STREAMING_WORD]` (33), each side decodes on its own:

# %%
euro = [n_special + b for b in "€".encode()]
cut = euro[:2] + [33] + euro[2:]
print(repr(detokenize(euro)), repr(detokenize(cut)))
assert detokenize(euro) == tekken.decode(euro) == "€"
assert detokenize(cut) == tekken.decode(cut) == "\ufffd\ufffd"

# %% [markdown]
# ### Incremental decoding
#
# A live transcript prints text as tokens arrive. Emit everything except an **incomplete UTF-8 tail**
# (the longest suffix of at most 3 bytes that is a valid prefix of a character); a control token or the
# end of the stream flushes the tail (U+FFFD if incomplete). The pieces then concatenate to exactly
# `decode(all ids)`. Python's strict decoder tells the two cases apart: an incomplete prefix fails with
# "unexpected end of data" at its first byte.

# %%
def held_back(buf):
    for n in (3, 2, 1):
        if len(buf) >= n:
            try:
                buf[-n:].decode("utf-8")
            except UnicodeDecodeError as e:
                if e.start == 0 and e.reason == "unexpected end of data":
                    return n
    return 0


def decode_pieces(ids):
    pending, pieces = b"", []
    for i in ids:
        if i < n_special:
            pieces.append(pending.decode("utf-8", errors="replace"))
            pending = b""
        else:
            buf = pending + vocab[i - n_special]
            k = len(buf) - held_back(buf)
            pieces.append(buf[:k].decode("utf-8", errors="replace"))
            pending = buf[k:]
    return pieces + [pending.decode("utf-8", errors="replace")]  # final flush


crafted = [n_special + b for b in "né € 😀".encode()] + [33] + euro[:1] + [n_special + ord("x")] + euro[:2]
rng = np.random.default_rng(0)
byte_soup = rng.choice(np.r_[n_special + np.arange(128, 256), 32, 33, n_special + 65], size=300).tolist()
for ids in (out, crafted, cut, byte_soup):
    pieces = decode_pieces(ids)
    assert pieces == decode_incrementally(tekken, ids)
    assert "".join(pieces) == tekken.decode(ids)
print("pieces for 'né € 😀' sent one byte per token:", decode_pieces(crafted)[:12])
