"""The numbers: what compare reports for a float output, and what a port's own comparator must reproduce.

golden/selftest/expected.json holds exactly ``compare_metrics`` for its two float outputs (and
``voxtral-oracle compare --json`` reports them under each tensor's "metrics"); ``nonfinite_scan`` is the
NaN/Inf check that comes before them. Nothing else in compare produces a number.

Shapes: ``a`` (candidate) and ``g`` (golden) have the same shape, any rank; indices are C-order
multi-indices (lists of ints). All arithmetic is float64, with a = candidate, g = golden, d = |a − g|:

    max abs diff        max d, with its C-order multi-index and both values there
    max rel diff        max d/|g| over the elements with |g| > 0 (None if there are none), with its index
    RMSE                sqrt(mean d²)
    NMSE                Σd² / Σg² (llama.cpp test-backend-ops; scale-free). 0/0 = 0, x/0 = inf
    cosine              Σag / sqrt(Σa² Σg²); 1 when both are all zero, 0 when only one is
    allowed             atol + rtol·|g| per element (golden/SPEC.md: rtol is 0 for measured tolerances)
    mismatched          count (and %) of elements with d > allowed (PyTorch assert_close's
                        "Mismatched elements: k / n (p%)"), and the first one in C order
    % of tolerance      100 · max(d / allowed) (llm.c's "% of maximum error"); ≤ 100 iff nothing is
                        mismatched; d > 0 where allowed = 0 gives inf. "Nx the tolerance" is this / 100.

Equal infinities count as equal and are left out of the sums; NaN anywhere propagates (compare reports
non-finite candidates as NAN before it computes numbers). Ties in a maximum go to the first element in
C order (np.argmax's rule), and a NaN beats every number.

Both functions stream over the arrays in blocks of ``BLOCK`` elements, so memory-mapped tensors of any
size are never converted whole; the result is the one of a single pass over the whole array.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def multi_index(flat: int, shape: tuple[int, ...]) -> list[int]:
    """The C-order multi-index of flat position ``flat`` ([] for a scalar), as plain ints."""
    return [int(i) for i in np.unravel_index(int(flat), shape)] if shape else []


BLOCK = 1 << 21  # elements per block: metrics stream over memory-mapped tensors in ~16 MB float64 pieces


def _blocks(a: np.ndarray, g: np.ndarray):
    """(offset, candidate block, golden block) in float64, C order; equal infinities zeroed in both."""
    a_flat, g_flat = a.reshape(-1), g.reshape(-1)
    for s in range(0, g_flat.size, BLOCK):
        ab = np.asarray(a_flat[s:s + BLOCK], dtype=np.float64)
        gb = np.asarray(g_flat[s:s + BLOCK], dtype=np.float64)
        same_inf = np.isinf(gb) & (ab == gb)
        if same_inf.any():  # equal infinities: equal, and out of the sums
            ab, gb = np.where(same_inf, 0.0, ab), np.where(same_inf, 0.0, gb)
        yield s, ab, gb


def _beats(new: float, old: float | None) -> bool:
    """Running argmax over blocks with np.argmax's rules: first occurrence wins, NaN beats everything."""
    if old is None:
        return True
    if math.isnan(old):
        return False
    return math.isnan(new) or new > old


