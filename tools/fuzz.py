"""Hostile-input fuzzing: mutate valid files of every input kind and check the one-line contract.

    voxtral-oracle fuzz [--cases N] [--seed S] [--jobs J] [--kinds LIST] [--real-cli N] [--json F]

Every case is derived from (seed, index) alone, so any finding is reproduced by its index. A case
takes a valid input (the built-in tiny checkpoint in both layouts, its safetensors file and header,
params.json / config.json / HF index, tekken.json, a WAV clip, a small golden set and a candidate, or
a command line), applies one structure-aware mutation (a field set to a hostile value, a header entry
retyped, a path turned into a FIFO, a symlink loop or a 300-character name) or a byte-level one
(truncation, bit flips), and runs it through the same entry the CLI uses: ``cli.main(argv)`` for the
commands, or the loader each command starts with (``open_checkpoint``, ``load_setup``,
``load_audio``, ``load_golden``, ``load_candidate``).

Cases run in batches inside worker subprocesses, each under RLIMIT_AS (3 GiB by default) with a
per-case alarm; a worker that dies or stops answering marks its current case and is replaced. With
``--real-cli N`` a further N cases run as real ``voxtral-oracle`` processes. Each case is classified:

    clean_error       one OracleError line (or the command's documented non-zero exit, one stderr line)
    accepted          ran to completion on an input that may be valid
    accepted_invalid  ran to completion on an input the mutation made clearly invalid   (defect)
    traceback         any other exception                                                 (defect)
    hang              exceeded the time limit                                             (defect)
    memory            MemoryError / killed under the address-space cap                   (defect)
    wrote_outside     created a file outside the output directory                         (defect)
    stderr            more than one line on stderr, or an undocumented exit code          (defect)

Exit code: 0 when no defect was found, 1 otherwise (the table is printed either way).
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import random
import re
import resource
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import traceback
from contextlib import redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path

DEFECTS = ("accepted_invalid", "traceback", "hang", "memory", "wrote_outside", "stderr")
OUTCOMES = ("clean_error", "accepted") + DEFECTS
KINDS = ("params", "hf_config", "hf_index", "safetensors", "tekken", "audio", "golden", "candidate", "paths", "cli")
AS_LIMIT = 3 << 30
CASE_SECONDS = 20.0
# Documented exit codes (README "Exit codes"): compare 0/1/2/3, every other command 0/2 (130 interrupted).
EXIT_CODES = {"compare": {0, 1, 2, 3}}
DEFAULT_EXIT_CODES = {0, 2}

# ----------------------------------------------------------------------------------------------
# Hostile values
# ----------------------------------------------------------------------------------------------

DEEP = "\x00DEEP\x00"  # placeholders replaced in the serialized text (json.dumps cannot write them)
BIGINT = "\x00BIGINT\x00"
HOSTILE = [None, True, False, 0, -1, 1, 2, 2**31 - 1, 2**31, 2**62, 2**63, 2**64 + 7, 10**20, -10**20, 0.5, 4.9,
           -0.0, 1e-300, 1e308, math.nan, math.inf, -math.inf, "", "96", "x" * 300, "../../etc", [], {}, [1, 2],
           [[[]]], {"a": 1}, DEEP, BIGINT]


def dumps(doc) -> bytes:
    text = json.dumps(doc, allow_nan=True)
    text = text.replace(json.dumps(DEEP), "[" * 5000 + "]" * 5000).replace(json.dumps(BIGINT), "9" * 5000)
    return text.encode()


def _paths(doc, prefix=()):
    """Every (path, value) in a JSON document, containers included; long lists sampled."""
    yield prefix, doc
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(doc, list):
        idx = range(len(doc)) if len(doc) <= 8 else sorted({0, 1, len(doc) - 1, *range(0, len(doc), len(doc) // 6)})
        for i in idx:
            yield from _paths(doc[i], prefix + (i,))


def _set(doc, path, value):
    cur = doc
    for k in path[:-1]:
        cur = cur[k]
    if value is _DELETE:
        del cur[path[-1]]
    else:
        cur[path[-1]] = value


_DELETE = object()


def _same_type(a, b) -> bool:
    num = (int, float)
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool)
    if isinstance(a, num) and isinstance(b, num):
        return True
    return type(a) is type(b)


def mutate_json(rng: random.Random, doc, skip=lambda path: False):
    """(mutated doc or raw bytes, description, clearly_invalid) for one structure-aware JSON mutation."""
    doc = json.loads(json.dumps(doc))
    paths = [(p, v) for p, v in _paths(doc) if p and not skip(p)]
    op = rng.random()
    if op < 0.04:
        return rng.choice([b"", b"[]", b"null", b"7", b"{", b"\xff\xfe{}", dumps(DEEP), dumps(BIGINT)]), "top-level", True
    path, old = rng.choice(paths)
    where = "/".join(map(str, path))
    if op < 0.15:
        _set(doc, path, _DELETE)
        return doc, f"delete {where}", False
    if op < 0.25 and isinstance(old, (int, float)) and not isinstance(old, bool):
        new = rng.choice([0, -1, -old, old * 1000, old + 1, old - 1, old / 2, -1e-3])
        if isinstance(new, float) and new.is_integer() and isinstance(old, int):
            new = int(new)
        _set(doc, path, new)
        return doc, f"scale {where}={new!r}", False
    new = rng.choice(HOSTILE)
    _set(doc, path, new)
    nonfinite = isinstance(new, float) and not math.isfinite(new)
    # null is "use the default" for optional keys (and "missing" for required ones), so not by itself invalid
    invalid = (not _same_type(old, new) and None not in (old, new)) or nonfinite or new in (DEEP, BIGINT)
    return doc, f"set {where}={str(new)[:20]!r}", invalid


def mutate_bytes(rng: random.Random, raw: bytes, protect: int = 0):
    """Truncate, flip bits or append junk; returns (bytes, description)."""
    op = rng.random()
    if op < 0.4 or not raw:
        n = rng.randrange(0, max(1, len(raw)))
        return raw[:n], f"truncate at {n}"
    if op < 0.85:
        b = bytearray(raw)
        lo = 0 if rng.random() < 0.7 else protect
        for _ in range(rng.choice([1, 1, 2, 8])):
            i = rng.randrange(lo if lo < len(b) else 0, len(b))
            b[i] ^= 1 << rng.randrange(8)
        return bytes(b), "bit flips"
    return raw + bytes(rng.randrange(256) for _ in range(rng.choice([1, 7, 64]))), "junk appended"


# ----------------------------------------------------------------------------------------------
# Valid inputs (built once per process)
# ----------------------------------------------------------------------------------------------

@dataclass
class Bases:
    root: Path
    files: dict = field(default_factory=dict)  # name -> bytes


def load_bases(root: Path) -> Bases:
    """Bases written by ``build_bases`` (workers read them instead of rebuilding, ~10 s each)."""
    b = Bases(root)
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.parent != root / "_work":
            b.files[str(p.relative_to(root))] = p.read_bytes()
    return b


def save_bases(b: Bases, root: Path) -> None:
    for rel, raw in b.files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(raw)


def build_bases(root: Path) -> Bases:
    """Valid inputs of every kind, as bytes: the tiny checkpoint (Mistral and HF, 2 shards), a WAV,
    a two-case golden set and the oracle's own candidate for it."""
    import numpy as np
    import soundfile as sf

    from oracle import builtin
    from oracle.checkpoint import open_checkpoint, write_safetensors
    from oracle.precision import BF16
    from oracle.weights import expected, permute_rows

    from oracle_tools import cli

    b = Bases(root)
    root = root / "_work"
    tiny = Path(builtin.tiny_checkpoint())
    for name in ("params.json", "consolidated.safetensors", "tekken.json"):
        b.files[name] = (tiny / name).read_bytes()
    ck = open_checkpoint(tiny)
    cfg = ck.config
    hf = root / "hf"
    hf.mkdir(parents=True, exist_ok=True)
    items = []
    for name, spec, layer, shape in expected(cfg, "mistral"):
        w = np.array(ck.raw(name))
        if spec.rope is not None:
            w = permute_rows(w, *spec.rope(cfg))
        items.append((spec.names(layer)[1], BF16, shape, w))
    items.sort(key=lambda t: t[0])
    weight_map = {}
    for k in range(2):
        fname = f"model-{k + 1:05d}-of-00002.safetensors"
        write_safetensors(hf / fname, items[k::2])
        weight_map.update({n: fname for n, *_ in items[k::2]})
        b.files[f"hf/{fname}"] = (hf / fname).read_bytes()
    b.files["hf/config.json"] = json.dumps(cfg.to_hf_config(), indent=1).encode()
    b.files["hf/model.safetensors.index.json"] = json.dumps({"metadata": {}, "weight_map": weight_map}).encode()
    t = np.arange(8000) / 16000
    buf = io.BytesIO()
    sf.write(buf, (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 16000, format="WAV", subtype="PCM_16")
    b.files["clip.wav"] = buf.getvalue()
    gold = root / "golden"
    with redirect_stdout(io.StringIO()):
        assert cli.main(["golden", "--out", str(gold), "--components", "rms_norm,rope", "--quiet"]) == 0
        assert cli.main(["forward", "rms_norm,rope", "--golden", str(gold), "--out", str(root / "cand.safetensors"),
                         "--dtype", "float64"]) == 0
    for p in sorted(gold.rglob("*")):
        if p.is_file():
            b.files[f"golden/{p.relative_to(gold)}"] = p.read_bytes()
    b.files["cand.safetensors"] = (root / "cand.safetensors").read_bytes()
    return b


# ----------------------------------------------------------------------------------------------
# Cases
# ----------------------------------------------------------------------------------------------

@dataclass
class Case:
    index: int
    kind: str
    what: str
    invalid: bool  # the mutation makes the input clearly invalid: it must be rejected
    files: dict  # relative path -> bytes | ("fifo",) | ("symlink", target) | ("dir",)
    argv: list  # CLI argv ("{S}" = the sandbox); or ["@call", loader, arg]


def _ckpt_files(b: Bases, layout: str) -> dict:
    if layout == "mistral":
        return {f"ck/{n}": b.files[n] for n in ("params.json", "consolidated.safetensors", "tekken.json")}
    out = {f"ck/{k[3:]}": v for k, v in b.files.items() if k.startswith("hf/")}
    out["ck/tekken.json"] = b.files["tekken.json"]
    return out


def _golden_files(b: Bases) -> dict:
    return {f"g/{k[7:]}": v for k, v in b.files.items() if k.startswith("golden/")}


def _mutate_safetensors(rng: random.Random, raw: bytes):
    """A structure-aware header mutation (or a byte-level one); returns (bytes, what, invalid)."""
    (n,) = __import__("struct").unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    data = raw[8 + n:]
    names = [k for k in header if k != "__metadata__"]
    op = rng.random()
    if op < 0.2:
        new, what = mutate_bytes(rng, raw, protect=8 + n)
        return new, what, not what.startswith("bit flips") or False
    name = rng.choice(names)
    entry = header[name]
    if op < 0.35:
        old = entry["dtype"]
        entry["dtype"] = rng.choice([[], None, 5, "X", "bf16", "F32", "I32", "F64", "BOOL", "U8"])
        what = f"dtype {entry['dtype']!r}"
        if entry["dtype"] == old:
            return raw, what + " (unchanged)", False
    elif op < 0.6:
        entry["shape"] = rng.choice([[-1, -1], [10**20, 10**20], [2**62, 4], [4.9], ["64"], [True], [], [0],
                                      entry["shape"] + [1], entry["shape"][:-1], [2**64], None, "96",
                                      [d * 2 for d in entry["shape"]], [1] * 40])
        what = f"shape {str(entry['shape'])[:30]}"
    elif op < 0.8:
        b0, b1 = entry["data_offsets"]
        entry["data_offsets"] = rng.choice([[b1, b0], [b0, b1 + 2], [b0 - 1, b1 - 1], [-1, b1], ["0", b1], [0.0, 1.5],
                                            None, [b0], [b0, b1, b1], [2**64, 2**64 + b1 - b0], [0, 0], [b0 + 2, b1 + 2]])
        what = f"offsets {entry['data_offsets']}"
    elif op < 0.87:
        del entry[rng.choice(["dtype", "shape", "data_offsets"])]
        what = "entry key deleted"
    elif op < 0.92:
        header["__metadata__"] = rng.choice([7, [], None, "x"])
        what = "metadata retyped"
    elif op < 0.96:
        del header[name]
        what = "entry deleted"
    else:
        header[name] = rng.choice([None, [], 3, "x"])
        what = "entry retyped"
    hb = dumps(header)
    hb += b" " * (-len(hb) % 8)
    new_n = len(hb)
    if rng.random() < 0.1:
        new_n = rng.choice([0, 1, new_n + 8, 2**63, 2**64 - 1, 200 * 1024 * 1024])
        what += f", header length {new_n}"
    return __import__("struct").pack("<Q", new_n) + hb + data, what, True


# Keys the loaders do not read (HF bookkeeping, Mistral serving hints): any value is accepted there.
IGNORED_KEYS = {"max_position_embeddings", "model_max_length", "model_parallel", "max_source_positions",
                "use_cache", "rope_type", "metadata", "is_control", "token_str", "num_vocab_tokens"}


def _ignored(what: str) -> bool:
    return any(f"/{k}" in what or f" {k}" in what or f"={k}" in what for k in IGNORED_KEYS)


HEAVY_SHARE = 0.15


def make_case(seed: int, index: int, b: Bases, kinds=KINDS, heavy_share: float = HEAVY_SHARE) -> Case:
    """Case ``index`` of campaign ``seed``. ``heavy_share`` of the cases run a whole command (a
    transcription, a trace) instead of the loader it starts with; 0 keeps every case in milliseconds."""
    rng = random.Random(f"{seed}:{index}")
    kind = kinds[index % len(kinds)]
    heavy = rng.random() < heavy_share
    if kind in ("params", "safetensors", "tekken"):
        files = _ckpt_files(b, "mistral")
        name = {"params": "params.json", "safetensors": "consolidated.safetensors", "tekken": "tekken.json"}[kind]
        key = f"ck/{name}"
        if kind == "safetensors":
            files[key], what, invalid = _mutate_safetensors(rng, files[key])
        elif rng.random() < 0.15:
            orig = files[key]
            files[key], what = mutate_bytes(rng, orig)
            # a flipped bit may land in whitespace or an ignored key; a cut trailing newline is harmless
            invalid = what.startswith("truncate") and len(files[key]) < len(orig.rstrip())
        else:
            skip = (lambda p: p and p[0] == "vocab" and len(p) > 1 and p[1] >= 536) if kind == "tekken" else (lambda p: False)
            doc, what, invalid = mutate_json(rng, json.loads(files[key]), skip)
            files[key] = doc if isinstance(doc, bytes) else dumps(doc)
            invalid = invalid and not _ignored(what)
        argv = (["transcribe", "{S}/ck", "{S}/clip.wav", "--quiet"] if heavy else ["@call", "load_setup", "{S}/ck"])
        files["clip.wav"] = b.files["clip.wav"]
        return Case(index, kind, what, invalid, files, argv)
    if kind in ("hf_config", "hf_index"):
        files = _ckpt_files(b, "hf")
        key = "ck/config.json" if kind == "hf_config" else "ck/model.safetensors.index.json"
        if rng.random() < 0.1:
            orig = files[key]
            files[key], what = mutate_bytes(rng, orig)
            # a flipped bit may land in whitespace or an ignored key; a cut trailing newline is harmless
            invalid = what.startswith("truncate") and len(files[key]) < len(orig.rstrip())
        else:
            doc, what, invalid = mutate_json(rng, json.loads(files[key]))
            files[key] = doc if isinstance(doc, bytes) else dumps(doc)
            invalid = invalid and not _ignored(what)
            if kind == "hf_index" and what.startswith("delete") and "weight_map/" in what:
                invalid = True  # a tensor no longer listed
            if kind == "hf_index" and what.startswith("delete metadata"):
                invalid = False
        return Case(index, kind, what, invalid, files, ["@call", "open_checkpoint", "{S}/ck"])
    if kind == "audio":
        return _audio_case(rng, index, b, heavy)
    if kind in ("golden", "candidate"):
        return _golden_case(rng, index, b, kind, heavy)
    if kind == "paths":
        return _path_case(rng, index, b, heavy)
    return _cli_case(rng, index, b, heavy)


def _audio_case(rng, index, b, heavy) -> Case:
    import struct as st
    raw = bytearray(b.files["clip.wav"])
    name = "clip.wav"
    op = rng.random()
    invalid = False
    if op < 0.45:
        # RIFF fmt fields: channels @22, rate @24, byte rate @28, block align @32, bits @34, format @20
        field_, off, fmt = rng.choice([("channels", 22, "<H"), ("rate", 24, "<I"), ("byterate", 28, "<I"),
                                       ("align", 32, "<H"), ("bits", 34, "<H"), ("format", 20, "<H"),
                                       ("datasize", 40, "<I"), ("riffsize", 4, "<I")])
        value = rng.choice([0, 1, 2, 3, 7, 8, 24, 32, 255, 65535, 8000, 44100, 2**31 - 1, 2**32 - 1])
        value &= (1 << (8 * st.calcsize(fmt))) - 1
        raw[off:off + st.calcsize(fmt)] = st.pack(fmt, value)
        what = f"{field_}={value}"
    elif op < 0.75:
        raw, what = bytearray(mutate_bytes(rng, bytes(raw), protect=44)[0]), "bytes"
        invalid = len(raw) <= 44
    elif op < 0.9:
        import numpy as np
        import soundfile as sf
        x = rng.choice([np.full(4000, 3e38, np.float32), np.array([1e38, -1e38] * 4000, np.float32),
                        np.full(4000, np.nan, np.float32), np.zeros(0, np.float32), np.zeros(3, np.float32),
                        np.full((4000, 2), 3.4e38, np.float32)])
        rate = rng.choice([16000, 1, 8000, 44100])
        buf = io.BytesIO()
        sf.write(buf, x, rate, format="WAV", subtype="FLOAT")
        raw = bytearray(buf.getvalue())
        what = f"float samples {float(np.ravel(x)[0]) if x.size else 'empty'} at {rate} Hz"
        invalid = x.size == 0 or bool(np.isnan(x).any())
    else:
        name = rng.choice(["clip.raw", "clip.mp3", "clip", "clip.flac", "clip.WAV"])
        what = f"named {name}"
    files = {name: bytes(raw)}
    argv = ["transcribe", "@tiny", "{S}/" + name, "--quiet"] if heavy else ["@call", "load_audio", "{S}/" + name]
    return Case(index, "audio", what, invalid, files, argv)


def _golden_case(rng, index, b, kind, heavy) -> Case:
    files = _golden_files(b)
    files["cand.safetensors"] = b.files["cand.safetensors"]
    if kind == "golden":
        keys = sorted(files)
        key = rng.choice([k for k in keys if k.startswith("g/")])
        if key.endswith(".json"):
            doc = json.loads(files[key])
            if rng.random() < 0.25:
                target = rng.choice(["../elsewhere", "/etc", "..", "../cand.safetensors", "01_rms_norm/../../x"])
                if key == "g/index.json":
                    doc["cases"][0]["dir"] = target
                else:
                    doc["file"] = target
                files[key], what, invalid = dumps(doc), f"{key} path {target}", True
            else:
                doc, what, invalid = mutate_json(rng, doc)
                files[key] = doc if isinstance(doc, bytes) else dumps(doc)
                # Every byte of a manifest and of the tensors is covered by a sha256 in index.json; the
                # index's own provenance is not (it is information, not data).
                invalid = key != "g/index.json" or "provenance" not in what
                if key == "g/index.json" and re.fullmatch(r"delete cases/\d+", what):
                    invalid = False  # an index may list a subset of the case dirs (golden --components)
                what = f"{key}: {what}"
        else:
            files[key], what, invalid = _mutate_safetensors(rng, files[key])
            # covered by the case's sha256: any change at all is invalid (an unchanged dtype is no change)
            what, invalid = f"{key}: {what}", "(unchanged)" not in what
        argv = (["forward", "all", "--golden", "{S}/g", "--out", "{S}/out/c.safetensors"] if heavy and rng.random() < 0.5
                else ["compare", "{S}/g", "{S}/cand.safetensors"])
        return Case(index, kind, what, invalid, files, argv)
    op = rng.random()
    if op < 0.6:
        files["cand.safetensors"], what, invalid = _mutate_safetensors(rng, files["cand.safetensors"])
        return Case(index, kind, what, invalid, files, ["compare", "{S}/g", "{S}/cand.safetensors"])
    # a directory of .npy files with one hostile file
    import numpy as np
    buf = io.BytesIO()
    np.save(buf, np.ones((4, 3), np.float32))
    npy = buf.getvalue()
    variant = rng.choice(["cut", "flip", "object", "fortran", "hugeshape", "badmagic", "empty", "fifo"])
    if variant == "cut":
        blob = npy[:rng.randrange(1, 128)]
    elif variant == "flip":
        blob = mutate_bytes(rng, npy)[0]
    elif variant == "object":
        # an object-array .npy, written by hand: its header says dtype '|O' and a pickle stream follows
        # (one that would run os.system if anything unpickled it); compare must refuse it unread
        header = b"{'descr': '|O', 'fortran_order': False, 'shape': (1,), }"
        header += b" " * (63 - (10 + len(header)) % 64) + b"\n"
        blob = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header \
            + b"\x80\x04\x95\x1d\x00\x00\x00\x00\x00\x00\x00\x8c\x02os\x8c\x06system\x93\x8c\x04true\x85R."
    elif variant == "hugeshape":
        blob = npy.replace(b"(4, 3)", b"(10**20,)" if rng.random() < 0.5 else b"(99999999999, 9)")
    elif variant == "fortran":
        blob = npy.replace(b"False", b"True ")
    elif variant == "badmagic":
        blob = b"\x93NUMPX" + npy[6:]
    else:
        blob = b""
    files = {k: v for k, v in files.items() if k != "cand.safetensors"}
    files["cand/rms_norm.out.npy"] = ("fifo",) if variant == "fifo" else blob
    return Case(index, kind, f"npy {variant}", variant not in ("flip", "fortran"), files,
                ["compare", "{S}/g", "{S}/cand"])


def _path_case(rng, index, b, heavy) -> Case:
    """Inputs that are not regular files, or names the OS refuses; and outputs that try to escape."""
    files = _ckpt_files(b, rng.choice(["mistral", "hf"]))
    op = rng.choice(["fifo", "loop", "longname", "dir", "dangling", "out_symlink", "out_file", "out_missing"])
    victim = rng.choice(sorted(files))
    if op == "fifo":
        files[victim] = ("fifo",)
    elif op == "loop":
        files[victim] = ("symlink", Path(victim).name)
    elif op == "dir":
        files[victim] = ("dir",)
    elif op == "dangling":
        files[victim] = ("symlink", "/nonexistent/target")
    elif op == "longname":
        return Case(index, "paths", "300-char name", True, files, ["inspect", "{S}/" + "c" * 300, "--no-stats"])
    if op.startswith("out_"):
        files["g/x"] = b"x"
        target = {"out_symlink": "{S}/out", "out_file": "{S}/g/x/sub", "out_missing": "{S}/out/nope/deeper/d"}[op]
        if op == "out_symlink":
            files["out/index.json"] = ("symlink", "../outside.json")
            files["out/01_rms_norm"] = ("symlink", "../outside_dir")
        cmd = rng.choice([["golden", "--out", target, "--components", "rms_norm", "--quiet"],
                          ["trace38", "--out", target, "--no-faults", "--quiet"],
                          ["synth", target, "--quiet"]])
        if not heavy and op != "out_file":
            cmd = ["golden", "--out", target, "--components", "rms_norm", "--quiet"]
        # Directory outputs are created with their parents (mkdir -p), so only "under a file" is invalid.
        return Case(index, "paths", f"output {op} via {cmd[0]}", op == "out_file", files, cmd)
    cmd = rng.choice([["inspect", "{S}/ck", "--no-stats", "--quiet"], ["@call", "load_setup", "{S}/ck"]])
    # inspect reads no tekken.json: a hostile one there is not its input.
    invalid = not (cmd[0] == "inspect" and victim.endswith("tekken.json"))
    return Case(index, "paths", f"{op} at {victim}", invalid, files, cmd)


CLI_VALUES = ["", "-1", "0", "nan", "inf", ",", "a,,b", "x" * 300, "{S}/nope", "{S}/fifo", "{S}/dir", "{S}/file",
              "../..", "1e9", "99999999999999999999999", "--", "-", "all", "rms_norm", "float16"]
CLI_OPTIONS = {
    "transcribe": ["--delay-ms", "--framing", "--dtype", "--chunk-ms", "--weights", "--stream"],
    "golden": ["--out", "--dtype", "--components", "--framing", "--delay-ms", "--seed", "--audio"],
    "forward": ["--golden", "--out", "--dtype", "--checkpoint"],
    "compare": ["--json", "--markdown", "--only", "--port-dtype", "--tekken", "--bogus"],
    "trace38": ["--audio", "--out", "--delay-ms", "--dtype", "--dither", "--seed"],
    "synth": ["--size", "--params", "--seed", "--dry-run"],
    "inspect": ["--filter", "--dump", "--no-stats"],
}
FLAGS = {"--stream", "--dry-run", "--no-stats"}


LIGHT_COMMANDS = ("compare", "forward", "inspect", "synth")


def _cli_case(rng, index, b, heavy) -> Case:
    command = rng.choice(sorted(CLI_OPTIONS) if heavy else LIGHT_COMMANDS)
    argv = [command]
    positional = {"transcribe": ["@tiny", "{S}/clip.wav"], "compare": ["{S}/g", "{S}/cand.safetensors"],
                  "forward": ["rms_norm"], "synth": ["{S}/out/s"], "inspect": ["@tiny"], "golden": [], "trace38": []}
    argv += positional[command]
    for opt in rng.sample(CLI_OPTIONS[command], k=rng.randint(1, 3)):
        argv += [opt] if opt in FLAGS else [opt, rng.choice(CLI_VALUES)]
    if rng.random() < 0.3 and len(argv) > 1:
        argv[rng.randrange(1, len(argv))] = rng.choice(CLI_VALUES)
    # Commands that need an output get one inside the sandbox unless the mutation set it.
    if command in ("golden", "trace38") and "--out" not in argv:
        argv += ["--out", "{S}/out/o"]
    if command == "forward" and "--golden" not in argv:
        argv += ["--golden", "{S}/g"]
    if command == "forward" and "--out" not in argv:
        argv += ["--out", "{S}/out/c.safetensors"]
    if command in ("golden", "trace38", "synth"):
        argv += ["--quiet"] + (["--components", "rms_norm"] if command == "golden" and "--components" not in argv else [])
        if command == "trace38":
            argv += ["--no-faults"]
        if command == "synth":
            argv += ["--dry-run"] if rng.random() < 0.7 else []
    files = _golden_files(b)
    files.update({"cand.safetensors": b.files["cand.safetensors"], "clip.wav": b.files["clip.wav"],
                  "fifo": ("fifo",), "dir/": ("dir",), "file": b"plain"})
    return Case(index, "cli", " ".join(argv)[:80], False, files, argv)


# ----------------------------------------------------------------------------------------------
# Running one case (inside a worker)
# ----------------------------------------------------------------------------------------------

class _Timeout(BaseException):
    pass


def _alarm(signum, frame):
    raise _Timeout()


def materialize(case: Case, sandbox: Path) -> None:
    for rel, content in case.files.items():
        p = sandbox / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, tuple):
            if content[0] == "fifo":
                os.mkfifo(p)
            elif content[0] == "dir":
                p.mkdir(exist_ok=True)
            else:
                os.symlink(content[1].replace("{S}", str(sandbox)), p)
        else:
            p.write_bytes(content)
    (sandbox / "out").mkdir(exist_ok=True)
    (sandbox / "cwd").mkdir(exist_ok=True)


