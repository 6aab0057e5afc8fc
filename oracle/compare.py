"""Compare a port's tensors with golden tensors (golden/SPEC.md, ``voxtral-oracle.golden/1``).

    golden = load_golden("goldens/")                  # index.json (a set) or manifest.json (one case)
    report = compare(golden, load_candidate("port_out.safetensors"), port_dtype="float32")
    print(report.text()); sys.exit(report.exit_code)

Checks, per golden output, in pipeline order (cases in index order, outputs in manifest order):

    1. present   the candidate has a tensor of that name                     else MISSING  (structural)
    2. shape     identical shape (hints: transposed, half/double length)      else SHAPE    (structural)
    3. dtype     same kind: any float (F64/F32/BF16/F16) for a float output,
                 any integer for a "tokens"/"int" output                      else DTYPE    (structural)
    4. finite    no NaN/Inf in the candidate (an Inf equal to the golden's
                 Inf is allowed)                                               else NAN      (structural)
    5. numbers   every element within tolerance (float), equal (int, tokens)  else FAIL     (tolerance)

Numbers (``compare_metrics``), all in float64, with a = candidate, g = golden, d = |a − g|:

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

Equal infinities count as equal and are left out of the sums; NaN anywhere propagates (compare() reports
non-finite candidates as NAN before it computes numbers).

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

What is deliberately not done: inputs and aux tensors are not compared (ports do not produce them);
candidate tensors that are not golden outputs are listed as a note, never a failure; nothing is skipped
after a structural failure (every selected output is compared; the verdict names the first failing one).
"""

from __future__ import annotations

import difflib
import fnmatch
import json
import math
import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

import ml_dtypes
import numpy as np

from .checkpoint import DTYPES, FLOAT_DTYPES, NAME_OF_DTYPE, TensorEntry, read_safetensors_header, read_tensor, sha256_file
from .errors import OracleError, where

INDEX_SCHEMA = "voxtral-oracle.golden/1"
CASE_SCHEMA = "voxtral-oracle.golden-case/1"
REPORT_SCHEMA = "voxtral-oracle.compare-report/1"
PORT_DTYPES = ("float32", "bf16")
CASE_KINDS = ("block", "e2e", "stream")
OUTPUT_KINDS = ("float", "tokens", "int")
INT_DTYPES = {"I8", "U8", "I16", "I32", "I64"}

# Tensor statuses. STRUCTURAL ones make the exit code 2; FAIL makes it 1 (unless a structural one exists).
OK, FAIL, NEAR_TIE = "ok", "FAIL", "near-tie"
MISSING, SHAPE, DTYPE, NAN = "MISSING", "SHAPE", "DTYPE", "NAN"
STRUCTURAL = (MISSING, SHAPE, DTYPE, NAN)
PASSING = (OK, NEAR_TIE)

CONTEXT_TOKENS = 3  # tokens of context either side of the first differing step


# ----------------------------------------------------------------------------------------------
# Golden sets
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Tolerance:
    """An element passes if ``|candidate − golden| ≤ atol + rtol·|golden|``."""

    atol: float
    rtol: float
    measured_max_abs: float | None = None
    safety: float | None = None


@dataclass(frozen=True)
class GoldenOutput:
    case: str                               # name of the case it belongs to
    name: str                               # tensor name the port writes, e.g. "enc.L00.out"
    kind: str                               # "float" | "tokens" | "int"
    shape: tuple[int, ...]
    dtype: str                              # safetensors dtype of the stored golden, e.g. "F32"
    layout: str | None
    tolerance: dict[str, Tolerance]         # port dtype ("float32", "bf16") -> tolerance; {} for ints
    entry: TensorEntry = field(repr=False)

    def array(self) -> np.ndarray:
        return read_tensor(self.entry)


@dataclass(frozen=True)
class GoldenCase:
    name: str
    dir: Path
    kind: str                               # "block" | "e2e" | "stream"
    outputs: tuple[GoldenOutput, ...]       # in pipeline (manifest) order
    aux: dict[str, TensorEntry] = field(repr=False)
    manifest: dict = field(repr=False)

    @property
    def provenance(self) -> dict:
        p = self.manifest.get("provenance")
        return p if isinstance(p, dict) else {}

    def output(self, name: str) -> GoldenOutput | None:
        return next((o for o in self.outputs if o.name == name), None)


