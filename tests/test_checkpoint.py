"""Checkpoint I/O: both layouts load to the same weights, the reader agrees with the safetensors
package, every defect is one line naming the file and the tensor/key, and synthesis is deterministic.

``make_bad_checkpoint(kind, tmp_path)`` builds each defective checkpoint and ``expected_error(kind,
path)`` gives the regex its one-line message must match; the CLI exit-code test reuses both.
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
import safetensors.numpy
import torch
from safetensors import safe_open
from transformers import VoxtralRealtimeConfig, VoxtralRealtimeForConditionalGeneration

from oracle.checkpoint import (
    DTYPES,
    Checkpoint,
    open_checkpoint,
    read_safetensors_header,
    read_tensor,
    write_safetensors,
)
from oracle.config import TINY, ModelConfig
from oracle.errors import OracleError
from oracle.precision import BF16, FLOAT32, FLOAT64
from oracle.synth import write_checkpoint
from oracle.weights import GROUPS, HF_PREFIX_ALIASES, expected, n_layers, permute_rows, specs_of, unpermute_rows

from hf_reference import hf_state_dict

SEED = 7
CONSOLIDATED = "consolidated.safetensors"


# -- HF-layout copies ---------------------------------------------------------------------------


def old_tree_name(hf_name: str) -> str:
    """transformers 5.23 in-memory name -> the converter's / transformers 5.2 checkpoint key (MODEL.md §1.5)."""
    for old, new in HF_PREFIX_ALIASES:
        if hf_name.startswith(new):
            return old + hf_name[len(new):]
    raise AssertionError(f"no old-tree prefix for {hf_name}")


def write_hf_copy(src: Checkpoint, out: Path, *, shards: int = 1, old_names: bool = False) -> Path:
    """An HF-layout copy of a Mistral-layout checkpoint, as the converter writes it: config.json =
    ``VoxtralRealtimeConfig(**cfg.to_hf_config()).to_dict()``, tensors BF16 under HF names, q/k rows
    (and the encoder q bias) permuted to rotate-half, plus the tied lm_head copy. ``shards`` > 1
    writes model-0000k-of-0000n.safetensors and model.safetensors.index.json."""
    cfg = src.config
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(VoxtralRealtimeConfig(**cfg.to_hf_config()).to_dict(), indent=2))
    rename = old_tree_name if old_names else (lambda n: n)
    items = []
    for name, spec, layer, shape in expected(cfg, "mistral"):
        w = np.array(src.raw(name))
        if spec.rope is not None:
            w = permute_rows(w, *spec.rope(cfg))
        items.append((rename(spec.names(layer)[1]), BF16, shape, w))
        if spec.group == "embedding":
            items.append(("language_model.lm_head.weight" if old_names else "lm_head.weight", BF16, shape, w))
    items.sort(key=lambda t: t[0])
    if shards == 1:
        write_safetensors(out / "model.safetensors", items)
        return out
    weight_map = {}
    for k in range(shards):
        part = items[k::shards]
        fname = f"model-{k + 1:05d}-of-{shards:05d}.safetensors"
        write_safetensors(out / fname, part)
        weight_map.update({name: fname for name, *_ in part})
    (out / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}, indent=2))
    return out


@pytest.fixture(scope="module")
def mistral_dir(tmp_path_factory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("ckpt_mistral"), TINY, seed=SEED)


HF_VARIANTS = {
    "hf": dict(shards=1, old_names=False),
    "hf_sharded": dict(shards=2, old_names=False),
    "hf_old_tree": dict(shards=1, old_names=True),
    "hf_old_tree_sharded": dict(shards=2, old_names=True),
}


@pytest.fixture(scope="module", params=list(HF_VARIANTS))
def hf_dir(request, mistral_dir, tmp_path_factory) -> Path:
    return write_hf_copy(open_checkpoint(mistral_dir), tmp_path_factory.mktemp(request.param), **HF_VARIANTS[request.param])