def _snapshot(root: Path) -> set:
    out = set()
    for dirpath, dirnames, filenames in os.walk(root):
        for n in filenames + dirnames:
            out.add(os.path.relpath(os.path.join(dirpath, n), root))
    return out


def _expand(argv, sandbox: Path):
    from oracle import builtin
    return [str(builtin.tiny_checkpoint()) if a == "@tiny" else a.replace("{S}", str(sandbox)) for a in argv]


def _call(name: str, arg: str):
    """The loaders the commands start with (the same functions, not copies)."""
    if name == "load_setup":
        from oracle.pipeline import load_setup
        setup = load_setup(arg, None)
        setup.tekken.decode(range(0, setup.tekken.vocab_size, 7))
        return setup.protocol.left_pad_samples
    if name == "open_checkpoint":
        from oracle.checkpoint import open_checkpoint
        return open_checkpoint(arg)
    if name == "load_audio":
        from oracle.audio import load_audio
        from oracle.golden import offline_audio
        return offline_audio(load_audio(arg, 16000))
    raise ValueError(name)


OUTPUT_OPTIONS = ("--out", "--json", "--markdown")


def output_paths(argv: list[str], cwd: Path) -> list[Path]:
    """The outputs a command line names (relative ones resolved against ``cwd``): writing there is allowed."""
    named = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a in OUTPUT_OPTIONS]
    if argv and argv[0] == "synth" and len(argv) > 1 and not argv[1].startswith("-"):
        named.append(argv[1])
    return [(cwd / n).resolve() for n in named if n]


