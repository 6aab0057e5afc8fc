"""Compare a port's tensors with golden tensors (golden/SPEC.md, ``voxtral-oracle.golden/1``): only comparing.

    golden = load_golden("goldens/")                  # index.json (a set) or manifest.json (one case)
    candidate = load_candidate("port_out.safetensors")
    report = compare(golden, candidate, port_dtype="float32")
    attach_diagnosis(report, golden, candidate)       # optional (oracle.diagnose): names likely mistakes
    print(report.text()); sys.exit(report.exit_code)

The rooms around it: ``oracle.goldenset`` reads and verifies the golden set and loads the candidate,
``oracle.metrics`` computes the numbers, ``oracle.report`` holds the result and renders it, and
``oracle.diagnose`` ranks the fault catalogue's entries against a failing report (compare itself
knows no fault). Shapes are the golden's (``GoldenOutput.shape``); a candidate must match exactly.

Checks, per golden output, in pipeline order (cases in index order, outputs in manifest order):

    1. present   the candidate has a tensor of that name                     else MISSING  (structural)
    2. shape     identical shape (hints: transposed, half/double length)      else SHAPE    (structural)
    3. dtype     same kind: any float (F64/F32/BF16/F16) for a float output,
                 any integer for a "tokens"/"int" output                      else DTYPE    (structural)
    4. finite    no NaN/Inf in the candidate (an Inf equal to the golden's
                 Inf is allowed)                                               else NAN      (structural)
    5. numbers   every element within tolerance (float), equal (int, tokens)  else FAIL     (tolerance)

Numbers: ``oracle.metrics`` (max abs/rel difference, RMSE, NMSE, cosine, mismatched elements, % of
tolerance), the ones golden/selftest/expected.json pins for a port's own comparator.

Tokens (``kind: "tokens"``) must be identical. At the first differing step the report shows both ids,
their text (Tekken ``token_text``) when a tekken.json is known, and a few tokens of context. Near-tie
rule (SPEC.md): if the case has the aux tensor ``<name>.margin`` (golden top-1 minus top-2 logit per
step) and the margin at the first differing step is below the atol, for the port dtype, of the logits
output of the same case (``logits_output_for``: ``tokens`` -> ``logits``, ``stream.tokens`` ->
``stream.logits``), the tensor's status is ``near-tie``: it passes with a note and the steps after it
are not compared. Without such a logits output or a margin tensor there is no near-tie.
A 1-D token sequence of a different length than the golden's is SHAPE unless its common prefix
already differs at a near-tie (greedy decoding legitimately diverges there, length included).
Integers (``kind: "int"``) must be identical.

Names: a port writes each output under its golden name. When two cases of a set have an output of the
same name (``logits`` in an offline and a streaming case), the candidate may qualify it as
``<case name>/<name>`` or ``<case dir>/<name>`` (a safetensors key, or a sub-directory of a candidate
directory); a qualified key wins over the plain one.

Exit codes: 0 pass, 1 tolerance failure, 2 structural failure (2 wins over 1; a golden set that fails
its sha256 or does not match its manifest is also 2, raised as OracleError), 3 usage or I/O error.

Fewer rows: an e2e per-position output (dec.in, dec.Lxx.out, dec.norm, logits) may hold only the rows a
port computes: logits rows P-1 .. N-1 or P-1 .. N-2, or rows 0 .. N-2 of any of them (the N - P
schedule never feeds position N-1); those rows are compared, with a note (``rows_a_port_computes``).

What is deliberately not done: inputs and aux tensors are not compared (ports do not produce them);
candidate tensors that are not golden outputs are listed as a note, never a failure; nothing is skipped
after a structural failure (every selected output is compared; the verdict names the first failing one).
"""

from __future__ import annotations

