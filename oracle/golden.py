"""Golden tensors: one case per building block, in a port's bring-up order, plus end-to-end cases.

Every tensor here comes out of the same functions the forward pass uses (``layers``, ``encoder``,
``decoder``, ``forward`` through taps, ``streaming``): there is no second copy of the math. A case is
a recipe: seeded inputs, the checkpoint weights it uses, and a ``run(inputs, precision)`` that calls
those functions. The writer runs each case three times on the *stored* inputs (rounded to the storage
dtype first, so a port fed the stored inputs is judged against exactly what they imply):

    float64   the golden outputs
    float32   \\  their deviation from float64, per output, is the measured error a float32 / bf16
    bf16      /  port should expect; tolerances = safety x that (golden/SPEC.md)

e2e measures float32 as the envelope of honest float32 ports: the oracle's forward after each honest
front end of ``oracle.mel_variants`` (``CaseSpec.envelope``).

Shape legend: N positions, S encoder frames, T mel frames, D/De widths, H/K heads, Dh head dim, V vocab.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np

from .adapter import adapter
from .audio import quantize_int16
from .checkpoint import Checkpoint
from .decoder import (
    ada_norm,
    decoder_attention,
    decoder_layer,
    final_norm,
    layer_ada_scale,
    lm_head,
    time_condition,
)
from .encoder import conv_stem, encoder_attention, encoder_layer, encoder_norm
from .errors import OracleError
from .golden_fixpoints import STREAM_CHUNK, fed_tokens, e2e_fixpoint, stream_fixpoint
from .front_end_case import front_end_only
from .forward import audio_embeddings, decode_positions
from .layer_major import Fed, feed_all, stream_teacher_forced
from .local import e2e_stages
from .layers import apply_rope, rms_norm, rope_angles, swiglu
from .mel import log_mel
from .mel_variants import HONEST as HONEST_MELS
from .pipeline import Setup
from .precision import BFLOAT16, FLOAT16, FLOAT32, FLOAT64, Precision, bf16
from .streaming import Model, StreamingSession, choose_resident, generate_offline
from .taps import Taps, e2e_tap_names
from .variant import REFERENCE, Variant

SAFETY = {"float32": 10.0, "bf16": 4.0, "float16": 4.0}
PORT_PRECISIONS = {"float32": FLOAT32, "bf16": BFLOAT16, "float16": FLOAT16}
STORED_NAMES = ("float32", "float64", "bf16")  # --dtype choices


def stored_dtype(name: str) -> np.dtype:
    return {"float32": np.dtype(np.float32), "float64": np.dtype(np.float64)}.get(name) or bf16()


def safetensors_name(dt: np.dtype) -> str:
    names = {np.dtype(np.float32): "F32", np.dtype(np.float64): "F64", np.dtype(np.int64): "I64"}
    return names.get(dt) or {bf16(): "BF16"}[dt]
RESIDENT_GROUPS = ("dec_layer", "dec_norm", "embedding")  # what a resident float32 Model keeps here (greedy runs)

CONVENTIONS = {
    "order": "row-major (C order)",
    "linear": "PyTorch layout [out, in]: y = x @ W.T (+ b)",
    "rope": "interleaved pairs on Mistral-layout q/k rows: rows 2i, 2i+1 of each head rotate by pos * theta^(-2i/Dh)",
    "mel": "[128, T] bins x frames",
    "encoder_activations": "[S, De] frames x channels (conv outputs transposed the same way)",
    "decoder_activations": "[N, D]",
    "logits": "[N, V]",
    "window": "key j visible to query i iff 0 <= i - j < W",
    "gqa": "query head h reads kv head floor(h / (H/K))",
}


@dataclass
class Context:
    """What a case needs besides its inputs: the model, tokenizer, protocol, audio and options."""

    setup: Setup
    audio: np.ndarray | None  # 16 kHz float64 samples (already int16-quantized for the offline path)
    seed: int
    framing: str = "offline"
    variant: Variant = REFERENCE  # a fault catalogue entry when producing a faulty candidate
    mel_floor: str = "global"  # "utterance" only for the per-utterance-max fault
    weights: str = "auto"  # float32/bf16 decoder weights: resident | streamed | auto (by available memory)
    stop_after: str | None = None  # e2e: stop after this front-end tap (``taps.front_end_taps``): no decoder, no greedy
    # Models and results shared between cases (the float64 greedy tokens, the e2e forward), keyed by
    # what they depend on; a fault's Context (oracle.faults) starts with an empty one.
    _models: dict = field(default_factory=dict)

    @property
    def ckpt(self) -> Checkpoint:
        return self.setup.ckpt

    def resident(self, p: Precision) -> bool:
        """Whether ``model(p)`` keeps converted weights. float64: only when the whole model fits (the tiny
        one; 32 GB at full size streams); float32 and bf16 (the same float32 weights) keep the decoder and
        the embedding when asked (``weights``) or when they fit."""
        if p.name == FLOAT64.name:
            return choose_resident(self.ckpt, p)
        if self.weights != "auto":
            return self.weights == "resident"
        return choose_resident(self.ckpt, p, groups=RESIDENT_GROUPS)

    def model(self, p: Precision) -> Model:
        """One Model per precision; bf16 shares float32's converted weights (the same float32 arrays).
        float16 computes in float32 too but stores its weights rounded to float16: it never shares."""
        if p.name not in self._models:
            twin = next((m for m in self._models.values() if isinstance(m, Model) and m.p.dtype == p.dtype
                         and m.p.f16_operands == p.f16_operands and m.resident), None)
            self._models[p.name] = (twin.sharing(p) if twin is not None and p.name != FLOAT64.name else
                                    Model(self.ckpt, p, resident=self.resident(p), variant=self.variant,
                                          keep=None if p.name == FLOAT64.name else RESIDENT_GROUPS))
        return self._models[p.name]

    def computed(self, key):
        """What ``shared(key, ...)`` made, or None if nothing has made it yet."""
        return self._models.get(("shared", key))

    def shared(self, key, make):
        """``make()`` once per Context: work several cases need (the float64 greedy tokens)."""
        key = ("shared", key)
        if key not in self._models:
            self._models[key] = make()
        return self._models[key]

    def rng(self, case: str) -> np.random.Generator:
        return np.random.default_rng([self.seed, int.from_bytes(hashlib.sha256(case.encode()).digest()[:4], "little")])


@dataclass(frozen=True, kw_only=True)
class CaseSpec:
    name: str
    kind: str  # block | e2e | stream
    description: str
    oracle_function: str
    inputs: Callable[[], dict[str, np.ndarray]]  # makes the inputs: float64 (or int64) before storage rounding
    params: dict
    weights: list[tuple[str, int | None]]  # (group, layer) whose tensors the case reads
    run: Callable[[dict[str, np.ndarray], Precision], dict[str, np.ndarray]]  # ordered outputs
    token_outputs: tuple[str, ...] = ()
    int_outputs: tuple[str, ...] = ()
    margins: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]] | None = None  # aux from f64 outputs
    prefix_of: Callable[[dict, dict], dict[str, int]] | None = None  # comparable rows per output (streams)
    rows_follow: dict = field(default_factory=dict)  # output -> {"tokens": name, "offset": P}: rows fed generated tokens
    # (inputs, precision, golden outputs) -> the float outputs (and what prefix_of reads) of a float32/bf16
    # run, when they can be had cheaper than from ``run`` (which also generates that precision's tokens)
    tolerance_run: Callable[[dict, Precision, dict], dict[str, np.ndarray]] | None = None
    # (inputs, p, golden) -> {honest implementation: outputs}: their envelope is p's measured error (SPEC.md)
    envelope: Callable[[dict, Precision, dict], dict[str, dict[str, np.ndarray]] | None] | None = None
    # the stages whose outputs get stage-local tolerances (oracle.local): e2e taps read from e2e taps
    local_stages: Callable[[], list] | None = None


# -- the cases ----------------------------------------------------------------------------------


def _x(rng, *shape, scale=1.0):
    return scale * rng.standard_normal(shape)


def case_rms_norm(ctx: Context) -> CaseSpec:
    e = ctx.ckpt.config.encoder
    def run(i, p):
        w = ctx.ckpt.encoder_layer(0, p)
        return {"rms_norm.out": p.store(rms_norm(p.array(i["rms_norm.x"]), w.attn_norm, e.norm_eps))}
    return CaseSpec(name="rms_norm", kind="block", description="RMSNorm x * rsqrt(mean(x^2) + eps) * w of random activations with encoder "
                    "layer 0's attention_norm weight", oracle_function="oracle.layers.rms_norm",
                    inputs=lambda: {"rms_norm.x": _x(ctx.rng("rms_norm"), 37, e.dim, scale=3.0)}, params={"eps": e.norm_eps},
                    weights=[("enc_layer", 0)], run=run)


def case_rope(ctx: Context) -> CaseSpec:
    d = ctx.ckpt.config.decoder
    rng = ctx.rng("rope")
    pos = np.sort(np.concatenate([[0, 1, 2, 37, 38, 39], rng.integers(0, 20000, 10)])).astype(np.int64)
    def run(i, p):
        cos, sin = rope_angles(i["rope.positions"], d.head_dim, d.rope_theta, p.angle_dtype)
        x = p.array(i["rope.x"])
        return {"rope.out": p.store(apply_rope(x, p.store(cos.astype(x.dtype)), p.store(sin.astype(x.dtype))))}
    return CaseSpec(name="rope", kind="block", description="interleaved RoPE (decoder head dim and theta) at positions up to 20000: "
                    "angles in float32 drift with position, which the float32 tolerance shows",
                    oracle_function="oracle.layers.apply_rope", inputs=lambda: {"rope.x": _x(rng, len(pos), d.n_heads, d.head_dim),
                                                 "rope.positions": pos},
                    params={"head_dim": d.head_dim, "theta": d.rope_theta, "pairing": "interleaved"}, weights=[], run=run)


def case_swiglu(ctx: Context) -> CaseSpec:
    e = ctx.ckpt.config.encoder
    def run(i, p):
        w = ctx.ckpt.encoder_layer(0, p)
        return {"swiglu.out": p.store(swiglu(p.operand(p.array(i["swiglu.x"])), w.w1, w.w3, w.w2, w.b2, operand=p.operand))}
    return CaseSpec(name="swiglu", kind="block", description="W2 (SiLU(W1 x) * W3 x) + b2 with encoder layer 0's MLP (the encoder's w2 has a bias)",
                    oracle_function="oracle.layers.swiglu", inputs=lambda: {"swiglu.x": _x(ctx.rng("swiglu"), 23, e.dim)}, params={},
                    weights=[("enc_layer", 0)], run=run)


def case_time_ada(ctx: Context) -> CaseSpec:
    d = ctx.ckpt.config.decoder
    t = ctx.setup.protocol.delay_tokens
    def run(i, p):
        w = ctx.ckpt.decoder_layer(0, p)
        t_cond = time_condition(t, d, p)
        scale = layer_ada_scale(t_cond, w, p)
        return {"time_ada.t_cond": t_cond, "time_ada.scale": scale,
                "time_ada.out": ada_norm(p.array(i["time_ada.h"]), w, scale, d, p)}
    return CaseSpec(name="time_ada", kind="block", description=f"time embedding of t = {t} delay tokens, decoder layer 0's ADA scale "
                    "1 + W_up GELU(W_down t_cond), and RMSNorm(h; ffn_norm) * scale",
                    oracle_function="oracle.decoder.time_condition, layer_ada_scale, ada_norm",
                    inputs=lambda: {"time_ada.h": _x(ctx.rng("time_ada"), 11, d.dim)}, params={"t": t, "theta": 10000.0},
                    weights=[("dec_layer", 0)], run=run)


def case_conv_stem(ctx: Context) -> CaseSpec:
    c = ctx.ckpt.config
    t = 8 * 12
    mel = ctx.rng("conv_stem").uniform(-0.625, 1.2, (c.audio.num_mel_bins, t))
    def run(i, p):
        taps = Taps()
        out, _ = conv_stem(p.array(i["conv_stem.mel"]), ctx.ckpt.conv(p), p, tap=taps)
        return {"conv_stem.conv1": taps["enc.conv1.out"], "conv_stem.out": out}
    return CaseSpec(name="conv_stem", kind="block", description="causal conv1d 128->De k3 s1 (2 zero frames on the left) + GELU, then "
                    "De->De k3 s2 (1 zero frame on the left) + GELU; outputs [frames, channels]",
                    oracle_function="oracle.encoder.conv_stem", inputs=lambda: {"conv_stem.mel": mel}, params={"left_pad": [2, 1], "stride": [1, 2]},
                    weights=[("conv", None)], run=run)


def case_encoder_attention(ctx: Context) -> CaseSpec:
    e = ctx.ckpt.config.encoder
    s = e.sliding_window + 13  # past the window, so the mask's lower edge is exercised
    def run(i, p):
        w = ctx.ckpt.encoder_layer(0, p)
        out, _ = encoder_attention(p.array(i["encoder_attention.n"]), np.arange(s), w, e, p)
        return {"encoder_attention.out": out}
    return CaseSpec(name="encoder_attention", kind="block", description=f"encoder layer 0 attention on {s} normed frames at positions 0..{s - 1}: "
                    f"q/v/o biases, no k bias, RoPE theta {e.rope_theta:g}, window {e.sliding_window} keys including self",
                    oracle_function="oracle.encoder.encoder_attention", inputs=lambda: {"encoder_attention.n": _x(ctx.rng("encoder_attention"), s, e.dim)},
                    params={"positions": f"0..{s - 1}", "window": e.sliding_window}, weights=[("enc_layer", 0)], run=run)


def case_encoder_layer(ctx: Context) -> CaseSpec:
    e = ctx.ckpt.config.encoder
    s = e.sliding_window + 13
    def run(i, p):
        out, _ = encoder_layer(p.array(i["encoder_layer.x"]), np.arange(s), ctx.ckpt.encoder_layer(0, p), e, p)
        return {"encoder_layer.out": out}
    return CaseSpec(name="encoder_layer", kind="block", description="encoder layer 0: pre-norm attention + residual, pre-norm SwiGLU + residual",
                    oracle_function="oracle.encoder.encoder_layer", inputs=lambda: {"encoder_layer.x": _x(ctx.rng("encoder_layer"), s, e.dim)},
                    params={"positions": f"0..{s - 1}"}, weights=[("enc_layer", 0)], run=run)


def case_encoder_stack(ctx: Context) -> CaseSpec:
    e = ctx.ckpt.config.encoder
    s = e.sliding_window + 13
    def run(i, p):
        x, outs = p.array(i["encoder_stack.x"]), {}
        for layer in range(e.n_layers):
            x, _ = encoder_layer(x, np.arange(s), ctx.ckpt.encoder_layer(layer, p), e, p)
            outs[f"encoder_stack.L{layer:02d}"] = x
        outs["encoder_stack.out"] = encoder_norm(x, ctx.ckpt.encoder_norm(p), e, p)
        return outs
    return CaseSpec(name="encoder_stack", kind="block", description=f"all {e.n_layers} encoder layers and the final norm",
                    oracle_function="oracle.encoder.encoder_layer, encoder_norm", inputs=lambda: {"encoder_stack.x": _x(ctx.rng("encoder_stack"), s, e.dim)},
                    params={"positions": f"0..{s - 1}"}, weights=[("enc_layer", i) for i in range(e.n_layers)] + [("enc_norm", None)], run=run)


def case_projector(ctx: Context) -> CaseSpec:
    c = ctx.ckpt.config
    def run(i, p):
        return {"projector.out": adapter(p.array(i["projector.enc"]), ctx.ckpt.adapter(p), c.downsample_factor, p)}
    return CaseSpec(name="projector", kind="block", description=f"group {c.downsample_factor} consecutive encoder frames (row p = frames 4p..4p+3), "
                    "then W_out GELU(W_in x), no biases", oracle_function="oracle.adapter.adapter",
                    inputs=lambda: {"projector.enc": _x(ctx.rng("adapter"), 4 * 9, c.encoder.dim)}, params={"factor": c.downsample_factor},
                    weights=[("adapter", None)], run=run)


def case_token_embedding(ctx: Context) -> CaseSpec:
    v = ctx.ckpt.config.decoder.vocab_size
    ids = np.concatenate([[1, 2, 32, 33], ctx.rng("token_embedding").integers(1000, v, 12)]).astype(np.int64)
    def run(i, p):
        return {"token_embedding.out": p.store(ctx.ckpt.embedding_rows(i["token_embedding.ids"], p))}
    return CaseSpec(name="token_embedding", kind="block", description="rows of the token embedding (BOS, EOS, STREAMING_PAD, STREAMING_WORD, text ids)",
                    oracle_function="oracle.checkpoint.Checkpoint.embedding_rows", inputs=lambda: {"token_embedding.ids": ids}, params={},
                    weights=[("embedding", None)], run=run)


def case_decoder_attention(ctx: Context) -> CaseSpec:
    d = ctx.ckpt.config.decoder
    n = min(d.sliding_window, 64) + 13
    pos = np.arange(n) if d.sliding_window + 13 == n else np.arange(d.sliding_window - 64, d.sliding_window + 13)
    def run(i, p):
        out, _ = decoder_attention(p.array(i["decoder_attention.n"]), pos, ctx.ckpt.decoder_layer(0, p), d, p)
        return {"decoder_attention.out": out}
    return CaseSpec(name="decoder_attention", kind="block", description=f"decoder layer 0 GQA ({d.n_heads} query / {d.n_kv_heads} kv heads, "
                    f"head h reads kv head h // {d.n_heads // d.n_kv_heads}), RoPE theta {d.rope_theta:g}, "
                    f"window {d.sliding_window}, no biases, positions {pos[0]}..{pos[-1]}",
                    oracle_function="oracle.decoder.decoder_attention", inputs=lambda: {"decoder_attention.n": _x(ctx.rng("decoder_attention"), n, d.dim)},
                    params={"positions": f"{pos[0]}..{pos[-1]}", "window": d.sliding_window}, weights=[("dec_layer", 0)], run=run)


def case_decoder_layer(ctx: Context) -> CaseSpec:
    d = ctx.ckpt.config.decoder
    n = min(d.sliding_window, 64) + 13
    t = ctx.setup.protocol.delay_tokens
    def run(i, p):
        w = ctx.ckpt.decoder_layer(0, p)
        out, _ = decoder_layer(p.array(i["decoder_layer.x"]), np.arange(n), w,
                               layer_ada_scale(time_condition(t, d, p), w, p), d, p)
        return {"decoder_layer.out": out}
    return CaseSpec(name="decoder_layer", kind="block", description=f"decoder layer 0 with ADA conditioning on t = {t}",
                    oracle_function="oracle.decoder.decoder_layer", inputs=lambda: {"decoder_layer.x": _x(ctx.rng("decoder_layer"), n, d.dim)},
                    params={"t": t, "positions": f"0..{n - 1}"}, weights=[("dec_layer", 0)], run=run)


def case_decoder_stack(ctx: Context) -> CaseSpec:
    d = ctx.ckpt.config.decoder
    n = min(d.sliding_window, 64) + 13
    t = ctx.setup.protocol.delay_tokens
    def run(i, p):
        x, outs = p.array(i["decoder_stack.x"]), {}
        t_cond = time_condition(t, d, p)
        for layer in range(d.n_layers):
            w = ctx.ckpt.decoder_layer(layer, p)
            x, _ = decoder_layer(x, np.arange(n), w, layer_ada_scale(t_cond, w, p), d, p)
            outs[f"decoder_stack.L{layer:02d}"] = x
        outs["decoder_stack.norm"] = final_norm(x, ctx.ckpt.decoder_norm(p), d, p)
        return outs
    return CaseSpec(name="decoder_stack", kind="block", description=f"all {d.n_layers} decoder layers (t = {t}) and the final norm",
                    oracle_function="oracle.decoder.decoder_layer, final_norm", inputs=lambda: {"decoder_stack.x": _x(ctx.rng("decoder_stack"), n, d.dim)},
                    params={"t": t, "positions": f"0..{n - 1}"},
                    weights=[("dec_layer", i) for i in range(d.n_layers)] + [("dec_norm", None)], run=run)


def case_lm_head(ctx: Context) -> CaseSpec:
    d = ctx.ckpt.config.decoder
    def run(i, p):
        return {"lm_head.logits": lm_head(p.array(i["lm_head.h"]), lambda r: ctx.ckpt.embedding_rows(r, p), d.vocab_size, p)}
    return CaseSpec(name="lm_head", kind="block", description="logits = h @ Emb.T over the tied token embedding",
                    oracle_function="oracle.decoder.lm_head", inputs=lambda: {"lm_head.h": _x(ctx.rng("lm_head"), 5, d.dim)}, params={},
                    weights=[("embedding", None)], run=run)


def _margins(logits: np.ndarray) -> np.ndarray:
    top2 = np.sort(logits, axis=-1)[:, -2:]
    return top2[:, 1] - top2[:, 0]


def case_e2e(ctx: Context) -> CaseSpec:
    if ctx.audio is None:
        raise OracleError("the end-to-end cases need audio")
    proto, cfg = ctx.setup.protocol, ctx.ckpt.config
    n_prompt = len(proto.prompt)
    names = e2e_tap_names(cfg)

    def inputs():
        """tokens_in = prompt + the float64 greedy tokens (teacher forcing), padded with PAD after an EOS."""
        return {"audio": ctx.audio, "tokens_in": ctx.shared("e2e", lambda: e2e_fixpoint(ctx))["fed"]}

    def forward(i, p, resident=None, mel_fn=log_mel):
        mel = mel_fn(proto.pad_offline(i["audio"]).astype(p.dtype), p.dtype, audio=cfg.audio, floor=ctx.mel_floor)
        taps = Taps(*names)
        audio = audio_embeddings(ctx.ckpt, mel, p, tap=taps, variant=ctx.variant)
        # A faulty front end (fault catalogue) can give another number of positions than tokens_in has:
        # a port with that fault decodes its own N, so take as many fed tokens as it has positions.
        fed = i["tokens_in"][: len(audio)]
        fed = np.concatenate([fed, np.full(len(audio) - len(fed), proto.pad, dtype=np.int64)])
        decode_positions(ctx.ckpt, audio, fed, proto.t, p, tap=taps, variant=ctx.variant, resident=resident)
        return {k: taps[k] for k in names}, mel

    def run(i, p):
        if p.name == FLOAT64.name and ctx.mel_floor == "global":
            fx = ctx.shared("e2e", lambda: e2e_fixpoint(ctx))
            if (fx["outputs"] is not None and np.array_equal(i["audio"], fx["audio"])
                    and np.array_equal(i["tokens_in"], fx["fed"])):
                # The fixpoint's last check ran this very forward (same function, same inputs).
                return {**fx["outputs"], "tokens": np.array(fx["tokens"], dtype=np.int64)}
        out, mel = forward(i, p)
        out["tokens"] = np.array(generate_offline(ctx.model(p), mel, proto), dtype=np.int64)
        return out

    def margins(outs):  # generated step k comes from position n_prompt - 1 + k
        steps = len(outs["tokens"])
        return {"tokens.margin": _margins(outs["logits"][n_prompt - 1: n_prompt - 1 + steps])}

    def tolerance_run(i, p, golden):
        model = ctx.model(p)  # float32's resident decoder (from the greedy guess) serves float32 and bf16
        out = forward(i, p, resident=model if model.keeps("dec_layer") and model.keeps("embedding") else None)[0]
        # kept for the stream case: teacher-forced on the same tokens, its offline-framed logits are these rows
        ctx.shared(("e2e_forward", p.name), lambda: {"audio": i["audio"], "fed": i["tokens_in"], "logits": out["logits"]})
        return out

    def envelope(i, p, golden):
        """float32: one chain per honest float32 front end (oracle.mel_variants.HONEST), the oracle's
        forward after each; bf16 and float16 round far more than the front ends differ (SPEC.md)."""
        if p.name != FLOAT32.name:
            return None
        model = ctx.model(p)
        resident = model if model.keeps("dec_layer") and model.keeps("embedding") else None
        chains = {name: tolerance_run(i, p, golden) if name == "numpy_fft" else
                  forward(i, p, resident=resident, mel_fn=fn)[0] for name, fn in HONEST_MELS.items()}
        # kept for the stream case's envelope: with offline framing its rows are these logits' rows
        ctx.shared(("e2e_envelope", p.name), lambda: {"audio": i["audio"], "fed": i["tokens_in"],
                                                     "logits": {k: v["logits"] for k, v in chains.items()}})
        return chains

    spec = CaseSpec(name="e2e", kind="e2e", description="offline pipeline: audio -> pad (32 tokens left; alignment + delay + 11 tokens right) "
                    "-> log-mel -> conv stem -> encoder -> adapter -> A[p] + Emb[tokens_in[p]] -> decoder -> logits "
                    "(teacher-forced on tokens_in = prompt + golden tokens); tokens = greedy generation (HF generate schedule)",
                    oracle_function="oracle.forward.forward, oracle.streaming.generate_offline",
                    inputs=inputs,
                    params={"delay_ms": proto.delay_ms, "delay_tokens": proto.delay_tokens, "prompt_length": n_prompt,
                     "encoder_window": cfg.encoder.sliding_window, "decoder_window": cfg.decoder.sliding_window,
                     "left_pad_samples": proto.left_pad_samples, "right_pad_samples": proto.right_pad_samples(len(ctx.audio)),
                     "prompt": [int(t) for t in proto.prompt]},
                    weights=[("all", None)], run=run, token_outputs=("tokens",), margins=margins,
                    tolerance_run=tolerance_run, envelope=envelope,
                    local_stages=lambda: e2e_stages(ctx.ckpt))
    return spec if ctx.stop_after is None else front_end_only(spec, ctx)


def case_stream(ctx: Context) -> CaseSpec:
    if ctx.audio is None:
        raise OracleError("the streaming case needs audio")
    proto = ctx.setup.protocol
    n_prompt = len(proto.prompt)

    def outputs(record: Fed, logits: np.ndarray) -> dict:
        return {"stream.tokens": np.array(record.tokens, np.int64),
                "stream.emitted_at": np.array(record.emitted_at, np.int64),
                "stream.logits": logits, "stream.enc_cache_len": np.array(record.enc_cache_len, np.int64),
                "stream.dec_cache_len": np.array(record.dec_cache_len, np.int64)}

    def run(i, p):
        if p.name == FLOAT64.name:  # layer-major, equal to the step-by-step session (tests/test_layer_major.py)
            fx = ctx.shared(("stream", i["audio"].tobytes()), lambda: stream_fixpoint(ctx, i["audio"]))
            return outputs(fx["record"], fx["logits"])
        taps = Taps("logits")  # what a port in this precision streams: its own greedy tokens
        record = feed_all(StreamingSession(ctx.model(p), proto, framing=ctx.framing, tap=taps), i["audio"], STREAM_CHUNK)
        return outputs(record, taps["logits"])

    def tolerance_run(i, p, golden):
        """Teacher-forced on the golden tokens, layer-major: the rows a free-running session in ``p``
        computes identically up to its first different token, which is where ``prefix`` stops comparing."""
        tokens = [int(t) for t in golden["stream.tokens"]]
        n_fed = len(golden["stream.logits"])
        e2e = same_rows(i, ctx.computed(("e2e_forward", p.name)), golden)
        if e2e is not None:
            logits = e2e["logits"][:n_fed]  # the same rows (see stream_fixpoint)
        else:
            _, logits = stream_teacher_forced(ctx.model(p), proto, ctx.framing, i["audio"], STREAM_CHUNK, tokens)
        return own_run(tokens, logits)

    def same_rows(i, e2e, golden):
        """``e2e`` (a teacher-forced e2e forward kept by case_e2e) when its logits rows are this session's."""
        tokens, n_fed = [int(t) for t in golden["stream.tokens"]], len(golden["stream.logits"])
        ok = (ctx.framing == "offline" and e2e is not None and np.array_equal(e2e["audio"], i["audio"])
              and np.array_equal(e2e["fed"][:n_fed], fed_tokens(proto, tokens, n_fed)))
        return e2e if ok else None

    def own_run(tokens, logits):
        """What a port computing ``logits`` streams: the golden tokens up to its first own argmax."""
        own = tokens
        for k, t in enumerate(tokens):
            best = int(np.argmax(logits[n_prompt - 1 + k]))
            if best != t:
                own = tokens[:k] + [best]
                break
        return {"stream.tokens": np.array(own, np.int64), "stream.logits": logits}

    def envelope(i, p, golden):
        """float32, offline framing, after the e2e case: each honest front end's rows of its e2e chain (the
        e2e envelope's chains); else None, the oracle's own run only (golden/SPEC.md)."""
        chains = same_rows(i, ctx.computed(("e2e_envelope", p.name)), golden) if p.name == FLOAT32.name else None
        if chains is None:
            return None
        tokens, n_fed = [int(t) for t in golden["stream.tokens"]], len(golden["stream.logits"])
        return {name: own_run(tokens, logits[:n_fed]) for name, logits in chains["logits"].items()}

    def margins(outs):
        steps = len(outs["stream.tokens"])
        return {"stream.tokens.margin": _margins(outs["stream.logits"][n_prompt - 1: n_prompt - 1 + steps])}

    def prefix(golden, got):
        """Rows comparable between runs: the logits of positions fed the same tokens."""
        a, b = golden["stream.tokens"], got["stream.tokens"]
        same = next((k for k in range(min(len(a), len(b))) if a[k] != b[k]), min(len(a), len(b)))
        return {"stream.logits": n_prompt + same}

    return CaseSpec(name="stream", kind="stream", description=f"streaming session, {ctx.framing} framing, audio fed in chunks of {STREAM_CHUNK} "
                    "samples then finish(): tokens, the feed index that emitted each, every position's logits "
                    "(fed its own greedy tokens), and the cache lengths (layer 0) after each feed",
                    oracle_function="oracle.streaming.StreamingSession", inputs=lambda: {"audio": ctx.audio},
                    params={"chunk_samples": STREAM_CHUNK, "framing": ctx.framing, "delay_ms": proto.delay_ms},
                    weights=[("all", None)], run=run, token_outputs=("stream.tokens",),
                    int_outputs=("stream.emitted_at", "stream.enc_cache_len", "stream.dec_cache_len"),
                    margins=margins, prefix_of=prefix,
                    rows_follow={"stream.logits": {"tokens": "stream.tokens", "offset": n_prompt}},
                    tolerance_run=tolerance_run, envelope=envelope)