def _outside(sandbox: Path, before: set, argv: list[str]) -> list[str]:
    allowed = [sandbox.resolve() / "out", *output_paths(argv, sandbox / "cwd")]
    new = []
    for rel in sorted(_snapshot(sandbox) - before):
        p = (sandbox / rel).resolve() if not (sandbox / rel).is_symlink() else (sandbox / rel).absolute()
        if not any(p == a or a in p.parents for a in allowed) and not any(
                p in a.parents for a in allowed):  # parents created for an allowed output (mkdir -p)
            new.append(rel)
    return new


def run_case(case: Case, sandbox: Path, seconds: float = CASE_SECONDS) -> dict:
    """Run one case in this process (a worker under RLIMIT_AS) and classify it."""
    from oracle.errors import OracleError
    from oracle_tools import cli

    materialize(case, sandbox)
    before = _snapshot(sandbox)
    argv = _expand(case.argv, sandbox)
    err_path = sandbox.parent / f"{sandbox.name}.stderr"
    saved_cwd = os.getcwd()
    os.chdir(sandbox / "cwd")
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    out_fd = os.open(os.devnull, os.O_WRONLY)
    err_fd = os.open(err_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(out_fd, 1)
    os.dup2(err_fd, 2)
    outcome, code, detail = "accepted", 0, ""
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        if argv[0] == "@call":
            try:
                _call(argv[1], argv[2])
                outcome, code = "accepted", 0
            except OracleError as err:
                outcome, code, detail = "clean_error", 2, str(err)
                if "\n" in str(err):
                    outcome = "stderr"
        else:
            code = cli.main(argv)
            outcome = "accepted" if code == 0 else "clean_error"
    except _Timeout:
        outcome, detail = "hang", f"over {seconds:g} s"
    except MemoryError:
        outcome, detail = "memory", "MemoryError"
    except SystemExit as exc:  # argparse usage errors
        code = exc.code if isinstance(exc.code, int) else 1
        outcome = "clean_error" if code else "accepted"
    except BaseException as exc:  # noqa: BLE001 - every other exception is the finding
        outcome = "traceback"
        detail = f"{type(exc).__name__}: {str(exc)[:200]} @ " + " < ".join(
            f"{Path(f.filename).name}:{f.lineno}" for f in reversed(traceback.extract_tb(exc.__traceback__)[-3:]))
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, out_fd, err_fd):
            os.close(fd)
        os.chdir(saved_cwd)
    stderr = err_path.read_text(errors="replace")
    err_path.unlink()
    if outcome in ("clean_error", "accepted") and argv[0] != "@call":
        lines = [ln for ln in stderr.splitlines() if ln.strip()]
        allowed = EXIT_CODES.get(argv[0], DEFAULT_EXIT_CODES)
        if "Traceback" in stderr:
            outcome, detail = "traceback", stderr.strip().splitlines()[-1][:200]
        elif code not in allowed or len(lines) > (1 if code else 0):
            outcome, detail = "stderr", f"exit {code}: {stderr.strip()[:200]}"
        else:
            detail = stderr.strip()[:200]
    new = _outside(sandbox, before, argv)
    if new:
        outcome, detail = "wrote_outside", ", ".join(new)[:200]
    if outcome == "accepted" and case.invalid:
        outcome = "accepted_invalid"
    return {"index": case.index, "kind": case.kind, "what": case.what, "argv": " ".join(case.argv)[:120],
            "outcome": outcome, "code": code, "detail": detail}