import difflib
import fnmatch
import math
import os
import re
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from .checkpoint import read_tensor, sha256_file
from .errors import OracleError, where
from .goldenset import (
    PORT_DTYPES,
    GoldenCase,
    GoldenOutput,
    GoldenSet,
    Tolerance,
    dtype_name,
    is_float_dtype,
    is_int_dtype,
    load_candidate,
    load_golden,
)
from .metrics import compare_metrics, multi_index, nonfinite_scan
from .precision_signature import envelopes, signature
from .report import (
    DTYPE,
    FAIL,
    MISSING,
    NAN,
    NEAR_TIE,
    OK,
    SHAPE,
    Report,
    TensorResult,
    fmt_index,
    fmt_num,
    fmt_pair,
    fmt_shape,
    fmt_step,
)

# What ``from oracle.compare import ...`` offers: compare's own functions and, for convenience, the
# golden-set loaders, the metrics and the report it works with (their homes are the modules named above).
__all__ = ["compare", "logits_output_for", "shape_hints", "load_golden", "load_candidate", "compare_metrics",
           "Report", "TensorResult", "GoldenSet", "PORT_DTYPES"]

CONTEXT_TOKENS = 3  # tokens of context either side of the first differing step


def shape_hints(golden_shape, candidate_shape) -> list[str]:
    """What a wrong shape looks like: transposed, half/double or one-off length along one axis, reshaped."""
    g, c = tuple(golden_shape), tuple(candidate_shape)
    if g == c:
        return []
    hints = []
    if len(g) == len(c) and len(g) >= 2 and sorted(g) == sorted(c):
        hints.append("looks transposed" if c == g[::-1] else "looks transposed (axes permuted)")
    elif len(g) == len(c):
        axes = [i for i in range(len(g)) if g[i] != c[i]]
        if len(axes) == 1:
            i = axes[0]
            if 2 * c[i] == g[i]:
                hints.append(f"half length along axis {i}: {c[i]} instead of {g[i]}")
            elif c[i] == 2 * g[i]:
                hints.append(f"double length along axis {i}: {c[i]} instead of {g[i]}")
            elif abs(c[i] - g[i]) == 1:
                hints.append(f"one {'short' if c[i] < g[i] else 'too many'} along axis {i}: {c[i]} instead of {g[i]}")
    if not hints:
        if tuple(s for s in g if s != 1) == tuple(s for s in c if s != 1):
            hints.append("differs only in size-1 axes (a squeeze/unsqueeze?)")
        elif math.prod(g) == math.prod(c):
            hints.append("same number of elements in another shape (reshaped?)")
    return hints


class _Tokenizer:
    """The tekken used to show token text: the one given, else provenance ``tekken`` or the
    ``checkpoint``'s tekken.json (as given, or relative to the golden dir; ``builtin:tiny`` is the
    built-in tiny checkpoint). Loaded on first use; its sha256 is checked against ``tekken_sha256``."""

    def __init__(self, given, golden: GoldenSet, notes: list[str]):
        self.given, self.golden, self.notes = given, golden, notes
        self.cache: dict[str, Any] = {}

    def get(self, case: GoldenCase):
        from .tokenizer import Tekken

        if self.given is not None:
            if isinstance(self.given, (str, os.PathLike)):
                if "given" not in self.cache:
                    try:
                        self.cache["given"] = Tekken.from_file(self.given)
                    except OracleError as err:
                        raise OracleError(str(err), exit_code=3) from None
                return self.cache["given"]
            return self.given
        for prov in (case.provenance, self.golden.provenance):
            for cand in self._paths(prov):
                key = str(cand)
                if key not in self.cache:
                    self.cache[key] = self._load(cand, prov)
                if self.cache[key] is not None:
                    return self.cache[key]
        return None

    def _paths(self, prov: dict) -> list[Path]:
        raw = []
        if isinstance(prov.get("tekken"), str):
            raw.append(Path(prov["tekken"]))
        if prov.get("checkpoint") == "builtin:tiny":
            try:
                from .builtin import tiny_checkpoint

                raw.append(tiny_checkpoint() / "tekken.json")
            except OracleError:
                pass
        elif isinstance(prov.get("checkpoint"), str):
            raw.append(Path(prov["checkpoint"]) / "tekken.json")
        out = []
        for p in raw:
            out.append(p)
            if not p.is_absolute():
                out.append(self.golden.path / p)
        return [p for p in out if p.is_file()]

    def _load(self, path: Path, prov: dict):
        from .tokenizer import Tekken

        try:
            tek = Tekken.from_file(path)
        except OracleError as err:
            self.notes.append(f"could not load the tekken named by the golden provenance ({err}); token ids only")
            return None
        want = prov.get("tekken_sha256")
        if isinstance(want, str) and sha256_file(path) != want.lower():
            self.notes.append(f"{path}: sha256 differs from the golden provenance's tekken_sha256; token text may be wrong")
        self.notes.append(f"token text from {path} (golden provenance)")
        return tek


