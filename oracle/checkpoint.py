"""Checkpoint I/O: read (lazily) and write safetensors checkpoints in the Mistral and HF layouts.

Layouts (MODEL.md §1.1, §1.5):

    mistral  params.json + consolidated.safetensors (+ tekken.json); all BF16, q/k rows interleaved
    hf       config.json + model.safetensors or model-XXXXX-of-YYYYY.safetensors; q/k rows rotate-half

Reading is lazy: opening a checkpoint parses the safetensors headers and validates every name,
shape, dtype and byte range against the config, but reads no tensor data. A tensor is read
(memory-mapped, then converted to the compute dtype) when a layer asks for it, so a full 8.9 GB
checkpoint is never resident unless the caller keeps every layer. The safetensors format is parsed
here, not by the safetensors package, so that every defect (a truncated file, a header pointing past
the end, a missing tensor) becomes one line naming the file and the tensor.

Writing streams tensor by tensor (``write_safetensors`` takes a generator), so `synth --size full`
never holds the model in memory.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Iterable, Iterator, Mapping

import numpy as np

from .config import ModelConfig
from .errors import OracleError, name_of, shown, where
from .jsonio import open_regular, parse_json_object, read_json_object
from .precision import Precision, bf16, widen_into
from .weights import (
    HF_PREFIX_ALIASES,
    HF_TIED_COPIES,
    TensorSpec,
    assemble,
    expected,
    specs_of,
    unpermute_rows,
)

class _SafetensorsDtypes(Mapping):
    """safetensors dtype name -> numpy dtype. BF16 (ml_dtypes) is resolved on first use: importing
    ml_dtypes costs ~0.5 s, which commands that never read a BF16 tensor (compare of float32 dumps,
    ``--help``) should not pay."""

    def __init__(self):
        self.fixed = {"F16": np.dtype("<f2"), "F32": np.dtype("<f4"), "F64": np.dtype("<f8"), "I8": np.dtype("i1"),
                      "U8": np.dtype("u1"), "I16": np.dtype("<i2"), "I32": np.dtype("<i4"), "I64": np.dtype("<i8"),
                      "BOOL": np.dtype("?")}
        self.names = ("BF16", *self.fixed)

    def __getitem__(self, name: str) -> np.dtype:
        return bf16() if name == "BF16" else self.fixed[name]

    def __iter__(self):
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.names)


DTYPES = _SafetensorsDtypes()
FLOAT_DTYPES = {"BF16", "F16", "F32", "F64"}


def safetensors_dtype_name(dtype) -> str | None:
    """The safetensors name of a (little-endian) numpy dtype, None if safetensors has none."""
    dt = np.dtype(dtype)
    if dt.kind == "V" and dt.names is None and dt.name == "bfloat16":  # ml_dtypes' bfloat16, without importing it
        return "BF16"
    return next((k for k, v in DTYPES.fixed.items() if v == dt), None)


MAX_HEADER = 100 * 1024 * 1024  # the safetensors spec's own limit
MAX_RANK = 32  # numpy's limit on dimensions (NPY_MAXDIMS); nothing in this model has more than 3


@dataclass(frozen=True)
class TensorEntry:
    file: Path
    name: str
    dtype: str  # safetensors dtype string, e.g. "BF16"
    shape: tuple[int, ...]
    start: int  # absolute byte offset in the file
    end: int


def read_safetensors_header(path: Path) -> dict[str, TensorEntry]:
    """Parse and validate a safetensors header before anything is allocated from it.

    Checked (every failure one line naming the file and the tensor): a regular file (a FIFO is refused
    without blocking), the header length within the file and the spec's 100 MB, a JSON object; per
    tensor, ``dtype`` a known string, ``shape`` a list of non-negative ints (no bools, floats or
    strings), ``data_offsets`` two ints ``0 <= begin <= end`` whose span is exactly dtype x shape bytes
    (products in Python ints: an int64 product of [2**62, 4] wraps to 0); no two tensors overlap and
    together they cover the data section exactly, as the safetensors library itself requires.
    """
    path = Path(path)
    with open_regular(path) as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(8)
        if len(head) < 8:
            raise OracleError(where(path, f"truncated: {size} bytes, too short for a safetensors header"))
        (n,) = struct.unpack("<Q", head)
        if n > MAX_HEADER:
            raise OracleError(where(path, f"header length {n} exceeds the safetensors limit of {MAX_HEADER} bytes"))
        if 8 + n > size:
            raise OracleError(where(path, f"header length {n} points past the end of the file ({size} bytes)"))
        raw = f.read(n)
    if len(raw) != n:
        raise OracleError(where(path, f"truncated while reading its {n}-byte header"))
    try:
        header = parse_json_object(raw, path, "safetensors header")
    except OracleError as err:
        raise OracleError(f"{err} (not a safetensors file?)") from None
    data_start = 8 + n
    data_size = size - data_start
    entries: dict[str, TensorEntry] = {}
    for name, info in header.items():
        if name == "__metadata__":
            if not isinstance(info, dict):
                raise OracleError(where(path, "header __metadata__ must be an object"))
            continue
        entries[name] = _header_entry(path, name, info, data_start, data_size)
    ranges = sorted((e.start, e.end, e.name) for e in entries.values() if e.end > e.start)
    for (s0, e0, n0), (s1, _, n1) in zip(ranges, ranges[1:]):
        if s1 < e0:
            raise OracleError(where(path, f"tensors {name_of(n0)} and {name_of(n1)} overlap in the file (bytes {s1}..{e0})"))
    covered = sum(e - s for s, e, _ in ranges)
    if covered != data_size:
        raise OracleError(where(path, f"the tensors hold {covered:,} bytes but the data section has {data_size:,} "
                                      "(truncated, padded or with a hole)"))
    return entries


def _header_entry(path: Path, name: str, info, data_start: int, data_size: int) -> TensorEntry:
    """One header entry, type- and range-checked (see read_safetensors_header)."""
    label = f"tensor {name_of(name)}"

    def bad(detail: str) -> OracleError:
        return OracleError(where(path, f"{label}: {detail}"))

    if not isinstance(info, dict):
        raise bad(f"header entry must be an object, got {shown(info)}")
    missing = [k for k in ("dtype", "shape", "data_offsets") if k not in info]
    if missing:
        raise bad(f"header entry has no {missing[0]}")
    dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise bad(f"unsupported dtype {shown(dtype)} (expected one of {', '.join(DTYPES)})")
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise bad(f"shape must be a list of non-negative integers, got {shown(shape)}")
    if len(shape) > MAX_RANK:
        raise bad(f"shape has {len(shape)} dimensions, more than {MAX_RANK}")
    if (not isinstance(offsets, list) or len(offsets) != 2
            or not all(type(b) is int and b >= 0 for b in offsets) or offsets[0] > offsets[1]):
        raise bad(f"data_offsets must be two non-negative integers [begin, end] in order, got {shown(offsets)}")
    b0, b1 = offsets
    nbytes = math.prod(shape) * DTYPES[dtype].itemsize  # Python ints: no int64 wrap-around
    if b1 - b0 != nbytes:
        raise bad(f"data_offsets [{b0}, {b1}) do not hold {dtype}{shown(shape)} ({shown(nbytes)} bytes)")
    if b1 > data_size:
        raise OracleError(where(path, f"truncated: {label} ends at byte {data_start + b1} but the file has "
                                      f"{data_start + data_size}"))
    return TensorEntry(path, name, dtype, tuple(shape), data_start + b0, data_start + b1)


def sha256_file(path) -> str:
    """sha256 of a file's bytes, read in 1 MiB blocks (goldens record and verify it)."""
    h = hashlib.sha256()
    with open_regular(path) as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_tensor(entry: TensorEntry) -> np.ndarray:
    """Memory-map one tensor (no copy until the caller converts it)."""
    dt = DTYPES[entry.dtype]
    count = (entry.end - entry.start) // dt.itemsize
    if count == 0:
        return np.zeros(entry.shape, dtype=dt)
    arr = np.memmap(entry.file, dtype=dt, mode="r", offset=entry.start, shape=(count,))
    return arr.reshape(entry.shape)