CASES: dict[str, Callable[[Context], CaseSpec]] = {
    "rms_norm": case_rms_norm,
    "rope": case_rope,
    "swiglu": case_swiglu,
    "time_ada": case_time_ada,
    "conv_stem": case_conv_stem,
    "encoder_attention": case_encoder_attention,
    "encoder_layer": case_encoder_layer,
    "encoder_stack": case_encoder_stack,
    "projector": case_projector,
    "token_embedding": case_token_embedding,
    "decoder_attention": case_decoder_attention,
    "decoder_layer": case_decoder_layer,
    "decoder_stack": case_decoder_stack,
    "lm_head": case_lm_head,
    "e2e": case_e2e,
    "stream": case_stream,
}


def select_cases(components: str | None) -> list[str]:
    """A comma-separated list of case names (or None / 'all') -> case names in bring-up order."""
    if not components or components == "all":
        return list(CASES)
    wanted = [c.strip() for c in components.split(",") if c.strip()]
    unknown = [c for c in wanted if c not in CASES]
    if unknown:
        raise OracleError(f"unknown component(s) {', '.join(unknown)}: choose from {', '.join(CASES)}")
    return [c for c in CASES if c in wanted]


# -- running and writing ------------------------------------------------------------------------


def stored_inputs(spec: CaseSpec, stored: np.dtype) -> dict[str, np.ndarray]:
    """Inputs as written to disk (floats rounded to the storage dtype; ints int64)."""
    return {k: (v.astype(np.int64) if v.dtype.kind in "iu" else v.astype(stored)) for k, v in spec.inputs().items()}