def _token_label(tek, token_id: int) -> str:
    if tek is None:
        return str(token_id)
    try:
        if tek.is_special(token_id):
            return f"{token_id} {tek.token_text(token_id)}"
        raw = tek.id_bytes(token_id)
        try:
            text = raw.decode("utf-8")
            shown = repr(text) if text.isprintable() else tek.token_text(token_id)
        except UnicodeDecodeError:
            shown = tek.token_text(token_id)
        return f"{token_id} {shown}"
    except OracleError:
        return f"{token_id} (not in the vocabulary)"


def _context(ids: np.ndarray, at: int, tek) -> str:
    lo, hi = max(0, at - CONTEXT_TOKENS), min(ids.size, at + CONTEXT_TOKENS)
    parts = ["..."] if lo > 0 else []
    for i in range(lo, hi):
        lab = _token_label(tek, int(ids[i]))
        parts.append(f">{lab}<" if i == at else lab)
    if hi < ids.size:
        parts.append("...")
    return " ".join(parts)


def logits_output_for(case: GoldenCase, tokens_name: str) -> GoldenOutput | None:
    """The logits whose atol is the near-tie threshold of token output ``tokens_name``: in the same case,
    the float output named like it with "tokens" replaced by "logits" (``tokens`` -> ``logits``,
    ``stream.tokens`` -> ``stream.logits``), else the one named ``logits``, else the only float output
    whose name ends in "logits"."""
    stem, _, last = tokens_name.rpartition(".")
    names = [f"{stem}.logits" if stem else "logits"] if last == "tokens" else []
    for name in names + ["logits"]:
        out = case.output(name)
        if out is not None and out.kind == "float":
            return out
    ending = [o for o in case.outputs if o.kind == "float" and o.name.split(".")[-1] == "logits"]
    return ending[0] if len(ending) == 1 else None


def _near_tie_threshold(case: GoldenCase, tokens_name: str, port_dtype: str) -> float | None:
    logits = logits_output_for(case, tokens_name)
    if logits is None or port_dtype not in logits.tolerance:
        return None
    return logits.tolerance[port_dtype].atol


