"""Synthetic checkpoints in the real on-disk format: params.json + consolidated.safetensors + tekken.json.

Real weights cannot be shipped or downloaded, so tests and examples run on seeded random weights
written exactly as Mistral writes the real ones (BF16, Mistral names, interleaved q/k rows). The
loader cannot tell the difference, which is the point: users bring real weights, the code path is
the same.

Weight recipe (per tensor, from its own generator seeded by (seed, name), so any tensor can be
regenerated alone and the order of writing does not matter):

    norm weights        1 + 0.1·N(0,1)                     (randomized so a wrong norm shows)
    final decoder norm  N(0,1), mean zero                  (see ``recipe``: breaks the tied head's
                                                            self-preference)
    biases              0.05·N(0,1)
    matrices            gain · N(0,1) / sqrt(fan_in)       fan_in = in_features (× kernel for convs)
    token embedding     N(0,1); special-token rows scaled by 0.25, except STREAMING_PAD/WORD by 3.5
                        (so the tiny model mixes control and text tokens and rarely stops on EOS)

Gains are chosen so activations stay O(1) through every layer and a tiny model's greedy output is
varied (many distinct tokens): the residual branches (wo, w2) and the adapter get gain > 1 so the
hidden state at the head is dominated by what the layers computed, not by the fed-back token's own
embedding (with a tied head, a plain 1/sqrt(fan_in) model just repeats its input token, a degenerate
fixture that hides feedback-path bugs).
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .checkpoint import write_safetensors
from .config import FULL, TINY, ModelConfig
from .precision import BF16
from .synth_tekken import write_tekken
from .weights import TensorSpec, expected

BLOCK_ELEMENTS = 1 << 23  # rows generated per block: ~32 MB of float32, bounds peak memory
SPECIAL_IDS = 1000
STREAMING_IDS = (32, 33)
STREAMING_GAIN = 3.5  # so STREAMING_PAD/WORD win some steps among ~500 random text rows

# gain per (group, field) for matrices; default 1.
GAINS = {
    ("enc_layer", "wo"): 1.5,
    ("enc_layer", "w2"): 1.5,
    ("dec_layer", "wo"): 2.0,
    ("dec_layer", "w2"): 2.0,
    ("adapter", "w_in"): 1.5,
    ("adapter", "w_out"): 2.0,
    ("dec_layer", "ada_down"): 1.0,
    ("dec_layer", "ada_up"): 0.5,
}


@dataclass(frozen=True)
class Recipe:
    kind: str  # "norm" | "bias" | "matrix" | "embedding"
    scale: float


def recipe(spec: TensorSpec, shape: tuple[int, ...]) -> Recipe:
    if spec.group == "dec_norm":
        # Mean-zero final norm: with a tied head, logit_j = sum_c w_c n(h)_c E_jc, and the fed-back
        # token's own row contributes sum_c w_c E_tc^2, about D for w near 1 (the model repeats its
        # input) but only about sqrt(D) for mean-zero w. Measured on the tiny model: 1-2 distinct
        # greedy tokens with 1 + 0.1 N(0,1), 20-27 with N(0,1).
        return Recipe("matrix", 1.0)
    if spec.field.endswith("norm") or spec.group == "enc_norm":
        return Recipe("norm", 0.1)
    if len(shape) == 1:
        return Recipe("bias", 0.05)
    if spec.group == "embedding":
        return Recipe("embedding", 1.0)
    fan_in = int(np.prod(shape[1:]))
    return Recipe("matrix", GAINS.get((spec.group, spec.field), 1.0) / np.sqrt(fan_in))


def tensor_blocks(name: str, spec: TensorSpec, shape: tuple[int, ...], seed: int):
    """Yield the tensor's values (BF16) in row blocks; a pure function of (name, shape, seed)."""
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    r = recipe(spec, shape)
    row = int(np.prod(shape[1:])) if len(shape) > 1 else shape[0]
    rows = shape[0] if len(shape) > 1 else 1
    per_block = max(1, BLOCK_ELEMENTS // max(row, 1))
    for start in range(0, rows, per_block):
        n = min(per_block, rows - start)
        x = rng.standard_normal((n, row), dtype=np.float32)
        if r.kind == "norm":
            x = 1.0 + r.scale * x
        elif r.kind == "embedding":
            ids = np.arange(start, start + n)
            damp = (ids < SPECIAL_IDS) & ~np.isin(ids, STREAMING_IDS)
            x[damp] *= 0.25
            x[np.isin(ids, STREAMING_IDS)] *= STREAMING_GAIN
        else:
            x *= r.scale
        yield x.astype(BF16)


def parameter_counts(cfg: ModelConfig) -> dict[str, int]:
    """Parameters per component, from the shapes the config implies (MODEL.md §1.3's table)."""
    counts = {"encoder": 0, "adapter": 0, "embedding": 0, "decoder": 0, "ada (in decoder)": 0}
    tensors = {"encoder": 0, "adapter": 0, "embedding": 0, "decoder": 0}
    for _, spec, _, shape in expected(cfg, "mistral"):
        part = {"conv": "encoder", "enc_layer": "encoder", "enc_norm": "encoder", "adapter": "adapter",
                "embedding": "embedding", "dec_layer": "decoder", "dec_norm": "decoder"}[spec.group]
        size = int(np.prod(shape))
        counts[part] += size
        tensors[part] += 1
        if spec.field.startswith("ada_"):
            counts["ada (in decoder)"] += size
    counts["total"] = counts["encoder"] + counts["adapter"] + counts["embedding"] + counts["decoder"]
    counts["tensors"] = sum(tensors.values())
    return counts


def size_config(size: str, params: dict | None = None, source="params.json") -> ModelConfig:
    if params is not None:
        return ModelConfig.from_params(params, source)
    return {"tiny": TINY, "full": FULL}[size]


def write_checkpoint(out_dir: str | Path, cfg: ModelConfig, seed: int = 0, progress=None) -> Path:
    """Write params.json, consolidated.safetensors and tekken.json; byte-identical for the same inputs."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "params.json").write_text(json.dumps(cfg.to_params(), indent=2) + "\n")
    items = [(name, BF16, shape, tensor_blocks(name, spec, shape, seed))
             for name, spec, _, shape in sorted(expected(cfg, "mistral"), key=lambda t: t[0])]
    write_safetensors(out / "consolidated.safetensors", items, progress=progress)
    # The built-in merge text gives ~480 merges; larger vocabularies are filled deterministically from the seed.
    write_tekken(out / "tekken.json", vocab_size=cfg.decoder.vocab_size, seed=seed)
    return out
