"""Single-core numpy work spread over the machine's cores, by disjoint ranges of one axis.

numpy's matmuls (BLAS) already use every core; its casts and element-wise loops use one. Those loops
release the GIL on large arrays, so running disjoint slices in threads uses the other cores with no
change to any number: each element is computed by the same loop, only by another thread.

Used where the one-core work is large enough to matter at full size: BF16 -> float32/float64 weight
conversion (``precision.widen_into``, by rows), attention (``kernels.attention``, by kv head: its many
small matmuls run one BLAS thread per part, see ``split(blas_single=True)``), the softmax of
``kernels.attention_probs`` (by head), and the element-wise SwiGLU gate and RoPE (``kernels.swiglu``,
``kernels.apply_rope``, by rows).

The pool is created on first use and holds no model state. ``set_workers(1)`` runs everything in
the calling thread. The tests check that results do not depend on it on the tiny checkpoint; at full
size, attention's one-thread BLAS calls can move last bits on OpenBLAS's AVX2 kernels (``split``).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from typing import Callable

_WORKERS = max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))
_POOL: ThreadPoolExecutor | None = None


def workers() -> int:
    return _WORKERS


def set_workers(n: int) -> None:
    """How many threads ``split`` uses (1: none besides the caller)."""
    global _WORKERS, _POOL
    assert n >= 1, n
    if _POOL is not None:
        _POOL.shutdown()
        _POOL = None
    _WORKERS = n


def ranges(n: int, parts: int) -> list[tuple[int, int]]:
    """[0, n) cut into at most ``parts`` contiguous, non-empty, near-equal ranges."""
    parts = max(1, min(parts, n))
    cuts = [n * i // parts for i in range(parts + 1)]
    return [(a, b) for a, b in zip(cuts, cuts[1:]) if b > a]


MIN_ELEMENTS = 1 << 19  # the least work (array elements) worth a part: a thread hand-off costs ~50 µs


def split(fn: Callable[[int, int], None], n: int, elements_per_item: int = 1, blas_single: bool = False) -> None:
    """Call ``fn(start, stop)`` on disjoint ranges covering [0, n), in parallel; return when all are done.

    ``fn`` must only write its own range. Each part gets at least ``MIN_ELEMENTS`` elements of work
    (``elements_per_item`` per index), so small arrays stay in the calling thread. ``blas_single``: the
    parts call matmuls, so while they run numpy's BLAS uses one thread per call (parts x BLAS threads
    would oversubscribe the cores). OpenBLAS threads split a matmul's rows and columns, never its inner
    sum: on its AVX-512 kernels one thread computes the same bits; on its AVX2 (Haswell) kernels how the
    rows fall into micro-kernel tiles changes with the thread count, and so does the last bit of some
    elements (measured ≤ 4.2e-7 relative, float32), as it does with the number of rows per call.
    """
    global _POOL
    parts = ranges(n, min(_WORKERS, max(1, n * elements_per_item // MIN_ELEMENTS)))
    if len(parts) == 1:
        fn(*parts[0])
        return
    if _POOL is None:
        _POOL = ThreadPoolExecutor(_WORKERS, thread_name_prefix="oracle")
    with _one_blas_thread() if blas_single else nullcontext():
        futures = [_POOL.submit(fn, a, b) for a, b in parts[1:]]
        try:
            fn(*parts[0])  # the caller takes the first part itself
        finally:
            for f in futures:
                f.exception()  # wait for every part before BLAS gets its threads back
        for f in futures:
            f.result()  # re-raises a worker's exception here


_BLAS = None


def _one_blas_thread():
    """A context in which numpy's BLAS (and any other BLAS loaded, e.g. torch's in the tests) runs one
    thread per call; threadpoolctl finds the libraries once (~10 ms) and sets a limit in ~20 µs."""
    global _BLAS
    if _BLAS is None:
        from threadpoolctl import ThreadpoolController

        _BLAS = ThreadpoolController()
    return _BLAS.limit(limits=1, user_api="blas")
