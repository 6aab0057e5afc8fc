"""Which precision a candidate looks like, from the pattern of its per-stage deviations.

Shape legend: per-stage scalars only: {stage name: deviation}, {port dtype: {stage name: envelope}}.

Each port dtype leaves its own pattern across the stages of a golden set, which the set already holds:
a tolerance's ``measured_max_abs`` is the oracle's own max |deviation| from float64 in that dtype. A
float16 port deviates ~300-1000x more than a float32 one wherever a matmul is involved and exactly as
much at the stages it computes in float32 (mel, norms, RoPE); a bf16 port deviates ~10x more again and
at every stage. So a candidate's deviations, divided stage by stage by each envelope, sit near 1
(10⁰) for the precision it was computed in and orders of magnitude away for the others.

The distance to a precision is the median over stages of |log10(deviation / envelope)| in decades
(the median, so that a real mistake at a few stages does not pull the answer); the answer is the nearest
precision, and the margin is how many decades the runner-up is farther. This module knows no
comparator: ``compare`` passes in the per-stage figures and prints ``line``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

PRECISIONS = ("float32", "float16", "bf16")
CONFIDENT_MARGIN = 0.5  # decades between the nearest and the runner-up for a firm answer (~3x)
NEAR = 1.0  # ... and the nearest within this many decades: a port 100x off every envelope has a bug, not a dtype
EXACT_FLOOR = 1e-3  # an exact stage (deviation 0) counts as this fraction of its smallest envelope


@dataclass(frozen=True)
class Signature:
    looks_like: str | None  # the nearest precision; None if no stage could be used
    distance: dict[str, float]  # precision -> median |log10(deviation / envelope)| (decades)
    margin: float  # runner-up distance - nearest distance (decades)
    stages: int  # stages used

    @property
    def confident(self) -> bool:
        return (self.looks_like is not None and self.margin >= CONFIDENT_MARGIN
                and self.distance[self.looks_like] <= NEAR)

    def line(self, port_dtype: str) -> str:
        """One report line, e.g. "looks like a float16 port; you ran --port-dtype float32"."""
        if self.looks_like is None:
            return "precision: no stage with a deviation and measured envelopes to judge from"
        d = ", ".join(f"{p} {self.distance[p]:.2f}" for p in self.distance)
        figures = f"(median distance in decades from each envelope over {self.stages} stages: {d})"
        if not self.confident:
            return f"precision: the deviation pattern fits no port dtype clearly {figures}"
        if self.looks_like == port_dtype:
            return f"precision: looks like a {self.looks_like} port, as --port-dtype says {figures}"
        return f"precision: looks like a {self.looks_like} port; you ran --port-dtype {port_dtype} {figures}"


def _measured(t) -> float | None:
    if t is None:
        return None
    v = t.get("measured_max_abs") if isinstance(t, Mapping) else getattr(t, "measured_max_abs", None)
    return None if v is None else float(v)


def envelopes(tolerances: Mapping[str, Mapping[str, object]]) -> dict[str, dict[str, float]]:
    """{stage: {port: tolerance}} (manifest dicts or objects with ``measured_max_abs``) ->
    {port: {stage: measured max |deviation| of the oracle's own run in that dtype}}."""
    out: dict[str, dict[str, float]] = {p: {} for p in PRECISIONS}
    for stage, per_port in tolerances.items():
        for port in PRECISIONS:
            v = _measured(per_port.get(port))
            if v is not None:
                out[port][stage] = v
    return out


def signature(deviation: Mapping[str, float], envelope: Mapping[str, Mapping[str, float]]) -> Signature:
    """The precision whose envelope pattern the per-stage ``deviation`` (max |candidate - golden|)
    is nearest to, in log space. Stages are used where the deviation is finite and every precision has
    a positive envelope; the stages where all precisions agree do not change the ranking."""
    ports = [p for p in PRECISIONS if envelope.get(p)]
    residuals: dict[str, list[float]] = {p: [] for p in ports}
    for stage, dev in deviation.items():
        env = [envelope[p].get(stage) for p in ports]
        if dev is None or not math.isfinite(dev) or any(e is None or not e > 0 for e in env):
            continue
        dev = max(float(dev), EXACT_FLOOR * min(env))
        for p, e in zip(ports, env):
            residuals[p].append(abs(math.log10(dev / e)))
    n = len(residuals[ports[0]]) if ports else 0
    if n == 0:
        return Signature(None, {}, 0.0, 0)
    distance = {p: _median(r) for p, r in residuals.items()}
    ranked = sorted(distance, key=distance.get)
    margin = distance[ranked[1]] - distance[ranked[0]] if len(ranked) > 1 else math.inf
    return Signature(ranked[0], distance, margin, n)


def _median(xs: list[float]) -> float:
    s = sorted(xs)
    k = len(s) // 2
    return s[k] if len(s) % 2 else 0.5 * (s[k - 1] + s[k])
