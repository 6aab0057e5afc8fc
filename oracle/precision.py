"""Precision policy: one object, chosen at the top, passed down to every layer.

    float64  the truth mode. Every weight (BF16 on disk, exact in float64) and every intermediate is
             float64, including RoPE angles and time-embedding frequencies.
    float32  what an honest float32 port computes, and what transformers computes in float32: weights
             BF16 -> float32, RoPE inv_freq and angles in float32, statistics in float32.
    bf16     an emulation of the reference BF16 serving numerics (vLLM, MODEL.md §9): weights BF16, math
             in float32 (a BF16 matmul on a CPU without BF16 units is ~600x slower and no more
             faithful, JAX lax_reference's rule: inputs bf16, accumulate in f32, cast back), and every
             tensor that the reference *stores* in BF16 rounded to BF16 at that point (``store``).

Layers compute in the dtype of the arrays they are given and never downcast on their own; the only
rounding outside float64/float32 arithmetic happens in ``Precision.store`` at named points.
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

    def weight(self, w: np.ndarray) -> np.ndarray:
        """A checkpoint tensor (BF16/F16/F32 on disk) in the compute dtype. BF16 -> float32/64 is exact."""
        w = np.asarray(w)
        out = np.empty(w.shape, self.dtype)
        widen_into(out, w)
        return out

    def array(self, x) -> np.ndarray:
        """An input (mel, features) in the compute dtype; bf16 mode stores it as BF16 first (vLLM casts
        the float32 mel to the model dtype before the convs, MODEL.md §2.2 item 6)."""
        return self.store(np.asarray(x, dtype=self.dtype))

    def store(self, x: np.ndarray) -> np.ndarray:
        """Round to BF16 and back where the BF16 reference materializes a BF16 tensor; identity otherwise."""
        if not self.bf16_storage:
            return x
        return x.astype(bf16()).astype(self.dtype)

    @property
    def angle_dtype(self) -> np.dtype:
        """dtype of RoPE inv_freq/angles and time-embedding frequencies: float32 in the references
        (MODEL.md §3.2, §5.3) unless we are in the float64 truth mode."""
        return self.dtype


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

POLICIES = {p.name: p for p in (FLOAT64, FLOAT32, BFLOAT16)}


def policy(name: str) -> Precision:
    """Look a policy up by its CLI name (float64, float32, bf16)."""
    from .errors import OracleError

    try:
        return POLICIES[name]
    except KeyError:
        raise OracleError(f"unknown dtype {name!r}: choose one of {', '.join(POLICIES)}") from None
