"""The fault catalogue: known porting mistakes, one record each, injectable into the oracle.

Each ``Fault`` is the whole story of one mistake (MODEL.md §11, §6.6): what the port does and what the
model does, how to inject it, where it first shows (``shows_at``: the first stage of the pipeline that
differs, fed the reference's tokens, and how), what that looks like in a compare report (``expect``),
and its own ``score`` of the evidence a failing report offers (``oracle.diagnose`` asks every entry and
ranks the answers; it names none of them). Adding a fault is one entry in ``CATALOGUE`` (plus, when
the mistake needs new code, the function that makes it in ``oracle.fault_mechanisms``, and a measure its
score shares with others in ``oracle.fault_evidence``): docs/PORTING.md, "Adding a fault".

Faults change *what the oracle is given*, never copy the model's math:

    config faults     a checkpoint view with a different number       (window one key too wide)
    weight faults     a checkpoint view whose typed weights are edited (rotate-half RoPE on unpermuted
                      rows, a k bias, a dropped ADA term)
    protocol faults   a Protocol with a deviation field set            (38-token prompt, t from the wrong delay)
    front-end faults  mel options / unquantized audio / another front end (``Variant.log_mel``, from
                      oracle.mel_variants)  (per-utterance max, no int16 round trip, float32 DFT angle)
    schedule faults   a Protocol that generates more steps          (N − P + 1 tokens, decoding past the audio)
    composition faults a ``Variant`` that wires the same layer functions differently
                      (the Burn port's conv stem, symmetric padding, ADA before attention, shifted or
                      missing audio embeddings)

``inject(key, ctx)`` returns a golden ``Context`` that produces the faulty pipeline; the golden case
runners then give a faulty candidate (``faulty_outputs``, for compare) or a faulty trace (trace38).
Entries whose end-to-end signatures coincide say so (``lookalikes``) and name the check that separates
them (``separate``).

Shapes: mel [128, T]; encoder activations [S, De]; audio embeddings A and decoder activations [N, D];
weights in the checkpoint's [out, in] orientation.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import partial
from typing import Any, Callable

import numpy as np

from .encoder import conv_stem
from .fault_evidence import (ada_form, CONV1_STAGES, STEM_STAGES, TOKEN_STAGES, audio_shifted, decoder_wrong_at_every_row,
                             encoder_exact_at_row_0, extra_final_token, fails, floor_fraction, gelu_preimage,
                             golden_stopped_at_eos, lengths, mel_below_peak_fit, reads_one_ahead, rows_rescaled,
                             scale_is_one, tokens_run_on)
from .fault_mechanisms import (EditedCheckpoint, ada_before_attention_layer, ada_dropped, ada_extra_norm_layer,
                               burn_conv_stem, extra_norm_time_ada_case, k_bias, no_audio_at,
                               port_mel_context, rotate_half_rope_case, shift_audio, silu_ada_scale,
                               silu_time_ada_case, symmetric_conv_stem, unpermuted_rope)
from .audio import quantize_int16
from .golden import Context, replay, with_config_change
from .layers import gelu, gelu_tanh  # gelu_tanh: the formula lives with the model's GELU, re-exported here
from .mel_variants import as_port_front_end, dft_angle_f32, mel_upper_clamp, peak_normalize, stft_pad_120
from .precision import Precision
from .variant import REFERENCE


# -- how to inject -------------------------------------------------------------------------------


def _view(ctx, edit=None, **cfg_changes):
    ckpt = with_config_change(ctx.ckpt, **cfg_changes) if cfg_changes else ctx.ckpt
    if edit is not None:
        ckpt = EditedCheckpoint(ckpt, edit)
    return replace(ctx, setup=replace(ctx.setup, ckpt=ckpt), _models={})


def _variant(ctx, **fields):
    return replace(ctx, variant=replace(ctx.variant, **fields), _models={})


def _protocol(ctx, **fields):
    return replace(ctx, setup=replace(ctx.setup, protocol=replace(ctx.setup.protocol, **fields)), _models={})


def _window_plus_one(ctx):
    c = ctx.ckpt.config
    return _view(ctx, enc_sliding_window=c.encoder.sliding_window + 1, dec_sliding_window=c.decoder.sliding_window + 1)


def _no_audio_last_prompt(ctx):
    return _variant(ctx, name="no_audio_last_prompt", audio_to_decoder=no_audio_at(len(ctx.setup.protocol.prompt) - 1))


def _unquantized_audio(ctx, original_audio):
    """The port computes its mel from the audio before quantization, where the reference (and the golden)
    uses the int16 round trip."""
    return replace(ctx, audio=np.asarray(original_audio, np.float64), _models={})


def _front_end(ctx, name: str, log_mel):
    """The port computes its mel with ``log_mel`` (a float32 front end, as a C port's)."""
    return _variant(ctx, name=name, log_mel=as_port_front_end(log_mel))


# -- how each fault shows in a failing report --------------------------------------------------------
# A score function gets the ``oracle.diagnose.Evidence`` of one failing tensor (the first of its case)
# and answers (score in [0, 1], why) or None. 1.0: the signature itself; 0.5 or more: reported as a
# likely mistake; a look-alike pair scores by the block case that separates it.


def _score_stride2_stem(ev):
    n = lengths(ev)
    if n and n[0] * 2 == n[1] and ev.stage in STEM_STAGES:
        return 1.0, f"{ev.stage} has {n[0]} frames instead of {n[1]}: a stride-2 conv where conv1 has stride 1"
    return None


def _score_symmetric_padding(ev):
    if not fails(ev, *CONV1_STAGES):
        return None
    if reads_one_ahead(ev):
        return 1.0, f"{ev.stage}[i] equals the golden's [i + 1]: conv1 reads one frame ahead"
    if ev.failing_rows is not None and ev.rows and ev.failing_rows < ev.rows // 2:
        return None  # a padding mistake moves every frame's window: most rows fail, not a few
    return 0.5, f"{ev.stage} differs from row {ev.first_row}"


def _score_extra_final_token(ev):
    if golden_stopped_at_eos(ev):
        return None  # precondition: the golden ran the whole N − P schedule (it did not stop at EOS)
    if extra_final_token(ev):
        return 1.0, (f"{ev.stage}: the golden's {len(ev.golden_raw)} tokens (N − P) plus one more: the port "
                     "also feeds the last audio position A[N−1]")
    return None


def _score_decode_past_audio(ev):
    if golden_stopped_at_eos(ev):
        return None  # precondition: as extra_final_token
    extra = tokens_run_on(ev)
    if extra > 1:
        return 1.0, (f"{ev.stage}: the golden's {len(ev.golden_raw)} tokens (N − P) plus {extra} more: decoding "
                     "went on past the audio (positions ≥ N have no audio embedding)")
    return None


def _score_short_prompt(ev):
    if extra_final_token(ev):
        return None  # precondition: a 38-token prompt shifts the tokens, it does not append one
    n = lengths(ev)
    if n and ev.stage in TOKEN_STAGES and n[0] == n[1] + 1:
        return 1.0, "one more generated token than the golden: the prompt is one token short"
    if fails(ev, *TOKEN_STAGES) and ev.first:
        return 0.6, "tokens differ while every tensor before them passes"
    return None


def _score_audio_shift(ev):
    if not fails(ev, "dec.in"):
        return None
    if audio_shifted(ev):
        return 1.0, "dec.in - golden equals the golden audio embeddings shifted by one position"
    if (ev.failing_rows or 0) > 1:
        return 0.5, f"dec.in differs on {ev.failing_rows} rows while adapter.out passes"
    return None


def _score_no_audio_last_prompt(ev):
    n_prompt = ev.param("prompt_length")
    if fails(ev, "dec.in") and n_prompt and ev.failing_rows == 1 and ev.first_row == n_prompt - 1:
        return 1.0, f"only row {ev.first_row} (the last prompt position) of dec.in differs"
    return None


def _score_window(ev):
    for prefix, side in (("enc.L", "encoder"), ("dec.L", "decoder")):
        w = ev.param(f"{side}_window")
        if ev.status == "FAIL" and ev.stage.startswith(prefix) and w is not None and ev.first_row == w:
            return 1.0, f"{ev.stage} is exact before row {w} (the {side} window) and differs from it on"
    return None


def _score_rotate_half(ev):
    if fails(ev, "rope.out"):
        return (0.9 if ev.first_row != 0 else 0.6,
                "the rope block case fails" + (" from row 1 (row 0 is position 0, the identity)" if ev.first_row else ""))
    hit = encoder_exact_at_row_0(ev)
    if hit is None:
        return None
    rope, tail = hit
    return {"FAIL": 1.0, "ok": 0.3}.get(rope, 0.8), f"{ev.stage} is exact at row 0 (position 0) and differs from row 1" + tail


def _score_utterance_max(ev):
    if not fails(ev, "mel"):
        return None
    share = floor_fraction(ev)
    if (share or 0) > 0.5:
        return 1.0, f"{share:.0%} of the failing mel elements sit at the golden's floor"
    return 0.4, "the mel differs"


def _score_k_bias(ev):
    hit = encoder_exact_at_row_0(ev)
    if hit is None:
        return None
    rope, tail = hit
    return ({"FAIL": 0.3, "ok": 1.0}.get(rope, 0.8),
            f"{ev.stage} is exact at row 0 (a query attending only to itself) and differs from row 1" + tail)


def _score_ada_before_attention(ev):
    hit = decoder_wrong_at_every_row(ev)
    if hit is not None and hit[0] == "ok" and ev.status_of("time_ada.out") == "FAIL":
        return 0.3, hit[1] + ", but time_ada.out fails: the ADA step itself differs"
    return None if hit is None else ({"FAIL": 0.3, "ok": 1.0}.get(hit[0], 0.8), hit[1])


def _score_ada_extra_norm(ev):
    if fails(ev, "time_ada.out"):
        explained = rows_rescaled(ev)
        if ev.status_of("time_ada.scale") == "ok" and explained is not None and explained > 0.9:
            return 1.0, (f"time_ada.out fails while time_ada.scale passes, and each row is the golden's times "
                         f"a row constant ({explained:.0%} explained): the ADA step renormalises its input")
        return None
    hit = decoder_wrong_at_every_row(ev)
    if hit is None:
        return None
    if hit[0] == "ok":
        return (1.0, hit[1] + "; time_ada.out fails") if ev.status_of("time_ada.out") == "FAIL" else (0.3, hit[1])
    return (0.3, hit[1]) if hit[0] == "FAIL" else (0.8, hit[1])


def _score_peak_normalize(ev):
    """Above the floor, mel − golden is one constant log10(s)/2: the audio was scaled by s."""
    if not fails(ev, "mel") or ev.golden is None:
        return None
    g, a = ev.golden, ev.candidate
    floor = g.min()
    use = (g > floor + 0.01) & (a > floor + 0.01)  # away from the floor's clamp
    if use.sum() < 50:
        return None
    d = a[use] - g[use]
    offset = float(np.median(d))
    fits = float((np.abs(d - offset) <= max(ev.atol, 1e-5)).mean())
    if abs(offset) > ev.atol and fits > 0.95:
        return 1.0, (f"above the floor the mel is the golden + {offset:.4g} ({fits:.0%} of elements within atol):"
                     f" the audio scaled by {10 ** (2 * offset):.4g} before the mel (peak normalisation)")
    return None


def _score_wrong_delay(ev):
    return (1.0, f"{ev.stage} differs: the time embedding is built from another t") if fails(ev, "dec.t_cond") else None


def _score_unquantized(ev):
    if ev.provenance("audio_int16_exact"):
        return None  # precondition: quantizing int16-exact audio changes nothing, so skipping it cannot show
    if not fails(ev, "mel") or (floor_fraction(ev) or 0) > 0.5:
        return None
    if ev.bad is not None and ev.bad.ndim == 2 and ev.bad.any(axis=0).mean() < 0.05:
        return None  # quantization noise is in every frame with sound: not a handful of elements
    return (0.9 if (ev.max_abs or 1) < 0.2 else 0.5,
            f"small mel differences (max {ev.max_abs:.2g}) spread over the spectrogram, not at the floor")


def _score_ada_dropped(ev):
    one = scale_is_one(ev)
    if fails(ev, "time_ada.scale"):
        if one is False:
            return 0.3, "time_ada.scale fails but is not 1: an ADA term is computed, differently"
        return 1.0, "time_ada.scale fails: the (1 + W_up GELU(W_down t_cond)) term is not computed"
    by_form = ada_form(ev, "no ADA term", "a decoder layer without its ADA scale")
    if by_form is not None and ev.stage.startswith("dec."):
        return by_form if by_form[0] else None
    hit = decoder_wrong_at_every_row(ev)
    if hit is None:
        return None
    if hit[0] == "FAIL" and one is False:
        return 0.3, hit[1] + ", and is not 1"
    return {"FAIL": 1.0, "ok": 0.3}.get(hit[0], 0.8), hit[1]


def _score_ada_silu(ev):
    one = scale_is_one(ev)
    if fails(ev, "time_ada.scale"):
        if one is False and ev.status_of("time_ada.t_cond") in (None, "ok"):
            return 1.0, ("time_ada.scale fails while time_ada.t_cond passes, and is not 1: the ADA MLP "
                         "1 + W_up act(W_down t_cond) uses another activation than GELU")
        return None
    by_form = ada_form(ev, "SiLU", "an ADA MLP with SiLU instead of GELU")
    if by_form is not None and ev.stage.startswith("dec."):
        return by_form if by_form[0] else None
    hit = decoder_wrong_at_every_row(ev)
    if hit is None:
        return None
    if hit[0] == "FAIL":
        return (1.0 if one is False else 0.3), hit[1] + (", and is not 1" if one is False else "")
    return {"ok": 0.3}.get(hit[0], 0.8), hit[1]


def _score_dft_angle(ev):
    if not fails(ev, "mel") or ev.golden is None or ev.golden.ndim != 2 or (ev.max_abs or 1) > 0.05:
        return None
    fit = mel_below_peak_fit(ev)
    if fit is None:
        return None
    c_peak, c_level, n = fit
    if c_level < -0.5 and 0.5 < c_peak / -c_level < 1.5:
        return 1.0, (f"mel errors (max {ev.max_abs:.2g}) grow with the depth below each frame's peak "
                     f"(×10^{c_peak:.2g} per unit below it, over {n} elements), not with the level itself: a "
                     "leak of the peak bin through inexact cos/sin tables (a float32 DFT angle 2πkn/N)")
    return None


def _score_mel_upper_clamp(ev):
    if not fails(ev, "mel") or ev.golden is None:
        return None
    g, a, bad = ev.golden, ev.candidate, ev.bad
    if bad.any() and bool((g[bad] > 1.0).all()) and float(np.abs(a[bad] - 1.0).max()) <= max(ev.atol, 1e-6):
        return 1.0, (f"all {int(bad.sum())} failing mel elements are where the golden exceeds 1.0, and the "
                     "candidate is 1.0 there: the log-mel is clamped from above")
    return None


def _score_stft_late(ev):
    """The candidate's frame t lies between golden frames t and t + 1: a ≈ (1 − α) g_t + α g_(t+1)."""
    if not fails(ev, "mel") or ev.golden is None or ev.golden.ndim != 2 or ev.golden.shape[1] < 3:
        return None
    g, a = ev.golden[:, :-1], ev.candidate[:, :-1]
    step = ev.golden[:, 1:] - g  # [M, T-1]
    alpha = float(np.sum((a - g) * step) / max(float(np.sum(step * step)), 1e-300))
    residual = np.linalg.norm(a - g - alpha * step) / max(float(np.linalg.norm(a - g)), 1e-300)
    if 0.25 < alpha < 0.75 and residual < 0.8:
        return 1.0, (f"mel frame t fits (1 − α) golden_t + α golden_(t+1) with α = {alpha:.2f} (residual "
                     f"{residual:.0%}): every frame centred {alpha:.2f} hop late, the STFT's centre padding short")
    return None


def _score_left_pad(ev):
    g, a = ev.golden_raw, ev.candidate_raw
    if ev.stage != "mel" or ev.status != "SHAPE" or g is None or a is None:
        return None
    a = np.asarray(a, np.float64)
    g = np.asarray(g, np.float64)
    if a.ndim != 2 or g.ndim != 2 or a.shape[0] != g.shape[0] or a.shape[1] <= g.shape[1]:
        return None
    extra = a.shape[1] - g.shape[1]
    if float(np.abs(a[:, extra:] - g).max()) <= 1e-3 and float(np.ptp(a[:, :extra])) <= 1e-6:
        return 1.0, (f"mel has {extra} more frames than the golden, all silence at the start, and the rest is "
                     f"the golden's: {extra // 8} more tokens (8 frames each) of left padding")
    return None


def _score_gelu_tanh(ev):
    form = next((f for f in (ev.local or {}).get("forms") or [] if f["name"] == "tanh GELU"), {})
    if form.get("follows"):  # the stage-local view replayed this stage with a tanh GELU: the port's error is it
        return 1.0, (f"the error {ev.stage} adds (replayed on the candidate's own {', '.join(ev.local['reads'])})"
                     f" follows tanh−erf GELU: alpha {form['alpha']:.3f} ± {form['se']:.1g} (1 = exactly a tanh GELU)")
    if not fails(ev, "enc.conv1.out", "enc.conv.out", "adapter.out") or ev.golden is None:
        return None
    y, d = ev.golden, ev.candidate - ev.golden
    use = y > 0.05  # one preimage (GELU is increasing for x > −0.75) and a tanh − erf gap worth comparing
    if use.sum() < 16:
        return None
    x = gelu_preimage(y[use])
    predicted = gelu_tanh(x) - gelu(x)  # [n]: what a tanh GELU adds at these pre-activations
    residual = np.linalg.norm(d[use] - predicted) / max(np.linalg.norm(d[use]), 1e-300)
    if residual < 0.3:
        return 1.0, (f"{ev.stage} − golden follows tanh−erf GELU of the pre-activation (unexplained part "
                     f"{residual:.0%}): a tanh-approximate GELU")
    return (0.5, f"{ev.stage} fails; part of it follows tanh−erf GELU ({residual:.0%} unexplained)") if residual < 0.7 else None


# -- the catalogue -------------------------------------------------------------------------------

_ADA_SEPARATE = ("the time_ada block case: time_ada.scale passes when ADA is misplaced, is exactly 1 when it is"
                 " dropped, differs from 1 and the golden with another activation; time_ada.out alone fails"
                 " (each row rescaled) when the ADA step renormalises its input")

Score = tuple[float, str] | None


@dataclass(frozen=True)
class Fault:
    """One porting mistake: everything about it lives in this record."""

    key: str
    title: str
    mistake: str  # what the port does, and where it was seen
    reference: str  # what the model does
    inject: Callable  # Context -> Context that computes the faulty pipeline
    shows_at: tuple[str, str]  # (stage, kind): the first stage that differs, fed the reference's tokens
    #                            (trace38's first divergence; kind "values", "shape" or "tokens")
    expect: str  # how it shows in a compare report of the e2e case (pipeline order)
    score: Callable[[Any], Score]  # oracle.diagnose.Evidence -> (score in [0, 1], why) or None
    lookalikes: tuple[str, ...] = ()  # keys with the same end-to-end signature
    separate: str = ""  # the check that tells them apart
    reads_original_audio: bool = False  # inject takes (ctx, audio before quantization); the port reads that audio
    block_outputs: Callable | None = None  # (ctx, case, inputs, p) -> outputs of a block case the injection
    #                                        cannot reach (it hands the port vectors, not weights), else None


CATALOGUE: tuple[Fault, ...] = (
    Fault("stem_stride2_symmetric", "both convs stride 2, symmetric padding (the Burn port's stem)",
          "conv1 and conv2 built with stride 2 and PaddingConfig1d::Explicit(1) (TrevorS loader.rs, gguf/loader.rs)",
          "conv1 k3 s1 with 2 zero frames on the left, conv2 k3 s2 with 1 on the left (§3.1)",
          lambda ctx: _variant(ctx, name="stem_stride2_symmetric", conv_stem=burn_conv_stem),
          ("enc.conv1.out", "shape"),
          "SHAPE at enc.conv1.out: half as many frames; the whole sequence then has N/2 positions",
          _score_stride2_stem),
    Fault("stem_symmetric_padding", "symmetric conv padding with the right strides",
          "conv1 padded one frame on each side instead of two on the left",
          "causal: conv1 output i reads mel i-2..i (§3.1)",
          lambda ctx: _variant(ctx, name="stem_symmetric_padding", conv_stem=symmetric_conv_stem),
          ("enc.conv1.out", "values"),
          "first divergence at enc.conv1.out, every row; the candidate is the golden shifted one frame earlier",
          _score_symmetric_padding),
    Fault("prompt_38", "38-token prompt (BOS + 37 STREAMING_PAD)",
          "the prompt shortened by one to escape the 'position-38 anomaly' (TrevorS voxtral.rs)",
          "[BOS] + [STREAMING_PAD] x (32 + n_delay) = 39 tokens at 480 ms (§6.3)",
          lambda ctx: _protocol(ctx, prompt_pad_delta=-1),
          ("tokens", "shape"),
          "every tensor before tokens passes (tokens_in is given); tokens: one more generated token, "
          "and the first free prediction made one position (80 ms) early",
          _score_short_prompt),
    Fault("audio_shift", "audio embeddings shifted by one position",
          "position p fed A[p-1] (an index compensation for a 38/39 prompt mismatch)",
          "position p always gets A[p] (§5.1, §6.6)",
          lambda ctx: _variant(ctx, name="audio_shift", audio_to_decoder=shift_audio),
          ("dec.in", "values"),
          "first divergence at dec.in, every row; adapter.out passes; candidate dec.in - Emb = golden A shifted by one",
          _score_audio_shift),
    Fault("no_audio_last_prompt", "no audio embedding at the last prompt position",
          "the prompt's last position (38) fed Emb[PAD] alone",
          "every position, prompt included, gets A[p] + Emb[t_p] (§5.1)",
          _no_audio_last_prompt,
          ("dec.in", "values"),
          "first divergence at dec.in, exactly one row: the last prompt position",
          _score_no_audio_last_prompt),
    Fault("window_plus_one", "sliding window one key too wide",
          "masked where |i-j| > W, admitting W+1 keys (TrevorS masking.rs)",
          "key j visible iff 0 <= i-j < W (§3.2, §5.2)",
          _window_plus_one,
          ("enc.L00.attn.out", "values"),
          "first divergence at enc.L00.out starting exactly at row W_enc (rows before it are exact)",
          _score_window),
    Fault("rope_rotate_half", "rotate-half RoPE on interleaved (Mistral-layout) q/k rows",
          "NeoX rotate-half applied to consolidated weights without the permutation",
          "interleaved pairs (2i, 2i+1) on Mistral rows (§1.4)",
          lambda ctx: _view(ctx, edit=unpermuted_rope),
          ("enc.L00.attn.out", "values"),
          "first divergence at enc.L00.out from row 1 (row 0 is position 0: identity rotation)",
          _score_rotate_half,
          lookalikes=("k_bias",),
          separate="the rope block case: it fails with rotate-half and passes with a k bias",
          block_outputs=rotate_half_rope_case),
    Fault("mel_utterance_max", "per-utterance log-mel maximum (Whisper's clamp)",
          "floor at max(log mel) - 8 over the utterance instead of the fixed 1.5 - 8",
          "max(log10 mel, -6.5) with 1.5 = global_log_mel_max (§2.2)",
          lambda ctx: replace(ctx, mel_floor="utterance", _models={}),
          ("mel", "values"),
          "first divergence at mel, concentrated on elements at the floor (-0.625 in the golden)",
          _score_utterance_max),
    Fault("k_bias", "a bias on k in the encoder",
          "encoder attention with a non-zero k bias (here the q bias reused)",
          "q, v, o have biases, k does not (§1.3, §3.2)",
          lambda ctx: _view(ctx, edit=k_bias),
          ("enc.L00.attn.out", "values"),
          "first divergence at enc.L00.out from row 1 (row 0 attends only to itself)",
          _score_k_bias,
          lookalikes=("rope_rotate_half",),
          separate="the rope block case: it passes with a k bias and fails with rotate-half"),
    Fault("ada_before_attention", "ADA scale on the attention norm instead of the FFN norm",
          "RMSNorm(x; attention_norm) * (1 + g) before attention, FFN norm unscaled",
          "RMSNorm(h; ffn_norm) * (1 + g) before the MLP (§5.2)",
          lambda ctx: _variant(ctx, name="ada_before_attention", decoder_layer=ada_before_attention_layer),
          ("dec.L00.attn.out", "values"),
          "first divergence at dec.L00.out, every row; dec.t_cond passes",
          _score_ada_before_attention,
          lookalikes=("ada_dropped", "ada_silu", "ada_extra_norm"),
          separate=_ADA_SEPARATE),
    Fault("tcond_wrong_delay", "t_cond from the wrong delay (t - 1)",
          "time embedding built from n_delay - 1 (e.g. an off-by-one in counting delay tokens)",
          "t = n_delay = delay_ms / 80 (§5.3)",
          lambda ctx: _protocol(ctx, t_delta=-1),
          ("dec.t_cond", "values"),
          "first divergence at dec.t_cond",
          _score_wrong_delay),
    Fault("gelu_tanh", "tanh-approximate GELU",
          "GELU computed with the tanh approximation (antirez/voxtral.c voxtral_kernels.c gelu)",
          "the exact erf GELU after both convs, in the adapter and in the ADA MLP (§3.1, §4, §5.3)",
          lambda ctx: _variant(ctx, name="gelu_tanh", conv_stem=partial(conv_stem, act=gelu_tanh)),
          ("enc.conv1.out", "values"),
          "FAIL at enc.conv1.out on most rows, each difference equal to tanh−erf GELU of its pre-activation"
          " (≤ 4.7e-4); a port's adapter and ADA GELUs add the same kind of error later (the injection"
          " swaps the conv stem's two, where it first shows)",
          _score_gelu_tanh),
    Fault("mel_unquantized", "mel from non-quantized audio",
          "the offline path skips the int16 WAV round trip of the reference",
          "the offline reference quantizes to int16 through soundfile (§2.1, §11.8)",
          _unquantized_audio,
          ("mel", "values"),
          "first divergence at mel, small (about 1e-3) and spread over all bins; no effect on int16-exact audio",
          _score_unquantized,
          reads_original_audio=True),
    Fault("ada_dropped", "no ADA term",
          "decoder layers without the (1 + g) scale",
          "RMSNorm(h; ffn_norm) * (1 + W_up GELU(W_down t_cond)) (§5.2)",
          lambda ctx: _view(ctx, edit=ada_dropped),
          ("dec.L00.mlp.out", "values"),
          "first divergence at dec.L00.out, every row; dec.t_cond passes",
          _score_ada_dropped,
          lookalikes=("ada_before_attention", "ada_silu", "ada_extra_norm"),
          separate=_ADA_SEPARATE),
    Fault("dft_angle_f32", "float32 DFT angle 2πkn/N without reducing kn mod N",
          "cos/sin tables from `float angle = 2.0f * (float)M_PI * (float)k * (float)n / (float)N_FFT`: for kn up"
          " to 200·399 the float32 angle is off by up to 1.7e-4 rad (antirez/voxtral.c voxtral_audio.c:533,"
          " also :343, at 134d366)",
          "the 400-point DFT of each windowed frame, exact up to the dtype's rounding: a float32 table needs the"
          " angle 2π((kn) mod N)/N, or tables built in float64 (§2.2)",
          lambda ctx: _front_end(ctx, "dft_angle_f32", dft_angle_f32),
          ("mel", "values"),
          "first divergence at mel, small (up to ~2e-3) and in bins far below their frame's peak energy (the"
          " table error leaks a fraction of the peak bin into every bin); none at the floor",
          _score_dft_angle),
    Fault("extra_final_token", "one generated token too many (N − P + 1)",
          "generation feeds every audio position, A[N−1] included, and emits N − P + 1 tokens"
          " (antirez/voxtral.c voxtral.c:1012 and :1056 `while (s->gen_pos < s->total_adapter)`, at 134d366)",
          "HF generate with max_length N: positions P−1 … N−2 each emit one token, N − P in all; A[N−1] is"
          " never fed (§6.4)",
          lambda ctx: _protocol(ctx, extra_steps=1),
          ("tokens", "shape"),
          "every float tap passes (tokens_in is given); tokens: the golden's N − P plus one more at the end",
          _score_extra_final_token),
    Fault("decode_past_audio", "decoding continues after the audio embeddings run out",
          "positions ≥ N fed a zero audio embedding and decoding continued until EOS or a token limit"
          " (vllm-project/vllm issue #52926, fixed by PR #54516; pytorch/executorch PR #17431 runner)",
          "generation ends after N − P tokens, at the last audio position (§6.4)",
          lambda ctx: _protocol(ctx, extra_steps=6),
          ("tokens", "shape"),
          "every float tap passes; tokens: the golden's N − P plus several more (here 6) at the end",
          _score_decode_past_audio),
    Fault("mel_upper_clamp", "log-mel clamped to at most 1.0 (Whisper's [−1, 1])",
          "`((v + 4.0) / 4.0).clamp(-1.0, 1.0)` (TrevorS/voxtral-mini-realtime-rs src/audio/mel.rs at 1efe5f8,"
          " removed in c9e19bc)",
          "(max(log10 mel, 1.5 − 8) + 4) / 4 with no upper clamp (§2.2)",
          lambda ctx: _front_end(ctx, "mel_upper_clamp", mel_upper_clamp),
          ("mel", "values"),
          "first divergence at mel, only where the golden exceeds 1.0 (log10 energy above 0), where the"
          " candidate is exactly 1.0; invisible on quiet audio",
          _score_mel_upper_clamp),
    Fault("stft_pad_120", "STFT centre padding (n_fft − hop)/2 = 120 instead of n_fft/2 = 200",
          "`let pad_length = (n_fft - hop_length) / 2;` with no frame dropped (TrevorS/voxtral-mini-realtime-rs"
          " src/audio/mel.rs at 1efe5f8, fixed in c9e19bc)",
          "torch.stft(center=True): 200 reflected samples each side, the last frame dropped (§2.2)",
          lambda ctx: _front_end(ctx, "stft_pad_120", stft_pad_120),
          ("mel", "values"),
          "first divergence at mel on most speech frames, same frame count: each candidate frame lies halfway"
          " between golden frames t and t + 1 (centred 80 samples late)",
          _score_stft_late),
    Fault("left_pad_76", "76 tokens of left padding instead of 32",
          "`n_left_pad_tokens: 76` with the 39-token prompt unchanged (TrevorS/voxtral-mini-realtime-rs"
          " src/audio/pad.rs at 24cc815, deliberate, for Q4)",
          "32 tokens (2.56 s) of silence on the left, = the prompt's 32 left-pad positions (§6.3)",
          lambda ctx: _protocol(ctx, left_pad_delta=44),
          ("mel", "shape"),
          "SHAPE at mel: 352 more frames (44 tokens × 8), all silence at the start; the rest matches, and"
          " every later stage has 44 more positions",
          _score_left_pad),
    Fault("ada_silu", "SiLU instead of GELU in the ADA MLP",
          "`let scale = silu(scale);` (TrevorS/voxtral-mini-realtime-rs src/models/layers/rms_norm.rs at"
          " 1efe5f8, fixed in c9e19bc \"GELU not SiLU!\")",
          "(1 + W_up GELU(W_down t_cond)) (§5.3)",
          lambda ctx: _variant(ctx, name="ada_silu", ada_scale=silu_ada_scale),
          ("dec.L00.mlp.out", "values"),
          "first divergence at dec.L00.out, every row; dec.t_cond passes; time_ada.scale fails and is not 1",
          _score_ada_silu,
          lookalikes=("ada_before_attention", "ada_dropped", "ada_extra_norm"),
          separate=_ADA_SEPARATE,
          block_outputs=silu_time_ada_case),
    Fault("ada_extra_norm", "ADA renormalises its input: RMSNorm(x) · (1 + g) instead of x · (1 + g)",
          "the ADA layer divides its input by sqrt(mean(x²) + eps) before scaling (TrevorS/voxtral-mini-realtime-rs"
          " src/models/layers/rms_norm.rs at 1efe5f8; c9e19bc: \"NOT a normalization layer - it only applies"
          " modulation\")",
          "RMSNorm(h; ffn_norm) ⊙ (1 + g): the pre-FFN norm output scaled as it is (§5.2)",
          lambda ctx: _variant(ctx, name="ada_extra_norm", decoder_layer=ada_extra_norm_layer),
          ("dec.L00.mlp.out", "values"),
          "first divergence at dec.L00.out, every row; dec.t_cond and time_ada.scale pass; time_ada.out fails,"
          " each row the golden's times a row constant",
          _score_ada_extra_norm,
          lookalikes=("ada_before_attention", "ada_dropped", "ada_silu"),
          separate=_ADA_SEPARATE,
          block_outputs=extra_norm_time_ada_case),
    Fault("peak_normalize", "audio scaled to peak 0.95 before the mel",
          "`AudioBuffer::peak_normalize(0.95)` before the mel in the CLI and WASM paths (TrevorS/voxtral-mini-"
          "realtime-rs src/audio/io.rs at 780fa3b, deliberate, to rescue quiet audio under Q4)",
          "the waveform as read, int16-quantized, no gain (§2.1)",
          lambda ctx: _front_end(ctx, "peak_normalize", peak_normalize),
          ("mel", "values"),
          "first divergence at mel: every element above the floor moved by one constant log10(s)/2 (s the gain)",
          _score_peak_normalize),
)
FAULTS = {f.key: f for f in CATALOGUE}


def inject(key: str, ctx, original_audio: np.ndarray | None = None):
    """The golden Context that produces the pipeline with fault ``key``. A fault that
    ``reads_original_audio`` needs the audio before quantization (``original_audio``)."""
    fault = FAULTS[key]
    if not fault.reads_original_audio:
        return fault.inject(ctx)
    if original_audio is None:
        raise ValueError(f"{key} needs the original (unquantized) audio")
    return fault.inject(ctx, original_audio)


def faulty_outputs(key: str, ctx, case: str, inputs: dict[str, np.ndarray], p: Precision,
                   original_audio: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """What a port with fault ``key`` writes for golden case ``case`` given the golden inputs."""
    fault = FAULTS[key]
    faulty = inject(key, ctx, original_audio)
    if fault.reads_original_audio and "audio" in inputs:
        inputs = {**inputs, "audio": faulty.audio}  # the port is fed the audio it reads, not the golden's
    if fault.block_outputs is not None:
        outputs = fault.block_outputs(ctx, case, inputs, p)
        if outputs is not None:
            return outputs
    if case == "e2e" and faulty.variant.log_mel is not REFERENCE.log_mel:
        faulty, mel = port_mel_context(faulty, inputs, p)
        return {**replay(faulty, case, inputs, p), "mel": mel}
    return replay(faulty, case, inputs, p)


def faulty_set(key: str, setup, golden, p: Precision, original_audio: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """What a port with fault ``key`` writes for every case of golden set ``golden`` (``oracle.goldenset``),
    fed each case's stored inputs: one candidate dict, as a port dumps it. The Context's audio is the
    int16-quantized ``original_audio`` when given (faults that read the audio before quantization need
    it), else the e2e case's stored ``audio`` input."""
    cand: dict[str, np.ndarray] = {}
    audio = None if original_audio is None else quantize_int16(original_audio)
    for case in golden.cases:
        inputs = {k: np.asarray(v) for k, v in case.read_inputs().items()}
        case_audio = audio if audio is not None else (inputs["audio"].astype(np.float64) if "audio" in inputs else None)
        ctx = Context(setup, case_audio, 0)
        cand.update(faulty_outputs(key, ctx, case.name, inputs, p, original_audio=original_audio))
    return cand