@dataclass(frozen=True)
class GoldenSet:
    path: Path                              # the directory given (a set or a single case)
    cases: tuple[GoldenCase, ...]           # in bring-up (index) order
    index: dict | None = field(default=None, repr=False)  # index.json, None for a single case dir

    @property
    def provenance(self) -> dict:
        p = (self.index or {}).get("provenance")
        return p if isinstance(p, dict) else {}

    def outputs(self) -> Iterable[tuple[GoldenCase, GoldenOutput]]:
        """Every output in pipeline order."""
        for case in self.cases:
            for out in case.outputs:
                yield case, out


def _broken(path, detail: str) -> OracleError:
    """A defect inside a golden set: structural (exit 2)."""
    return OracleError(where(path, detail), exit_code=2)


def _read_json(path: Path) -> Any:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise _broken(path, "file not found") from None
    except OSError as err:
        raise OracleError(where(path, f"cannot read: {err.strerror or err}"), exit_code=3) from None
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise _broken(path, f"not valid JSON ({err})") from None


def _field(path, obj: dict, key: str, kind, label: str = ""):
    label = label or key
    if not isinstance(obj, dict) or key not in obj:
        raise _broken(path, f"missing key {label}")
    value = obj[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        what = {str: "a string", int: "an integer", list: "a list", dict: "an object"}[kind]
        raise _broken(path, f"{label} must be {what}, got {json.dumps(value)[:60]}")
    return value


def _check_sha(path: Path, expected: str, listed_in: str) -> None:
    if not path.is_file():
        raise _broken(path, f"file not found (listed in {listed_in})")
    try:
        actual = sha256_file(path)
    except OSError as err:
        raise OracleError(where(path, f"cannot read: {err.strerror or err}"), exit_code=3) from None
    if actual != expected.lower():
        raise _broken(path, f"sha256 mismatch: {listed_in} says {expected[:16]}..., the file has {actual[:16]}...;"
                            " the golden set was modified or is incomplete: regenerate it")


def _simple_name(path, value: str, label: str) -> str:
    if not value or value in (".", "..") or "/" in value or "\\" in value:
        raise _broken(path, f"{label} must be a plain file or directory name, got {value!r}")
    return value


def _tensor_spec(path, spec, label: str, entries: dict[str, TensorEntry], name: str) -> TensorEntry:
    """Check a manifest tensor entry ({shape, dtype, ...}) against the stored tensor."""
    shape = _field(path, spec, "shape", list, f"{label}.shape")
    if not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape):
        raise _broken(path, f"{label}.shape must be a list of non-negative integers, got {shape}")
    dtype = _field(path, spec, "dtype", str, f"{label}.dtype")
    if dtype not in DTYPES:
        raise _broken(path, f"{label}.dtype {dtype!r} is not a safetensors dtype ({', '.join(DTYPES)})")
    entry = entries.get(name)
    if entry is None:
        raise _broken(path, f"{label}: the case's tensors file has no tensor named {name}")
    if list(entry.shape) != shape or entry.dtype != dtype:
        raise _broken(path, f"{label}: manifest says {dtype}{shape}, the tensors file holds {entry.dtype}{list(entry.shape)}")
    return entry


def _tolerances(path, spec, label: str) -> dict[str, Tolerance]:
    tol = _field(path, spec, "tolerance", dict, f"{label}.tolerance")
    out = {}
    for port, t in tol.items():
        lab = f"{label}.tolerance.{port}"
        vals = {}
        for key in ("atol", "rtol", "measured_max_abs", "safety"):
            if key not in (t if isinstance(t, dict) else {}):
                if key in ("atol", "rtol"):
                    raise _broken(path, f"missing key {lab}.{key}")
                continue
            v = t[key]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise _broken(path, f"{lab}.{key} must be a finite number >= 0, got {json.dumps(v)}")
            vals[key] = float(v)
        out[port] = Tolerance(**vals)
    if not out:
        raise _broken(path, f"{label}.tolerance is empty (expected float32 and bf16 tolerances)")
    return out


