"""The fault catalogue: known porting mistakes, injectable into the oracle, with their signatures.

Each entry reproduces one mistake (MODEL.md §11, §6.6) by changing *what the oracle is given*, never by
copying the model's math:

    config faults     a checkpoint view with a different number       (window one key too wide)
    weight faults     a checkpoint view whose typed weights are edited (rotate-half RoPE on unpermuted
                      rows, a k bias, a dropped ADA term)
    protocol faults   a Protocol with a deviation field set            (38-token prompt, t from the wrong delay)
    front-end faults  mel options / unquantized audio                  (per-utterance max, no int16 round trip)
    composition faults a ``Variant`` that wires the same layer functions differently
                      (the Burn port's conv stem, symmetric padding, ADA before attention, shifted or
                      missing audio embeddings)

``inject(fault, ctx)`` returns a golden ``Context`` that produces the faulty pipeline; the golden case
runners then give a faulty candidate (for compare) or a faulty trace (trace38). Each entry also says
how it shows up in a compare report (``detect``), so compare can name likely mistakes; entries whose
end-to-end signatures coincide say so and name the check that separates them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import numpy as np

from .checkpoint import Checkpoint
from .config import CONV_KERNEL
from .decoder import decoder_attention
from .layers import conv1d, gelu, rms_norm, rope_angles, rope_rotate_half, swiglu
from .precision import Precision
from .taps import no_tap
from .weights import unpermute_rows


class EditedCheckpoint(Checkpoint):
    """A view of a checkpoint whose typed weights pass through ``edit(group, layer, container, config)``."""

    def __init__(self, base: Checkpoint, edit, config=None):
        super().__init__(base.directory, base.layout, config or base.config, base.index, base.names)
        self._edit = edit

    def group(self, group, layer, precision, arena=None):
        return self._edit(group, layer, super().group(group, layer, precision, arena), self.config)


# -- composition faults (the mistaken wiring, built from the model's own layer functions) ----------


def burn_conv_stem(mel, w, p: Precision, state=None, tap=no_tap):
    """Both convs stride 2 with symmetric padding 1 (TrevorS loader.rs conv1d_from_weights, MODEL.md §11.1):
    8N mel frames -> 2N encoder frames -> N/2 decoder positions, each spanning 160 ms."""
    if state is not None:
        raise ValueError("the Burn conv stem fault is offline only")
    def sym(x, wt, b):  # Burn PaddingConfig1d::Explicit(1): one zero frame on each side
        xr = np.concatenate([x, np.zeros((x.shape[0], 1), x.dtype)], axis=1)
        return p.store(gelu(p.store(conv1d(xr, wt, b, stride=2, history=np.zeros((x.shape[0], 1), x.dtype)))))
    h1 = sym(mel, w.w1, w.b1)
    tap("enc.conv1.out", h1.T)
    out = np.ascontiguousarray(sym(h1, w.w2, w.b2).T)
    tap("enc.conv.out", out)
    return out, None


def symmetric_conv_stem(mel, w, p: Precision, state=None, tap=no_tap):
    """Correct strides, symmetric padding: conv1 output i reads mel i-1..i+1 instead of i-2..i (one
    frame, 10 ms, of look-ahead; MODEL.md §11.1). conv2's symmetric pad happens to read the causal frames."""
    if state is not None:
        raise ValueError("the symmetric-padding fault is offline only")
    m = mel.shape[0]
    xr = np.concatenate([mel, np.zeros((m, 1), mel.dtype)], axis=1)  # one frame on the right ...
    h1 = conv1d(xr, w.w1, w.b1, stride=1, history=np.zeros((m, CONV_KERNEL - 1), mel.dtype))[:, 1:]  # ... one on the left
    h1 = p.store(gelu(p.store(h1)))
    tap("enc.conv1.out", h1.T)
    de = h1.shape[0]
    h2 = p.store(gelu(p.store(conv1d(h1, w.w2, w.b2, stride=2, history=np.zeros((de, 1), h1.dtype)))))
    out = np.ascontiguousarray(h2.T)
    tap("enc.conv.out", out)
    return out, None