def every_container(cfg: ModelConfig):
    """(group, layer) for every typed container of the model."""
    for group in GROUPS:
        count = n_layers(group, cfg)
        for layer in range(count) if count is not None else [None]:
            yield group, layer


def test_hf_layout_loads_bit_identical(mistral_dir, hf_dir):
    mis, hf = open_checkpoint(mistral_dir), open_checkpoint(hf_dir)
    assert (mis.layout, hf.layout) == ("mistral", "hf")
    assert hf.config == mis.config
    n_files = 2 if "sharded" in hf_dir.name else 1
    assert len(hf.files) == n_files
    checked = 0
    for group, layer in every_container(mis.config):
        for p in (FLOAT32, FLOAT64):
            a, b = mis.group(group, layer, p), hf.group(group, layer, p)
            for spec in specs_of(group):
                x, y = getattr(a, spec.field), getattr(b, spec.field)
                assert x.dtype == y.dtype == p.dtype and x.shape == y.shape, (group, layer, spec.field)
                assert np.array_equal(x, y), f"{group}[{layer}].{spec.field} ({p.name}) differs between layouts"
                checked += 1
    assert checked == 2 * sum(1 for _ in expected(mis.config, "mistral"))


def test_hf_copy_is_what_transformers_loads(mistral_dir, hf_dir):
    """The HF-layout copy is a real HF checkpoint: ``from_pretrained`` (with 5.23's renaming of old-tree
    keys) loads it with nothing missing or unexpected, to exactly the state dict that
    ``hf_reference.build_hf_model`` derives from the Mistral checkpoint through ``TENSORS``."""
    model, info = VoxtralRealtimeForConditionalGeneration.from_pretrained(str(hf_dir), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    ours = hf_state_dict(open_checkpoint(mistral_dir), torch.float32)
    theirs = model.state_dict()
    assert set(ours) == set(theirs)
    for name, t in ours.items():
        assert torch.equal(t, theirs[name].float()), name


def test_permutation_round_trip():
    rng = np.random.default_rng(0)
    for heads, dh, rest in [(3, 10, (7,)), (5, 14, ()), (1, 2, (4,))]:
        w = rng.standard_normal((heads * dh, *rest))
        p = permute_rows(w, heads, dh)
        assert np.array_equal(unpermute_rows(p, heads, dh), w)
        # HF row i of a head is consolidated row 2i, row i + Dh/2 is consolidated row 2i + 1 (MODEL.md §1.5)
        for h in range(heads):
            for i in range(dh // 2):
                assert np.array_equal(p[h * dh + i], w[h * dh + 2 * i])
                assert np.array_equal(p[h * dh + dh // 2 + i], w[h * dh + 2 * i + 1])


# -- the reader against the safetensors package -------------------------------------------------


def test_reader_agrees_with_safetensors_package(mistral_dir):
    path = mistral_dir / CONSOLIDATED
    ours = read_safetensors_header(path)
    with safe_open(str(path), "np") as f:
        assert set(f.keys()) == set(ours)
        assert f.metadata() == {"format": "pt"}
        for name, entry in ours.items():
            ref = f.get_tensor(name)
            got = read_tensor(entry)
            assert ref.dtype == np.dtype(ml_dtypes.bfloat16) == got.dtype, name
            assert ref.shape == got.shape == entry.shape, name
            assert np.array_equal(ref.view(np.uint16), np.asarray(got).view(np.uint16)), name


def test_reader_reads_files_written_by_safetensors_package(tmp_path):
    rng = np.random.default_rng(3)
    arrays = {
        "bf16": rng.standard_normal((5, 3)).astype(ml_dtypes.bfloat16),
        "f16": rng.standard_normal((4,)).astype(np.float16),
        "f32": rng.standard_normal((2, 3, 4)).astype(np.float32),
        "f64": rng.standard_normal((3,)),
        "i32": rng.integers(-5, 5, (6,), dtype=np.int32),
        "i64": rng.integers(-5, 5, (2, 2), dtype=np.int64),
        "u8": rng.integers(0, 255, (7,), dtype=np.uint8),
        "scalar_row": np.zeros((1, 0), np.float32),
    }
    path = tmp_path / "pkg.safetensors"
    safetensors.numpy.save_file(arrays, str(path), metadata={"who": "safetensors"})
    entries = read_safetensors_header(path)
    assert set(entries) == set(arrays)
    for name, ref in arrays.items():
        got = read_tensor(entries[name])
        assert got.dtype == ref.dtype and got.shape == ref.shape, name
        assert np.array_equal(np.asarray(got).view(np.uint8), ref.view(np.uint8)), name


def test_writer_round_trips_through_safetensors_package(tmp_path):
    rng = np.random.default_rng(4)
    arrays = {"b": rng.standard_normal((3, 5)).astype(BF16), "a": rng.standard_normal((4,)).astype(np.float32)}
    path = tmp_path / "ours.safetensors"
    # one tensor given as an iterator of row blocks, as synth streams them
    write_safetensors(path, [("b", BF16, (3, 5), iter([arrays["b"][:2], arrays["b"][2:]])),
                             ("a", np.float32, (4,), arrays["a"])])
    loaded = safetensors.numpy.load_file(str(path))
    assert set(loaded) == set(arrays)
    for name in arrays:
        assert loaded[name].dtype == arrays[name].dtype
        assert np.array_equal(loaded[name].view(np.uint8), arrays[name].view(np.uint8)), name
    assert struct.unpack("<Q", path.read_bytes()[:8])[0] % 8 == 0  # header padded to 8 bytes


# -- bad checkpoints ----------------------------------------------------------------------------

BAD_KINDS = (
    "missing_tensor",
    "extra_tensor",
    "misshaped_tensor",
    "wrong_dtype",
    "truncated",
    "header_past_end",
    "params_not_json",
    "params_incomplete",
    "missing_directory",
    "no_params_or_config",
)
MISSING = "layers.1.attention.wk.weight"  # [K*Dh, D] = [48, 96] in TINY
EXTRA = "layers.0.attention.wk.bias"  # the k-bias a Whisper-minded exporter might add (MODEL.md §11.5)
VICTIM = "norm.weight"  # [96]; also the last tensor in the file (names are written sorted)


def _rewrite(directory: Path, edit) -> None:
    """Rewrite consolidated.safetensors with ``edit(list of (name, dtype, shape, array))`` applied."""
    path = directory / CONSOLIDATED
    items = [(name, DTYPES[e.dtype], e.shape, np.array(read_tensor(e))) for name, e in read_safetensors_header(path).items()]
    write_safetensors(path, edit(items))


def make_bad_checkpoint(kind: str, tmp_path: Path) -> Path:
    """A TINY Mistral-layout checkpoint under ``tmp_path`` with exactly one defect; returns the path to
    give ``open_checkpoint`` (or the CLI). ``expected_error(kind, path)`` is its message's regex."""
    if kind == "missing_directory":
        return tmp_path / "no-such-checkpoint"
    directory = write_checkpoint(tmp_path / f"bad_{kind}", TINY, seed=SEED)
    st = directory / CONSOLIDATED
    if kind == "missing_tensor":
        _rewrite(directory, lambda items: [t for t in items if t[0] != MISSING])
    elif kind == "extra_tensor":
        _rewrite(directory, lambda items: sorted(items + [(EXTRA, BF16, (48,), np.zeros(48, BF16))], key=lambda t: t[0]))
    elif kind == "misshaped_tensor":
        _rewrite(directory, lambda items: [(n, d, (95,), a[:95]) if n == VICTIM else (n, d, s, a) for n, d, s, a in items])
    elif kind == "wrong_dtype":
        _rewrite(directory, lambda items: [(n, np.dtype("<i4"), s, np.ones(s, np.int32)) if n == VICTIM else (n, d, s, a)
                                           for n, d, s, a in items])
    elif kind == "truncated":
        data = st.read_bytes()
        st.write_bytes(data[:-100])
    elif kind == "header_past_end":
        data = bytearray(st.read_bytes())
        data[:8] = struct.pack("<Q", len(data))  # 8 + n > file size
        st.write_bytes(bytes(data))
    elif kind == "params_not_json":
        (directory / "params.json").write_text('{"dim": 96, "n_layers": 2,,}\n')
    elif kind == "params_incomplete":
        params = json.loads((directory / "params.json").read_text())
        del params["multimodal"]["whisper_model_args"]["encoder_args"]["sliding_window"]
        (directory / "params.json").write_text(json.dumps(params, indent=2))
    elif kind == "no_params_or_config":
        (directory / "params.json").unlink()
    else:
        raise ValueError(f"unknown bad-checkpoint kind {kind!r}")
    return directory


def expected_error(kind: str, path: Path) -> str:
    """The regex (re.search, anchored at the start) the one-line OracleError message must match."""
    st = re.escape(str(path / CONSOLIDATED))
    params = re.escape(str(path / "params.json"))
    d = re.escape(str(path))
    return {
        "missing_tensor": rf"^{st}: missing tensor {re.escape(MISSING)} \(expected \[48, 96\]\)$",
        "extra_tensor": rf"^{st}: unexpected tensor {re.escape(EXTRA)} \(not part of this model's config\)$",
        "misshaped_tensor": rf"^{st}: tensor {re.escape(VICTIM)} has shape \[95\], expected \[96\] from the config$",
        "wrong_dtype": rf"^{st}: tensor {re.escape(VICTIM)} has dtype I32, expected a float type",
        "truncated": rf"^{st}: truncated: tensor {re.escape(VICTIM)} ends at byte \d+ but the file has \d+$",
        "header_past_end": rf"^{st}: header length \d+ points past the end of the file \(\d+ bytes\)$",
        "params_not_json": rf"^{params}: not valid JSON \(.* at line 1 column \d+\)$",
        "params_incomplete": rf"^{params}: missing key multimodal\.whisper_model_args\.encoder_args\.sliding_window$",
        "missing_directory": rf"^{d}: checkpoint directory not found$",
        "no_params_or_config": rf"^{d}: not a checkpoint: neither params\.json .* nor config\.json .* found$",
    }[kind]


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_bad_checkpoint_is_one_line(kind, tmp_path):
    path = make_bad_checkpoint(kind, tmp_path)
    with pytest.raises(OracleError, match=expected_error(kind, path)) as err:
        open_checkpoint(path)
    msg = str(err.value)
    assert "\n" not in msg and msg == msg.strip(), repr(msg)


def test_good_checkpoint_opens(tmp_path):
    ck = open_checkpoint(write_checkpoint(tmp_path / "good", TINY, seed=SEED))
    assert ck.config == TINY and ck.layout == "mistral"
    with pytest.raises(ValueError, match="unknown bad-checkpoint kind"):
        make_bad_checkpoint("no-such-kind", tmp_path)


# -- determinism --------------------------------------------------------------------------------


def test_synthetic_checkpoints_are_deterministic(tmp_path):
    a = write_checkpoint(tmp_path / "a", TINY, seed=SEED)
    b = write_checkpoint(tmp_path / "b", TINY, seed=SEED)
    c = write_checkpoint(tmp_path / "c", TINY, seed=SEED + 1)
    names = sorted(p.name for p in a.iterdir())
    assert names == ["consolidated.safetensors", "params.json", "tekken.json"]
    assert names == sorted(p.name for p in b.iterdir()) == sorted(p.name for p in c.iterdir())
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), f"{name}: same seed, different bytes"
    assert (a / CONSOLIDATED).read_bytes() != (c / CONSOLIDATED).read_bytes()
    # every tensor is drawn from its own (seed, name) stream: each one changes with the seed
    ea, ec = read_safetensors_header(a / CONSOLIDATED), read_safetensors_header(c / CONSOLIDATED)
    assert list(ea) == list(ec)
    for name in ea:
        assert not np.array_equal(np.asarray(read_tensor(ea[name])).view(np.uint16),
                                  np.asarray(read_tensor(ec[name])).view(np.uint16)), f"{name} ignores the seed"
