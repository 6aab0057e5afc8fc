"""The compare report: one ``TensorResult`` per golden output, the verdict, exit code, and its renderings.

    report.text()       plain text: header, table in pipeline order, failures, notes, likely mistakes, verdict
    report.markdown()   the same as GitHub-flavoured Markdown
    report.to_json()    machine-readable (schema ``voxtral-oracle.compare-report/1``); ``Report.from_json``

Shapes: a ``TensorResult`` records the golden shape and the candidate's, as lists of ints; the numbers
in ``metrics`` are ``oracle.metrics.compare_metrics``'s.

Statuses: ``ok`` and ``near-tie`` pass; ``FAIL`` is a tolerance failure (exit code 1); ``MISSING``,
``SHAPE``, ``DTYPE`` and ``NAN`` are structural (exit code 2, which wins over 1). The verdict names the
first failing tensor in pipeline order. ``likely_mistakes`` is left empty by compare; a caller that
knows a fault catalogue fills it (``oracle.diagnose.attach_diagnosis``), and it is rendered only when
non-empty.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import asdict, dataclass, field

REPORT_SCHEMA = "voxtral-oracle.compare-report/1"

# Tensor statuses. STRUCTURAL ones make the exit code 2; FAIL makes it 1 (unless a structural one exists).
OK, FAIL, NEAR_TIE = "ok", "FAIL", "near-tie"
MISSING, SHAPE, DTYPE, NAN = "MISSING", "SHAPE", "DTYPE", "NAN"
STRUCTURAL = (MISSING, SHAPE, DTYPE, NAN)
PASSING = (OK, NEAR_TIE)


@dataclass
class TensorResult:
    """One golden output compared. ``summary`` is the one-line problem statement used by the verdict
    ("" when ok); ``note`` the short form for the table."""

    case: str
    name: str
    kind: str                                # float | tokens | int
    shape: list[int]                         # golden shape
    golden_dtype: str
    status: str                              # ok FAIL near-tie MISSING SHAPE DTYPE NAN
    candidate_key: str | None = None         # the candidate name it was read from
    candidate_shape: list[int] | None = None
    candidate_dtype: str | None = None
    tolerance: dict | None = None            # {"port_dtype", "atol", "rtol"} (float outputs)
    metrics: dict | None = None              # compare_metrics(...) (float outputs with numbers)
    tokens: dict | None = None               # first difference, context, near-tie data (tokens, int)
    nonfinite: dict | None = None            # {"nan", "inf", "first_index", "golden", "candidate"}
    hints: list[str] = field(default_factory=list)
    summary: str = ""
    note: str = ""

    @property
    def structural(self) -> bool:
        return self.status in STRUCTURAL

    @property
    def passed(self) -> bool:
        return self.status in PASSING

    @property
    def tolerance_used_pct(self) -> float | None:
        return None if self.metrics is None else self.metrics["tolerance_used_pct"]


@dataclass
class Report:
    """Everything compare found. ``likely_mistakes`` is filled by a fault catalogue (strings, or dicts
    with "title" and optional "detail"; ``oracle.diagnose.attach_diagnosis``); it is rendered only when
    non-empty."""

    golden: str
    candidate: str
    port_dtype: str
    tensors: list[TensorResult]
    notes: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)     # candidate names that are not golden outputs
    likely_mistakes: list = field(default_factory=list)
    only: list[str] | None = None
    n_cases: int = 0
    n_candidate: int = 0
    # stage-local results (oracle.local_view.attach_local): dicts of oracle.local.LocalResult + "local_pct"
    local: list = field(default_factory=list)

    # -- outcome -----------------------------------------------------------------------------

    @property
    def failing(self) -> list[TensorResult]:
        return [t for t in self.tensors if not t.passed]

    @property
    def first_divergence(self) -> TensorResult | None:
        """The first failing tensor in pipeline order (structural or tolerance)."""
        return next(iter(self.failing), None)

    @property
    def local_failing(self) -> list[dict]:
        """Stages that add more error than their local tolerance allows (pipeline order)."""
        return [r for r in self.local if r["status"] == "FAIL"]

    @property
    def adds_most(self) -> dict | None:
        """The locally failing stage that adds the most error, in % of its local tolerance (a stage that
        follows a known wrong form, e.g. the tanh GELU, counts as at least 100%)."""
        failing = self.local_failing
        return max(failing, key=_local_weight) if failing else None

    @property
    def largest_jump(self) -> dict | None:
        """The stage whose inherited % of tolerance grows most over its input tap's (only when something
        fails: among passing stages the largest jump is noise)."""
        if not (self.failing or self.local_failing):
            return None
        pct = {(r["case"], r["name"]): r.get("inherited_pct") for r in self.local}
        pct.update({(t.case, t.name): t.tolerance_used_pct for t in self.tensors})
        best, jump = None, 0.0
        for r in self.local:
            if r["reads"] and r["reads"][0].startswith("("):  # reads golden inputs only: no input tap to jump from
                continue
            here = r.get("inherited_pct")
            before = max((pct.get((r["case"], src)) or 0.0) for src in r["reads"])
            if here is not None and here - before > jump:
                best, jump = r, here - before
        return best

    @property
    def exit_code(self) -> int:
        if any(t.structural for t in self.tensors):
            return 2
        return 1 if self.failing or self.local_failing else 0

    def _label(self, t: TensorResult) -> str:
        ambiguous = sum(1 for u in self.tensors if u.name == t.name) > 1
        return f"{t.name} (case {t.case})" if ambiguous else t.name

    @property
    def verdict(self) -> str:
        failing = self.failing
        most = self.adds_most
        added = "" if most is None else f"; most error added at {_local_label(most)}"
        if not failing and most is not None:
            n = len(self.local_failing)
            return (f"FAIL: every tensor is within tolerance, but {n} stage{'s' if n != 1 else ''} add{'s' if n == 1 else ''}"
                    f" more error than a correct {self.port_dtype} stage{added}")
        if not failing:
            n = len(self.tensors)
            head = f"PASS: {n} tensor{'s' if n != 1 else ''} within tolerance"
            floats = [t for t in self.tensors if t.metrics is not None]
            if floats:
                worst = max(floats, key=lambda t: t.metrics["tolerance_used_pct"])
                head += f" (worst: {self._label(worst)} at {fmt_num(worst.metrics['tolerance_used_pct'])}% of tolerance)"
            else:
                head += " (all exact)"
            ties = [t for t in self.tensors if t.status == NEAR_TIE]
            if ties:
                head += "; near-tie: " + ", ".join(f"{self._label(t)} at step {fmt_step(t.tokens['first_step'])}" for t in ties)
            return head
        first, later = failing[0], failing[1:]
        line = f"FAIL: first divergence at {first.name} (case {first.case}): {first.summary}; "
        if later:
            line += f"{len(later)} later tensor{'s' if len(later) != 1 else ''} also fail{'s' if len(later) == 1 else ''}"
            k = sum(t.structural for t in later)
            if k:
                line += f" ({k} structural)"
        else:
            line += "no other tensor fails"
        return line + added

    # -- rendering ---------------------------------------------------------------------------

    def _rows(self) -> list[list[str]]:
        rows = []
        for i, t in enumerate(self.tensors, 1):
            m = t.metrics
            rows.append([str(i), t.case, t.name, fmt_shape(t.shape), t.status,
                         fmt_num(m["max_abs_diff"]) if m else "-",
                         f"{fmt_num(m['tolerance_used_pct'])}%" if m else "-",
                         fmt_num(m["nmse"]) if m else "-",
                         _cos(m["cosine"]) if m else "-",
                         t.note])
        return rows

    HEADER = ["#", "case", "tensor", "shape", "status", "max|diff|", "%tol", "NMSE", "cosine", "note"]
    RIGHT = {0, 5, 6, 7, 8}

    def _details(self, t: TensorResult) -> list[str]:
        """Multi-line explanation of a failing (or near-tie) tensor, torch assert_close style."""
        lines = []
        if t.status == MISSING:
            lines.append(f"not in the candidate (expected {t.golden_dtype}{t.shape}, kind {t.kind})")
        if t.status == SHAPE:
            lines.append(f"shape {t.candidate_shape} in the candidate, golden {t.shape}")
        if t.status == DTYPE:
            lines.append(f"candidate dtype {t.candidate_dtype}, golden {t.golden_dtype} (kind {t.kind})")
        lines += [f"hint: {h}" for h in t.hints]
        if t.nonfinite:
            nf = t.nonfinite
            lines.append(f"{nf['nan']} NaN and {nf['inf']} Inf in the candidate; first at {fmt_index(nf['first_index'])}"
                         f" (golden {fmt_num(nf['golden'])}, candidate {nf['candidate']})")
        m = t.metrics
        if m is not None:
            tol = t.tolerance or {}
            lines.append(f"Mismatched elements: {m['mismatched']} / {m['n']} ({fmt_num(m['mismatched_pct'])}%)")
            if m["max_abs_index"] is not None:
                gv, cv = fmt_pair(m["max_abs_golden"], m["max_abs_candidate"])
                lines.append(f"Greatest absolute difference: {fmt_num(m['max_abs_diff'])} at index {fmt_index(m['max_abs_index'])}"
                             f" (golden {gv}, candidate {cv}; up to {fmt_num(tol.get('atol', m['atol']))} allowed)")
            if m["max_rel_index"] is not None:
                gv, cv = fmt_pair(m["max_rel_golden"], m["max_rel_candidate"])
                lines.append(f"Greatest relative difference: {fmt_num(m['max_rel_diff'])} at index {fmt_index(m['max_rel_index'])}"
                             f" (golden {gv}, candidate {cv})")
            if m["first_mismatch_index"] is not None:
                gv, cv = fmt_pair(m["first_mismatch_golden"], m["first_mismatch_candidate"])
                lines.append(f"First mismatch (C order): index {fmt_index(m['first_mismatch_index'])} (golden {gv}, candidate {cv})")
            lines.append(f"Tolerance used: {fmt_num(m['tolerance_used_pct'])}% at index {fmt_index(m['worst_index'])}"
                         f" (atol {fmt_num(m['atol'])}, rtol {fmt_num(m['rtol'])}, port dtype {tol.get('port_dtype', self.port_dtype)})")
            lines.append(f"RMSE {fmt_num(m['rmse'])}, NMSE {fmt_num(m['nmse'])}, cosine {_cos(m['cosine'])},"
                         f" max|golden| {fmt_num(m['golden_max_abs'])}")
        tk = t.tokens
        if tk is not None and tk.get("description"):
            lines.append(tk["description"])
            for who in ("golden", "candidate"):
                if tk.get(f"context_{who}"):
                    lines.append(f"{who + ':':<10} {tk[f'context_{who}']}")
        return lines

    LOCAL_HEADER = ["case", "stage", "reads", "inherited %tol", "local", "local %tol", "status", "flag"]

    def _local_rows(self) -> list[list[str]]:
        most, jump = self.adds_most, self.largest_jump
        rows = []
        for r in self.local:
            flags = []
            if most is r:
                flags.append("<< adds the most")
            if jump is r:
                flags.append("^ largest jump")
            if r.get("form") and r["form"]["follows"]:
                flags.append(f"follows the {r['form']['name']} (alpha {r['form']['alpha']:.3f})")
            local = "-" if r.get("local") is None else (fmt_num(r["local"]) if r["metric"] == "max_abs"
                                                         else f"{fmt_num(100 * r['local'])}% beyond")
            rows.append([r["case"], r["name"], ", ".join(r["reads"]),
                         "-" if r.get("inherited_pct") is None else f"{fmt_num(r['inherited_pct'])}%",
                         local, "-" if r.get("local_pct") is None else f"{fmt_num(r['local_pct'])}%",
                         r["status"] if r["status"] != "skipped" else f"skipped: {r['why']}", "; ".join(flags)])
        return rows

    def _local_intro(self) -> str:
        return (f"Where error is added (each stage replayed on the candidate's own input at {self.port_dtype}'s rounding"
                f" points; local = {'max |candidate - replay|' if self.port_dtype == 'float32' else 'fraction of elements beyond one ' + self.port_dtype + ' spacing'})")

    def _all_notes(self) -> list[str]:
        return list(self.notes)

    def _mistakes(self) -> list[str]:
        out = []
        for item in self.likely_mistakes:
            if isinstance(item, dict):
                title = item.get("title") or json.dumps(item, sort_keys=True)
                out.append(f"{title}: {item['detail']}" if item.get("detail") else title)
            else:
                out.append(str(item))
        return out

    def text(self) -> str:
        """Plain-text report; the last line is the verdict."""
        out = ["voxtral-oracle compare",
               f"  golden      {self.golden} ({self.n_cases} case{'s' if self.n_cases != 1 else ''},"
               f" sha256 verified)",
               f"  candidate   {self.candidate or '(in memory)'} ({self.n_candidate} tensor{'s' if self.n_candidate != 1 else ''})",
               f"  port dtype  {self.port_dtype}: element ok if |candidate - golden| <= atol + rtol*|golden|"]
        if self.only:
            out.append(f"  only        {', '.join(self.only)}")
        out.append("")
        rows = [self.HEADER] + self._rows()
        widths = [max(len(r[c]) for r in rows) for c in range(len(self.HEADER))]
        for r in rows:
            cells = [r[c].rjust(widths[c]) if c in self.RIGHT else r[c].ljust(widths[c]) for c in range(len(r))]
            out.append("  " + "  ".join(cells).rstrip())
        details = [t for t in self.tensors if not t.passed]
        if details:
            out += ["", "Failures (pipeline order)"]
            for t in details:
                out.append(f"  {t.name} (case {t.case}): {t.status}")
                out += [f"    {line}" for line in self._details(t)]
        if self.local:
            rows = [self.LOCAL_HEADER] + self._local_rows()
            widths = [max(len(r[c]) for r in rows) for c in range(len(self.LOCAL_HEADER))]
            out += ["", self._local_intro()]
            for r in rows:
                cells = [r[c].rjust(widths[c]) if c in (3, 4, 5) else r[c].ljust(widths[c]) for c in range(len(r))]
                out.append("  " + "  ".join(cells).rstrip())
        notes = self._all_notes()
        if notes:
            out += ["", "Notes"] + [f"  - {n}" for n in notes]
        mistakes = self._mistakes()
        if mistakes:
            out += ["", "Likely mistakes"] + [f"  - {n}" for n in mistakes]
        out += ["", self.verdict]
        return "\n".join(out)

    def markdown(self) -> str:
        """GitHub-flavoured Markdown: summary, table, verdict, a details section per failing tensor."""
        out = ["# voxtral-oracle compare", "",
               f"- golden: `{self.golden}` ({self.n_cases} cases, sha256 verified)",
               f"- candidate: `{self.candidate or '(in memory)'}` ({self.n_candidate} tensors)",
               f"- port dtype: `{self.port_dtype}` (an element passes if |candidate − golden| ≤ atol + rtol·|golden|)"]
        if self.only:
            out.append(f"- only: {', '.join(f'`{o}`' for o in self.only)}")
        header = ["#", "case", "tensor", "shape", "status", "max abs diff", "% of tolerance", "NMSE", "cosine", "note"]
        out += ["", "| " + " | ".join(header) + " |",
                "|" + "|".join("---:" if c in self.RIGHT else "---" for c in range(len(header))) + "|"]
        for r in self._rows():
            r = [_md(c) for c in r]
            r[2] = f"`{r[2]}`"
            if r[4] not in PASSING:
                r[4] = f"**{r[4]}**"
            out.append("| " + " | ".join(r) + " |")
        out += ["", f"**{_md(self.verdict)}**"]
        details = [t for t in self.tensors if not t.passed]
        if details:
            out += ["", "## Failures"]
            for t in details:
                out += ["", f"### `{t.name}` (case {_md(t.case)}): {t.status}", ""]
                out += [f"- {_md(line)}" for line in self._details(t)]
        if self.local:
            out += ["", "## " + _md(self._local_intro()), "", "| " + " | ".join(self.LOCAL_HEADER) + " |",
                    "|" + "|".join("---:" if c in (3, 4, 5) else "---" for c in range(len(self.LOCAL_HEADER))) + "|"]
            for r in self._local_rows():
                r = [_md(c) for c in r]
                r[1] = f"`{r[1]}`"
                if r[6] == "FAIL":
                    r[6] = "**FAIL**"
                out.append("| " + " | ".join(r) + " |")
        notes = self._all_notes()
        if notes:
            out += ["", "## Notes", ""] + [f"- {_md(n)}" for n in notes]
        mistakes = self._mistakes()
        if mistakes:
            out += ["", "## Likely mistakes", ""] + [f"- {_md(n)}" for n in mistakes]
        return "\n".join(out) + "\n"

    def to_dict(self) -> dict:
        """Machine-readable report; non-finite numbers are the strings "Infinity", "-Infinity", "NaN"."""
        first = self.first_divergence
        counts = Counter(t.status for t in self.tensors)
        return {
            "schema": REPORT_SCHEMA,
            "golden": self.golden,
            "candidate": self.candidate,
            "port_dtype": self.port_dtype,
            "only": self.only,
            "n_cases": self.n_cases,
            "n_candidate": self.n_candidate,
            "verdict": self.verdict,
            "exit_code": self.exit_code,
            "first_divergence": None if first is None else {"case": first.case, "name": first.name, "status": first.status},
            "counts": dict(sorted(counts.items())),
            "tensors": [_encode(asdict(t)) for t in self.tensors],
            "extra": list(self.extra),
            "notes": list(self.notes),
            "likely_mistakes": list(self.likely_mistakes),
            "local": [_encode(dict(r)) for r in self.local],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, allow_nan=False, ensure_ascii=False)

    @classmethod
    def from_dict(cls, d: dict) -> "Report":
        if d.get("schema") != REPORT_SCHEMA:
            raise ValueError(f"not a compare report (schema {d.get('schema')!r})")
        tensors = [TensorResult(**_decode(t)) for t in d["tensors"]]
        return cls(d["golden"], d["candidate"], d["port_dtype"], tensors, list(d["notes"]), list(d["extra"]),
                   list(d["likely_mistakes"]), d["only"], d["n_cases"], d["n_candidate"],
                   [_decode(r) for r in d.get("local", [])])

    @classmethod
    def from_json(cls, text: str) -> "Report":
        return cls.from_dict(json.loads(text))


def _encode(x):
    if isinstance(x, float) and not math.isfinite(x):
        return "NaN" if math.isnan(x) else ("Infinity" if x > 0 else "-Infinity")
    if isinstance(x, dict):
        return {k: _encode(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_encode(v) for v in x]
    return x


_NONFINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
_NUMERIC_SECTIONS = ("metrics", "tolerance", "nonfinite")
_NUMERIC_TOKEN_KEYS = ("margin", "near_tie_atol")


def _decode(t: dict) -> dict:
    """Undo _encode where numbers live (never in text fields, where "NaN" may be a token's text)."""
    t = dict(t)
    for section in _NUMERIC_SECTIONS:
        if isinstance(t.get(section), dict):
            t[section] = {k: _NONFINITE.get(v, v) if isinstance(v, str) else v for k, v in t[section].items()}
    if isinstance(t.get("tokens"), dict):
        t["tokens"] = {k: (_NONFINITE.get(v, v) if k in _NUMERIC_TOKEN_KEYS and isinstance(v, str) else v)
                       for k, v in t["tokens"].items()}
    return t


# -- formatting helpers ----------------------------------------------------------------------------

def _local_weight(r: dict) -> float:
    pct = r.get("local_pct") or 0.0
    return max(pct, 100.0) if r.get("form") and r["form"]["follows"] else pct


def _local_label(r: dict) -> str:
    if r.get("form") and r["form"]["follows"] and (r.get("local_pct") or 0.0) <= 100.0:
        return f"{r['name']} (case {r['case']}): its error follows the {r['form']['name']} (alpha {r['form']['alpha']:.3f})"
    return f"{r['name']} (case {r['case']}): local {fmt_num(r['local_pct'])}% of its local tolerance"


def fmt_num(x) -> str:
    """Three significant digits; "-" for None."""
    if x is None:
        return "-"
    return f"{x:.3g}"


def fmt_pair(g: float, c: float) -> tuple[str, str]:
    """Both values with the fewest significant digits (3..9) that tell them apart."""
    for p in range(3, 10):
        gs, cs = f"{g:.{p}g}", f"{c:.{p}g}"
        if gs != cs:
            break
    return gs, cs


def _cos(c) -> str:
    """Cosine near 1 as 1-ε (its %.3g would print 1 for anything above 0.9995)."""
    if c is None:
        return "-"
    if isinstance(c, float) and math.isfinite(c) and 0.999 < c < 1.0:
        return f"1-{1.0 - c:.2g}"
    return fmt_num(c)


def fmt_index(index) -> str:
    """A multi-index as [i, j, ...]; "-" for None."""
    return "-" if index is None else "[" + ", ".join(str(i) for i in index) + "]"


def fmt_step(index) -> str:
    """A step of a 1-D token sequence as a plain number (a multi-index otherwise)."""
    return str(index[0]) if index is not None and len(index) == 1 else fmt_index(index)


def fmt_shape(shape) -> str:
    """A shape as 110x96 ("scalar" for ())."""
    return "x".join(str(s) for s in shape) if shape else "scalar"


def _md(s: str) -> str:
    return str(s).replace("|", "\\|")