# ----------------------------------------------------------------------------------------------
# Workers and the campaign
# ----------------------------------------------------------------------------------------------

def worker(seed: int, indices: list[int], kinds, as_limit: int, seconds: float, bases_dir: str,
           heavy_share: float) -> None:
    """Run cases, printing one JSON line each ("start" before, the result after) on stdout."""
    resource.setrlimit(resource.RLIMIT_AS, (as_limit, as_limit))
    out = os.fdopen(os.dup(1), "w", buffering=1)
    root = Path(tempfile.mkdtemp(prefix="vo-fuzz-"))
    try:
        bases = load_bases(Path(bases_dir))
        for i in indices:
            out.write(json.dumps({"start": i}) + "\n")
            sandbox = root / f"c{i}" / "s"
            sandbox.mkdir(parents=True)
            case = make_case(seed, i, bases, kinds, heavy_share)
            result = run_case(case, sandbox, seconds)
            shutil.rmtree(sandbox.parent, ignore_errors=True)
            out.write(json.dumps(result) + "\n")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def campaign(seed: int, n_cases: int, jobs: int = 2, kinds=KINDS, as_limit: int = AS_LIMIT,
             seconds: float = CASE_SECONDS, progress=None, heavy_share: float = HEAVY_SHARE) -> list[dict]:
    """Run cases 0..n-1 across ``jobs`` worker processes; returns one result per case."""
    pending = list(range(n_cases))
    chunks = [pending[j::jobs] for j in range(jobs)]
    results: dict[int, dict] = {}
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    bases_dir = Path(tempfile.mkdtemp(prefix="vo-fuzz-bases-"))
    save_bases(build_bases(bases_dir / "_build"), bases_dir)
    shutil.rmtree(bases_dir / "_build", ignore_errors=True)

    def spawn(chunk):
        cmd = [sys.executable, "-m", "oracle_tools.fuzz", "--worker", "--seed", str(seed), "--kinds", ",".join(kinds),
               "--as-limit", str(as_limit), "--case-seconds", str(seconds), "--indices", ",".join(map(str, chunk)),
               "--bases", str(bases_dir), "--heavy", repr(heavy_share)]
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env, bufsize=1)

    import queue
    import threading
    events: queue.Queue = queue.Queue()

    def pump(proc):  # one reader thread per worker: lines (and end of file) into one queue
        for line in proc.stdout:
            events.put((proc, json.loads(line)))
        events.put((proc, None))

    running = {}  # proc -> [chunk, current case, since]

    def start(chunk):
        proc = spawn(chunk)
        running[proc] = [chunk, None, time.monotonic()]
        threading.Thread(target=pump, args=(proc,), daemon=True).start()

    for chunk in chunks:
        if chunk:
            start(chunk)
    while running:
        try:
            proc, msg = events.get(timeout=1.0)
        except queue.Empty:
            proc = msg = None
        if proc is not None and msg is not None:
            if "start" in msg:
                running[proc][1], running[proc][2] = msg["start"], time.monotonic()
            else:
                results[msg["index"]] = msg
                running[proc][1] = None
                if progress:
                    progress(len(results), n_cases)
        elif proc is not None:  # the worker ended: finished, died, or killed as hung
            proc.wait()
            chunk, current, _ = running.pop(proc)
            if current is not None and current not in results:
                killed = proc.returncode < 0  # a signal under RLIMIT_AS (SIGSEGV/SIGKILL/SIGABRT): memory
                results[current] = {"index": current, "kind": kinds[current % len(kinds)], "what": "?", "argv": "",
                                    "outcome": "memory" if killed else "traceback", "code": proc.returncode,
                                    "detail": f"worker died ({proc.returncode})"}
            rest = [i for i in chunk if i not in results]
            if rest:
                start(rest)
        now = time.monotonic()
        for p, (chunk, current, since) in list(running.items()):
            if current is not None and now - since > seconds + 30 and current not in results:
                results[current] = {"index": current, "kind": kinds[current % len(kinds)], "what": "?", "argv": "",
                                    "outcome": "hang", "code": None, "detail": "worker stopped answering"}
                p.kill()  # its reader then reports the end and the rest of its chunk is respawned
    shutil.rmtree(bases_dir, ignore_errors=True)
    return [results[i] for i in sorted(results)]