def write_safetensors(path: Path, tensors: Iterable[tuple[str, np.dtype | str, tuple[int, ...], Iterator[np.ndarray] | np.ndarray]],
                      metadata: dict[str, str] | None = None, progress=None) -> None:
    """Write a safetensors file tensor by tensor.

    ``tensors`` yields (name, dtype, shape, data) where data is an array or an iterator of row-blocks
    in C order; names are written in the order given, offsets contiguous, header padded with spaces to
    8 bytes (as the reference writer does). Output is a pure function of the input: byte-identical reruns.
    """
    items = list(tensors)
    header: dict = {"__metadata__": dict(metadata or {"format": "pt"})}
    offset = 0
    for name, dtype, shape, _ in items:
        dt = np.dtype(dtype)
        nbytes = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
        header[name] = {"dtype": safetensors_dtype_name(dt), "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    # A fresh temporary name (O_EXCL: a symlink planted at "<name>.partial" is not followed), renamed
    # into place only when complete, so an interrupted write never leaves a file that looks whole.
    path = Path(path)
    try:
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name[:80]}.", suffix=".partial")
    except OSError as err:
        raise OracleError(where(path, f"cannot write: {err.strerror or err}")) from None
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(struct.pack("<Q", len(raw)))
            f.write(raw)
            for k, (name, dtype, shape, data) in enumerate(items):
                dt = np.dtype(dtype)
                blocks = [data] if isinstance(data, np.ndarray) else data
                written = 0
                for block in blocks:
                    block = np.ascontiguousarray(block, dtype=dt)
                    f.write(block.tobytes())
                    written += block.size
                assert written == int(np.prod(shape, dtype=np.int64)), (name, written, shape)
                if progress is not None:
                    progress(k + 1, len(items), name)
        os.chmod(tmp, 0o666 & ~_umask())
        tmp.replace(path)
    except OSError as err:
        raise OracleError(where(path, f"cannot write: {err.strerror or err}")) from None
    finally:
        if tmp.exists():
            tmp.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class Arena:
    """Reusable conversion buffers for layer-at-a-time execution.

    Layer i+1's weights are converted into the arrays layer i used: the previous layer's typed weights
    are overwritten, so a caller keeps at most one layer's containers alive per arena. The reason is
    speed, not memory: a fresh 100 MB array costs page faults that take about 4x the BF16 -> float32
    conversion itself (measured: 0.06 s vs 0.017 s for a 9216 x 3072 matrix).
    """

    def __init__(self):
        self._buffers: dict = {}

    def convert(self, key, src: np.ndarray, dtype: np.dtype) -> np.ndarray:
        shape = tuple(src.shape)
        buf = self._buffers.get(key)
        if buf is None or buf.shape != shape or buf.dtype != dtype:
            buf = self._buffers[key] = np.empty(shape, dtype)
        widen_into(buf, src)
        return buf


