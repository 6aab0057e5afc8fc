"""Measures of a failing tensor that the fault catalogue's scores read (``oracle.faults``): which rows
fail and how, whether a candidate is the golden shifted, rescaled, clamped or run on, and the shared
stage names. Each takes an ``oracle.diagnose.Evidence`` (or arrays) and names no fault.

Shapes: ``ev.golden`` / ``ev.candidate`` [R, ...] float64 (R rows: positions, frames, or mel bins for
the [M, T] mel); token tensors [n] int64.
"""

from __future__ import annotations

import numpy as np

from .fault_mechanisms import shift_audio
from .layers import gelu
from .protocol import EOS


STEM_STAGES = ("enc.conv1.out", "enc.conv.out", "conv_stem.conv1", "conv_stem.out", "enc.out", "adapter.out")


CONV1_STAGES = ("enc.conv1.out", "conv_stem.conv1")


TOKEN_STAGES = ("tokens", "stream.tokens")


def fails(ev, *stages) -> bool:
    return ev.status == "FAIL" and ev.stage in stages


def lengths(ev) -> tuple[int, int] | None:
    """(candidate, golden) length along axis 0 of a tensor whose shape differs at the same rank."""
    if ev.status == "SHAPE" and ev.candidate_shape and len(ev.candidate_shape) == len(ev.golden_shape):
        return ev.candidate_shape[0], ev.golden_shape[0]
    return None


def reads_one_ahead(ev) -> bool:
    """candidate[i] == golden[i + 1] within atol: a conv that reads one frame ahead."""
    g, a = ev.golden, ev.candidate
    return g is not None and g.ndim == 2 and g.shape[0] > 2 and bool(np.abs(a[:-1] - g[1:]).max() <= ev.atol)


def floor_fraction(ev) -> float | None:
    """The share of failing mel elements where the golden sits at its floor (max - 8, in log10 units)."""
    if ev.golden is None:
        return None
    g, bad = ev.golden, ev.bad
    return float((np.abs(g[bad] - g.min()) < 1e-6).mean()) if bad.any() else 0.0


def audio_shifted(ev) -> bool:
    """dec.in − golden == A[p−1] − A[p], with A the case's golden adapter.out (audio embeddings)."""
    audio = ev.golden_output("adapter.out")
    if ev.golden is None or audio is None or audio.shape != ev.golden.shape:
        return False
    return bool(np.abs((ev.candidate - ev.golden) - (shift_audio(audio) - audio)).max() <= ev.atol * 4)


def encoder_exact_at_row_0(ev):
    """An encoder layer exact at row 0 (position 0) and wrong from row 1: rotate-half RoPE or a k bias.
    Returns (the rope block case's status, the note on it), or None."""
    enc = ev.stage.startswith("enc.L") or ev.stage in ("encoder_attention.out", "encoder_layer.out") \
        or ev.stage.startswith("encoder_stack.")
    if not (enc and ev.status == "FAIL" and ev.first_row == 1):
        return None
    rope = ev.status_of("rope.out")
    return rope, (f"; the rope case {'fails' if rope == 'FAIL' else 'passes'}" if rope else
                  "; run the rope block case to tell rotate-half RoPE from a k bias")


def decoder_wrong_at_every_row(ev):
    """A decoder layer wrong from row 0 while its inputs pass: ADA misplaced or dropped. Returns (the
    time_ada block case's status, why), or None."""
    if not (ev.status == "FAIL" and ev.stage.startswith("dec.L") and ev.first_row == 0
            and ev.status_of("dec.t_cond") in (None, "ok")):
        return None
    scale = ev.status_of("time_ada.scale")
    tail = (f"; time_ada.scale {'fails' if scale == 'FAIL' else 'passes'}" if scale else
            "; run the time_ada block case to tell a misplaced ADA from a dropped one")
    return scale, f"{ev.stage} differs at every row while dec.in and dec.t_cond pass" + tail


def extra_final_token(ev) -> bool:
    """The candidate's tokens are the golden's plus one more: its generation ran one step too far
    (N − P + 1 steps), not a shorter prompt (which moves every generated token one position earlier)."""
    g, a = ev.golden_raw, ev.candidate_raw
    return (ev.stage in TOKEN_STAGES and g is not None and a is not None and g.ndim == a.ndim == 1
            and len(a) == len(g) + 1 and bool(np.array_equal(np.asarray(a[:-1]), g)))