def _load_case(case_dir: Path, manifest_path: Path, expect_name: str | None) -> GoldenCase:
    m = _read_json(manifest_path)
    if not isinstance(m, dict):
        raise _broken(manifest_path, "not a golden case manifest (expected a JSON object)")
    schema = m.get("schema")
    if schema != CASE_SCHEMA:
        raise _broken(manifest_path, f"schema is {json.dumps(schema)}, expected {json.dumps(CASE_SCHEMA)}")
    name = _field(manifest_path, m, "name", str)
    if expect_name is not None and name != expect_name:
        raise _broken(manifest_path, f"name is {name!r} but index.json lists this directory as case {expect_name!r}")
    kind = _field(manifest_path, m, "kind", str)
    if kind not in CASE_KINDS:
        raise _broken(manifest_path, f"kind {kind!r} is not one of {', '.join(CASE_KINDS)}")
    file = _simple_name(manifest_path, _field(manifest_path, m, "file", str), "file")
    tensors_path = case_dir / file
    _check_sha(tensors_path, _field(manifest_path, m, "sha256", str), f"{manifest_path.parent.name}/manifest.json")
    entries = read_safetensors_header(tensors_path)  # OracleError, exit 2: a damaged golden

    outputs_spec = _field(manifest_path, m, "outputs", dict)
    if not outputs_spec:
        raise _broken(manifest_path, "outputs is empty")
    seen: dict[str, str] = {}
    for section in ("inputs", "outputs", "aux"):
        spec = m.get(section, {})
        if not isinstance(spec, dict):
            raise _broken(manifest_path, f"{section} must be an object")
        for tname in spec:
            if tname in seen:
                raise _broken(manifest_path, f"tensor {tname} is listed in both {seen[tname]} and {section}")
            if "/" in tname:
                raise _broken(manifest_path, f"{section}.{tname}: tensor names may not contain '/'")
            seen[tname] = section
    for tname, spec in m.get("inputs", {}).items():
        _tensor_spec(manifest_path, spec, f"inputs.{tname}", entries, tname)
    aux = {tname: _tensor_spec(manifest_path, spec, f"aux.{tname}", entries, tname)
           for tname, spec in m.get("aux", {}).items()}

    outputs = []
    for tname, spec in outputs_spec.items():
        label = f"outputs.{tname}"
        entry = _tensor_spec(manifest_path, spec, label, entries, tname)
        okind = _field(manifest_path, spec, "kind", str, f"{label}.kind")
        if okind not in OUTPUT_KINDS:
            raise _broken(manifest_path, f"{label}.kind {okind!r} is not one of {', '.join(OUTPUT_KINDS)}")
        if okind == "float":
            if entry.dtype not in FLOAT_DTYPES:
                raise _broken(manifest_path, f"{label} is kind float but stored as {entry.dtype}")
            tol = _tolerances(manifest_path, spec, label)
        else:
            if entry.dtype not in INT_DTYPES:
                raise _broken(manifest_path, f"{label} is kind {okind} but stored as {entry.dtype} (expected I64)")
            tol = {}
        layout = spec.get("layout")
        outputs.append(GoldenOutput(name, tname, okind, tuple(entry.shape), entry.dtype,
                                    layout if isinstance(layout, str) else None, tol, entry))
    return GoldenCase(name, case_dir, kind, tuple(outputs), aux, m)


