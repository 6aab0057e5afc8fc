"""transformers 5.23.0 as the reference the oracle is proven against (MODEL.md §8, §9).

Three helpers, used by tests/test_conformance.py (and benchmarks/transformers_f32_stages.py):

    build_hf_model(ckpt, dtype)        VoxtralRealtimeForConditionalGeneration (eager attention) whose
                                       weights come from a Mistral-layout checkpoint through the
                                       project's own name table ``oracle.weights.TENSORS``
                                       (``low_memory=True``: tensor by tensor, for the full size)
    lift_to_float64(model)             context manager: the places where ``model.double()`` still
                                       computes in float32 are made float64 for its duration
    hf_intermediates(model, mel, ids, delay_tokens)
                                       one forward pass, every stage captured by forward hooks and
                                       returned under the ORACLE's tap names, [frames, channels]

Nothing here re-implements the model: every number comes out of the official modules in
``transformers/models/voxtral_realtime/modeling_voxtral_realtime.py``. The hooks only read tensors;
the lift only replaces four float32 islands by their float64 equivalent and is undone on exit.
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path

import numpy as np
import torch
from transformers import VoxtralRealtimeConfig, VoxtralRealtimeForConditionalGeneration
from transformers.models.voxtral_realtime import modeling_voxtral_realtime as hf_mod

from oracle.checkpoint import Checkpoint, open_checkpoint
from oracle.weights import TENSORS, n_layers, permute_rows

TRANSFORMERS_VERSION = "5.23.0"


def _open(source: str | Path | Checkpoint) -> Checkpoint:
    return source if isinstance(source, Checkpoint) else open_checkpoint(source)


def hf_tensors(ckpt: Checkpoint, dtype: torch.dtype, *, rope_permute: bool = True):
    """(HF name, tensor) for every row of ``TENSORS``, one tensor at a time (see ``hf_state_dict``)."""
    assert ckpt.layout == "mistral", f"build the HF model from a Mistral-layout checkpoint, got {ckpt.layout}"
    cfg = ckpt.config
    for spec in TENSORS:
        count = n_layers(spec.group, cfg)
        for i in range(count) if count is not None else [None]:
            mistral, hf = spec.names(i)
            w = np.asarray(ckpt.raw(mistral)).astype(np.float32)  # BF16 -> f32 is exact
            assert w.shape == spec.shape(cfg), (mistral, w.shape, spec.shape(cfg))
            if spec.rope is not None and rope_permute:
                w = permute_rows(w, *spec.rope(cfg))
            yield hf, torch.from_numpy(np.ascontiguousarray(w)).to(dtype)


def hf_state_dict(ckpt: Checkpoint, dtype: torch.dtype, *, rope_permute: bool = True) -> dict[str, torch.Tensor]:
    """The HF 5.23 in-memory state dict, built from a Mistral-layout checkpoint via ``TENSORS``.

    For every row of the table: read the Mistral tensor as stored (BF16), widen it exactly to
    float32, apply ``permute_rows(w, *spec.rope(cfg))`` where the row is a RoPE'd q/k projection (the
    converter's interleaved -> rotate-half permutation, MODEL.md §1.5; the encoder q bias included), and
    file it under the HF name. ``lm_head.weight`` is the embedding tensor itself (tied).
    ``rope_permute=False`` skips the permutation: only for the negative-control test.
    """
    out: dict[str, torch.Tensor] = {}
    for hf, t in hf_tensors(ckpt, dtype, rope_permute=rope_permute):
        assert hf not in out, f"two table rows map to {hf}"
        out[hf] = t
    out["lm_head.weight"] = out["model.language_model.embed_tokens.weight"]
    return out


def build_hf_model(source: str | Path | Checkpoint, dtype: torch.dtype = torch.float32, *,
                   rope_permute: bool = True, low_memory: bool = False) -> VoxtralRealtimeForConditionalGeneration:
    """``VoxtralRealtimeForConditionalGeneration(VoxtralRealtimeConfig(**cfg.to_hf_config()))`` with
    eager attention, in ``dtype`` (``model.to(dtype)``: for float64 that is stock ``model.double()``;
    use ``lift_to_float64`` for a pure float64 reference), weights from the checkpoint.

    Loading is ``load_state_dict(strict=True)``: a module parameter the table does not fill, or a
    table name the module tree does not have, raises, so this also tests the name mapping.
    ``low_memory`` (full size: 4 bytes x 4.4e9 parameters once, not twice): no random init, and each
    tensor copied into its parameter as it is read; every parameter must be filled exactly once.
    """
    import transformers

    assert transformers.__version__ == TRANSFORMERS_VERSION, transformers.__version__
    ckpt = _open(source)
    config = VoxtralRealtimeConfig(**ckpt.config.to_hf_config())
    config._attn_implementation = "eager"
    torch.manual_seed(0)  # the random init is overwritten entirely; seeded anyway
    if low_memory:
        from transformers.initialization import no_init_weights

        with no_init_weights():
            model = VoxtralRealtimeForConditionalGeneration(config)
        model.tie_weights()  # done by the weight init that no_init_weights skips
    else:
        model = VoxtralRealtimeForConditionalGeneration(config)
    model.set_attn_implementation("eager")
    model.to(dtype)
    if low_memory:
        params, filled = dict(model.named_parameters(remove_duplicate=False)), set()
        for hf, t in hf_tensors(ckpt, dtype, rope_permute=rope_permute):
            assert hf in params and hf not in filled, f"{hf}: not a parameter, or filled twice"
            with torch.no_grad():
                params[hf].copy_(t)
            filled.add(hf)
        missing = set(params) - filled - {"lm_head.weight"}
        assert not missing, f"parameters the table does not fill: {sorted(missing)}"
    else:
        model.load_state_dict(hf_state_dict(ckpt, dtype, rope_permute=rope_permute), strict=True)
    emb = model.model.language_model.embed_tokens.weight
    assert model.lm_head.weight.data_ptr() == emb.data_ptr(), "lm_head is not tied to the embedding"
    for sub in (model.config, model.model.audio_tower.config, model.model.language_model.config):
        assert sub._attn_implementation == "eager", sub._attn_implementation
    return model.eval()


# -- the float64 lift ---------------------------------------------------------------------------


def _rmsnorm_forward_f64(self, hidden_states: torch.Tensor) -> torch.Tensor:
    """VoxtralRealtimeRMSNorm.forward with the statistics in the input dtype (stock: float32)."""
    variance = hidden_states.pow(2).mean(-1, keepdim=True)
    return self.weight * (hidden_states * torch.rsqrt(variance + self.variance_epsilon))


@torch.no_grad()
def _rotary_forward_f64(self, x: torch.Tensor, position_ids: torch.Tensor):
    """VoxtralRealtimeRotaryEmbedding.forward with angles pos · inv_freq in float64 (stock: float32).
    Default rope only (the config's rope_type); attention_scaling is 1.0 for it."""
    assert self.rope_type == "default", self.rope_type
    freqs = position_ids[..., None].to(torch.float64) * self.inv_freq.to(device=x.device, dtype=torch.float64)
    emb = torch.cat((freqs, freqs), dim=-1)
    return (emb.cos() * self.attention_scaling).to(x.dtype), (emb.sin() * self.attention_scaling).to(x.dtype)


def _eager_attention_f64(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
    """``eager_attention_forward`` with the softmax in the query dtype (stock: ``dtype=torch.float32``)."""
    key_states = hf_mod.repeat_kv(key, module.num_key_value_groups)
    value_states = hf_mod.repeat_kv(value, module.num_key_value_groups)
    attn_weights = torch.matmul(query, key_states.transpose(2, 3)) * scaling
    if attention_mask is not None:
        attn_weights = attn_weights + attention_mask
    attn_weights = torch.nn.functional.softmax(attn_weights, dim=-1, dtype=query.dtype)
    attn_weights = torch.nn.functional.dropout(attn_weights, p=dropout, training=module.training)
    attn_output = torch.matmul(attn_weights, value_states).transpose(1, 2).contiguous()
    return attn_output, attn_weights


@contextlib.contextmanager
def lift_to_float64(model: VoxtralRealtimeForConditionalGeneration):
    """Make a ``model.double()`` model pure float64 for the duration of the ``with`` block.

    ``model.double()`` converts every parameter and buffer, but four computations stay float32
    (MODEL.md §9 names the first three; the fourth is specific to eager attention):

    1. ``VoxtralRealtimeRMSNorm.forward`` casts its input to float32 for ``mean(x²)`` and ``rsqrt``
       (then back). Lifted: the class's forward is replaced by the same formula in the input dtype.
    2. ``VoxtralRealtimeRotaryEmbedding`` (encoder and decoder): ``inv_freq = 1/theta^(2i/Dh)`` was
       computed in float32 at init (``.double()`` only widens the rounded values) and ``forward``
       forms ``position_ids.float() * inv_freq.float()``. Lifted: ``inv_freq``/``original_inv_freq``
       are recomputed in float64 from the config and the class's forward builds the angles in float64.
    3. ``VoxtralRealtimeTimeEmbedding.inv_freq = exp(−ln(theta)·j/(D/2))`` was computed in float32 at
       init. Lifted: recomputed in float64 (its forward already casts it to the embedding dtype).
    4. ``eager_attention_forward`` takes the softmax with ``dtype=torch.float32``. Lifted: the module
       global that both attention classes call is replaced by the same function with the softmax in
       the query dtype (the additive mask, finfo(float64).min, becomes −inf in float32; in float64 it
       is a finite minimum whose exp underflows to exactly 0: the same masked weights).

    Everything is restored on exit (class attributes, module global, buffers), so later float32
    tests see stock transformers. Requires a float64 model.
    """
    assert next(model.parameters()).dtype == torch.float64, "lift_to_float64 needs model.double() first"
    rotaries = [m for m in model.modules() if isinstance(m, hf_mod.VoxtralRealtimeRotaryEmbedding)]
    times = [m for m in model.modules() if isinstance(m, hf_mod.VoxtralRealtimeTimeEmbedding)]
    assert len(rotaries) == 2 and len(times) == 1, (len(rotaries), len(times))
    saved_buffers = [(m, name, getattr(m, name)) for m in rotaries for name in ("inv_freq", "original_inv_freq")]
    saved_buffers += [(m, "inv_freq", m.inv_freq) for m in times]
    saved_attrs = [
        (hf_mod.VoxtralRealtimeRMSNorm, "forward", hf_mod.VoxtralRealtimeRMSNorm.forward),
        (hf_mod.VoxtralRealtimeRotaryEmbedding, "forward", hf_mod.VoxtralRealtimeRotaryEmbedding.forward),
        (hf_mod, "eager_attention_forward", hf_mod.eager_attention_forward),
    ]
    try:
        for m in rotaries:
            base = m.config.rope_parameters["rope_theta"]
            dim = getattr(m.config, "head_dim", None) or m.config.hidden_size // m.config.num_attention_heads
            inv = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim))
            m.inv_freq = inv
            m.original_inv_freq = inv.clone()
        for m in times:
            half = m.dim // 2
            m.inv_freq = torch.exp(-math.log(m.theta) * torch.arange(half, dtype=torch.float64) / half)
        hf_mod.VoxtralRealtimeRMSNorm.forward = _rmsnorm_forward_f64
        hf_mod.VoxtralRealtimeRotaryEmbedding.forward = _rotary_forward_f64
        hf_mod.eager_attention_forward = _eager_attention_f64
        yield model
    finally:
        for owner, name, value in saved_attrs:
            setattr(owner, name, value)
        for m, name, value in saved_buffers:
            setattr(m, name, value)