def real_cli(seed: int, n: int, kinds=KINDS, as_limit: int = AS_LIMIT, seconds: float = 120.0, jobs: int = 2) -> list[dict]:
    """Run ``n`` cases as real ``voxtral-oracle`` processes (whole commands: ``heavy_share`` 1)."""
    from concurrent.futures import ThreadPoolExecutor

    root = Path(tempfile.mkdtemp(prefix="vo-fuzz-cli-"))
    exe = [sys.executable, "-m", "oracle_tools.cli"]
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (as_limit, as_limit))

    def one(case: Case) -> dict:
        sandbox = root / f"c{case.index}" / "s"
        sandbox.mkdir(parents=True)
        materialize(case, sandbox)
        before = _snapshot(sandbox)
        argv = _expand(case.argv, sandbox)
        try:
            r = subprocess.run(exe + argv, cwd=sandbox / "cwd", capture_output=True, text=True, timeout=seconds,
                               preexec_fn=limit, env=env)
            code, stderr = r.returncode, r.stderr
            lines = [ln for ln in stderr.splitlines() if ln.strip()]
            allowed = EXIT_CODES.get(argv[0], DEFAULT_EXIT_CODES)
            if "Traceback" in stderr or code < 0:
                outcome = "memory" if "MemoryError" in stderr or code < 0 else "traceback"
            elif code not in allowed or len(lines) > (1 if code else 0):
                outcome = "stderr"
            else:
                outcome = "accepted" if code == 0 else "clean_error"
        except subprocess.TimeoutExpired:
            outcome, code, stderr = "hang", None, ""
        if _outside(sandbox, before, argv):
            outcome = "wrote_outside"
        if outcome == "accepted" and case.invalid:
            outcome = "accepted_invalid"
        shutil.rmtree(sandbox.parent, ignore_errors=True)
        return {"index": case.index, "kind": case.kind, "what": case.what, "argv": " ".join(case.argv)[:120],
                "outcome": outcome, "code": code, "detail": stderr.strip()[-200:]}

    try:
        bases = build_bases(root / "bases")
        cases, i = [], 0
        while len(cases) < n:
            case = make_case(seed, 10_000_000 + i, bases, kinds, heavy_share=1.0)
            i += 1
            if case.argv[0] != "@call":
                cases.append(case)
        with ThreadPoolExecutor(jobs) as pool:
            return list(pool.map(one, cases))
    finally:
        shutil.rmtree(root, ignore_errors=True)