def load_golden(path) -> GoldenSet:
    """Load and verify a golden set (a directory with index.json) or one case (a directory with
    manifest.json): every manifest's sha256 (from the index) and every tensors file's sha256 (from its
    manifest) is checked, and every listed tensor must be stored with the listed shape and dtype.
    A damaged set raises OracleError with exit code 2; a path that is not a golden set, exit code 3."""
    root = Path(path)
    if not root.exists():
        raise OracleError(where(root, "golden directory not found"), exit_code=3)
    if not root.is_dir():
        raise OracleError(where(root, "expected a golden directory (with index.json or manifest.json)"), exit_code=3)
    index_path = root / "index.json"
    if not index_path.is_file():
        manifest_path = root / "manifest.json"
        if not manifest_path.is_file():
            raise OracleError(where(root, "not a golden set: neither index.json nor manifest.json found"), exit_code=3)
        _verify_from_parent_index(root)
        return GoldenSet(root, (_load_case(root, manifest_path, None),), None)

    index = _read_json(index_path)
    if not isinstance(index, dict):
        raise _broken(index_path, "not a golden index (expected a JSON object)")
    if index.get("schema") != INDEX_SCHEMA:
        raise _broken(index_path, f"schema is {json.dumps(index.get('schema'))}, expected {json.dumps(INDEX_SCHEMA)}")
    cases_spec = _field(index_path, index, "cases", list)
    if not cases_spec:
        raise _broken(index_path, "cases is empty")
    cases, names, dirs = [], set(), set()
    for i, c in enumerate(cases_spec):
        label = f"cases[{i}]"
        if not isinstance(c, dict):
            raise _broken(index_path, f"{label} must be an object")
        name = _field(index_path, c, "name", str, f"{label}.name")
        d = _simple_name(index_path, _field(index_path, c, "dir", str, f"{label}.dir"), f"{label}.dir")
        sha = _field(index_path, c, "sha256", str, f"{label}.sha256")
        if name in names or d in dirs:
            raise _broken(index_path, f"{label}: case name {name!r} or dir {d!r} appears twice")
        names.add(name)
        dirs.add(d)
        manifest_path = root / d / "manifest.json"
        _check_sha(manifest_path, sha, f"index.json {label}")
        case = _load_case(root / d, manifest_path, name)
        if c.get("kind") is not None and c.get("kind") != case.kind:
            raise _broken(index_path, f"{label}.kind is {c.get('kind')!r} but its manifest says {case.kind!r}")
        cases.append(case)
    return GoldenSet(root, tuple(cases), index)


def _verify_from_parent_index(case_dir: Path) -> None:
    """A single case dir inside a set: verify its manifest against the parent's index when listed."""
    parent_index = case_dir.resolve().parent / "index.json"
    try:
        index = json.loads(parent_index.read_text(encoding="utf-8"))
        listed = [c for c in index.get("cases", []) if isinstance(c, dict) and c.get("dir") == case_dir.resolve().name]
    except (OSError, ValueError, AttributeError):
        return
    if listed and isinstance(listed[0].get("sha256"), str):
        _check_sha(case_dir / "manifest.json", listed[0]["sha256"], str(parent_index))


# ----------------------------------------------------------------------------------------------
# Candidates
# ----------------------------------------------------------------------------------------------

def _bad_candidate(path, detail: str) -> OracleError:
    return OracleError(where(path, detail), exit_code=3)


def _load_npy(path: Path) -> np.ndarray:
    try:
        with path.open("rb") as f:
            magic = f.read(6)
    except OSError as err:
        raise _bad_candidate(path, f"cannot read: {err.strerror or err}") from None
    if magic != b"\x93NUMPY":
        raise _bad_candidate(path, "not a .npy file (no NUMPY magic)")
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as err:
        if "object" in str(err).lower():
            raise _bad_candidate(path, "holds an object array (Python objects); compare loads .npy files "
                                       "without pickle: save a numeric array") from None
        raise _bad_candidate(path, f"not a readable .npy file ({err})") from None
    except (OSError, EOFError) as err:
        raise _bad_candidate(path, f"not a readable .npy file ({err})") from None
    return arr


def _load_safetensors(path: Path) -> dict[str, np.ndarray]:
    try:
        entries = read_safetensors_header(path)
    except OracleError as err:
        raise OracleError(str(err), exit_code=3) from None
    return {name: read_tensor(e) for name, e in entries.items()}


class Candidate(dict):
    """``{name: array}`` as loaded, remembering where from (``path``) for the report."""

    path: str = ""