def ada_before_attention_layer(x, positions, w, scale, cfg, p: Precision, past=None, tap=no_tap, name="dec.L00"):
    """ADA scale applied to the attention norm instead of the pre-FFN norm (MODEL.md §11.6)."""
    tap(f"{name}.ada_scale", scale[None, :])
    n = p.store(p.store(rms_norm(x, w.attn_norm, cfg.norm_eps)) * scale)
    attn_out, kv = decoder_attention(n, positions, w, cfg, p, past=past, tap=tap, name=name)
    h = p.store(x + attn_out)
    m = p.store(rms_norm(h, w.ffn_norm, cfg.norm_eps))
    y = p.store(h + p.store(swiglu(m, w.w1, w.w3, w.w2)))
    tap(f"{name}.out", y)
    return y, kv


def shift_audio(audio: np.ndarray) -> np.ndarray:
    """Position p gets A[p - 1] (zeros at 0): an off-by-one in the audio index (MODEL.md §6.6)."""
    out = np.zeros_like(audio)
    out[1:] = audio[:-1]
    return out


def no_audio_at(position: int):
    def drop(audio: np.ndarray) -> np.ndarray:
        out = audio.copy()
        if position < len(out):
            out[position] = 0.0
        return out
    return drop


# -- weight faults -------------------------------------------------------------------------------


def unpermuted_rope(group, layer, w, cfg):
    """Rotate-half RoPE on Mistral (interleaved) rows. rotate_half(W x) = perm(interleaved(perm⁻¹(W) x))
    per head, and q·k is unchanged by permuting both q and k alike, so the mistake equals interleaved
    RoPE on q/k rows (and the q bias) un-permuted as if they were HF rows (MODEL.md §11.4)."""
    if group == "enc_layer":
        hh = (cfg.encoder.n_heads, cfg.encoder.head_dim)
        return replace(w, wq=unpermute_rows(w.wq, *hh), bq=unpermute_rows(w.bq, *hh), wk=unpermute_rows(w.wk, *hh))
    if group == "dec_layer":
        d = cfg.decoder
        return replace(w, wq=unpermute_rows(w.wq, d.n_heads, d.head_dim), wk=unpermute_rows(w.wk, d.n_kv_heads, d.head_dim))
    return w


def k_bias(group, layer, w, cfg):
    """A non-zero k bias in the encoder (here: the q bias reused for k), MODEL.md §11.5."""
    return replace(w, bk=w.bq.copy()) if group == "enc_layer" else w


def ada_dropped(group, layer, w, cfg):
    """No ADA term: W_up = 0 makes (1 + g) = 1 in every layer."""
    return replace(w, ada_up=np.zeros_like(w.ada_up)) if group == "dec_layer" else w


# -- the catalogue -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fault:
    key: str
    title: str
    mistake: str  # what the port does, and where it was seen
    reference: str  # what the model does
    inject: Callable  # Context -> Context
    expect: str  # how it shows in a compare report of the e2e case (pipeline order)
    lookalikes: tuple[str, ...] = ()  # keys with the same end-to-end signature
    separate: str = ""  # the check that tells them apart


def _view(ctx, edit=None, **cfg_changes):
    from .golden import with_config_change

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


