"""How each catalogued mistake computes: the mistaken wiring, weights and block outputs the fault
catalogue (``oracle.faults``) injects, built from the model's own layer functions.

    composition   a conv stem, decoder layer, ADA scale or audio routing wired differently (``Variant`` fields)
    weights       a checkpoint view whose typed weights are edited (``EditedCheckpoint``)
    block cases   the outputs of a block case that hands the port vectors, not weights, or that the
                  variant cannot reach (the golden block cases call the model's functions directly)
    front end     the e2e case with the port's own mel fed to its conv stem

Shapes: mel [M, T]; encoder activations [S, De]; decoder activations [N, D]; ADA scale [D]; weights in the
checkpoint's [out, in] orientation.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from .checkpoint import Checkpoint
from .config import CONV_KERNEL
from .decoder import ada_norm, decoder_attention, layer_ada_scale, time_condition
from .layers import conv1d, gelu, linear, rms_norm, rope_angles, rope_rotate_half, silu, swiglu
from .precision import Precision
from .taps import no_tap
from .weights import unpermute_rows


class EditedCheckpoint(Checkpoint):
    """A view of a checkpoint whose typed weights pass through ``edit(group, layer, container, config)``."""

    def __init__(self, base: Checkpoint, edit, config=None):
        super().__init__(base.directory, base.layout, config or base.config, base.index, base.names)
        self._edit = edit

    def group(self, group, layer, precision, arena=None):
        return self._edit(group, layer, super().group(group, layer, precision, arena), self.config)


# -- composition (Variant fields) ---------------------------------------------------------------


def burn_conv_stem(mel, w, p: Precision, state=None, tap=no_tap):
    """Both convs stride 2 with symmetric padding 1 (TrevorS loader.rs conv1d_from_weights, MODEL.md §11.1):
    8N mel frames -> 2N encoder frames -> N/2 decoder positions, each spanning 160 ms."""
    if state is not None:
        raise ValueError("the Burn conv stem fault is offline only")
    def sym(x, wt, b):  # Burn PaddingConfig1d::Explicit(1): one zero frame on each side
        xr = np.concatenate([x, np.zeros((x.shape[0], 1), x.dtype)], axis=1)
        return p.store(gelu(p.store(conv1d(xr, wt, b, stride=2, history=np.zeros((x.shape[0], 1), x.dtype)))))
    h1 = sym(mel, w.w1, w.b1)
    tap("enc.conv1.out", h1.T)
    out = np.ascontiguousarray(sym(h1, w.w2, w.b2).T)
    tap("enc.conv.out", out)
    return out, None


def symmetric_conv_stem(mel, w, p: Precision, state=None, tap=no_tap):
    """Correct strides, symmetric padding: conv1 output i reads mel i-1..i+1 instead of i-2..i (one
    frame, 10 ms, of look-ahead; MODEL.md §11.1). conv2's symmetric pad happens to read the causal frames."""
    if state is not None:
        raise ValueError("the symmetric-padding fault is offline only")
    m = mel.shape[0]
    xr = np.concatenate([mel, np.zeros((m, 1), mel.dtype)], axis=1)  # one frame on the right ...
    h1 = conv1d(xr, w.w1, w.b1, stride=1, history=np.zeros((m, CONV_KERNEL - 1), mel.dtype))[:, 1:]  # ... one on the left
    h1 = p.store(gelu(p.store(h1)))
    tap("enc.conv1.out", h1.T)
    de = h1.shape[0]
    h2 = p.store(gelu(p.store(conv1d(h1, w.w2, w.b2, stride=2, history=np.zeros((de, 1), h1.dtype)))))
    out = np.ascontiguousarray(h2.T)
    tap("enc.conv.out", out)
    return out, None


def ada_before_attention_layer(x, positions, w, scale, cfg, p: Precision, past=None, tap=no_tap, name="dec.L00"):
    """ADA scale applied to the attention norm instead of the pre-FFN norm (MODEL.md §11.6)."""
    tap(f"{name}.ada_scale", scale[None, :])
    n = p.store(p.store(rms_norm(x, w.attn_norm, cfg.norm_eps)) * scale)
    attn_out, kv = decoder_attention(n, positions, w, cfg, p, past=past, tap=tap, name=name)
    h = p.store(x + attn_out)
    m = p.store(rms_norm(h, w.ffn_norm, cfg.norm_eps))
    y = p.store(h + p.store(swiglu(m, w.w1, w.w3, w.w2)))
    tap(f"{name}.out", y)
    return y, kv


def ada_extra_norm_layer(x, positions, w, scale, cfg, p: Precision, past=None, tap=no_tap, name="dec.L00"):
    """The ADA step renormalises its input: RMSNorm(RMSNorm(h; ffn_norm); 1) * (1 + g) before the MLP,
    where the model scales RMSNorm(h; ffn_norm) as it is (MODEL.md §5.2)."""
    tap(f"{name}.ada_scale", scale[None, :])
    n = p.store(rms_norm(x, w.attn_norm, cfg.norm_eps))
    attn_out, kv = decoder_attention(n, positions, w, cfg, p, past=past, tap=tap, name=name)
    h = p.store(x + attn_out)
    m = extra_norm_ada(h, w, scale, cfg, p)
    mlp_out = p.store(swiglu(p.operand(m), w.w1, w.w3, w.w2, operand=p.operand))
    tap(f"{name}.mlp.out", mlp_out)
    y = p.store(h + mlp_out)
    tap(f"{name}.out", y)
    return y, kv


