"""Which fault catalogue entries a failing compare report looks like: measure, ask every entry, rank.

    report = compare(golden, candidate)
    attach_diagnosis(report, golden, candidate)   # report.likely_mistakes: at most three, best first

Generic on purpose: this module names no fault. For the first failing tensor of each case (a block case
isolates a mistake; the end-to-end case shows where it enters the pipeline), and for every stage the
stage-local view (``oracle.local_view``) finds adding the most error (where a mistake *is*, which after
a slightly-off earlier stage is not where compare first diverges), it measures an ``Evidence``
on the arrays, not on report prose, and hands it to every entry's ``score`` (``oracle.faults.Fault``),
which answers (score in [0, 1], why) or None. An entry keeps its best answer over those tensors; the
entries scoring at least ``MIN_SCORE`` are ranked by score, then key, and the first ``TOP`` reported.

Shapes: ``Evidence.golden`` and ``.candidate`` are the failing output's arrays in float64, same shape
[R, ...] (R rows: axis 0, positions or frames); ``.bad`` is the [R, ...] mask of elements beyond atol.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from .faults import CATALOGUE, Fault
from .report import FAIL, Report, TensorResult

MIN_SCORE = 0.5  # below this an entry is not named
TOP = 3  # at most this many entries are named
CATALOGUE_DOC = "docs/trace38/report.md#8-the-fault-catalogue"


@dataclass(frozen=True)
class Evidence:
    """What one failing tensor looks like. Row measures and arrays are set only for a float output that
    FAILs at the golden's shape (else None)."""

    stage: str  # the tensor's name, e.g. "enc.L00.out"
    status: str  # its compare status: SHAPE, FAIL, ...
    golden_shape: tuple
    candidate_shape: tuple | None  # None: not in the candidate
    first_row: int | None = None  # first row (axis 0) with an element beyond atol
    failing_rows: int | None = None  # how many rows have one
    rows: int | None = None
    max_abs: float | None = None  # max |candidate − golden|
    atol: float = 0.0  # the tolerance it was compared with
    golden: np.ndarray | None = field(default=None, repr=False)  # float64
    candidate: np.ndarray | None = field(default=None, repr=False)  # float64
    bad: np.ndarray | None = field(default=None, repr=False)  # |candidate − golden| > atol
    case: str = ""
    report: Any = field(default=None, repr=False)
    golden_set: Any = field(default=None, repr=False)
    golden_raw: np.ndarray | None = field(default=None, repr=False)  # the golden as stored (any status)
    candidate_raw: np.ndarray | None = field(default=None, repr=False)  # the candidate's tensor as given
    candidate_set: dict | None = field(default=None, repr=False)  # every candidate tensor, as given to compare
    local: dict | None = None  # the stage-local row of this stage (report.local), when the view ran
    first: bool = True  # the first failing tensor of its case (else a later suspect: tokens, the stage adding most)

    def local_of(self, name: str) -> dict | None:
        """The stage-local row of stage ``name`` in this case (None: not replayed)."""
        return next((r for r in self.report.local if r["name"] == name and r["case"] == self.case), None)

    def status_of(self, name: str) -> str | None:
        """The compare status of the first tensor called ``name`` (None: not compared)."""
        t = next((t for t in self.report.tensors if t.name == name), None)
        return None if t is None else t.status

    def provenance(self, key: str):
        """The golden set's provenance ``key`` (a single case directory: the case's), None if absent."""
        prov = self.golden_set.provenance or self.golden_set.cases[0].provenance
        return prov.get(key) if isinstance(prov, dict) else None

    def param(self, key: str):
        """``params[key]`` of the first case (index order) whose manifest has it, e.g. "encoder_window"."""
        for case in self.golden_set.cases:
            params = case.manifest.get("params")
            if isinstance(params, dict) and key in params:
                return params[key]
        return None

    def candidate_output(self, name: str) -> np.ndarray | None:
        """The candidate's tensor compared as ``name`` (the first of that name), in float64; None if absent."""
        t = next((t for t in self.report.tensors if t.name == name), None)
        a = None if t is None or self.candidate_set is None else self.candidate_set.get(t.candidate_key or t.name)
        return None if a is None else np.asarray(a, np.float64)

    def golden_output(self, name: str) -> np.ndarray | None:
        """Another golden output of the same case, in float64 (None if the case has none of that name)."""
        out = next((o for _, o in self.golden_set.outputs() if o.name == name and o.case == self.case), None)
        return None if out is None else np.asarray(out.array(), np.float64)


def measure(first: TensorResult, report: Report, golden, candidate: dict) -> Evidence:
    """The evidence of failing tensor ``first``: which rows fail, by how much, and the arrays themselves."""
    out = next((o for _, o in golden.outputs() if o.name == first.name and o.case == first.case), None)
    cand = candidate.get(first.candidate_key or first.name)
    g_shape = tuple(first.shape)
    ev = Evidence(first.name, first.status, g_shape, tuple(cand.shape) if cand is not None else None,
                  case=first.case, report=report, golden_set=golden,
                  golden_raw=None if out is None else np.asarray(out.array()), candidate_raw=cand,
                  candidate_set=candidate,
                  local=next((r for r in report.local if r["name"] == first.name and r["case"] == first.case), None),
                  first=first in first_failures(report))
    if out is None or cand is None or first.status != FAIL or out.kind != "float" or cand.shape != g_shape:
        return ev
    g = np.asarray(out.array(), np.float64)
    a = np.asarray(cand, np.float64)
    atol = (first.tolerance or {}).get("atol", 0.0)
    bad = np.abs(a - g) > atol
    rows_bad = bad.reshape(bad.shape[0], -1).any(axis=1) if bad.ndim > 1 else bad
    return replace(ev, first_row=int(np.argmax(rows_bad)), failing_rows=int(rows_bad.sum()), rows=int(len(rows_bad)),
                   max_abs=float(np.abs(a - g).max()), atol=atol, golden=g, candidate=a, bad=bad)