CATALOGUE: tuple[Fault, ...] = (
    Fault("stem_stride2_symmetric", "both convs stride 2, symmetric padding (the Burn port's stem)",
          "conv1 and conv2 built with stride 2 and PaddingConfig1d::Explicit(1) (TrevorS loader.rs, gguf/loader.rs)",
          "conv1 k3 s1 with 2 zero frames on the left, conv2 k3 s2 with 1 on the left (§3.1)",
          lambda ctx: _variant(ctx, name="stem_stride2_symmetric", conv_stem=burn_conv_stem),
          "SHAPE at enc.conv1.out: half as many frames; the whole sequence then has N/2 positions"),
    Fault("stem_symmetric_padding", "symmetric conv padding with the right strides",
          "conv1 padded one frame on each side instead of two on the left",
          "causal: conv1 output i reads mel i-2..i (§3.1)",
          lambda ctx: _variant(ctx, name="stem_symmetric_padding", conv_stem=symmetric_conv_stem),
          "first divergence at enc.conv1.out, every row; the candidate is the golden shifted one frame earlier"),
    Fault("prompt_38", "38-token prompt (BOS + 37 STREAMING_PAD)",
          "the prompt shortened by one to escape the 'position-38 anomaly' (TrevorS voxtral.rs)",
          "[BOS] + [STREAMING_PAD] x (32 + n_delay) = 39 tokens at 480 ms (§6.3)",
          lambda ctx: _protocol(ctx, prompt_pad_delta=-1),
          "every tensor before tokens passes (tokens_in is given); tokens: one more generated token, "
          "and the first free prediction made one position (80 ms) early"),
    Fault("audio_shift", "audio embeddings shifted by one position",
          "position p fed A[p-1] (an index compensation for a 38/39 prompt mismatch)",
          "position p always gets A[p] (§5.1, §6.6)",
          lambda ctx: _variant(ctx, name="audio_shift", audio_to_decoder=shift_audio),
          "first divergence at dec.in, every row; adapter.out passes; candidate dec.in - Emb = golden A shifted by one"),
    Fault("no_audio_last_prompt", "no audio embedding at the last prompt position",
          "the prompt's last position (38) fed Emb[PAD] alone",
          "every position, prompt included, gets A[p] + Emb[t_p] (§5.1)",
          _no_audio_last_prompt,
          "first divergence at dec.in, exactly one row: the last prompt position"),
    Fault("window_plus_one", "sliding window one key too wide",
          "masked where |i-j| > W, admitting W+1 keys (TrevorS masking.rs)",
          "key j visible iff 0 <= i-j < W (§3.2, §5.2)",
          _window_plus_one,
          "first divergence at enc.L00.out starting exactly at row W_enc (rows before it are exact)"),
    Fault("rope_rotate_half", "rotate-half RoPE on interleaved (Mistral-layout) q/k rows",
          "NeoX rotate-half applied to consolidated weights without the permutation",
          "interleaved pairs (2i, 2i+1) on Mistral rows (§1.4)",
          lambda ctx: _view(ctx, edit=unpermuted_rope),
          "first divergence at enc.L00.out from row 1 (row 0 is position 0: identity rotation)",
          lookalikes=("k_bias",),
          separate="the rope block case: it fails with rotate-half and passes with a k bias"),
    Fault("mel_utterance_max", "per-utterance log-mel maximum (Whisper's clamp)",
          "floor at max(log mel) - 8 over the utterance instead of the fixed 1.5 - 8",
          "max(log10 mel, -6.5) with 1.5 = global_log_mel_max (§2.2)",
          lambda ctx: replace(ctx, mel_floor="utterance", _models={}),
          "first divergence at mel, concentrated on elements at the floor (-0.625 in the golden)"),
    Fault("k_bias", "a bias on k in the encoder",
          "encoder attention with a non-zero k bias (here the q bias reused)",
          "q, v, o have biases, k does not (§1.3, §3.2)",
          lambda ctx: _view(ctx, edit=k_bias),
          "first divergence at enc.L00.out from row 1 (row 0 attends only to itself)",
          lookalikes=("rope_rotate_half",),
          separate="the rope block case: it passes with a k bias and fails with rotate-half"),
    Fault("ada_before_attention", "ADA scale on the attention norm instead of the FFN norm",
          "RMSNorm(x; attention_norm) * (1 + g) before attention, FFN norm unscaled",
          "RMSNorm(h; ffn_norm) * (1 + g) before the MLP (§5.2)",
          lambda ctx: _variant(ctx, name="ada_before_attention", decoder_layer=ada_before_attention_layer),
          "first divergence at dec.L00.out, every row; dec.t_cond passes",
          lookalikes=("ada_dropped",),
          separate="the time_ada block case: time_ada.scale passes when ADA is misplaced and fails when it is dropped"),
    Fault("tcond_wrong_delay", "t_cond from the wrong delay (t - 1)",
          "time embedding built from n_delay - 1 (e.g. an off-by-one in counting delay tokens)",
          "t = n_delay = delay_ms / 80 (§5.3)",
          lambda ctx: _protocol(ctx, t_delta=-1),
          "first divergence at dec.t_cond"),
    Fault("mel_unquantized", "mel from non-quantized audio",
          "the offline path skips the int16 WAV round trip of the reference",
          "the offline reference quantizes to int16 through soundfile (§2.1, §11.8)",
          None,  # needs the original audio: see inject()
          "first divergence at mel, small (about 1e-3) and spread over all bins; no effect on int16-exact audio"),
    Fault("ada_dropped", "no ADA term",
          "decoder layers without the (1 + g) scale",
          "RMSNorm(h; ffn_norm) * (1 + W_up GELU(W_down t_cond)) (§5.2)",
          lambda ctx: _view(ctx, edit=ada_dropped),
          "first divergence at dec.L00.out, every row; dec.t_cond passes",
          lookalikes=("ada_before_attention",),
          separate="the time_ada block case: time_ada.scale fails when ADA is dropped"),
)
FAULTS = {f.key: f for f in CATALOGUE}


