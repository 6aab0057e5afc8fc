"""Typed weights and the one table that maps checkpoint names to them.

Shapes (PyTorch Linear layout, ``y = x @ w.T``; MODEL.md §1.3):

    M  mel bins (128)          De encoder width (1280)     He encoder heads (32)   Dhe 64
    Fe encoder FFN (5120)      D  decoder width (3072)     H  query heads (32)     K  kv heads (8)
    Dh decoder head dim (128)  F  decoder FFN (9216)       V  vocab (131072)       A  ADA width (32)

Every tensor of the model is one row of ``TENSORS``: the group and field it fills, its Mistral-native
name, its HF name (transformers 5.23 in-memory tree) and its shape as a function of the config.
q/k rows whose RoPE pairing differs between the layouts carry ``rope=(heads, head_dim)``: the
Mistral layout is interleaved (rows 2i, 2i+1 rotate together), HF's is rotate-half (per head, all
even rows then all odd rows; MODEL.md §1.5). The loader undoes HF's permutation with ``unpermute_rows``;
the oracle only ever sees the Mistral layout.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, fields
from typing import Callable

import numpy as np

from .config import CONV_KERNEL, ModelConfig


@dataclass(frozen=True)
class ConvStemWeights:
    w1: np.ndarray  # [De, M, 3]   conv1, stride 1
    b1: np.ndarray  # [De]
    w2: np.ndarray  # [De, De, 3]  conv2, stride 2
    b2: np.ndarray  # [De]


@dataclass(frozen=True)
class EncoderLayerWeights:
    attn_norm: np.ndarray  # [De]
    wq: np.ndarray  # [He*Dhe, De]
    bq: np.ndarray  # [He*Dhe]
    wk: np.ndarray  # [He*Dhe, De]   (no k bias: Whisper heritage)
    wv: np.ndarray  # [He*Dhe, De]
    bv: np.ndarray  # [He*Dhe]
    wo: np.ndarray  # [De, He*Dhe]
    bo: np.ndarray  # [De]
    ffn_norm: np.ndarray  # [De]
    w1: np.ndarray  # [Fe, De]  gate
    w3: np.ndarray  # [Fe, De]  up
    w2: np.ndarray  # [De, Fe]  down
    b2: np.ndarray  # [De]      the encoder's only MLP bias
    # Not in any checkpoint: this model has no k bias (vLLM adds a zero one, which is harmless). Only
    # the fault catalogue sets it, to show what a non-zero k bias does (MODEL.md §11.5).
    bk: np.ndarray | None = None  # [He*Dhe]


@dataclass(frozen=True)
class AdapterWeights:
    w_in: np.ndarray  # [D, 4*De]
    w_out: np.ndarray  # [D, D]


@dataclass(frozen=True)
class DecoderLayerWeights:
    attn_norm: np.ndarray  # [D]
    wq: np.ndarray  # [H*Dh, D]
    wk: np.ndarray  # [K*Dh, D]
    wv: np.ndarray  # [K*Dh, D]
    wo: np.ndarray  # [D, H*Dh]
    ffn_norm: np.ndarray  # [D]
    w1: np.ndarray  # [F, D] gate
    w3: np.ndarray  # [F, D] up
    w2: np.ndarray  # [D, F] down
    ada_down: np.ndarray  # [A, D]
    ada_up: np.ndarray  # [D, A]


@dataclass(frozen=True)
class NormWeights:
    weight: np.ndarray  # [De] (encoder final norm) or [D] (decoder final norm)


@dataclass(frozen=True)
class EmbeddingWeights:
    table: np.ndarray  # [V, D]; also the LM head (tied)


GROUPS: dict[str, type] = {
    "conv": ConvStemWeights,
    "enc_layer": EncoderLayerWeights,
    "enc_norm": NormWeights,
    "adapter": AdapterWeights,
    "embedding": EmbeddingWeights,
    "dec_layer": DecoderLayerWeights,
    "dec_norm": NormWeights,
}
LAYERED = {"enc_layer", "dec_layer"}


@dataclass(frozen=True)
class TensorSpec:
    group: str
    field: str
    mistral: str  # "{i}" stands for the layer index
    hf: str
    shape: Callable[[ModelConfig], tuple[int, ...]]
    rope: Callable[[ModelConfig], tuple[int, int]] | None = None  # (heads, head_dim) for q/k rows

    def names(self, i: int | None = None) -> tuple[str, str]:
        return self.mistral.format(i=i), self.hf.format(i=i)


_E = "mm_streams_embeddings.embedding_module.whisper_encoder."
_ET = _E + "transformer.layers.{i}."
_HE = "model.audio_tower."
_HEL = _HE + "layers.{i}."
_HD = "model.language_model."
_HDL = _HD + "layers.{i}."


def _enc_qkv(c: ModelConfig):
    return (c.encoder.n_heads * c.encoder.head_dim, c.encoder.dim)


def _enc_heads(c: ModelConfig):
    return (c.encoder.n_heads, c.encoder.head_dim)


def _dec_q_heads(c: ModelConfig):
    return (c.decoder.n_heads, c.decoder.head_dim)


def _dec_k_heads(c: ModelConfig):
    return (c.decoder.n_kv_heads, c.decoder.head_dim)


TENSORS: tuple[TensorSpec, ...] = (
    # conv stem
    TensorSpec("conv", "w1", _E + "conv_layers.0.conv.weight", _HE + "embedder.conv1.weight",
               lambda c: (c.encoder.dim, c.audio.num_mel_bins, CONV_KERNEL)),
    TensorSpec("conv", "b1", _E + "conv_layers.0.conv.bias", _HE + "embedder.conv1.bias", lambda c: (c.encoder.dim,)),
    TensorSpec("conv", "w2", _E + "conv_layers.1.conv.weight", _HE + "embedder.conv2.weight",
               lambda c: (c.encoder.dim, c.encoder.dim, CONV_KERNEL)),
    TensorSpec("conv", "b2", _E + "conv_layers.1.conv.bias", _HE + "embedder.conv2.bias", lambda c: (c.encoder.dim,)),
    # encoder layers
    TensorSpec("enc_layer", "attn_norm", _ET + "attention_norm.weight", _HEL + "self_attn_layer_norm.weight",
               lambda c: (c.encoder.dim,)),
    TensorSpec("enc_layer", "wq", _ET + "attention.wq.weight", _HEL + "self_attn.q_proj.weight", _enc_qkv, _enc_heads),
    TensorSpec("enc_layer", "bq", _ET + "attention.wq.bias", _HEL + "self_attn.q_proj.bias",
               lambda c: (c.encoder.n_heads * c.encoder.head_dim,), _enc_heads),
    TensorSpec("enc_layer", "wk", _ET + "attention.wk.weight", _HEL + "self_attn.k_proj.weight", _enc_qkv, _enc_heads),
    TensorSpec("enc_layer", "wv", _ET + "attention.wv.weight", _HEL + "self_attn.v_proj.weight", _enc_qkv),
    TensorSpec("enc_layer", "bv", _ET + "attention.wv.bias", _HEL + "self_attn.v_proj.bias",
               lambda c: (c.encoder.n_heads * c.encoder.head_dim,)),
    TensorSpec("enc_layer", "wo", _ET + "attention.wo.weight", _HEL + "self_attn.o_proj.weight",
               lambda c: (c.encoder.dim, c.encoder.n_heads * c.encoder.head_dim)),
    TensorSpec("enc_layer", "bo", _ET + "attention.wo.bias", _HEL + "self_attn.o_proj.bias", lambda c: (c.encoder.dim,)),
    TensorSpec("enc_layer", "ffn_norm", _ET + "ffn_norm.weight", _HEL + "final_layer_norm.weight",
               lambda c: (c.encoder.dim,)),
    TensorSpec("enc_layer", "w1", _ET + "feed_forward.w1.weight", _HEL + "mlp.gate_proj.weight",
               lambda c: (c.encoder.hidden_dim, c.encoder.dim)),
    TensorSpec("enc_layer", "w3", _ET + "feed_forward.w3.weight", _HEL + "mlp.up_proj.weight",
               lambda c: (c.encoder.hidden_dim, c.encoder.dim)),
    TensorSpec("enc_layer", "w2", _ET + "feed_forward.w2.weight", _HEL + "mlp.down_proj.weight",
               lambda c: (c.encoder.dim, c.encoder.hidden_dim)),
    TensorSpec("enc_layer", "b2", _ET + "feed_forward.w2.bias", _HEL + "mlp.down_proj.bias", lambda c: (c.encoder.dim,)),
    TensorSpec("enc_norm", "weight", _E + "transformer.norm.weight", _HE + "norm.weight", lambda c: (c.encoder.dim,)),
    # adapter
    TensorSpec("adapter", "w_in", "mm_streams_embeddings.embedding_module.audio_language_projection.0.weight",
               "model.multi_modal_projector.linear_1.weight",
               lambda c: (c.decoder.dim, c.encoder.dim * c.downsample_factor)),
    TensorSpec("adapter", "w_out", "mm_streams_embeddings.embedding_module.audio_language_projection.2.weight",
               "model.multi_modal_projector.linear_2.weight", lambda c: (c.decoder.dim, c.decoder.dim)),
    # token embedding / tied LM head
    TensorSpec("embedding", "table", "mm_streams_embeddings.embedding_module.tok_embeddings.weight",
               _HD + "embed_tokens.weight", lambda c: (c.decoder.vocab_size, c.decoder.dim)),
    # decoder layers
    TensorSpec("dec_layer", "attn_norm", "layers.{i}.attention_norm.weight", _HDL + "input_layernorm.weight",
               lambda c: (c.decoder.dim,)),
    TensorSpec("dec_layer", "wq", "layers.{i}.attention.wq.weight", _HDL + "self_attn.q_proj.weight",
               lambda c: (c.decoder.n_heads * c.decoder.head_dim, c.decoder.dim), _dec_q_heads),
    TensorSpec("dec_layer", "wk", "layers.{i}.attention.wk.weight", _HDL + "self_attn.k_proj.weight",
               lambda c: (c.decoder.n_kv_heads * c.decoder.head_dim, c.decoder.dim), _dec_k_heads),
    TensorSpec("dec_layer", "wv", "layers.{i}.attention.wv.weight", _HDL + "self_attn.v_proj.weight",
               lambda c: (c.decoder.n_kv_heads * c.decoder.head_dim, c.decoder.dim)),
    TensorSpec("dec_layer", "wo", "layers.{i}.attention.wo.weight", _HDL + "self_attn.o_proj.weight",
               lambda c: (c.decoder.dim, c.decoder.n_heads * c.decoder.head_dim)),
    TensorSpec("dec_layer", "ffn_norm", "layers.{i}.ffn_norm.weight", _HDL + "post_attention_layernorm.weight",
               lambda c: (c.decoder.dim,)),
    TensorSpec("dec_layer", "w1", "layers.{i}.feed_forward.w1.weight", _HDL + "mlp.gate_proj.weight",
               lambda c: (c.decoder.hidden_dim, c.decoder.dim)),
    TensorSpec("dec_layer", "w2", "layers.{i}.feed_forward.w2.weight", _HDL + "mlp.down_proj.weight",
               lambda c: (c.decoder.dim, c.decoder.hidden_dim)),
    TensorSpec("dec_layer", "w3", "layers.{i}.feed_forward.w3.weight", _HDL + "mlp.up_proj.weight",
               lambda c: (c.decoder.hidden_dim, c.decoder.dim)),
    TensorSpec("dec_layer", "ada_down", "layers.{i}.ada_rms_norm_t_cond.0.weight", _HDL + "ada_rms_norm.linear1.weight",
               lambda c: (c.decoder.ada_dim, c.decoder.dim)),
    TensorSpec("dec_layer", "ada_up", "layers.{i}.ada_rms_norm_t_cond.2.weight", _HDL + "ada_rms_norm.linear2.weight",
               lambda c: (c.decoder.dim, c.decoder.ada_dim)),
    TensorSpec("dec_norm", "weight", "norm.weight", _HD + "norm.weight", lambda c: (c.decoder.dim,)),
)

# HF checkpoints written by the converter (or by transformers <= 5.2) use the older module tree;
# transformers 5.23 renames these prefixes at load time (conversion_mapping.py, MODEL.md §1.5).
HF_PREFIX_ALIASES: tuple[tuple[str, str], ...] = (
    ("language_model.model.", "model.language_model."),
    ("audio_tower.", "model.audio_tower."),
    ("multi_modal_projector.", "model.multi_modal_projector."),
)
# Present in HF checkpoints as a copy of the embedding (tied); accepted and ignored.
HF_TIED_COPIES = ("lm_head.weight", "language_model.lm_head.weight")


def n_layers(group: str, cfg: ModelConfig) -> int | None:
    return {"enc_layer": cfg.encoder.n_layers, "dec_layer": cfg.decoder.n_layers}.get(group)


def expected(cfg: ModelConfig, layout: str):
    """Yield (name, spec, layer index or None, shape) for every tensor the config implies."""
    for spec in TENSORS:
        count = n_layers(spec.group, cfg)
        for i in range(count) if count is not None else [None]:
            m, h = spec.names(i)
            yield (m if layout == "mistral" else h), spec, i, spec.shape(cfg)


def permute_rows(w: np.ndarray, heads: int, head_dim: int) -> np.ndarray:
    """Mistral interleaved rows -> HF rotate-half rows, per head (the converter's permutation)."""
    rest = w.shape[1:]
    return w.reshape(heads, head_dim // 2, 2, *rest).swapaxes(1, 2).reshape(heads * head_dim, *rest)


def unpermute_rows(w: np.ndarray, heads: int, head_dim: int) -> np.ndarray:
    """HF rotate-half rows -> Mistral interleaved rows: consolidated row 2i = HF row i, 2i+1 = i + Dh/2."""
    rest = w.shape[1:]
    return w.reshape(heads, 2, head_dim // 2, *rest).swapaxes(1, 2).reshape(heads * head_dim, *rest)


def specs_of(group: str) -> list[TensorSpec]:
    return [s for s in TENSORS if s.group == group]


def assemble(group: str, arrays: dict[str, np.ndarray]):
    """Build the typed container of a group from field -> array (exactly its fields, no more)."""
    cls = GROUPS[group]
    names = [f.name for f in fields(cls) if f.name in arrays or f.default is MISSING]
    assert sorted(names) == sorted(arrays), (group, sorted(arrays))
    return cls(**{n: arrays[n] for n in names})