def as_float64(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: (v if v.dtype.kind in "iu" else v.astype(np.float64)) for k, v in arrays.items()}


def run_case(spec: CaseSpec, inputs: dict[str, np.ndarray], p: Precision) -> dict[str, np.ndarray]:
    return spec.run(as_float64(inputs), p)


def replay(ctx: Context, case_name: str, inputs: dict[str, np.ndarray], p: Precision) -> dict[str, np.ndarray]:
    """Run a case on given (golden) inputs in precision ``p``: what the `forward` tool writes as a candidate."""
    return run_case(CASES[case_name](ctx), inputs, p)


def offline_audio(audio: np.ndarray) -> np.ndarray:
    """The audio the end-to-end cases store: int16-quantized as the offline reference path does (MODEL.md §2.1)."""
    return quantize_int16(audio)


def with_config_change(ckpt: Checkpoint, **encoder_or_decoder) -> Checkpoint:
    """A view of ``ckpt`` with config fields replaced (e.g. a window one key wider): fault experiments."""
    cfg = ckpt.config
    enc = {k[4:]: v for k, v in encoder_or_decoder.items() if k.startswith("enc_")}
    dec = {k[4:]: v for k, v in encoder_or_decoder.items() if k.startswith("dec_")}
    cfg = replace(cfg, encoder=replace(cfg.encoder, **enc), decoder=replace(cfg.decoder, **dec))
    return Checkpoint(ckpt.directory, ckpt.layout, cfg, ckpt.index, ckpt.names)