def load_candidate(path) -> dict[str, np.ndarray]:
    """A port's tensors by name: a safetensors file, a .npy file (named by its stem), or a directory of
    .safetensors and/or .npy files (an .npy file's name without the extension is its tensor name). One
    level of sub-directories is read too, with names qualified as ``<subdir>/<name>`` (for outputs that
    have the same name in two cases). Arrays are memory-mapped. Anything unreadable: OracleError, exit 3."""
    root = Path(path)
    if not root.exists():
        raise _bad_candidate(root, "candidate not found")
    out = Candidate()
    out.path = str(root)
    source: dict[str, Path] = {}

    def add(name: str, arr: np.ndarray, file: Path) -> None:
        if name in out:
            raise _bad_candidate(file, f"tensor {name} is also in {source[name]}; each name must appear once")
        out[name] = arr
        source[name] = file

    def read_file(file: Path, prefix: str) -> None:
        if file.suffix == ".npy":
            add(prefix + file.stem, _load_npy(file), file)
        else:
            for name, arr in _load_safetensors(file).items():
                add(prefix + name, arr, file)

    if not root.is_dir():
        read_file(root, "")
        return out
    try:
        children = sorted(root.iterdir())
    except OSError as err:
        raise _bad_candidate(root, f"cannot list: {err.strerror or err}") from None
    found = False
    for child in children:
        if child.name.startswith("."):
            continue
        if child.is_file() and child.suffix in (".safetensors", ".npy"):
            read_file(child, "")
            found = True
        elif child.is_dir():
            for f in sorted(child.iterdir()):
                if f.is_file() and f.suffix in (".safetensors", ".npy") and not f.name.startswith("."):
                    read_file(f, child.name + "/")
                    found = True
    if not found:
        raise _bad_candidate(root, "no .safetensors or .npy files in the candidate directory")
    return out


def dtype_name(dtype) -> str:
    """safetensors name of a numpy dtype when it has one (F32, BF16, I64), else numpy's (complex64, <U3)."""
    dt = np.dtype(dtype)
    return NAME_OF_DTYPE.get(dt.newbyteorder("<") if dt.byteorder == ">" else dt, dt.str if dt.kind in "USV" else dt.name)


def is_float_dtype(dtype) -> bool:
    dt = np.dtype(dtype)
    if dt.kind == "f":
        return True
    if dt.kind == "V" and dt.names is None:
        try:
            ml_dtypes.finfo(dt)  # bfloat16 and the float8 types are kind "V"
            return True
        except (ValueError, TypeError):
            return False
    return False


def is_int_dtype(dtype) -> bool:
    return np.dtype(dtype).kind in "iu"


# ----------------------------------------------------------------------------------------------
# Numbers
# ----------------------------------------------------------------------------------------------

def _index(flat: int, shape: tuple[int, ...]) -> list[int]:
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
        return {f"{key}_index": _index(entry[1], shape), f"{key}_golden": entry[2], f"{key}_candidate": entry[3]}

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
    m["first_mismatch_index"] = _index(first[0], shape) if first else None
    m["first_mismatch_golden"] = first[1] if first else None
    m["first_mismatch_candidate"] = first[2] if first else None
    m["tolerance_used_pct"] = 100.0 * best["ratio"][0] if best["ratio"] else 0.0
    m["worst_index"] = _index(best["ratio"][1], shape) if best["ratio"] else None
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
    return {"nan": nan, "inf": inf, "first_index": _index(first[0], g.shape), "golden": first[1], "candidate": first[2]}


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