def golden_stopped_at_eos(ev) -> bool:
    """The golden's generation ended at EOS: a port that runs past the schedule stops there too."""
    g = ev.golden_raw
    return g is not None and g.ndim == 1 and len(g) > 0 and int(g[-1]) == EOS


def tokens_run_on(ev) -> int:
    """How many tokens the candidate has beyond the golden's, all of the golden's kept as its prefix
    (0: not that pattern)."""
    g, a = ev.golden_raw, ev.candidate_raw
    if not (ev.stage in TOKEN_STAGES and g is not None and a is not None and g.ndim == a.ndim == 1):
        return 0
    a = np.asarray(a)
    return len(a) - len(g) if len(a) > len(g) and np.array_equal(a[:len(g)], g) else 0


def rows_rescaled(ev) -> float | None:
    """How much of candidate − golden a per-row scalar factor explains (1: all of it), for a failing 2-D tensor."""
    if ev.golden is None or ev.golden.ndim != 2:
        return None
    g, a = ev.golden, ev.candidate
    c = np.sum(a * g, axis=1, keepdims=True) / np.maximum(np.sum(g * g, axis=1, keepdims=True), 1e-300)  # [R, 1]
    return 1.0 - float(np.linalg.norm(a - c * g) / max(float(np.linalg.norm(a - g)), 1e-300))


def scale_is_one(ev) -> bool | None:
    """Whether the candidate's time_ada.scale is exactly 1 (a dropped ADA term), None if not given."""
    s = ev.candidate_output("time_ada.scale")
    return None if s is None else bool(np.all(s == 1.0))


def mel_below_peak_fit(ev):
    """Fit log10 |mel − golden| = c0 + c_peak · (frame peak) + c_level · golden over the non-floor elements
    that differ more than float32 noise. A DFT-table error leaks a fixed fraction of each frame's peak
    into every bin: it grows with the depth below the peak (c_peak ≈ −c_level > 0). Noise added to the
    audio (no int16 round trip) grows with the absolute level only (c_peak ≈ 0). -> (c_peak, c_level, n)"""
    g, d = ev.golden, np.abs(ev.candidate - ev.golden)
    peak = np.broadcast_to(g.max(axis=0, keepdims=True), g.shape)  # [M, T]: each frame's loudest bin
    use = (d > ev.atol / 10) & (g > g.min() + 1e-6)
    if use.sum() < 50:
        return None
    x = np.stack([np.ones(int(use.sum())), peak[use], g[use]], axis=1)
    c = np.linalg.lstsq(x, np.log10(d[use]), rcond=None)[0]
    return float(c[1]), float(c[2]), int(use.sum())


def gelu_preimage(y: np.ndarray) -> np.ndarray:
    """x ≥ −0.75 with gelu(x) = y (GELU is increasing there), by bisection; y ≥ gelu's minimum."""
    lo = np.full(y.shape, -0.75)
    hi = np.maximum(y, 0.0) + 1.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        below = gelu(mid) < y
        lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
    return 0.5 * (lo + hi)


def local_form(ev, stage: str, name: str) -> dict | None:
    """The stage-local view's test of known wrong form ``name`` at ``stage`` ({"name", "alpha", "se",
    "follows"}, oracle.local.FORMS), or None when it did not run there."""
    report = getattr(ev, "report", None)
    row = next((r for r in getattr(report, "local", []) if r["name"] == stage and r["case"] == ev.case), None)
    return next((f for f in (row or {}).get("forms") or [] if f["name"] == name), None)


def ada_form(ev, name: str, what: str):
    """(score, why) from the stage-local view's test of form ``name`` at dec.L00.out, or None when it did
    not run: 1 when the layer's own error follows it, 0 (not this mistake) when it was tested and does not."""
    form = local_form(ev, "dec.L00.out", name)
    if form is None:
        return None
    if form["follows"]:
        return 1.0, (f"the error dec.L00.out adds (replayed on the candidate's own dec.in) follows {what}:"
                     f" alpha {form['alpha']:.3f} ± {form['se']:.1g}")
    return 0.0, ""