# -- intermediates ------------------------------------------------------------------------------


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().to("cpu").clone().numpy()


def hf_intermediates(model: VoxtralRealtimeForConditionalGeneration, mel: np.ndarray, ids: np.ndarray,
                     delay_tokens: float) -> dict[str, np.ndarray]:
    """Run ``model(input_ids, input_features, num_delay_tokens)`` once (batch 1, no cache) and return
    each stage under the oracle's tap name, batch dim removed, [frames, channels]:

        enc.conv1.out  [T, De]   GELU(conv1): the input conv2 receives (forward pre-hook on conv2)
        enc.conv.out   [S, De]   the embedder's output (GELU(conv2), transposed by HF itself)
        enc.L{i}.out   [S, De]   each VoxtralRealtimeEncoderLayer
        enc.out        [S, De]   audio_tower.norm
        adapter.out    [N, D]    multi_modal_projector
        dec.in         [N, D]    the language model's inputs_embeds (Emb[ids] + adapter.out)
        dec.t_cond     [D]       time_embedding
        dec.L{i}.out   [N, D]    each VoxtralRealtimeTextDecoderLayer
        dec.norm       [N, D]    language_model.norm
        logits         [N, V]    lm_head

    ``mel`` [M, 8N] and the result are in the model's dtype.
    """
    dtype = next(model.parameters()).dtype
    cfg = model.config
    m = model.model
    assert mel.ndim == 2 and mel.shape[1] == 8 * len(ids), (mel.shape, len(ids))
    out: dict[str, np.ndarray] = {}
    handles = []

    def keep(name, t):
        assert t.shape[0] == 1, (name, t.shape)
        assert name not in out, f"{name} captured twice"
        out[name] = _np(t[0])

    def post(name):
        return lambda _mod, _inp, output: keep(name, output[0] if isinstance(output, tuple) else output)

    try:
        handles.append(m.audio_tower.embedder.conv2.register_forward_pre_hook(
            lambda _mod, args: keep("enc.conv1.out", args[0].transpose(1, 2))))
        handles.append(m.audio_tower.embedder.register_forward_hook(post("enc.conv.out")))
        for i, layer in enumerate(m.audio_tower.layers):
            handles.append(layer.register_forward_hook(post(f"enc.L{i:02d}.out")))
        handles.append(m.audio_tower.norm.register_forward_hook(post("enc.out")))
        handles.append(m.multi_modal_projector.register_forward_hook(post("adapter.out")))
        handles.append(m.language_model.register_forward_pre_hook(
            lambda _mod, _args, kwargs: keep("dec.in", kwargs["inputs_embeds"]), with_kwargs=True))
        handles.append(m.time_embedding.register_forward_hook(
            lambda _mod, _inp, output: out.__setitem__("dec.t_cond", _np(output))))
        for i, layer in enumerate(m.language_model.layers):
            handles.append(layer.register_forward_hook(post(f"dec.L{i:02d}.out")))
        handles.append(m.language_model.norm.register_forward_hook(post("dec.norm")))
        handles.append(model.lm_head.register_forward_hook(post("logits")))
        with torch.no_grad():
            result = model(
                input_ids=torch.as_tensor(np.asarray(ids, dtype=np.int64))[None],
                input_features=torch.as_tensor(np.asarray(mel)).to(dtype)[None],
                num_delay_tokens=delay_tokens,
                use_cache=False,
            )
    finally:
        for h in handles:
            h.remove()
    assert np.array_equal(out["logits"], _np(result.logits[0])), "lm_head hook disagrees with the returned logits"
    n_enc, n_dec = cfg.audio_config.num_hidden_layers, cfg.text_config.num_hidden_layers
    expected_names = {"enc.conv1.out", "enc.conv.out", "enc.out", "adapter.out", "dec.in", "dec.t_cond", "dec.norm",
                      "logits", *(f"enc.L{i:02d}.out" for i in range(n_enc)),
                      *(f"dec.L{i:02d}.out" for i in range(n_dec))}
    assert set(out) == expected_names, sorted(set(out) ^ expected_names)
    return out