def first_failures(report: Report) -> list[TensorResult]:
    """The first failing tensor of each case, in pipeline order."""
    seen, firsts = set(), []
    for t in report.failing:
        if t.case not in seen:
            seen.add(t.case)
            firsts.append(t)
    return firsts


def suspects(report: Report) -> list[TensorResult]:
    """Where to look: the first failing tensor of each case, its failing token output, then the stage the
    stage-local view finds adding the most error (not every locally failing stage: a mistake in a layer type repeats in every
    layer of that type, and a later one looks like other mistakes)."""
    out = first_failures(report)
    for t in report.failing:  # a case's token output fails on its own terms (a run-on schedule, a flipped step)
        if t.kind == "tokens" and t not in out:
            out.append(t)
    most = report.adds_most
    if most is not None:
        t = next((t for t in report.tensors if t.case == most["case"] and t.name == most["name"]), None)
        if t is not None and t not in out:
            out.append(t)
    return out


def diagnose(report: Report, golden, candidate: dict, catalogue: tuple[Fault, ...] = CATALOGUE) -> list[dict]:
    """Up to ``TOP`` catalogue entries whose signature the report matches, best first:
    [{"key", "title", "score", "evidence", "separate", "see"}]."""
    best: dict[str, tuple[float, str, str]] = {}  # key -> (score, why, the stage it was scored on)
    for first in suspects(report):
        ev = measure(first, report, golden, candidate)
        for fault in catalogue:
            answer = fault.score(ev)
            if answer is not None and answer[0] > best.get(fault.key, (0.0, "", ""))[0]:
                best[fault.key] = (answer[0], answer[1], f"{first.case}/{first.name}")
    # A stage one entry explains with its signature itself (score 1) is not evidence for vaguer guesses.
    explained = {stage for v, _, stage in best.values() if v >= 1.0}
    by_key = {f.key: f for f in catalogue}
    ranked = sorted(((v, k, why) for k, (v, why, stage) in best.items()
                     if v >= MIN_SCORE and (v >= 1.0 or stage not in explained)), key=lambda t: (-t[0], t[1]))[:TOP]
    return [{"key": k, "title": by_key[k].title, "score": round(v, 2), "evidence": why,
             "separate": by_key[k].separate, "see": f"{CATALOGUE_DOC} ({k})"} for v, k, why in ranked]


def no_entry_fits(report: Report, golden, candidate: dict) -> dict:
    """What to say when no catalogue entry matches: the evidence, not a wrong name."""
    most = report.adds_most
    first = first_failures(report)
    target = first[0] if first else None
    if most is not None:  # the stage that adds the error, not where it first shows
        target = next(t for t in report.tensors if t.case == most["case"] and t.name == most["name"])
    ev = measure(target, report, golden, candidate)
    if ev.local is not None and ev.local.get("local") is not None:
        what = (f"max |candidate - replay| {ev.local['local']:.3g}" if ev.local["metric"] == "max_abs"
                else f"{100 * ev.local['local']:.3g}% of elements beyond one {report.port_dtype} spacing")
        form = ev.local.get("form") or {}
        pattern = (f"this stage itself adds the error (replayed on the candidate's own {', '.join(ev.local['reads'])}:"
                   f" {what}, {ev.local['local_pct']:.0f}% of its local tolerance"
                   + (f"; worst at {ev.local['worst_index']}" if ev.local.get("worst_index") else "")
                   + (f"; its error follows the {form['name']}, alpha {form['alpha']:.3f} ± {form['se']:.1g}"
                      if form.get("follows") else "") + ")")
        if ev.max_abs is not None:
            pattern += f"; inherited max |diff| {ev.max_abs:.3g} against atol {ev.atol:.3g}, {ev.failing_rows} of {ev.rows} rows beyond it"
    elif ev.max_abs is not None:
        pattern = (f"max |diff| {ev.max_abs:.3g} against atol {ev.atol:.3g}, {ev.failing_rows} of {ev.rows} rows"
                   f" beyond it, first at row {ev.first_row}")
    else:
        pattern = f"status {ev.status}, candidate shape {list(ev.candidate_shape) if ev.candidate_shape else None}" \
                  f" vs golden {list(ev.golden_shape)}"
    return {"key": None, "title": "no catalogue entry fits", "score": 0.0,
            "detail": f"{'stage adding the most error' if most is not None else 'first failure'} {ev.case}/{ev.stage}: {pattern};"
                      f" a mistake not in {CATALOGUE_DOC} yet"}


def attach_diagnosis(report: Report, golden, candidate: dict, catalogue: tuple[Fault, ...] = CATALOGUE) -> Report:
    """Fill ``report.likely_mistakes`` from ``diagnose`` when something fails (what `compare` prints
    under "Likely mistakes"); returns the report."""
    if report.failing or report.local_failing:
        found = diagnose(report, golden, candidate, catalogue)
        report.likely_mistakes = [
            {"key": d["key"], "title": f"{d['key']} ({d['title']})", "score": d["score"],
             "detail": d["evidence"] + (f"; to separate look-alikes: {d['separate']}" if d["separate"] else "")
             + f"; see {d['see']}"}
            for d in found] or [no_entry_fits(report, golden, candidate)]
    return report