def _compare_tokens(r: TensorResult, case: GoldenCase, out: GoldenOutput, cand: np.ndarray, port_dtype: str,
                    tokenizer: _Tokenizer, notes: list[str]) -> None:
    g = np.asarray(out.array(), dtype=np.int64).reshape(-1)
    a = np.asarray(cand, dtype=np.int64).reshape(-1)
    same_shape = tuple(cand.shape) == out.shape
    n = min(g.size, a.size) if (same_shape or (cand.ndim == 1 and len(out.shape) == 1)) else 0
    diff = np.flatnonzero(g[:n] != a[:n])
    info: dict[str, Any] = {"compared": int(n), "mismatched": int(diff.size), "first_step": None}
    r.tokens = info
    if diff.size == 0:
        if same_shape:
            r.status = OK
        return
    at = int(diff[0])
    step = multi_index(at, out.shape)
    tek = tokenizer.get(case)
    gl, cl = _token_label(tek, int(g[at])), _token_label(tek, int(a[at]))
    info.update(first_step=step, golden_id=int(g[at]), candidate_id=int(a[at]), golden_text=gl, candidate_text=cl,
                context_golden=_context(g, at, tek), context_candidate=_context(a, at, tek),
                margin=None, near_tie_atol=None, tekken=getattr(tek, "path", None) if tek is not None else None)
    where_ = f"step {fmt_step(step)}"
    head = f"{where_}: golden {gl}, candidate {cl}"
    margin_name = f"{out.name}.margin"
    atol = _near_tie_threshold(case, out.name, port_dtype)
    if margin_name not in case.aux:
        why = f"no {margin_name} aux tensor to judge a near-tie"
    elif atol is None:
        why = "no logits output in this case to give the near-tie threshold"
    else:
        margin = float(np.asarray(read_tensor(case.aux[margin_name]), dtype=np.float64).reshape(-1)[at])
        info.update(margin=margin, near_tie_atol=atol)
        if margin < atol:
            r.status = NEAR_TIE
            info["description"] = (f"near-tie at {head}: golden top-1 margin {fmt_num(margin)} < logits atol {fmt_num(atol)}"
                                   f" ({port_dtype}); later steps not compared")
            r.note = f"near-tie at {where_}"
            notes.append(f"{r.name} (case {r.case}): {info['description']}")
            return
        why = f"golden margin {fmt_num(margin)} >= logits atol {fmt_num(atol)}: not a near-tie"
    info["description"] = (f"first difference at {head} ({why});"
                           f" {diff.size} of {n} compared steps differ")
    if same_shape:
        r.status = FAIL
        r.summary = f"token {head} ({why})"
        r.note = f"{where_}: {gl} != {cl}"
    else:
        r.summary += f"; tokens first differ at {head}"


def _compare_int(r: TensorResult, out: GoldenOutput, cand: np.ndarray) -> None:
    g = np.asarray(out.array()).reshape(-1)
    a = np.asarray(cand).reshape(-1)
    neq = np.flatnonzero(g != a)
    r.tokens = {"compared": int(g.size), "mismatched": int(neq.size), "first_step": None}
    if neq.size == 0:
        r.status = OK
        return
    at = int(neq[0])
    idx = multi_index(at, out.shape)
    r.tokens.update(first_index=idx, golden=int(g[at]), candidate=int(a[at]),
                    description=f"{neq.size} of {g.size} values differ; first at {fmt_index(idx)}: golden {int(g[at])},"
                                f" candidate {int(a[at])}")
    r.status = FAIL
    r.summary = f"{neq.size} of {g.size} values differ, first at {fmt_index(idx)}: golden {int(g[at])}, candidate {int(a[at])}"
    r.note = f"{neq.size}/{g.size} differ"


def _rows_before_divergence(case: GoldenCase, out: GoldenOutput, results: list) -> int | None:
    """For an output whose rows follow generated tokens (manifest ``rows_follow``: {"tokens", "offset"}),
    the number of rows computed from the same fed tokens as the golden, when those tokens hit a near-tie."""
    spec = ((case.manifest.get("outputs") or {}).get(out.name) or {}).get("rows_follow")
    if not isinstance(spec, dict):
        return None
    tok = next((t for t in results if t.case == case.name and t.name == spec.get("tokens")), None)
    if tok is None or tok.status != NEAR_TIE or not tok.tokens or tok.tokens.get("first_step") is None:
        return None
    step = tok.tokens["first_step"]
    step = step[0] if isinstance(step, (list, tuple)) else step  # multi-index of a 1-D sequence
    return int(spec.get("offset", 0)) + int(step)


# Per-position outputs of the e2e case (one row per decoder position), which a port on the N - P schedule
# may dump with fewer rows (``rows_a_port_computes``).
_POSITION_ROWS = re.compile(r"dec\.in|dec\.L\d+\.out|dec\.norm|logits")


