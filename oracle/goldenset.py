"""The golden-set format in code (golden/SPEC.md, ``voxtral-oracle.golden/1``), and the candidate a port writes.

    golden = load_golden("goldens/")          # index.json (a set) or manifest.json (one case), verified
    for case, out in golden.outputs():        # pipeline order: cases in index order, outputs in manifest order
        g = out.array()                       # memory-mapped golden tensor
    inputs = golden.cases[0].read_inputs()    # {name: array}: what a port (or `forward`) is fed
    candidate = load_candidate("port_out.safetensors")   # {name: array}, memory-mapped

Shapes are the manifests' own (``GoldenOutput.shape``); nothing here computes on tensors.

Verification (``load_golden``): every manifest's sha256 against index.json, every tensors file's sha256
against its manifest, every listed tensor stored with the listed shape and dtype, case and file names
plain (no ``..``, no ``/``, no absolute path: nothing is read from outside the golden directory). A
damaged set is an OracleError with exit code 2; a path that is not a golden set, exit code 3.

Candidates (``load_candidate``): a safetensors file, a .npy file (loaded without pickle), or a directory
of them, one sub-directory level deep (``<subdir>/<name>``); anything unreadable is exit code 3.
"""

from __future__ import annotations

import json
import math
import tokenize
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from .checkpoint import DTYPES, FLOAT_DTYPES, TensorEntry, safetensors_dtype_name, read_safetensors_header, read_tensor, sha256_file
from .errors import OracleError, where
from .jsonio import open_regular, read_json_object
from .precision import PORT_DTYPES  # noqa: F401  (the port dtypes a golden set carries tolerances for)

INDEX_SCHEMA = "voxtral-oracle.golden/1"
CASE_SCHEMA = "voxtral-oracle.golden-case/1"
CASE_KINDS = ("block", "e2e", "stream")
OUTPUT_KINDS = ("float", "tokens", "int")
INT_DTYPES = {"I8", "U8", "I16", "I32", "I64"}


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
    # e2e taps: {"reads": [input taps], "tolerance": {port dtype: {"metric", "limit", ...}}} (oracle.local)
    local: dict | None = None

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
    inputs: dict[str, TensorEntry] = field(default_factory=dict, repr=False)  # verified like the outputs

    @property
    def provenance(self) -> dict:
        p = self.manifest.get("provenance")
        return p if isinstance(p, dict) else {}

    def output(self, name: str) -> GoldenOutput | None:
        return next((o for o in self.outputs if o.name == name), None)

    def read_inputs(self) -> dict[str, np.ndarray]:
        """The case's inputs as stored (memory-mapped), in manifest order: what a port is fed."""
        return {name: read_tensor(entry) for name, entry in self.inputs.items()}


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
    """A golden index or manifest through the one hardened reader (regular file, size cap, nesting and
    huge-integer limits); any defect is structural (exit 2)."""
    try:
        return read_json_object(path, what="golden JSON file")
    except OracleError as err:
        raise _broken(path, str(err).removeprefix(f"{path}: ")) from None


def _stat_path(root: Path, what: str) -> tuple[bool, bool]:
    """(exists, is a directory) for a path the user named; a name the OS refuses is a usage error."""
    try:
        return root.exists(), root.is_dir()
    except (OSError, ValueError) as err:
        raise OracleError(where(root, f"{what}: {getattr(err, 'strerror', None) or err}"), exit_code=3) from None


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
        raise _broken(path, f"{label}.tolerance is empty (expected float32, bf16 and float16 tolerances)")
    return out


LOCAL_METRICS = ("max_abs", "beyond_fraction")