def table(results: list[dict], kinds=KINDS) -> str:
    rows = ["| kind | " + " | ".join(OUTCOMES) + " | total |", "|---|" + "---:|" * (len(OUTCOMES) + 1)]
    for k in list(kinds) + ["all"]:
        sel = [r for r in results if k == "all" or r["kind"] == k]
        if not sel:
            continue
        counts = [sum(r["outcome"] == o for r in sel) for o in OUTCOMES]
        rows.append(f"| {k} | " + " | ".join(map(str, counts)) + f" | {len(sel)} |")
    return "\n".join(rows)


# ----------------------------------------------------------------------------------------------
# Command
# ----------------------------------------------------------------------------------------------

def add_arguments(p) -> None:
    from oracle_tools import argtypes
    p.add_argument("--cases", type=argtypes.positive_int, default=10_000, help="number of seeded cases (default 10000)")
    p.add_argument("--seed", type=argtypes.seed, default=0)
    p.add_argument("--jobs", type=argtypes.positive_int, default=2, help="worker processes (default 2)")
    p.add_argument("--kinds", type=argtypes.name_list, default=",".join(KINDS), help="input kinds (default: all)")
    p.add_argument("--real-cli", type=int, default=0, metavar="N", help="also run N cases as real CLI processes")
    p.add_argument("--json", metavar="F", help="write every result as JSON to F")
    p.add_argument("--heavy", type=argtypes.nonneg_finite, default=HEAVY_SHARE,
                   help=f"share of cases that run a whole command, not just its loader (default {HEAVY_SHARE})")


