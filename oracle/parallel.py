"""Single-core numpy work spread over the machine's cores, by disjoint ranges of one axis.

numpy's matmuls (BLAS) already use every core; its casts and element-wise loops use one. Those loops
release the GIL on large arrays, so running disjoint slices in threads uses the other cores with no
change to any number: each element is computed by the same loop, only by another thread.

Used where the one-core work is large enough to matter at full size: BF16 -> float32/float64 weight
conversion (``precision.widen_into``, by rows) and attention's softmax (``layers.attention_probs``, by head).

The pool is created on first use and holds no model state. ``set_workers(1)`` runs everything in
the calling thread (the tests check that results do not depend on it).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
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


def split(fn: Callable[[int, int], None], n: int, elements_per_item: int = 1) -> None:
    """Call ``fn(start, stop)`` on disjoint ranges covering [0, n), in parallel; return when all are done.

    ``fn`` must only write its own range. Each part gets at least ``MIN_ELEMENTS`` elements of work
    (``elements_per_item`` per index), so small arrays stay in the calling thread.
    """
    global _POOL
    parts = ranges(n, min(_WORKERS, max(1, n * elements_per_item // MIN_ELEMENTS)))
    if len(parts) == 1:
        fn(*parts[0])
        return
    if _POOL is None:
        _POOL = ThreadPoolExecutor(_WORKERS, thread_name_prefix="oracle")
    futures = [_POOL.submit(fn, a, b) for a, b in parts[1:]]
    fn(*parts[0])  # the caller takes the first part itself
    for f in futures:
        f.result()  # re-raises a worker's exception here