def rows_a_port_computes(case: GoldenCase, out: GoldenOutput, arr: np.ndarray) -> tuple[int, int, str] | None:
    """(first row, end row, what) when ``arr`` holds fewer rows of an e2e per-position output than the
    golden's N, in one of the forms a real port dumps (P = the case's prompt length):

        logits rows P-1 .. N-1   [N-P+1, V]  a port that applies the LM head only where it samples
        logits rows P-1 .. N-2   [N-P, V]    ... and, on the N - P schedule, never feeds position N-1
        rows 0 .. N-2            [N-1, ...]  dec.in, dec.Lxx.out, dec.norm, logits of a port that never
                                             feeds the last audio position (no token is sampled there)

    None for any other shape (compare then reports a shape error)."""
    params = case.manifest.get("params")
    n_prompt = params.get("prompt_length") if isinstance(params, dict) else None
    if (out.kind != "float" or not isinstance(n_prompt, int) or not _POSITION_ROWS.fullmatch(out.name)
            or len(out.shape) < 1 or not 1 <= n_prompt < out.shape[0] or arr.ndim != len(out.shape)
            or tuple(arr.shape[1:]) != out.shape[1:]):
        return None
    n, got = out.shape[0], arr.shape[0]
    if out.name == "logits" and got == n - (n_prompt - 1):
        return n_prompt - 1, n, "no prompt rows"
    if out.name == "logits" and got == n - n_prompt:
        return n_prompt - 1, n - 1, "no prompt rows, no last position: the N - P schedule"
    if got == n - 1:
        return 0, n - 1, "no last position: the N - P schedule never feeds it"
    return None


def _compare_float(r: TensorResult, out: GoldenOutput, cand: np.ndarray, tol: Tolerance, rows: int | None = None,
                   first_row: int = 0) -> None:
    g = out.array()  # memory-mapped; the numbers are computed blockwise in float64
    if rows is not None:
        g = g[:rows]
    g = g[first_row:]  # a candidate without the prompt rows (``rows_a_port_computes``)
    nf = nonfinite_scan(cand, g)
    if nf is not None:
        idx = nf["first_index"]
        r.status = NAN
        r.nonfinite = nf
        r.summary = (f"{nf['nan']} NaN and {nf['inf']} Inf in the candidate, first at {fmt_index(idx)}"
                     f" (candidate {nf['candidate']}, golden {fmt_num(nf['golden'])})")
        r.note = f"{nf['nan']} NaN, {nf['inf']} Inf; first at {fmt_index(idx)}"
        return
    m = compare_metrics(cand, g, tol.atol, tol.rtol)
    r.metrics = m
    if m["mismatched"] == 0:
        r.status = OK
        return
    r.status = FAIL
    gv, cv = fmt_pair(m["max_abs_golden"], m["max_abs_candidate"])
    r.summary = (f"max |diff| {fmt_num(m['max_abs_diff'])} at {fmt_index(m['max_abs_index'])} (golden {gv}, candidate {cv}),"
                 f" {fmt_num(m['tolerance_used_pct'] / 100)}x the tolerance")
    r.note = f"{m['mismatched']}/{m['n']} beyond tol ({fmt_num(m['mismatched_pct'])}%)"


def precision_line(results: list, selected: list, port_dtype: str) -> str | None:
    """"precision: looks like a float16 port; you ran --port-dtype float32": the candidate's per-stage max
    |diff| against the set's measured float32/float16/bf16 envelopes (``oracle.precision_signature``).
    Said only when the pattern names one precision clearly."""
    dev = {f"{r.case}/{r.name}": r.metrics["max_abs_diff"] for r in results if r.kind == "float" and r.metrics}
    tols = {f"{c.name}/{o.name}": o.tolerance for c, o in selected if o.kind == "float"}
    sig = signature(dev, envelopes(tols))
    return sig.line(port_dtype) if sig.confident else None