def hf_stream_chunks(proc, audio: np.ndarray):
    """transformers' streaming recipe, as its model doc ("Streaming Transcription") and its integration
    test (test_modeling_voxtral_realtime.py, test_modeling_integration_streaming) run it: the caller
    right-pads the audio by num_right_pad_tokens · raw_audio_length_per_tok zeros (no alignment); the
    first chunk is audio[:num_samples_first_audio_chunk] (the processor prepends the left pad,
    center=True); then chunks of num_samples_per_audio_chunk samples starting at mel_frame_idx·hop −
    win//2 while the chunk ends strictly before the padded audio does.

    -> (the processor's output for the first chunk: input_ids, input_features, num_delay_tokens; a
    generator of every chunk's input_features, the first included, computed as it is pulled)."""
    audio = np.pad(audio, (0, proc.num_right_pad_tokens * proc.raw_audio_length_per_tok))
    first = proc(audio[:proc.num_samples_first_audio_chunk], is_streaming=True, is_first_audio_chunk=True,
                 return_tensors="pt", sampling_rate=16000)

    def chunks():
        yield first.input_features
        mel_frame_idx = proc.num_mel_frames_first_audio_chunk
        hop, win = proc.feature_extractor.hop_length, proc.feature_extractor.win_length
        start = mel_frame_idx * hop - win // 2
        while (end := start + proc.num_samples_per_audio_chunk) < audio.shape[0]:
            yield proc(audio[start:end], is_streaming=True, is_first_audio_chunk=False, return_tensors="pt",
                       sampling_rate=16000).input_features
            mel_frame_idx += proc.audio_length_per_tok
            start = mel_frame_idx * hop - win // 2

    return first, chunks()

