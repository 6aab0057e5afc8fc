# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 1 · Audio → log-mel
#
# The model hears a 16 kHz mono waveform as a `[128, T]` log-mel spectrogram, 100 frames per second.
# This notebook pads the audio the way the streaming protocol does, builds the spectrogram step by step
# in plain numpy, and checks every step against the oracle (`oracle/mel.py`, `oracle/protocol.py`).
#
# Spec: `docs/MODEL.md` §2 (front end), §6.3 (padding), §11.3, §11.8. Official code: HF
# `feature_extraction_voxtral_realtime.py` `_torch_extract_fbank_features`, vLLM `voxtral.py`
# `compute_whisper_melspec`, MC `audio.py` `mel_filter_bank` (all three agree).
#
# | symbol | meaning | value |
# |---|---|---|
# | L | samples, 16 kHz | |
# | T | mel frames, 10 ms each | floor(L/160) |
# | N | decoder positions (tokens), 80 ms each | T/8 |

# %%
import os

CHECKPOINT = os.environ.get("VOXTRAL_CHECKPOINT")  # a checkpoint directory; None: the built-in tiny one
AUDIO = os.environ.get("VOXTRAL_AUDIO")  # an audio file; None: the built-in speech clip

import matplotlib.pyplot as plt
import numpy as np

from oracle import builtin
from oracle import mel as M
from oracle.audio import is_int16_exact, load_audio, quantize_int16
from oracle.pipeline import load_setup, offline_mel
from oracle.precision import FLOAT32, FLOAT64

setup = load_setup(CHECKPOINT or builtin.tiny_checkpoint())
proto = setup.protocol  # delay, prompt and pads, from tekken.json's "audio" section
audio = load_audio(AUDIO or builtin.speech_clip())  # [L] float64, mono, 16 kHz
TIGHT = dict(rtol=1e-12, atol=1e-12)  # float64 vs float64: only summation order may differ
print(f"{len(audio)} samples = {len(audio) / 16000:.2f} s; delay {proto.delay_ms} ms = {proto.delay_tokens} tokens")

# %% [markdown]
# ## The waveform and its quantization
#
# The offline references (HF processor, vLLM `get_generation_prompt`) round-trip the audio through a
# 16-bit WAV, so their features are those of int16-quantized audio (§2.1, §11.8). `offline_mel` does the
# same (`oracle.audio.quantize_int16`, libsndfile's rule). The built-in clip is already int16-exact.

# %%
x = quantize_int16(audio)
print("int16-exact input:", is_int16_exact(audio), "| max change from quantizing:", np.abs(x - audio).max())

# %% [markdown]
# ## Padding: 32 silent tokens before, the delay plus a word after
#
# One decoder token is 80 ms = **1280 samples** (hop 160 × conv stride 2 × 4 frames per token).
# MC `AudioEncoder` pads (§6.3):
#
# - left: $32 \times 1280$ zeros (`streaming_n_left_pad_tokens`);
# - right (offline): zeros up to a whole token, then $(n_\text{delay} + 1 + 10) \times 1280$ — the delay, the
#   BOS position and `OFFLINE_STREAMING_BUFFER_TOKENS` = 10 (a maximum word length): 17 tokens at 480 ms.
#
# Decoder position $p$ then covers padded samples $[1280p,\ 1280p + 1280)$, real time $(p - 32) \cdot 80$ ms.

# %%
SPT = 1280  # samples per token
n_left = 32
n_right = proto.delay_tokens + 1 + 10
xp = np.concatenate([np.zeros(n_left * SPT), x, np.zeros((-len(x)) % SPT + n_right * SPT)])  # [1280 N]
N = len(xp) // SPT

np.testing.assert_array_equal(xp, proto.pad_offline(x))
assert N == proto.n_positions(len(x)) and len(xp) % SPT == 0
print(f"padded: {len(xp)} samples = N = {N} positions ({n_left} left pad, {N - n_left - n_right} audio, {n_right} right pad)")