def _local(path, spec, label: str, port_dtypes) -> dict | None:
    """An output's stage-local tolerances (golden/SPEC.md, oracle.local), type-checked; None if absent."""
    loc = spec.get("local")
    if loc is None:
        return None
    lab = f"{label}.local"
    if not isinstance(loc, dict):
        raise _broken(path, f"{lab} must be an object")
    reads = loc.get("reads")
    if not isinstance(reads, list) or not reads or not all(isinstance(r, str) and r for r in reads):
        raise _broken(path, f"{lab}.reads must be a non-empty list of tap names")
    tol = loc.get("tolerance")
    if not isinstance(tol, dict) or not tol:
        raise _broken(path, f"{lab}.tolerance must be a non-empty object")
    out = {}
    for port, t in tol.items():
        if port not in port_dtypes or not isinstance(t, dict):
            raise _broken(path, f"{lab}.tolerance.{port}: not a port dtype ({', '.join(port_dtypes)}) with an object")
        if t.get("metric") not in LOCAL_METRICS:
            raise _broken(path, f"{lab}.tolerance.{port}.metric must be one of {', '.join(LOCAL_METRICS)}")
        vals = {"metric": t["metric"]}
        for key in ("limit", "measured", "floor", "safety"):
            v = t.get(key)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise _broken(path, f"{lab}.tolerance.{port}.{key} must be a finite number >= 0, got {json.dumps(v)}")
            vals[key] = float(v)
        out[port] = vals
    return {"reads": list(reads), "tolerance": out}


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
    inputs = {tname: _tensor_spec(manifest_path, spec, f"inputs.{tname}", entries, tname)
              for tname, spec in m.get("inputs", {}).items()}
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
            local = _local(manifest_path, spec, label, PORT_DTYPES)
        else:
            local = None
            if entry.dtype not in INT_DTYPES:
                raise _broken(manifest_path, f"{label} is kind {okind} but stored as {entry.dtype} (expected I64)")
            tol = {}
        layout = spec.get("layout")
        outputs.append(GoldenOutput(name, tname, okind, tuple(entry.shape), entry.dtype,
                                    layout if isinstance(layout, str) else None, tol, entry, local))
    return GoldenCase(name, case_dir, kind, tuple(outputs), aux, m, inputs)


def load_golden(path) -> GoldenSet:
    """Load and verify a golden set (a directory with index.json) or one case (a directory with
    manifest.json): every manifest's sha256 (from the index) and every tensors file's sha256 (from its
    manifest) is checked, and every listed tensor must be stored with the listed shape and dtype.
    A damaged set raises OracleError with exit code 2; a path that is not a golden set, exit code 3."""
    root = Path(path)
    exists, is_dir = _stat_path(root, "cannot use as a golden directory")
    if not exists:
        raise OracleError(where(root, "golden directory not found"), exit_code=3)
    if not is_dir:
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
        kind = _field(index_path, c, "kind", str, f"{label}.kind")
        case = _load_case(root / d, manifest_path, name)
        if kind != case.kind:
            raise _broken(index_path, f"{label}.kind is {kind!r} but its manifest says {case.kind!r}")
        cases.append(case)
    return GoldenSet(root, tuple(cases), index)


def _verify_from_parent_index(case_dir: Path) -> None:
    """A single case dir inside a set: verify its manifest against the parent's index when listed."""
    parent_index = case_dir.resolve().parent / "index.json"
    try:
        index = read_json_object(parent_index)  # a missing or unreadable parent index: nothing to verify against
    except OracleError:
        return
    cases = index.get("cases")
    listed = [c for c in cases if isinstance(c, dict) and c.get("dir") == case_dir.resolve().name] \
        if isinstance(cases, list) else []
    if listed and isinstance(listed[0].get("sha256"), str):
        _check_sha(case_dir / "manifest.json", listed[0]["sha256"], str(parent_index))


# ----------------------------------------------------------------------------------------------
# Candidates
# ----------------------------------------------------------------------------------------------

def _bad_candidate(path, detail: str) -> OracleError:
    return OracleError(where(path, detail), exit_code=3)


def _load_npy(path: Path) -> np.ndarray:
    try:
        with open_regular(path) as f:  # a FIFO named *.npy must not block
            magic = f.read(6)
    except OracleError as err:
        raise _bad_candidate(path, str(err).removeprefix(f"{path}: ")) from None
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
    except (OSError, EOFError, SyntaxError, TypeError, KeyError, tokenize.TokenError) as err:
        # a damaged header dict: numpy parses it with Python's tokenizer and literal_eval
        raise _bad_candidate(path, f"not a readable .npy file (damaged header: {type(err).__name__})") from None
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
    exists, is_dir = _stat_path(root, "cannot use as a candidate")
    if not exists:
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

    if not is_dir:
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
    name = safetensors_dtype_name(dt.newbyteorder("<") if dt.byteorder == ">" else dt)
    return name or (dt.str if dt.kind in "USV" else dt.name)


def is_float_dtype(dtype) -> bool:
    dt = np.dtype(dtype)
    if dt.kind == "f":
        return True
    if dt.kind == "V" and dt.names is None:
        import ml_dtypes  # only for a kind-"V" dtype: bfloat16 and the float8 types

        try:
            ml_dtypes.finfo(dt)
            return True
        except (ValueError, TypeError):
            return False
    return False


def is_int_dtype(dtype) -> bool:
    return np.dtype(dtype).kind in "iu"