class Checkpoint:
    """An opened, validated checkpoint. Holds only headers; tensors are read on demand.

    ``layout`` is "mistral" or "hf". Accessors return typed containers in the requested precision,
    always in the Mistral (interleaved q/k) orientation.
    """

    def __init__(self, directory: Path, layout: str, config: ModelConfig, index: dict[str, TensorEntry],
                 names: dict[tuple[str, int | None, str], str]):
        self.directory = directory
        self.layout = layout
        self.config = config
        self.index = index  # file tensor name -> entry
        self._names = names  # (group, layer, field) -> file tensor name

    # -- raw access ----------------------------------------------------------------------------

    @property
    def names(self) -> Mapping[tuple[str, int | None, str], str]:
        """(group, layer, field) -> file tensor name, read-only: for views of this checkpoint (another
        config, edited weights) and for sizing its tensors."""
        return MappingProxyType(self._names)

    def entry(self, group: str, layer: int | None, field: str) -> TensorEntry:
        return self.index[self._names[(group, layer, field)]]

    def raw(self, name: str) -> np.ndarray:
        """A tensor by its file name, as stored (no permutation, no conversion)."""
        if name not in self.index:
            raise OracleError(where(self.directory, f"no tensor named {name}"))
        return read_tensor(self.index[name])

    def field(self, spec: TensorSpec, layer: int | None, precision: Precision, arena: "Arena | None" = None) -> np.ndarray:
        """One tensor in Mistral orientation and the compute dtype (converted into ``arena``'s buffer
        for this field when one is given)."""
        arr = read_tensor(self.entry(spec.group, layer, spec.field))
        if self.layout == "hf" and spec.rope is not None:
            arr = unpermute_rows(np.asarray(arr), *spec.rope(self.config))
        if arena is None:
            return precision.weight(arr)
        return precision.round_weight_(arena.convert((spec.group, spec.field), arr, precision.dtype))

    def group(self, group: str, layer: int | None, precision: Precision, arena: "Arena | None" = None):
        return assemble(group, {s.field: self.field(s, layer, precision, arena) for s in specs_of(group)})

    # -- typed accessors (what the layers take) -------------------------------------------------

    def conv(self, p: Precision):
        return self.group("conv", None, p)

    def encoder_layer(self, i: int, p: Precision, arena: "Arena | None" = None):
        return self.group("enc_layer", i, p, arena)

    def encoder_norm(self, p: Precision):
        return self.group("enc_norm", None, p)

    def adapter(self, p: Precision):
        return self.group("adapter", None, p)

    def embedding(self, p: Precision):
        return self.group("embedding", None, p)

    def decoder_layer(self, i: int, p: Precision, arena: "Arena | None" = None):
        return self.group("dec_layer", i, p, arena)

    def decoder_norm(self, p: Precision):
        return self.group("dec_norm", None, p)

    def prefetch(self, group: str, layer: int | None) -> None:
        """Ask the OS to start reading a group's bytes now (posix_fadvise WILLNEED, asynchronous), so a
        layer-at-a-time pass reads layer i+1 from disk while it computes layer i. A no-op elsewhere."""
        if not hasattr(os, "posix_fadvise"):
            return
        for s in specs_of(group):
            e = self.entry(group, layer, s.field)
            try:
                fd = os.open(e.file, os.O_RDONLY)
                try:
                    os.posix_fadvise(fd, e.start, e.end - e.start, os.POSIX_FADV_WILLNEED)
                finally:
                    os.close(fd)
            except OSError:
                return

    def embedding_table(self) -> np.ndarray:
        """The [V, D] embedding as stored, memory-mapped (no rows read until indexed)."""
        return read_tensor(self.entry("embedding", None, "table"))

    def embedding_rows(self, rows: slice | np.ndarray, p: Precision, arena: "Arena | None" = None) -> np.ndarray:
        """Rows of the embedding table without materializing it (token lookup, chunked LM head)."""
        if arena is None:
            return p.weight(self.embedding_table()[rows])
        return p.round_weight_(arena.convert(("embedding", "rows"), self.embedding_table()[rows], p.dtype))

    @property
    def files(self) -> list[Path]:
        return sorted({e.file for e in self.index.values()})