# %% [markdown]
# ## Window: periodic Hann(400)
#
# $w[n] = \tfrac12 - \tfrac12\cos(2\pi n / 400)$, $n = 0..399$ — denominator 400, not 399 (`torch.hann_window`'s
# default is periodic; `np.hanning` is the symmetric one). No zero padding to 512: $n_\text{fft} = 400$.

# %%
NFFT, HOP = 400, 160
n = np.arange(NFFT)
w = 0.5 - 0.5 * np.cos(2 * np.pi * n / NFFT)  # [400] periodic

np.testing.assert_allclose(w, M.hann_window(NFFT), rtol=0, atol=1e-15)
fig, ax = plt.subplots(1, 2, figsize=(10, 2.6))
ax[0].plot(n, w, label="periodic (reference)")
ax[0].plot(n, np.hanning(NFFT), "--", label="symmetric np.hanning")
ax[0].set(title="Hann window, 400 samples = 25 ms", xlabel="n")
ax[0].legend()
ax[1].plot(n, w - np.hanning(NFFT))
ax[1].set(title="periodic − symmetric (a port that uses the wrong one is off by this)", xlabel="n")
plt.tight_layout()

# %% [markdown]
# ## STFT and power
#
# `center=True`: reflect 200 samples at each end (the edge sample itself is not repeated), then frames
# $t = 0, 1, \dots$ start at $160t$, so frame $t$ is **centred on padded sample $160t$** and spans $\pm 200$.
# That gives $1 + \lfloor L/160 \rfloor$ frames; the reference drops the last one (`stft[..., :-1]`), so
# $T = \lfloor L/160 \rfloor = 8N$. Power is $|X|^2$ over the 201 one-sided bins.