def run(args) -> int:
    from oracle.errors import OracleError
    kinds = tuple(args.kinds.split(","))
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise OracleError(f"--kinds: unknown kind {unknown[0]!r} (known: {', '.join(KINDS)})")
    t0 = time.monotonic()
    results = campaign(args.seed, args.cases, args.jobs, kinds, heavy_share=args.heavy)
    print(f"{len(results)} cases in {time.monotonic() - t0:.0f} s (seed {args.seed}, RLIMIT_AS {AS_LIMIT >> 30} GiB)")
    print(table(results, kinds))
    if args.real_cli:
        t0 = time.monotonic()
        cli_results = real_cli(args.seed, args.real_cli, kinds, jobs=args.jobs)
        print(f"\nreal CLI runs: {len(cli_results)} in {time.monotonic() - t0:.0f} s")
        print(table(cli_results, kinds))
        results = results + cli_results
    defects = [r for r in results if r["outcome"] in DEFECTS]
    for r in defects[:40]:
        print(f"{r['outcome']}: case {r['index']} {r['kind']} {r['what']!r} [{r['argv']}] {r['detail']}")
    if args.json:
        from oracle_tools.outputs import write_file_atomic
        write_file_atomic(args.json, json.dumps(results, indent=0) + "\n")
    return 1 if defects else 0


def _worker_main(argv) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--worker", action="store_true")
    p.add_argument("--seed", type=int)
    p.add_argument("--kinds")
    p.add_argument("--as-limit", type=int)
    p.add_argument("--case-seconds", type=float)
    p.add_argument("--indices")
    p.add_argument("--bases")
    p.add_argument("--heavy", type=float)
    a = p.parse_args(argv)
    worker(a.seed, [int(i) for i in a.indices.split(",")], tuple(a.kinds.split(",")), a.as_limit, a.case_seconds,
           a.bases, a.heavy)


if __name__ == "__main__":
    if "--worker" in sys.argv:
        _worker_main(sys.argv[1:])
    else:
        from oracle_tools.cli import run_as_script

        run_as_script("fuzz")
