"""Precision policy: one object, chosen at the top, passed down to every layer.

    float64  the truth mode. Every weight (BF16 on disk, exact in float64) and every intermediate is
             float64, including RoPE angles and time-embedding frequencies.
    float32  what an honest float32 port computes, and what transformers computes in float32: weights
             BF16 -> float32, RoPE inv_freq and angles in float32, statistics in float32.
    bf16     an emulation of the reference BF16 serving numerics (vLLM, MODEL.md §9): weights BF16, math
             in float32 (a BF16 matmul on a CPU without BF16 units is ~600x slower and no more
             faithful, JAX lax_reference's rule: inputs bf16, accumulate in f32, cast back), and every
             tensor that the reference *stores* in BF16 rounded to BF16 at that point (``store``).
    float16  what a ggml port computes on CPU with F16 weights (the default of GGUF converters and of
             ports built on llama.cpp's kernels). ggml's rounding points, read in ggml-org/ggml
             src/ggml-cpu/ggml-cpu.c and ops.cpp, are emulated one for one:
             - weights stored as float16 (``weight``). BF16 -> float16 is exact for 2^-14 <= |w| <=
               65504 (8 significant bits fit in 11); smaller weights become float16 subnormals with fewer
               bits (zero at 2^-25 and below), larger ones overflow to inf: ``float16_range.weight_range`` counts both;
             - matmul and conv *inputs* rounded to float16 (``operand``): ggml_compute_forward_mul_mat
               converts src1 to the weight's vec_dot_type (type_traits_cpu[F16].from_float =
               ggml_cpu_fp32_to_fp16) before ggml_vec_dot_f16, which multiplies float16 pairs (exact in
               float32) and accumulates in float32 SIMD lanes (on x86; ARM with FP16 vector arithmetic
               accumulates in float16 lanes, which this does not emulate); the result tensor is F32.
               ggml_conv_1d runs ggml_im2col into F16 for an F16 kernel, then the same mul_mat. In
               attention q, k, v and the softmax weights are matmul operands too (the mul_mat path;
               ggml's CPU flash-attention kernel accumulates V in float16, which this does not emulate);
             - norms, softmax, RoPE, SiLU, erf GELU (ggml_gelu_erf: erff in float32; ggml_gelu is the
               tanh approximation through a float16 table, a mistake here) and residual adds in float32.
             Outputs stay float32: nothing is stored in float16 but weights and matmul operands.

Layers compute in the dtype of the arrays they are given and never downcast on their own; the only
rounding outside float64/float32 arithmetic happens in ``Precision.store`` (bf16) and
``Precision.operand`` (float16) at named points.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import parallel


def bf16() -> np.dtype:
    """numpy's dtype of bfloat16 (ml_dtypes), imported on first use: the import costs ~0.5 s, which
    commands that never touch a BF16 value (``--help``, most of ``compare``) should not pay."""
    import ml_dtypes

    return np.dtype(ml_dtypes.bfloat16)


def __getattr__(name: str):
    """``BF16`` as a lazy module attribute (PEP 562): ``from oracle.precision import BF16`` still works."""
    if name == "BF16":
        return bf16()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass(frozen=True)
class Precision:
    name: str
    dtype: np.dtype  # compute dtype of activations and weights
    bf16_storage: bool  # round stored activations to bf16 (emulates vLLM's BF16 tensors)
    f16_operands: bool = False  # float16 weights and matmul/conv inputs (emulates ggml's F16 CPU kernels)
    angles: str | None = None  # dtype of RoPE/time-embedding angles when not the compute dtype (exact replays)

    def weight(self, w: np.ndarray) -> np.ndarray:
        """A checkpoint tensor (BF16/F16/F32 on disk) in the compute dtype. BF16 -> float32/64 is exact."""
        w = np.asarray(w)
        out = np.empty(w.shape, self.dtype)
        widen_into(out, w)
        return self.round_weight_(out)

    def round_weight_(self, w: np.ndarray) -> np.ndarray:
        """In place: a compute-dtype weight as the port stores it (float16 for float16; identity
        otherwise). For buffers filled outside ``weight`` (the checkpoint's arena)."""
        if not self.f16_operands:
            return w
        def rows(a: int, b: int) -> None:
            with np.errstate(over="ignore"):  # beyond 65504 -> inf, as the port's converter writes it
                np.copyto(w[a:b], w[a:b].astype(np.float16))
        if w.ndim == 0:
            with np.errstate(over="ignore"):
                np.copyto(w, w.astype(np.float16))
            return w
        # float32 -> float16 -> float32 is one-core numpy work: rows on every core, same bits.
        parallel.split(rows, w.shape[0], elements_per_item=w.size // max(1, w.shape[0]))
        return w

    def array(self, x) -> np.ndarray:
        """An input (mel, features) in the compute dtype; bf16 mode stores it as BF16 first (vLLM casts
        the float32 mel to the model dtype before the convs, MODEL.md §2.2 item 6)."""
        return self.store(np.asarray(x, dtype=self.dtype))

    def store(self, x: np.ndarray) -> np.ndarray:
        """Round to BF16 and back where the BF16 reference materializes a BF16 tensor; identity otherwise."""
        if not self.bf16_storage:
            return x
        return x.astype(bf16()).astype(self.dtype)

    def operand(self, x: np.ndarray) -> np.ndarray:
        """An input of a matmul or conv as the kernel reads it: rounded to float16 in float16 mode
        (ggml converts src1 to the F16 weight's vec_dot_type; im2col writes F16); identity otherwise.
        A value beyond float16's range (|x| > 65504) becomes inf, as in ggml (``float16_range`` finds them)."""
        if not self.f16_operands:
            return x
        with np.errstate(over="ignore"):  # beyond 65504 -> inf, as ggml's fp32 -> fp16 conversion gives
            return x.astype(np.float16).astype(self.dtype)

    @property
    def angle_dtype(self) -> np.dtype:
        """dtype of RoPE inv_freq/angles and time-embedding frequencies: float32 in the references
        (MODEL.md §3.2, §5.3) unless we are in the float64 truth mode. A float64 replay of a bf16 or
        float16 stage (oracle.local) keeps the port's float32 angles: they are its rounding points too."""
        return np.dtype(self.angles) if self.angles else self.dtype


def widen_into(out: np.ndarray, src: np.ndarray) -> None:
    """out[...] = src, an exact widening (BF16/F16/F32 -> float32/float64), by row ranges on every core:
    the cast is one-core work (~0.6 ns per element) that releases the GIL (``parallel``)."""
    assert out.shape == src.shape, (out.shape, src.shape)
    src = np.asarray(src)  # a plain view of a memmap: slicing np.memmap costs ~0.25 ms a slice in __array_finalize__
    if out.ndim == 0:
        np.copyto(out, src, casting="unsafe")
        return
    parallel.split(lambda a, b: np.copyto(out[a:b], src[a:b], casting="unsafe"), out.shape[0],
                   elements_per_item=out.size // max(1, out.shape[0]))


FLOAT64 = Precision("float64", np.dtype(np.float64), bf16_storage=False)
FLOAT32 = Precision("float32", np.dtype(np.float32), bf16_storage=False)
BFLOAT16 = Precision("bf16", np.dtype(np.float32), bf16_storage=True)
FLOAT16 = Precision("float16", np.dtype(np.float32), bf16_storage=False, f16_operands=True)

POLICIES = {p.name: p for p in (FLOAT64, FLOAT32, BFLOAT16, FLOAT16)}
PORT_DTYPES = ("float32", "bf16", "float16")  # the port dtypes goldens measure tolerances for (golden/SPEC.md)


def policy(name: str) -> Precision:
    """Look a policy up by its CLI name (float64, float32, bf16, float16)."""
    from .errors import OracleError

    try:
        return POLICIES[name]
    except KeyError:
        raise OracleError(f"unknown dtype {name!r}: choose one of {', '.join(POLICIES)}") from None