# %%
xr = np.pad(xp, NFFT // 2, mode="reflect")  # [L + 400]
frames = np.lib.stride_tricks.sliding_window_view(xr, NFFT)[::HOP]  # [T + 1, 400]
power = (np.abs(np.fft.rfft(frames * w, axis=-1)) ** 2).T[:, :-1]  # [201, T], last frame dropped
T = power.shape[1]

np.testing.assert_allclose(power, M.stft_power(xp), **TIGHT)
assert T == 8 * N
print(f"power spectrum: {power.shape} (201 bins × T = 8N = {T} frames)")

# %% [markdown]
# ## Mel filter bank: Slaney scale, Slaney area normalization
#
# The Slaney mel scale is linear below 1 kHz and logarithmic above:
# $\text{mel}(f) = 3f/200$ for $f < 1000$, else $15 + \ln(f/1000) \cdot 27/\ln 6.4$.
# 130 edges evenly spaced in mel from 0 to 8 kHz give 128 triangles $f_m \to f_{m+1} \to f_{m+2}$,
# each scaled by $2/(f_{m+2} - f_m)$ so every filter has the same area. The bank is evaluated at the 201
# bin frequencies `linspace(0, 8000, 201)` and is `[201, 128]` (MC's docstring says `[128, 201]`; the
# array is `[201, 128]`). The reference builds it in float64 and casts at use.

# %%
def hz_to_mel(f):
    f = np.asarray(f, dtype=np.float64)
    return np.where(f < 1000, 3 * f / 200, 15 + np.log(np.maximum(f, 1e-10) / 1000) * 27 / np.log(6.4))


def mel_to_hz(m):
    m = np.asarray(m, dtype=np.float64)
    return np.where(m < 15, 200 * m / 3, 1000 * np.exp((m - 15) * np.log(6.4) / 27))


edges = mel_to_hz(np.linspace(hz_to_mel(0.0), hz_to_mel(8000.0), 128 + 2))  # [130] Hz
freqs = np.linspace(0, 8000, 201)  # [201] bin centres, 40 Hz apart
lo, mid, hi = edges[:-2], edges[1:-1], edges[2:]  # [128] each
rising = (freqs[:, None] - lo) / (mid - lo)  # [201, 128]
falling = (hi - freqs[:, None]) / (hi - mid)
bank = np.maximum(0, np.minimum(rising, falling)) * (2 / (hi - lo))  # [201, 128]

np.testing.assert_allclose(bank, M.mel_filter_bank(), **TIGHT)
assert bank.shape == (201, 128)

# %%
fig, ax = plt.subplots(1, 2, figsize=(11, 3.2))
fine = np.linspace(0, 8000, 4001)
for m in range(0, 128, 3):
    tri = np.maximum(0, np.minimum((fine - lo[m]) / (mid[m] - lo[m]), (hi[m] - fine) / (hi[m] - mid[m])))
    ax[0].plot(fine, tri * 2 / (hi[m] - lo[m]), lw=0.8)
ax[0].set(title="every 3rd Slaney filter (equal area: wide filters are low)", xlabel="Hz", xlim=(0, 8000))
for m in range(8):
    tri = np.maximum(0, np.minimum((fine - lo[m]) / (mid[m] - lo[m]), (hi[m] - fine) / (hi[m] - mid[m])))
    line, = ax[1].plot(fine, tri * 2 / (hi[m] - lo[m]), lw=0.8)
    ax[1].plot(freqs, bank[:, m], "o", ms=4, color=line.get_color())
ax[1].set(title="filters 0–7 (lines) and what the bank keeps (dots at the\n40 Hz-spaced bins): most touch one bin",
          xlabel="Hz", xlim=(0, 240))
plt.tight_layout()
print("bins touched by each of the first 10 filters:", (bank > 0).sum(axis=0)[:10])

# %% [markdown]
# ## Log and the fixed floor
#
# $$y = \frac{\max\!\big(\log_{10}\max(\text{mel}, 10^{-10}),\ 1.5 - 8\big) + 4}{4}$$
#
# 1.5 is `global_log_mel_max` from params.json, so the floor is the constant $-6.5$ and digital silence
# becomes exactly $(-6.5 + 4)/4 = -0.625$. There is no upper clamp.

# %%
mel_energy = bank.T @ power  # [128, T]
log_spec = np.log10(np.maximum(mel_energy, 1e-10))
feats = (np.maximum(log_spec, 1.5 - 8) + 4) / 4  # [128, T]

np.testing.assert_allclose(feats, offline_mel(audio, proto, FLOAT64), **TIGHT)
assert feats.shape == (128, 8 * N) and feats.min() == -0.625
print(f"features {feats.shape}, min {feats.min()}, max {feats.max():.3f}")

# %% [markdown]
# ## The spectrogram on the token grid
#
# Every 8 frames is one decoder position. The first 32 positions are left-pad silence; the prompt
# (BOS + 38 `[STREAMING_PAD]`) occupies positions 0..38, so the first free prediction (the output at
# position 38) is made after hearing 7 tokens of real audio; the right pad lets the delayed text flush.

# %%
P = len(proto.prompt)
audio_end = (n_left * SPT + len(x)) / 160  # in frames
fig, ax = plt.subplots(2, 1, figsize=(11, 6.2), gridspec_kw={"height_ratios": [1, 1.1]})
for a, (f0, f1) in zip(ax, [(0, T), (8 * 28, 8 * 44)]):
    a.imshow(feats[:, f0:f1], aspect="auto", origin="lower", cmap="magma", interpolation="nearest",
             extent=(f0 - 0.5, f1 - 0.5, -0.5, 127.5))
    if f1 - f0 <= 200:  # the zoom: one grid cell per token
        for g in range(f0, f1 + 1, 8):
            a.axvline(g - 0.5, color="w", lw=0.5, alpha=0.8)
    a.axvspan(f0 - 0.5, min(8 * n_left, f1) - 0.5, color="c", alpha=0.15)
    a.axvline(8 * P - 0.5, color="lime", lw=1.5)
    if f1 == T:
        a.axvspan(audio_end, T - 0.5, color="c", alpha=0.15)
    sec = a.secondary_xaxis("top", functions=(lambda f: f / 8, lambda p: p * 8))
    sec.set_xlabel("decoder position p")
    a.set(xlim=(f0 - 0.5, f1 - 0.5), xlabel="mel frame", ylabel="mel bin")
ax[0].set_title("whole padded stream: cyan = left/right pad, green line = end of the prompt", fontsize=9)
ax[1].set_title(f"positions 28–43, one cell per token: audio starts at position 32 (frame 256), prompt ends after {P - 1}", fontsize=9)
plt.tight_layout()

# %% [markdown]
# Frame $m$ reads samples $[160m - 200,\ 160m + 200)$, so token $p$ (frames $8p..8p+7$) needs samples up to
# $1280p + 1320$: **40 samples (2.5 ms) beyond its own span**. That look-ahead is what a streaming
# front end must wait for (§2.3; notebook 06).

# %% [markdown]
# ## Fixed floor vs Whisper's per-utterance maximum
#
# Whisper (`openai/whisper` `audio.py` `log_mel_spectrogram`) clamps at $\max(\log) - 8$ over the
# utterance instead of the fixed $1.5 - 8$ (§11.3). The two agree only when that maximum is exactly 1.5.
# On quieter audio the floor moves, silence stops being $-0.625$, and because the maximum can lie in the
# future, a streaming front end cannot compute it. Below: the clip at 1/10 of its level.

# %%
def features(signal, floor="global"):
    """The recipe above in one function; floor="utterance" is Whisper's (a porting mistake here)."""
    s = np.pad(signal, NFFT // 2, mode="reflect")
    fr = np.lib.stride_tricks.sliding_window_view(s, NFFT)[::HOP]
    pw = (np.abs(np.fft.rfft(fr * w, axis=-1)) ** 2).T[:, :-1]
    lg = np.log10(np.maximum(bank.T @ pw, 1e-10))
    ceiling = 1.5 if floor == "global" else lg.max()
    return (np.maximum(lg, ceiling - 8) + 4) / 4


quiet = 0.1 * xp
ref_q, whisper_q = features(quiet), features(quiet, "utterance")
log_q = np.log10(np.maximum(M.apply_mel(M.stft_power(quiet)), 1e-10))
np.testing.assert_allclose(whisper_q, M.normalize_log_mel(M.apply_mel(M.stft_power(quiet)), floor="utterance"), **TIGHT)
np.testing.assert_allclose(ref_q, M.log_mel(quiet), **TIGHT)
print(f"log10 max of the quiet clip: {log_q.max():.3f} -> Whisper's floor {log_q.max() - 8:.3f} instead of -6.5")
print(f"silence: reference {ref_q[:, 0].max()}, Whisper {whisper_q[:, 0].max():.4f}")

# Streaming: a prefix of the stream gives the same reference frames, not the same Whisper frames.
cut = 8 * 40  # the first 40 positions; frames up to cut-2 do not read past the cut (±200 samples)
pre = quiet[: HOP * cut]
np.testing.assert_allclose(features(pre)[:, : cut - 2], ref_q[:, : cut - 2], **TIGHT)
drift = np.abs(features(pre, "utterance")[:, : cut - 2] - whisper_q[:, : cut - 2]).max()
print(f"Whisper-floor frames of a prefix differ from the same frames of the full stream by up to {drift:.3f}")

# %%
fig, ax = plt.subplots(1, 2, figsize=(11, 2.8), sharey=True)
for a, img, title in [(ax[0], ref_q, "fixed floor −6.5 (reference)"), (ax[1], whisper_q, "Whisper floor max − 8")]:
    im = a.imshow(img, aspect="auto", origin="lower", cmap="magma", vmin=-1.2, vmax=1.0, interpolation="nearest")
    a.set(title=f"clip at 1/10 level: {title}", xlabel="mel frame")
ax[0].set_ylabel("mel bin")
plt.colorbar(im, ax=ax);

# %% [markdown]
# ## What a float32 port should expect
#
# The same recipe in float32 (a float32 FFT) against the float64 truth. HF's float32 torch FFT is
# ~4e-5 from it on speech (README table); differences concentrate in bins just above the floor.

# %%
f32 = offline_mel(audio, proto, FLOAT32)
err = np.abs(f32.astype(np.float64) - feats)
assert f32.dtype == np.float32 and err.max() < 1e-4
print(f"float32 log-mel vs float64: max |diff| {err.max():.1e}")
