"""Which kernels numpy's matmuls run on: the machine fact that moves float32/float64 last bits most.

numpy's wheels ship OpenBLAS built with DYNAMIC_ARCH: when the library loads it reads the CPU and
picks one kernel set ("Haswell" for AVX2, "SkylakeX" for AVX-512, ...), unless the environment
variable OPENBLAS_CORETYPE names one (some machines set it for older OpenBLAS builds; it can leave an
AVX-512 CPU on the AVX2 kernels at about half the matmul speed: measured on an AMD EPYC Zen 5, 2 cores,
float32 [696, 1280] x [1280, 5120] 217 GFLOP/s on Haswell, 404 on SkylakeX). Every kernel computes the
same matmul up to rounding, in a different order: results move in their last bits between kernels
(bounded in ``test_layers``), so the goldens' provenance and the benchmark record the kernel.
"""

from __future__ import annotations

import os


def kernel() -> str:
    """The kernel set numpy's OpenBLAS loaded ("Haswell", "SkylakeX", ...), else the BLAS's name
    (threadpoolctl reads it from the loaded library itself, not from the environment)."""
    import numpy as np  # noqa: F401  (loads the BLAS so threadpoolctl sees it)
    from threadpoolctl import threadpool_info

    for lib in threadpool_info():
        if lib.get("user_api") == "blas":
            return str(lib.get("architecture") or lib.get("internal_api") or "unknown")
    return "unknown"


THREAD_TIMEOUT = "16"  # OPENBLAS_THREAD_TIMEOUT: idle threads spin 2^16 cycles (~25 µs) instead of 2^28


def quiet_idle_threads() -> None:
    """Let OpenBLAS's idle threads give their cores back after ~25 µs instead of ~0.1 s.

    Why: after every matmul OpenBLAS's worker threads busy-wait for 2^28 cycles (~0.1 s) on the very
    cores that the oracle's own threads (``parallel``: weight conversion, softmax) want next; at full
    size that made a 2-thread conversion as slow as a 1-thread one. 2^16 cycles keeps back-to-back
    matmuls spinning and frees the cores otherwise. No number changes, only the wall time.

    OpenBLAS reads the variable once, when numpy loads it: call this before the first ``import numpy``
    of the process. Entry points do (``voxtral-oracle``, the tools run as scripts, the benchmark);
    importing ``oracle`` does not, so a library user's environment is left alone. A value the user set
    is kept.
    """
    os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", THREAD_TIMEOUT)


def forced() -> dict[str, str]:
    """The OPENBLAS_* settings in the environment that override what OpenBLAS would pick itself."""
    return {k: os.environ[k] for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if k in os.environ}
