"""Reusing a golden set's measured tolerances (``golden --tolerances-from DIR``) instead of re-running
every case in float32, bf16 and float16.

A tolerance is a property of (checkpoint, inputs, case): the same case on the same checkpoint, audio
and inputs measures the same deviations. So a set may take its tolerances from an existing set when,
and only when, that holds; each check failing is one error line naming DIR:

    set level (``ReusedTolerances.from_dir``, before any computation)
        checkpoint_sha256, audio_sha256, seed, framing and delay_ms of DIR's provenance equal ours
    case level (``check_case``, before the case runs; ``tolerances``, after its float64 run)
        DIR has the case; its params equal ours (``stop_after`` aside: a front-end set may take the
        tolerances of the whole e2e case, whose taps are the same); every input we store is stored
        identically in DIR (same dtype and values: the seed, the storage dtype, the audio, the greedy
        tokens); every float output we write is one of DIR's, with the same shape

Whole tolerance entries are copied (every key: atol, measured_max_abs, floor, safety, overflow, and
whatever later versions add), so nothing is re-derived here.

Shape legend: none (tensors are compared as stored).
"""

from __future__ import annotations

import copy
import hashlib
from pathlib import Path

import numpy as np

from .errors import OracleError, where
from .goldenset import GoldenCase, GoldenSet, load_golden

# Provenance fields that must be equal for measured deviations to carry over.
SAME_PROVENANCE = ("checkpoint_sha256", "audio_sha256", "seed", "framing", "delay_ms")
# A case parameter that may differ: a front-end e2e golden (golden --stop-after) takes the whole case's.
CUT_PARAM = "stop_after"


class ReusedTolerances:
    """The tolerances of an existing golden set, checked against the set being written."""

    def __init__(self, source: GoldenSet, label: str):
        self.source, self.label = source, label

    @classmethod
    def from_dir(cls, path: str | Path, provenance: dict) -> "ReusedTolerances":
        """Load and verify DIR (``load_golden``) and check its provenance against ``provenance``."""
        try:
            source = load_golden(path)
        except OracleError as err:
            raise OracleError(f"--tolerances-from: {err}") from None
        if source.index is None:
            raise OracleError(where(path, "--tolerances-from needs a golden set (a directory with index.json), not one case"))
        theirs = source.provenance
        for key in SAME_PROVENANCE:
            if theirs.get(key) != provenance.get(key):
                raise OracleError(where(path, f"--tolerances-from: its {key} {_brief(theirs.get(key))} differs from this"
                                              f" run's {_brief(provenance.get(key))}: its tolerances were measured on"
                                              " other weights or inputs"))
        return cls(source, str(path))

    def provenance_entry(self) -> dict:
        """What the provenance records: where the tolerances came from (``tolerances_from``)."""
        index = Path(self.source.path) / "index.json"
        return {"path": self.label, "index_sha256": hashlib.sha256(index.read_bytes()).hexdigest(),
                "command": self.source.provenance.get("command")}

    def _case(self, name: str) -> GoldenCase:
        case = next((c for c in self.source.cases if c.name == name), None)
        if case is None:
            have = ", ".join(c.name for c in self.source.cases)
            raise OracleError(where(self.label, f"--tolerances-from: has no {name} case to take tolerances from (it has: {have})"))
        return case

    def check_case(self, name: str, params: dict) -> None:
        """Before a case runs: DIR has it, with our params (``stop_after`` aside)."""
        case = self._case(name)
        theirs = case.manifest.get("params") if isinstance(case.manifest.get("params"), dict) else {}
        if CUT_PARAM in theirs and CUT_PARAM not in params:
            raise OracleError(where(self.label, f"--tolerances-from: its {name} case stops after {theirs[CUT_PARAM]}"
                                                " (golden --stop-after): it has no tolerances for the later outputs"))
        mine = {k: v for k, v in params.items() if k != CUT_PARAM}
        theirs = {k: v for k, v in theirs.items() if k != CUT_PARAM}
        if mine != theirs:
            diff = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
            raise OracleError(where(self.label, f"--tolerances-from: case {name} params differ ({', '.join(diff)}):"
                                                " its tolerances belong to another case"))

    def tolerances(self, name: str, inputs: dict[str, np.ndarray], float_outputs: dict[str, np.ndarray]) -> dict:
        """After the float64 run: {output: {port dtype: whole tolerance entry}} for ``float_outputs``, once
        the stored ``inputs`` and the outputs' names and shapes are checked against DIR's case."""
        case = self._case(name)
        stored = case.read_inputs()
        for k, v in inputs.items():
            if k not in stored:
                raise OracleError(where(self.label, f"--tolerances-from: case {name} has no input {k}"))
            theirs = np.asarray(stored[k])
            if theirs.dtype != v.dtype or theirs.shape != v.shape or not np.array_equal(theirs, v):
                raise OracleError(where(self.label, f"--tolerances-from: case {name} input {k} differs from this run's"
                                                    " (seed, stored dtype, audio or greedy tokens)"))
        outputs = case.manifest.get("outputs") or {}
        out = {}
        for k, v in float_outputs.items():
            o = case.output(k)
            if o is None or o.kind != "float":
                raise OracleError(where(self.label, f"--tolerances-from: case {name} has no float output {k}"))
            if o.shape != tuple(v.shape):
                raise OracleError(where(self.label, f"--tolerances-from: case {name} output {k} has shape {list(o.shape)},"
                                                    f" this run {list(v.shape)}"))
            out[k] = copy.deepcopy(outputs[k]["tolerance"])
        return out

    def local(self, name: str, outputs: list[str]) -> dict:
        """{output: its stage-local entry (reads, tolerances)} of DIR's case ``name``, for those of
        ``outputs`` that have one (``tolerances`` has checked the case already)."""
        spec = self._case(name).manifest.get("outputs") or {}
        return {k: copy.deepcopy(spec[k]["local"]) for k in outputs if isinstance(spec.get(k), dict) and "local" in spec[k]}


def _brief(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
