"""compare's stage-local view: which stage of a port *adds* the error (oracle.local), attached to a report.

    report = compare(golden, candidate, port_dtype="float32")
    attach_local(report, golden, candidate, ckpt=None)   # ckpt: a directory, or None for the provenance's
    print(report.text())                                  # "Where error is added" table; exit code includes it

Shape legend: as oracle.local (the candidate's e2e taps, in the golden layouts).

For every e2e case whose manifest carries stage-local tolerances (``local`` per output), each stage
whose input and output taps the candidate has is replayed on the candidate's own input, at the port
dtype's rounding points, with the checkpoint the golden was written from. The checkpoint is found as
the provenance names it (``builtin:tiny``, or a path, absolute or relative to the golden directory) or
given; its files' sha256 must match the provenance's ``checkpoint_sha256``: a replay with other
weights would blame the port for the difference. Without a checkpoint the view is skipped with a note.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np

from .checkpoint import read_tensor, sha256_file
from .compare import rows_a_port_computes
from .errors import OracleError, where
from .goldenset import GoldenSet
from .local import LocalResult, e2e_stages, replay_local
from .report import Report


def find_checkpoint(golden: GoldenSet, given=None, notes: list[str] | None = None):
    """The golden's checkpoint, opened and verified against its provenance; None (with a note) if not found."""
    from .checkpoint import open_checkpoint

    notes = notes if notes is not None else []
    prov = golden.provenance or (golden.cases[0].provenance if golden.cases else None) or {}  # one case: its own
    label = prov.get("checkpoint")
    if given is not None:
        path = Path(given)
    elif label == "builtin:tiny":
        from .builtin import tiny_checkpoint

        path = tiny_checkpoint()
    elif isinstance(label, str) and label:
        path = Path(label)
        if not path.is_absolute() and not path.exists():
            path = golden.path / path
    else:
        notes.append("stage-local view skipped: the golden provenance names no checkpoint (give --ckpt DIR)")
        return None
    if not path.is_dir():
        notes.append(f"stage-local view skipped: checkpoint {path} not found (give --ckpt DIR)")
        return None
    want = prov.get("checkpoint_sha256")
    if isinstance(want, dict) and want:
        for name, sha in want.items():
            if not isinstance(name, str) or Path(name).name != name or name in ("", ".", ".."):
                raise OracleError(where(golden.path, f"provenance checkpoint_sha256 names {name!r}, not a file name"),
                                  exit_code=2)
            f = path / name
            problem = ("missing" if not f.is_file() else
                       "its sha256 differs from the golden provenance's checkpoint_sha256"
                       if not isinstance(sha, str) or sha256_file(f) != sha.lower() else None)
            if problem:
                raise OracleError(where(f, f"not the checkpoint the golden was written from ({problem}); the"
                                        " stage-local view needs those weights (give the right --ckpt, or --no-local)"),
                                  exit_code=3)
    try:
        return open_checkpoint(path)
    except OracleError as err:
        raise OracleError(str(err), exit_code=3) from None


def attach_local(report: Report, golden: GoldenSet, candidate: dict, ckpt=None, progress=None) -> Report:
    """Fill ``report.local`` (and its notes) with the stage-local results of every e2e case."""
    cases = [c for c in golden.cases if any(o.local for o in c.outputs)]
    if not cases:
        return report
    checkpoint = find_checkpoint(golden, ckpt, report.notes)
    if checkpoint is None:
        return report
    for case in cases:
        keys = {o.name: next((k for k in (f"{case.name}/{o.name}", f"{case.dir.name}/{o.name}", o.name)
                              if k in candidate), None) for o in case.outputs}
        cand = {name: candidate[k] for name, k in keys.items() if k is not None}
        local_tol = {o.name: o.local for o in case.outputs if o.local}
        if report.only:  # --only: the stages whose output was compared
            compared = {t.name for t in report.tensors if t.case == case.name}
            local_tol = {k: v for k, v in local_tol.items() if k in compared}
        given = {k: np.asarray(read_tensor(e)) for k, e in case.inputs.items()}
        inherited = {t.name: t.tolerance_used_pct for t in report.tensors if t.case == case.name}
        stages = e2e_stages(checkpoint)
        cuts = {o.name: part[:2] for o in case.outputs if o.name in cand
                and (part := rows_a_port_computes(case, o, np.asarray(cand[o.name]))) is not None}
        results = {r.name: {**asdict(r), "local_pct": r.local_pct}
                   for r in replay_local(stages, local_tol, cand, given, report.port_dtype, case.name, inherited,
                                         {o.name: o.shape for o in case.outputs}, cuts, progress)}
        compared = {t.name: t for t in report.tensors if t.case == case.name}
        for o in case.outputs:  # pipeline order; a stage that reads golden inputs only: local = inherited
            if o.name in results:
                report.local.append(results[o.name])
            elif o.kind == "float" and not o.local and o.name in compared and compared[o.name].metrics is not None:
                t = compared[o.name]
                r = LocalResult(case.name, o.name, ["(golden inputs only)"], "max_abs",
                                "FAIL" if t.status == "FAIL" else "ok", local=t.metrics["max_abs_diff"],
                                limit=t.tolerance["atol"], worst_index=t.metrics["max_abs_index"],
                                inherited_pct=t.tolerance_used_pct)
                report.local.append({**asdict(r), "local_pct": r.local_pct})
    if report.local:
        report.notes.append(f"stage-local view: each stage replayed on the candidate's own input taps at {report.port_dtype}'s"
                            f" rounding points (float64 arithmetic), checkpoint {checkpoint.directory}")
    return report
