"""Run-state for incremental inference: KV caches and conv padding state (llama2.c's RunState).

Shapes:  S cached keys   K kv heads   Dh head dim   Cin conv input channels

Caches are values: functions take one and return a new one; nothing is mutated behind the caller's
back, so a session can be inspected (or rewound) at any step.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class KV:
    """Keys (already rotated by RoPE), values and the absolute position of each key."""

    k: np.ndarray  # [S, K, Dh]
    v: np.ndarray  # [S, K, Dh]
    pos: np.ndarray  # [S] int64, strictly increasing, never reset while the stream lives

    @staticmethod
    def empty(n_kv_heads: int, head_dim: int, dtype) -> "KV":
        z = np.zeros((0, n_kv_heads, head_dim), dtype=dtype)
        return KV(z, z.copy(), np.zeros(0, dtype=np.int64))

    def extend(self, k: np.ndarray, v: np.ndarray, pos: np.ndarray) -> "KV":
        assert k.shape[1:] == self.k.shape[1:] and v.shape == k.shape and pos.shape == (k.shape[0],)
        assert len(self.pos) == 0 or len(pos) == 0 or pos[0] > self.pos[-1], "positions must increase"
        return KV(np.concatenate([self.k, k]), np.concatenate([self.v, v]), np.concatenate([self.pos, pos]))

    def keep_for_window(self, window: int) -> "KV":
        """Drop keys no future query can see. The next query sits at pos[-1] + 1 and sees keys with
        pos > pos[-1] + 1 − window, i.e. the last window − 1 keys: that is all a cache ever holds."""
        if len(self.pos) == 0:
            return self
        keep = self.pos > self.pos[-1] + 1 - window
        return KV(self.k[keep], self.v[keep], self.pos[keep])

    def __len__(self) -> int:
        return len(self.pos)

    @property
    def nbytes(self) -> int:
        return self.k.nbytes + self.v.nbytes + self.pos.nbytes