# ----------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------

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
    with "title" and optional "detail"); it is rendered only when non-empty."""

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

    # -- outcome -----------------------------------------------------------------------------

    @property
    def failing(self) -> list[TensorResult]:
        return [t for t in self.tensors if not t.passed]

    @property
    def first_divergence(self) -> TensorResult | None:
        """The first failing tensor in pipeline order (structural or tolerance)."""
        return next(iter(self.failing), None)

    @property
    def exit_code(self) -> int:
        if any(t.structural for t in self.tensors):
            return 2
        return 1 if self.failing else 0

    def _label(self, t: TensorResult) -> str:
        ambiguous = sum(1 for u in self.tensors if u.name == t.name) > 1
        return f"{t.name} (case {t.case})" if ambiguous else t.name

    @property
    def verdict(self) -> str:
        failing = self.failing
        if not failing:
            n = len(self.tensors)
            head = f"PASS: {n} tensor{'s' if n != 1 else ''} within tolerance"
            floats = [t for t in self.tensors if t.metrics is not None]
            if floats:
                worst = max(floats, key=lambda t: t.metrics["tolerance_used_pct"])
                head += f" (worst: {self._label(worst)} at {_g(worst.metrics['tolerance_used_pct'])}% of tolerance)"
            else:
                head += " (all exact)"
            ties = [t for t in self.tensors if t.status == NEAR_TIE]
            if ties:
                head += "; near-tie: " + ", ".join(f"{self._label(t)} at step {_step(t.tokens['first_step'])}" for t in ties)
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
        return line

    # -- rendering ---------------------------------------------------------------------------

    def _rows(self) -> list[list[str]]:
        rows = []
        for i, t in enumerate(self.tensors, 1):
            m = t.metrics
            rows.append([str(i), t.case, t.name, _shape(t.shape), t.status,
                         _g(m["max_abs_diff"]) if m else "-",
                         f"{_g(m['tolerance_used_pct'])}%" if m else "-",
                         _g(m["nmse"]) if m else "-",
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
            lines.append(f"{nf['nan']} NaN and {nf['inf']} Inf in the candidate; first at {_idx(nf['first_index'])}"
                         f" (golden {_g(nf['golden'])}, candidate {nf['candidate']})")
        m = t.metrics
        if m is not None:
            tol = t.tolerance or {}
            lines.append(f"Mismatched elements: {m['mismatched']} / {m['n']} ({_g(m['mismatched_pct'])}%)")
            if m["max_abs_index"] is not None:
                gv, cv = _pair(m["max_abs_golden"], m["max_abs_candidate"])
                lines.append(f"Greatest absolute difference: {_g(m['max_abs_diff'])} at index {_idx(m['max_abs_index'])}"
                             f" (golden {gv}, candidate {cv}; up to {_g(tol.get('atol', m['atol']))} allowed)")
            if m["max_rel_index"] is not None:
                gv, cv = _pair(m["max_rel_golden"], m["max_rel_candidate"])
                lines.append(f"Greatest relative difference: {_g(m['max_rel_diff'])} at index {_idx(m['max_rel_index'])}"
                             f" (golden {gv}, candidate {cv})")
            if m["first_mismatch_index"] is not None:
                gv, cv = _pair(m["first_mismatch_golden"], m["first_mismatch_candidate"])
                lines.append(f"First mismatch (C order): index {_idx(m['first_mismatch_index'])} (golden {gv}, candidate {cv})")
            lines.append(f"Tolerance used: {_g(m['tolerance_used_pct'])}% at index {_idx(m['worst_index'])}"
                         f" (atol {_g(m['atol'])}, rtol {_g(m['rtol'])}, port dtype {tol.get('port_dtype', self.port_dtype)})")
            lines.append(f"RMSE {_g(m['rmse'])}, NMSE {_g(m['nmse'])}, cosine {_cos(m['cosine'])},"
                         f" max|golden| {_g(m['golden_max_abs'])}")
        tk = t.tokens
        if tk is not None and tk.get("description"):
            lines.append(tk["description"])
            for who in ("golden", "candidate"):
                if tk.get(f"context_{who}"):
                    lines.append(f"{who + ':':<10} {tk[f'context_{who}']}")
        return lines

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
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, allow_nan=False, ensure_ascii=False)

    @classmethod
    def from_dict(cls, d: dict) -> "Report":
        if d.get("schema") != REPORT_SCHEMA:
            raise ValueError(f"not a compare report (schema {d.get('schema')!r})")
        tensors = [TensorResult(**_decode(t)) for t in d["tensors"]]
        return cls(d["golden"], d["candidate"], d["port_dtype"], tensors, list(d["notes"]), list(d["extra"]),
                   list(d["likely_mistakes"]), d["only"], d["n_cases"], d["n_candidate"])

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

def _g(x) -> str:
    if x is None:
        return "-"
    return f"{x:.3g}"


def _pair(g: float, c: float) -> tuple[str, str]:
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
    return _g(c)


def _idx(index) -> str:
    return "-" if index is None else "[" + ", ".join(str(i) for i in index) + "]"


def _step(index) -> str:
    return str(index[0]) if index is not None and len(index) == 1 else _idx(index)


def _shape(shape) -> str:
    return "x".join(str(s) for s in shape) if shape else "scalar"


def _md(s: str) -> str:
    return str(s).replace("|", "\\|")


# ----------------------------------------------------------------------------------------------
# Comparing
# ----------------------------------------------------------------------------------------------

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
    step = _index(at, out.shape)
    tek = tokenizer.get(case)
    gl, cl = _token_label(tek, int(g[at])), _token_label(tek, int(a[at]))
    info.update(first_step=step, golden_id=int(g[at]), candidate_id=int(a[at]), golden_text=gl, candidate_text=cl,
                context_golden=_context(g, at, tek), context_candidate=_context(a, at, tek),
                margin=None, near_tie_atol=None, tekken=getattr(tek, "path", None) if tek is not None else None)
    where_ = f"step {_step(step)}"
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
            info["description"] = (f"near-tie at {head}: golden top-1 margin {_g(margin)} < logits atol {_g(atol)}"
                                   f" ({port_dtype}); later steps not compared")
            r.note = f"near-tie at {where_}"
            notes.append(f"{r.name} (case {r.case}): {info['description']}")
            return
        why = f"golden margin {_g(margin)} >= logits atol {_g(atol)}: not a near-tie"
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
    idx = _index(at, out.shape)
    r.tokens.update(first_index=idx, golden=int(g[at]), candidate=int(a[at]),
                    description=f"{neq.size} of {g.size} values differ; first at {_idx(idx)}: golden {int(g[at])},"
                                f" candidate {int(a[at])}")
    r.status = FAIL
    r.summary = f"{neq.size} of {g.size} values differ, first at {_idx(idx)}: golden {int(g[at])}, candidate {int(a[at])}"
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


def _compare_float(r: TensorResult, out: GoldenOutput, cand: np.ndarray, tol: Tolerance, rows: int | None = None) -> None:
    g = out.array()  # memory-mapped; the numbers are computed blockwise in float64
    if rows is not None:
        g = g[:rows]
    nf = nonfinite_scan(cand, g)
    if nf is not None:
        idx = nf["first_index"]
        r.status = NAN
        r.nonfinite = nf
        r.summary = (f"{nf['nan']} NaN and {nf['inf']} Inf in the candidate, first at {_idx(idx)}"
                     f" (candidate {nf['candidate']}, golden {_g(nf['golden'])})")
        r.note = f"{nf['nan']} NaN, {nf['inf']} Inf; first at {_idx(idx)}"
        return
    m = compare_metrics(cand, g, tol.atol, tol.rtol)
    r.metrics = m
    if m["mismatched"] == 0:
        r.status = OK
        return
    r.status = FAIL
    gv, cv = _pair(m["max_abs_golden"], m["max_abs_candidate"])
    r.summary = (f"max |diff| {_g(m['max_abs_diff'])} at {_idx(m['max_abs_index'])} (golden {gv}, candidate {cv}),"
                 f" {_g(m['tolerance_used_pct'] / 100)}x the tolerance")
    r.note = f"{m['mismatched']}/{m['n']} beyond tol ({_g(m['mismatched_pct'])}%)"


def _selected(case: GoldenCase, out: GoldenOutput, only: list[str] | None) -> bool:
    if not only:
        return True
    return any(fnmatch.fnmatchcase(out.name, p) or fnmatch.fnmatchcase(f"{case.name}/{out.name}", p) for p in only)


def _keys_for(case: GoldenCase, name: str) -> list[str]:
    return [f"{case.name}/{name}", f"{case.dir.name}/{name}", name]


def compare(golden: GoldenSet, candidate: dict, port_dtype: str = "float32", only=None, tekken=None) -> Report:
    """Compare ``candidate`` ({name: array}) with every golden output (restricted by the ``only`` fnmatch
    globs on tensor names, or ``case/name``), using the tolerances for ``port_dtype`` ("float32" or
    "bf16"). ``tekken`` (a Tekken or a path) gives token text; default: the golden provenance's."""
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
        if tuple(arr.shape) != out.shape:
            r.status = SHAPE
            r.hints += shape_hints(out.shape, arr.shape)
            hint = f" ({'; '.join(r.hints)})" if r.hints else ""
            r.summary = f"shape {list(arr.shape)} instead of {list(out.shape)}{hint}"
            r.note = f"got {_shape(arr.shape)}" + (f": {'; '.join(r.hints)}" if r.hints else "")
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
    report = Report(str(golden.path), getattr(candidate, "path", ""), port_dtype, results, notes, extra, [], only,
                    len(golden.cases), len(candidate))
    if report.failing:
        from .faults import diagnose  # the catalogue knows its own signatures

        report.likely_mistakes = [
            {"key": d["key"], "title": f"{d['key']} ({d['title']})", "score": d["score"],
             "detail": d["evidence"] + (f"; to separate look-alikes: {d['separate']}" if d["separate"] else "") + f"; see {d['see']}"}
            for d in diagnose(report, golden, candidate)]
    return report