def _selected(case: GoldenCase, out: GoldenOutput, only: list[str] | None) -> bool:
    if not only:
        return True
    return any(fnmatch.fnmatchcase(out.name, p) or fnmatch.fnmatchcase(f"{case.name}/{out.name}", p) for p in only)


def _keys_for(case: GoldenCase, name: str) -> list[str]:
    return [f"{case.name}/{name}", f"{case.dir.name}/{name}", name]


def compare(golden: GoldenSet, candidate: dict, port_dtype: str = "float32", only=None, tekken=None) -> Report:
    """Compare ``candidate`` ({name: array}) with every golden output (restricted by the ``only`` fnmatch
    globs on tensor names, or ``case/name``), using the tolerances for ``port_dtype`` ("float32", "float16"
    or "bf16"). ``tekken`` (a Tekken or a path) gives token text; default: the golden provenance's.
    The report's ``likely_mistakes`` stays empty: compare knows no fault (``oracle.diagnose`` fills it)."""
    if port_dtype not in PORT_DTYPES:
        raise OracleError(f"port dtype {port_dtype!r} is not one of {', '.join(PORT_DTYPES)}", exit_code=3)
    only = [only] if isinstance(only, str) else (list(only) if only else None)
    selected = [(c, o) for c, o in golden.outputs() if _selected(c, o, only)]
    if not selected:
        names = ", ".join(o.name for _, o in golden.outputs())
        raise OracleError(f"--only {' '.join(only or [])}: no golden output matches (outputs: {names})", exit_code=3)
    for case, out in selected:
        if out.kind == "float" and port_dtype not in out.tolerance:
            raise OracleError(where(case.dir / "manifest.json", f"output {out.name} has no {port_dtype} tolerance"
                                    f" (it has: {', '.join(out.tolerance)}); choose another --port-dtype"), exit_code=3)

    notes: list[str] = []
    tokenizer = _Tokenizer(tekken, golden, notes)
    if tekken is not None:
        tokenizer.get(golden.cases[0])  # a bad --tekken path is a usage error even when no token differs
    counts = Counter(o.name for _, o in golden.outputs())
    known = {k for c, o in golden.outputs() for k in _keys_for(c, o.name)}
    extra = [k for k in candidate if k not in known]
    results: list[TensorResult] = []
    plain_uses: Counter = Counter()  # outputs of a name shared by cases, read from the unqualified key
    partial_rows: dict[tuple, list[str]] = {}  # (case, first row, end, why) -> outputs compared on those rows
    for case, out in selected:
        r = TensorResult(case.name, out.name, out.kind, list(out.shape), out.dtype, MISSING)
        results.append(r)
        key = next((k for k in _keys_for(case, out.name) if k in candidate), None)
        if key is None:
            r.summary = "not in the candidate"
            r.note = "not in the candidate"
            close = difflib.get_close_matches(out.name, extra, n=1, cutoff=0.75)
            if close:
                r.hints.append(f"the candidate has {close[0]}: a misspelt name?")
                r.summary += f" (it has {close[0]}: a misspelt name?)"
            continue
        if key == out.name and counts[out.name] > 1:
            plain_uses[out.name] += 1
        arr = candidate[key]
        r.candidate_key, r.candidate_shape, r.candidate_dtype = key, list(arr.shape), dtype_name(arr.dtype)
        rows = _rows_before_divergence(case, out, results)
        if rows is not None and arr.ndim == len(out.shape) and tuple(arr.shape[1:]) == out.shape[1:] \
                and min(arr.shape[0], out.shape[0]) >= rows:
            # Rows after a near-tie token flip were computed from other fed tokens: compare those before it.
            notes.append(f"{out.name}: rows {rows}.. follow the port's own tokens after a near-tie; only rows 0..{rows - 1} compared")
            tol = out.tolerance[port_dtype]
            r.tolerance = {"port_dtype": port_dtype, "atol": tol.atol, "rtol": tol.rtol}
            if not is_float_dtype(arr.dtype):
                r.status, r.summary, r.note = DTYPE, f"candidate dtype {r.candidate_dtype} is not float", "not float"
                continue
            _compare_float(r, out, arr[:rows], tol, rows=rows)
            continue
        if out.kind == "float":
            tol = out.tolerance[port_dtype]
            r.tolerance = {"port_dtype": port_dtype, "atol": tol.atol, "rtol": tol.rtol}
        want_float = out.kind == "float"
        part = rows_a_port_computes(case, out, arr)
        if part and is_float_dtype(arr.dtype):
            # A port that applies the LM head only where it samples (rows P-1 ..), or that never feeds the
            # last audio position (the N - P schedule), is judged on the rows it computes.
            first, end, what = part
            partial_rows.setdefault((case.name, first, end, what), []).append(out.name)
            _compare_float(r, out, arr, out.tolerance[port_dtype], rows=end, first_row=first)
            continue
        if tuple(arr.shape) != out.shape:
            r.status = SHAPE
            r.hints += shape_hints(out.shape, arr.shape)
            hint = f" ({'; '.join(r.hints)})" if r.hints else ""
            r.summary = f"shape {list(arr.shape)} instead of {list(out.shape)}{hint}"
            r.note = f"got {fmt_shape(arr.shape)}" + (f": {'; '.join(r.hints)}" if r.hints else "")
            if out.kind == "tokens" and is_int_dtype(arr.dtype) and arr.ndim == 1 and len(out.shape) == 1:
                _compare_tokens(r, case, out, arr, port_dtype, tokenizer, notes)  # a near-tie may explain the length
            continue
        if (want_float and not is_float_dtype(arr.dtype)) or (not want_float and not is_int_dtype(arr.dtype)):
            r.status = DTYPE
            want = "float (F32, BF16, F16 or F64)" if want_float else "integer"
            r.summary = f"candidate dtype {r.candidate_dtype} is not {want} (golden {out.dtype})"
            r.note = f"candidate {r.candidate_dtype}, want {'float' if want_float else 'integer'}"
            continue
        if out.kind == "float":
            _compare_float(r, out, arr, out.tolerance[port_dtype])
        elif out.kind == "tokens":
            _compare_tokens(r, case, out, arr, port_dtype, tokenizer, notes)
        else:
            _compare_int(r, out, arr)

    for (case_name, first, end, what), names in partial_rows.items():  # one note per kind of cut, not per tap
        notes.append(f"{', '.join(names)} (case {case_name}): the candidate has rows {first}..{end - 1} only ({what});"
                     f" compared with the golden's rows {first}..{end - 1}")
    if only:
        notes.insert(0, f"--only {' '.join(only)}: {len(selected)} of {sum(counts.values())} golden outputs compared")
    for name in sorted(n for n, k in plain_uses.items() if k > 1):
        cases = [c.name for c, o in golden.outputs() if o.name == name]
        notes.append(f"{name} is an output of cases {', '.join(cases)}; the candidate's one unqualified {name}"
                     f" was compared with each (write <case>/{name} to tell them apart)")
    if extra:
        inputs = {t for c in golden.cases for s in ("inputs", "aux") for t in (c.manifest.get(s) or {})}
        shown = [f"{k} (a golden {'input/aux'})" if k in inputs else k for k in extra[:10]]
        more = f" and {len(extra) - 10} more" if len(extra) > 10 else ""
        notes.append(f"{len(extra)} candidate tensor{'s are not golden outputs' if len(extra) != 1 else ' is not a golden output'}"
                     f" (ignored): {', '.join(shown)}{more}")
    looks = precision_line(results, selected, port_dtype)
    if looks:
        notes.append(looks)
    return Report(str(golden.path), getattr(candidate, "path", ""), port_dtype, results, notes, extra, [], only,
                  len(golden.cases), len(candidate))