def detect_layout(directory: Path) -> str:
    if _lexists(directory / "params.json"):
        return "mistral"
    if _lexists(directory / "config.json"):
        return "hf"
    raise OracleError(where(directory, "not a checkpoint: neither params.json (Mistral layout) nor config.json (HF layout) found"))


def _lexists(path: Path) -> bool:
    """Whether anything (even a dangling or looping symlink) is at ``path``; never raises for odd names."""
    try:
        os.lstat(path)
    except FileNotFoundError:
        return False
    except (OSError, ValueError) as err:
        raise OracleError(where(path, f"cannot read: {getattr(err, 'strerror', None) or err}")) from None
    return True


HF_INDEX = "model.safetensors.index.json"


def _hf_shards(directory: Path) -> tuple[list[Path], dict[str, str] | None]:
    """The HF layout's safetensors files: those the index names when there is one, else model*.safetensors.

    An index entry must be a bare file name in the directory (no "/", no ".."): a downloaded index must
    not make us read files outside the checkpoint.
    """
    index_path = directory / HF_INDEX
    if not _lexists(index_path):
        files = sorted(directory.glob("model*.safetensors"))
        if not files:
            raise OracleError(where(directory, "HF layout: no model*.safetensors file found"))
        return files, None
    doc = read_json_object(index_path)
    weight_map = doc.get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise OracleError(where(index_path, "weight_map must be a non-empty object of tensor name -> file name"))
    names = set()
    for tensor, file in weight_map.items():
        if not isinstance(file, str) or not file or "/" in file or "\\" in file or file in (".", ".."):
            raise OracleError(where(index_path, f"weight_map[{name_of(tensor)}]: {shown(file)} is not a file name "
                                                "in the checkpoint directory"))
        names.add(file)
    return sorted(directory / f for f in names), weight_map