def extra_norm_ada(h, w, scale, cfg, p: Precision):
    """RMSNorm(RMSNorm(h; ffn_norm); 1) ⊙ (1 + g): the ADA step with the extra, unweighted norm.  [N, D] -> [N, D]"""
    m = p.store(rms_norm(h, w.ffn_norm, cfg.norm_eps))
    return p.store(p.store(rms_norm(m, np.ones_like(w.ffn_norm), cfg.norm_eps)) * scale)


def silu_ada_scale(t_cond: np.ndarray, w, p: Precision) -> np.ndarray:
    """(1 + W_up SiLU(W_down t_cond)): the ADA MLP with SiLU where the model has GELU (MODEL.md §5.3).  [D] -> [D]"""
    op = p.operand
    return p.store(1.0 + linear(op(silu(linear(op(t_cond), w.ada_down))), w.ada_up))


def shift_audio(audio: np.ndarray) -> np.ndarray:
    """Position p gets A[p - 1] (zeros at 0): an off-by-one in the audio index (MODEL.md §6.6)."""
    out = np.zeros_like(audio)
    out[1:] = audio[:-1]
    return out


def no_audio_at(position: int):
    def drop(audio: np.ndarray) -> np.ndarray:
        out = audio.copy()
        if position < len(out):
            out[position] = 0.0
        return out
    return drop


# -- weights (EditedCheckpoint edits) -------------------------------------------------------------


def unpermuted_rope(group, layer, w, cfg):
    """Rotate-half RoPE on Mistral (interleaved) rows. rotate_half(W x) = perm(interleaved(perm⁻¹(W) x))
    per head, and q·k is unchanged by permuting both q and k alike, so the mistake equals interleaved
    RoPE on q/k rows (and the q bias) un-permuted as if they were HF rows (MODEL.md §11.4)."""
    if group == "enc_layer":
        hh = (cfg.encoder.n_heads, cfg.encoder.head_dim)
        return replace(w, wq=unpermute_rows(w.wq, *hh), bq=unpermute_rows(w.bq, *hh), wk=unpermute_rows(w.wk, *hh))
    if group == "dec_layer":
        d = cfg.decoder
        return replace(w, wq=unpermute_rows(w.wq, d.n_heads, d.head_dim), wk=unpermute_rows(w.wk, d.n_kv_heads, d.head_dim))
    return w


def k_bias(group, layer, w, cfg):
    """A non-zero k bias in the encoder (here: the q bias reused for k), MODEL.md §11.5."""
    return replace(w, bk=w.bq.copy()) if group == "enc_layer" else w


def ada_dropped(group, layer, w, cfg):
    """No ADA term: W_up = 0 makes (1 + g) = 1 in every layer."""
    return replace(w, ada_up=np.zeros_like(w.ada_up)) if group == "dec_layer" else w


# -- activations, front end and block-case outputs --------------------------------------------------


def port_mel_context(ctx, inputs: dict[str, np.ndarray], p: Precision):
    """The e2e case computes the reference mel itself; a port with a front-end fault feeds its conv stem
    its own mel of the same audio. -> (a Context whose conv stem reads that mel, the mel [M, T] in p's dtype)"""
    proto, v = ctx.setup.protocol, ctx.variant
    mel = p.array(v.log_mel(proto.pad_offline(np.asarray(inputs["audio"], np.float64)).astype(p.dtype), p.dtype,
                            audio=ctx.ckpt.config.audio, floor=ctx.mel_floor))
    stem = v.conv_stem

    def port_stem(reference_mel, w, p_, state=None, tap=no_tap):
        assert state is None and reference_mel.shape == mel.shape, (state, reference_mel.shape, mel.shape)
        return stem(p_.array(mel), w, p_, state=state, tap=tap)

    return replace(ctx, variant=replace(v, conv_stem=port_stem), _models={}), mel


def port_time_ada_case(scale_fn, ada_fn, doc: str):
    """The time_ada block case as a port computes it: its ADA scale (``scale_fn``, like
    ``layer_ada_scale``) and its ADA step (``ada_fn``, like ``ada_norm``)."""
    def block(ctx, case, inputs, p: Precision):
        if case != "time_ada":
            return None
        d = ctx.ckpt.config.decoder
        w = ctx.ckpt.decoder_layer(0, p)
        t_cond = time_condition(ctx.setup.protocol.delay_tokens, d, p)
        scale = scale_fn(t_cond, w, p)
        h = p.array(np.asarray(inputs["time_ada.h"], np.float64))
        return {"time_ada.t_cond": t_cond, "time_ada.scale": scale, "time_ada.out": ada_fn(h, w, scale, d, p)}

    block.__doc__ = doc
    return block


silu_time_ada_case = port_time_ada_case(
    silu_ada_scale, ada_norm, "The time_ada block case computes the ADA scale from weights the port reads with its own activation.")
extra_norm_time_ada_case = port_time_ada_case(
    layer_ada_scale, extra_norm_ada, "The time_ada block case's ADA step, as the port computes it (its scale is right).")


def rotate_half_rope_case(ctx, case, inputs, p: Precision):
    """The rope block case hands the port raw vectors, not weights: its rotate-half RoPE shows directly."""
    if case != "rope":
        return None
    d = ctx.ckpt.config.decoder
    cos, sin = rope_angles(inputs["rope.positions"], d.head_dim, d.rope_theta, p.angle_dtype)
    x = p.array(np.asarray(inputs["rope.x"], np.float64))
    return {"rope.out": p.store(rope_rotate_half(x, p.store(cos.astype(x.dtype)), p.store(sin.astype(x.dtype))))}