def faulty_outputs(key: str, ctx, case: str, inputs: dict[str, np.ndarray], p: Precision,
                   original_audio: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """What a port with fault ``key`` writes for golden case ``case`` given the golden inputs."""
    from .golden import replay

    faulty = inject(key, ctx, original_audio)
    if key == "mel_unquantized" and "audio" in inputs:
        inputs = {**inputs, "audio": faulty.audio}
    if key == "rope_rotate_half" and case == "rope":
        # The block case hands the port raw vectors, not weights: its rotate-half RoPE shows directly.
        d = ctx.ckpt.config.decoder
        cos, sin = rope_angles(inputs["rope.positions"], d.head_dim, d.rope_theta, p.angle_dtype)
        x = p.array(np.asarray(inputs["rope.x"], np.float64))
        return {"rope.out": p.store(rope_rotate_half(x, p.store(cos.astype(x.dtype)), p.store(sin.astype(x.dtype))))}
    return replay(faulty, case, inputs, p)


def inject(key: str, ctx, original_audio: np.ndarray | None = None):
    """The golden Context that produces the pipeline with fault ``key``.

    ``mel_unquantized`` needs the audio before quantization (``original_audio``): the faulty port
    computes its mel from it where the reference (and the golden) uses the int16 round trip.
    """
    fault = FAULTS[key]
    if key == "mel_unquantized":
        if original_audio is None:
            raise ValueError("mel_unquantized needs the original (unquantized) audio")
        return replace(ctx, audio=np.asarray(original_audio, np.float64), _models={})
    return fault.inject(ctx)


# -- diagnosis: which catalogue entries a compare report looks like -------------------------------

CATALOGUE_DOC = "docs/trace38/report.md#8-the-fault-catalogue"


@dataclass(frozen=True)
class Evidence:
    """What the first diverging tensor looks like, measured on the arrays (not on report prose)."""

    stage: str
    status: str  # compare status: SHAPE, FAIL, ...
    golden_shape: tuple
    candidate_shape: tuple | None
    first_row: int | None = None  # first row (axis 0) with an element beyond tolerance
    failing_rows: int | None = None
    rows: int | None = None
    shifted_ahead: bool = False  # candidate[i] == golden[i + 1]: reads one frame ahead
    floor_fraction: float | None = None  # mel: share of failing elements where the golden is at the floor
    max_abs: float | None = None
    audio_shift: bool = False  # dec.in: candidate - golden == A[p-1] - A[p] (golden adapter.out)


def _status_of(report, name):
    t = next((t for t in report.tensors if t.name == name), None)  # None: not compared
    return None if t is None else t.status


def evidence(first, golden, candidate: dict) -> Evidence:
    """Measure what the failing tensor ``first`` (a compare TensorResult) looks like."""
    out = next((o for _, o in golden.outputs() if o.name == first.name and o.case == first.case), None)
    cand = candidate.get(first.candidate_key or first.name)
    g_shape = tuple(first.shape)
    c_shape = tuple(cand.shape) if cand is not None else None
    ev = Evidence(first.name, first.status, g_shape, c_shape)
    if out is None or cand is None or first.status != "FAIL" or out.kind != "float" or cand.shape != g_shape:
        return ev
    g = np.asarray(out.array(), np.float64)
    a = np.asarray(cand, np.float64)
    tol = (first.tolerance or {}).get("atol", 0.0)
    bad = np.abs(a - g) > tol
    rows_bad = bad.reshape(bad.shape[0], -1).any(axis=1) if bad.ndim > 1 else bad
    fields = dict(first_row=int(np.argmax(rows_bad)), failing_rows=int(rows_bad.sum()), rows=int(len(rows_bad)),
                  max_abs=float(np.abs(a - g).max()))
    if g.ndim == 2 and g.shape[0] > 2:
        fields["shifted_ahead"] = bool(np.abs(a[:-1] - g[1:]).max() <= tol)
    if first.name == "mel":
        fields["floor_fraction"] = float((np.abs(g[bad] - g.min()) < 1e-6).mean()) if bad.any() else 0.0
    if first.name == "dec.in":
        ad = next((o for _, o in golden.outputs() if o.name == "adapter.out" and o.case == first.case), None)
        if ad is not None:
            A = np.asarray(ad.array(), np.float64)
            if A.shape == g.shape:
                fields["audio_shift"] = bool(np.abs((a - g) - (shift_audio(A) - A)).max() <= tol * 4)
    return replace(ev, **fields)


def first_failures(report) -> list:
    """The first failing tensor overall and the first of each case (block cases isolate a mistake; the
    end-to-end case shows where it enters the pipeline)."""
    seen, firsts = set(), []
    for t in report.failing:
        if t.case not in seen:
            seen.add(t.case)
            firsts.append(t)
    return firsts


def _windows(golden) -> tuple[int | None, int | None, int | None]:
    for case in golden.cases:
        params = case.manifest.get("params", {})
        if "encoder_window" in params:
            return params["encoder_window"], params["decoder_window"], params.get("prompt_length")
    return None, None, None


def diagnose(report, golden, candidate: dict) -> list[dict]:
    """Up to three catalogue entries whose signature the report matches, best first, with the evidence."""
    firsts = first_failures(report)
    if not firsts:
        return []
    w_enc, w_dec, n_prompt = _windows(golden)
    rope_status = _status_of(report, "rope.out")
    scale_status = _status_of(report, "time_ada.scale")
    scores: dict[str, tuple[float, str]] = {}

    def score(key, value, why):
        if value > scores.get(key, (0.0, ""))[0]:
            scores[key] = (value, why)

    for first in firsts:
        _score_evidence(evidence(first, golden, candidate), score, report, w_enc, w_dec, n_prompt, rope_status,
                        scale_status)
    ranked = sorted(((v, k, why) for k, (v, why) in scores.items() if v >= 0.5), key=lambda t: (-t[0], t[1]))[:3]
    return [{"key": k, "title": FAULTS[k].title, "score": round(v, 2), "evidence": why,
             "separate": FAULTS[k].separate, "see": f"{CATALOGUE_DOC} ({k})"} for v, k, why in ranked]


def _score_evidence(ev: Evidence, score, report, w_enc, w_dec, n_prompt, rope_status, scale_status) -> None:
    stage, st = ev.stage, ev.status
    is_enc_layer = stage.startswith("enc.L") or stage in ("encoder_attention.out", "encoder_layer.out") \
        or stage.startswith("encoder_stack.")
    if st == "SHAPE" and ev.candidate_shape and len(ev.candidate_shape) == len(ev.golden_shape):
        if ev.candidate_shape[0] * 2 == ev.golden_shape[0] and stage in ("enc.conv1.out", "enc.conv.out", "conv_stem.conv1",
                                                                         "conv_stem.out", "enc.out", "adapter.out"):
            score("stem_stride2_symmetric", 1.0, f"{stage} has {ev.candidate_shape[0]} frames instead of {ev.golden_shape[0]}: "
                  "a stride-2 conv where conv1 has stride 1")
        if stage in ("tokens", "stream.tokens") and ev.candidate_shape[0] == ev.golden_shape[0] + 1:
            score("prompt_38", 1.0, "one more generated token than the golden: the prompt is one token short")
    if stage in ("enc.conv1.out", "conv_stem.conv1") and st == "FAIL":
        if ev.shifted_ahead:
            score("stem_symmetric_padding", 1.0, f"{stage}[i] equals the golden's [i + 1]: conv1 reads one frame ahead")
        else:
            score("stem_symmetric_padding", 0.5, f"{stage} differs from row {ev.first_row}")
    if stage in ("tokens", "stream.tokens") and st == "FAIL":
        score("prompt_38", 0.6, "tokens differ while every tensor before them passes")
    if stage == "mel" and st == "FAIL":
        if (ev.floor_fraction or 0) > 0.5:
            score("mel_utterance_max", 1.0, f"{ev.floor_fraction:.0%} of the failing mel elements sit at the golden's floor")
        else:
            score("mel_unquantized", 0.9 if (ev.max_abs or 1) < 0.2 else 0.5,
                  f"small mel differences (max {ev.max_abs:.2g}) spread over the spectrogram, not at the floor")
            score("mel_utterance_max", 0.4, "the mel differs")
    if stage == "dec.in" and st == "FAIL":
        if n_prompt and ev.failing_rows == 1 and ev.first_row == n_prompt - 1:
            score("no_audio_last_prompt", 1.0, f"only row {ev.first_row} (the last prompt position) of dec.in differs")
        if ev.audio_shift:
            score("audio_shift", 1.0, "dec.in - golden equals the golden audio embeddings shifted by one position")
        elif (ev.failing_rows or 0) > 1:
            score("audio_shift", 0.5, f"dec.in differs on {ev.failing_rows} rows while adapter.out passes")
    if stage == "dec.t_cond" and st == "FAIL":
        score("tcond_wrong_delay", 1.0, f"{stage} differs: the time embedding is built from another t")
    if stage == "rope.out" and st == "FAIL":
        score("rope_rotate_half", 0.9 if ev.first_row != 0 else 0.6,
              "the rope block case fails" + (" from row 1 (row 0 is position 0, the identity)" if ev.first_row else ""))
    if stage == "time_ada.scale" and st == "FAIL":
        score("ada_dropped", 1.0, "time_ada.scale fails: the (1 + W_up GELU(W_down t_cond)) term is not computed")
    if is_enc_layer and st == "FAIL":
        if w_enc is not None and ev.first_row == w_enc and stage.startswith("enc.L"):
            score("window_plus_one", 1.0, f"{stage} is exact before row {w_enc} (the encoder window) and differs from it on")
        if ev.first_row == 1:
            sep = {"FAIL": (1.0, 0.3), "ok": (0.3, 1.0)}.get(rope_status, (0.8, 0.8))
            tail = (f"; the rope case {'fails' if rope_status == 'FAIL' else 'passes'}" if rope_status else
                    "; run the rope block case to tell rotate-half RoPE from a k bias")
            score("rope_rotate_half", sep[0], f"{stage} is exact at row 0 (position 0) and differs from row 1" + tail)
            score("k_bias", sep[1], f"{stage} is exact at row 0 (a query attending only to itself) and differs from row 1" + tail)
    if stage.startswith("dec.L") and st == "FAIL":
        if w_dec is not None and ev.first_row == w_dec:
            score("window_plus_one", 1.0, f"{stage} is exact before row {w_dec} (the decoder window) and differs from it on")
        if ev.first_row == 0 and _status_of(report, "dec.t_cond") in (None, "ok"):
            sep = {"FAIL": (0.3, 1.0), "ok": (1.0, 0.3)}.get(scale_status, (0.8, 0.8))
            tail = (f"; time_ada.scale {'fails' if scale_status == 'FAIL' else 'passes'}" if scale_status else
                    "; run the time_ada block case to tell a misplaced ADA from a dropped one")
            score("ada_before_attention", sep[0], f"{stage} differs at every row while dec.in and dec.t_cond pass" + tail)
            score("ada_dropped", sep[1], f"{stage} differs at every row while dec.in and dec.t_cond pass" + tail)
