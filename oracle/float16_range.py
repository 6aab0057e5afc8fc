"""float16's range: which activations and weights a float16 (ggml F16) port cannot hold.

Shape legend: any tensor; findings are per named stage (tap) or per checkpoint tensor.

float16 holds |x| <= 65504 (larger values become inf when a port casts a matmul input to F16, and
the inf then spreads through the whole forward pass) and keeps full precision only down to 2^-14
(subnormals below that keep fewer bits; values below 2^-25 round to zero). Activations that cross
the upper limit are the finding that matters: a float16 port of that model is wrong there however
carefully it is written. ``overflow`` scans a run's taps (the e2e goldens tap every stage);
``weight_range`` scans a checkpoint's weights, whose BF16 -> F16 conversion is exact in between.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping

import numpy as np

FLOAT16_MAX = float(np.finfo(np.float16).max)  # 65504
FLOAT16_TINY = float(np.finfo(np.float16).tiny)  # 2^-14: smallest normal
FLOAT16_ZERO_BELOW = 2.0 ** -25  # half the smallest subnormal: this and less rounds to zero


@dataclass(frozen=True)
class Overflow:
    stage: str  # tap name
    count: int  # elements with |x| > 65504
    max_abs: float  # largest |x| at that stage

    def text(self) -> str:
        return f"{self.stage}: {self.count} element(s) beyond float16's range (max |x| {self.max_abs:.6g} > {FLOAT16_MAX:g})"


def overflow_count(x: np.ndarray) -> tuple[int, float]:
    """(elements with |x| > 65504, max |x|) of one float tensor; (0, 0.0) when empty."""
    a = np.asarray(x)
    if a.size == 0 or a.dtype.kind != "f":
        return 0, 0.0
    m = np.abs(a)
    return int(np.count_nonzero(m > FLOAT16_MAX)), float(m.max())


def overflow(taps: Mapping[str, np.ndarray] | Iterable[tuple[str, np.ndarray]]) -> list[Overflow]:
    """The stages (in the order given) with at least one activation float16 cannot hold."""
    items = taps.items() if isinstance(taps, Mapping) else taps
    found = []
    for name, x in items:
        count, max_abs = overflow_count(x)
        if count:
            found.append(Overflow(name, count, max_abs))
    return found


def overflow_line(taps: Mapping[str, np.ndarray]) -> str:
    """One line for a report: the stages that overflow float16, or the largest |x| seen and where."""
    found = overflow(taps)
    if found:
        return "float16 range: " + "; ".join(f.text() for f in found)
    floats = [(k, overflow_count(v)[1]) for k, v in taps.items() if np.asarray(v).dtype.kind == "f" and np.asarray(v).size]
    if not floats:
        return "float16 range: no float activation"
    stage, peak = max(floats, key=lambda kv: kv[1])
    return (f"float16 range: no activation overflows (largest |x| {peak:.6g} at {stage}, "
            f"{100 * peak / FLOAT16_MAX:.2g}% of {FLOAT16_MAX:g})")


@dataclass(frozen=True)
class WeightRange:
    name: str
    size: int
    overflow: int  # |w| > 65504: inf in float16
    subnormal: int  # 2^-25 < |w| < 2^-14: fewer significant bits in float16
    flushed: int  # 0 < |w| <= 2^-25: zero in float16


def weight_range(name: str, w: np.ndarray, chunk_rows: int = 4096) -> WeightRange:
    """What storing one checkpoint tensor as float16 does to it, row block by row block (bounded memory
    on an 8 GB checkpoint read through a memmap)."""
    w = np.asarray(w)
    rows = w.reshape(w.shape[0], -1) if w.ndim > 1 else w.reshape(1, -1)
    over = sub = flushed = 0
    for a in range(0, rows.shape[0], chunk_rows):
        m = np.abs(rows[a:a + chunk_rows].astype(np.float32))
        over += int(np.count_nonzero(m > FLOAT16_MAX))
        nz = m > 0
        sub += int(np.count_nonzero(nz & (m < FLOAT16_TINY) & (m > FLOAT16_ZERO_BELOW)))
        flushed += int(np.count_nonzero(nz & (m <= FLOAT16_ZERO_BELOW)))
    return WeightRange(name, int(w.size), over, sub, flushed)


class RangeTap:
    """A tap that keeps only each stage's (elements beyond 65504, max |x|), not the arrays: the range
    of every tapped activation of a full-size forward pass in a few bytes. Non-finite values (a float16
    run whose operand overflowed) are counted separately."""

    def __init__(self):
        self.stats: dict[str, list] = {}  # name -> [overflow count, max |x| over finite values, non-finite count]

    def __call__(self, name: str, x: np.ndarray, axis: int = 0) -> None:
        a = np.asarray(x)
        if a.dtype.kind != "f" or a.size == 0:
            return
        finite = np.isfinite(a)
        m = np.abs(np.where(finite, a, 0))
        s = self.stats.setdefault(name, [0, 0.0, 0])
        s[0] += int(np.count_nonzero(m > FLOAT16_MAX))
        s[1] = max(s[1], float(m.max()))
        s[2] += int(a.size - np.count_nonzero(finite))

    def findings(self) -> list[Overflow]:
        return [Overflow(k, c, m) for k, (c, m, _) in self.stats.items() if c]

    def nonfinite(self) -> dict[str, int]:
        return {k: n for k, (_, _, n) in self.stats.items() if n}