def compare_metrics(a, g, atol: float, rtol: float) -> dict:
    """The numbers for candidate ``a`` against golden ``g`` (same shape), in float64; see the module doc.

    Keys: n, atol, rtol, golden_max_abs, max_abs_diff / _index / _golden / _candidate, max_rel_diff /
    _index / _golden / _candidate (None if no |g| > 0), rmse, nmse, cosine, mismatched, mismatched_pct,
    first_mismatch_index / _golden / _candidate (None if none), tolerance_used_pct, worst_index,
    worst_allowed (where d / allowed is largest). Indices are C-order multi-indices (lists of ints).
    Computed blockwise, so memory-mapped inputs of any size are never converted whole.
    """
    a, g = np.asarray(a), np.asarray(g)
    if a.shape != g.shape:
        raise ValueError(f"compare_metrics: shapes differ: {a.shape} vs {g.shape}")
    atol, rtol = float(atol), float(rtol)
    if not (math.isfinite(atol) and math.isfinite(rtol) and atol >= 0 and rtol >= 0):
        raise ValueError(f"compare_metrics: atol and rtol must be finite and >= 0, got {atol}, {rtol}")
    shape, n = g.shape, g.size
    best: dict[str, tuple[float, int, float, float] | None] = {"abs": None, "rel": None, "ratio": None}
    first = None
    sd2 = sg2 = sa2 = sag = 0.0
    k, gmax = 0, 0.0
    worst_allowed = None
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        for s, ab, gb in _blocks(a, g):
            d = np.abs(ab - gb)
            ag = np.abs(gb)
            allowed = atol + rtol * ag
            gmax = max(gmax, float(ag.max()))
            i = int(np.argmax(d))
            if _beats(float(d[i]), best["abs"] and best["abs"][0]):
                best["abs"] = (float(d[i]), s + i, float(gb[i]), float(ab[i]))
            nz = ag > 0
            if nz.any():
                rel = np.where(nz, d / np.where(nz, ag, 1.0), -np.inf)
                i = int(np.argmax(rel))
                if _beats(float(rel[i]), best["rel"] and best["rel"][0]):
                    best["rel"] = (float(rel[i]), s + i, float(gb[i]), float(ab[i]))
            ratio = np.where(d == 0, 0.0, d / allowed)
            i = int(np.argmax(ratio))
            if _beats(float(ratio[i]), best["ratio"] and best["ratio"][0]):
                best["ratio"] = (float(ratio[i]), s + i, float(gb[i]), float(ab[i]))
                worst_allowed = float(allowed[i])
            bad = ~(d <= allowed)  # NaN counts as mismatched
            kb = int(bad.sum())
            if kb and first is None:
                i = int(np.argmax(bad))
                first = (s + i, float(gb[i]), float(ab[i]))
            k += kb
            sd2 += float(np.dot(d, d))
            sg2 += float(np.dot(gb, gb))
            sa2 += float(np.dot(ab, ab))
            sag += float(np.dot(ab, gb))

    def at(key: str, entry) -> dict:
        if entry is None:
            return {f"{key}_index": None, f"{key}_golden": None, f"{key}_candidate": None}
        return {f"{key}_index": multi_index(entry[1], shape), f"{key}_golden": entry[2], f"{key}_candidate": entry[3]}

    m: dict[str, Any] = {"n": int(n), "atol": atol, "rtol": rtol, "golden_max_abs": gmax}
    m["max_abs_diff"] = best["abs"][0] if best["abs"] else 0.0
    m.update(at("max_abs", best["abs"]))
    m["max_rel_diff"] = best["rel"][0] if best["rel"] else None
    m.update(at("max_rel", best["rel"]))
    m["rmse"] = math.sqrt(sd2 / n) if n and math.isfinite(sd2) else (sd2 if n else 0.0)
    m["nmse"] = sd2 / sg2 if sg2 > 0 else (0.0 if sd2 == 0 else math.inf if sd2 > 0 else sd2)
    if sa2 == 0 and sg2 == 0:
        cos = 1.0
    elif sa2 == 0 or sg2 == 0:
        cos = 0.0
    else:
        cos = sag / math.sqrt(sa2 * sg2)
        cos = min(1.0, max(-1.0, cos)) if math.isfinite(cos) else cos
    m["cosine"] = cos
    m.update(mismatched=k, mismatched_pct=100.0 * k / n if n else 0.0)
    m["first_mismatch_index"] = multi_index(first[0], shape) if first else None
    m["first_mismatch_golden"] = first[1] if first else None
    m["first_mismatch_candidate"] = first[2] if first else None
    m["tolerance_used_pct"] = 100.0 * best["ratio"][0] if best["ratio"] else 0.0
    m["worst_index"] = multi_index(best["ratio"][1], shape) if best["ratio"] else None
    m["worst_allowed"] = worst_allowed
    return m


def nonfinite_scan(a, g) -> dict | None:
    """NaN/Inf in candidate ``a`` that the golden ``g`` does not have at the same place (an Inf equal to
    the golden's is fine): {"nan", "inf", "first_index", "golden", "candidate"}, or None if there are none."""
    a, g = np.asarray(a), np.asarray(g)
    a_flat, g_flat = a.reshape(-1), g.reshape(-1)
    nan = inf = 0
    first = None
    for s in range(0, g_flat.size, BLOCK):
        ab = np.asarray(a_flat[s:s + BLOCK], dtype=np.float64)
        gb = np.asarray(g_flat[s:s + BLOCK], dtype=np.float64)
        bad = ~np.isfinite(ab) & ~(ab == gb)
        if bad.any():
            nan += int(np.isnan(ab[bad]).sum())
            inf += int(np.isinf(ab[bad]).sum())
            if first is None:
                i = int(np.argmax(bad))
                first = (s + i, float(gb[i]), float(ab[i]))
    if first is None:
        return None
    return {"nan": nan, "inf": inf, "first_index": multi_index(first[0], g.shape), "golden": first[1], "candidate": first[2]}