def open_checkpoint(path: str | Path) -> Checkpoint:
    """Open a checkpoint directory (either layout), validating every tensor against its config."""
    directory = Path(path)
    if not _lexists(directory):
        raise OracleError(where(directory, "checkpoint directory not found"))
    if not directory.is_dir():
        raise OracleError(where(directory, "expected a checkpoint directory"))
    layout = detect_layout(directory)
    if layout == "mistral":
        config = ModelConfig.from_params_file(directory / "params.json")
        files, weight_map = [directory / "consolidated.safetensors"], None
    else:
        config = ModelConfig.from_hf_config(read_json_object(directory / "config.json"), directory / "config.json")
        files, weight_map = _hf_shards(directory)

    index: dict[str, TensorEntry] = {}
    for f in files:
        for name, entry in read_safetensors_header(f).items():
            if weight_map is not None and weight_map.get(name) != f.name:
                raise OracleError(where(f, f"tensor {name_of(name)} is not listed for this file in {HF_INDEX}"))
            if layout == "hf":
                name = _canonical_hf_name(name)
            if name in index:
                raise OracleError(where(f, f"tensor {name} also appears in {index[name].file.name}"))
            index[name] = TensorEntry(entry.file, name, entry.dtype, entry.shape, entry.start, entry.end)

    if weight_map is not None and len(weight_map) != len(index):
        absent = sorted(set(map(_canonical_hf_name, weight_map)) - set(index))
        raise OracleError(where(directory / HF_INDEX, f"lists tensor {name_of(absent[0]) if absent else '?'} "
                                                       "that no shard holds"))
    names: dict[tuple[str, int | None, str], str] = {}
    for name, spec, layer, shape in expected(config, layout):
        entry = index.get(name)
        if entry is None:
            raise OracleError(where(_file_for(files), f"missing tensor {name} (expected {list(shape)})"))
        if entry.shape != shape:
            raise OracleError(where(entry.file, f"tensor {name} has shape {list(entry.shape)}, expected {list(shape)} from the config"))
        if entry.dtype not in FLOAT_DTYPES:
            raise OracleError(where(entry.file, f"tensor {name} has dtype {entry.dtype}, expected a float type (BF16)"))
        names[(spec.group, layer, spec.field)] = name
    known = set(names.values())
    for name, entry in index.items():
        if name in known:
            continue
        if layout == "hf" and name in HF_TIED_COPIES:
            _check_tied_copy(entry, index[names[("embedding", None, "table")]])
            continue
        raise OracleError(where(entry.file, f"unexpected tensor {name_of(name)} (not part of this model's config)"))
    return Checkpoint(directory, layout, config, index, names)


def _check_tied_copy(copy: TensorEntry, table: TensorEntry) -> None:
    """An HF checkpoint may store lm_head.weight as a copy of the embedding; this model is tied, so a
    copy that differs would be silently ignored: refuse it (shape, and a sample of rows)."""
    if copy.shape != table.shape:
        raise OracleError(where(copy.file, f"tensor {copy.name} has shape {list(copy.shape)}, but the head is tied to the embedding {list(table.shape)}"))
    a, b = read_tensor(copy), read_tensor(table)
    rows = np.unique(np.linspace(0, table.shape[0] - 1, num=min(64, table.shape[0])).astype(np.int64))
    if not np.array_equal(np.asarray(a[rows], np.float64), np.asarray(b[rows], np.float64)):
        raise OracleError(where(copy.file, f"tensor {copy.name} differs from the token embedding, but this model's head is tied"))


def _canonical_hf_name(name: str) -> str:
    if name in HF_TIED_COPIES:
        return name
    for old, new in HF_PREFIX_ALIASES:
        if name.startswith(old):
            return new + name[len(old):]
    return name


def _file_for(files: list[Path]) -> Path:
    return files[0] if len(files) == 1 else files[0].parent

