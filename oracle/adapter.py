"""The audio-language adapter (MODEL.md §4).

Shape legend:  S encoder frames (4 per token)   De encoder width   N tokens   D decoder width

    enc [S, De] --row-major reshape: row p = frames 4p, 4p+1, 4p+2, 4p+3--> [N, 4·De]
                --W_in, exact GELU, W_out (no biases)--> A [N, D]
"""

from __future__ import annotations

import numpy as np

from .layers import gelu, linear
from .precision import Precision
from .taps import no_tap
from .weights import AdapterWeights


def group_frames(enc: np.ndarray, factor: int) -> np.ndarray:
    """[S, De] -> [S/factor, factor·De], consecutive frames side by side (HF reshape, vLLM pooling)."""
    s, de = enc.shape
    assert s % factor == 0, f"encoder frames ({s}) must be a multiple of the downsample factor ({factor})"
    return enc.reshape(s // factor, factor * de)


def adapter(enc: np.ndarray, w: AdapterWeights, factor: int, p: Precision, tap=no_tap, act=None) -> np.ndarray:
    """A = W_out GELU(W_in group(enc)).  [S, De] -> [S/factor, D]. ``act`` replaces the exact GELU only
    to replay a port's mistake (oracle.local)."""
    act = act or gelu
    x = group_frames(enc, factor)
    assert x.shape[1] == w.w_in.shape[1], (x.shape, w.w_in.shape)
    tap("adapter.in", x)
    hidden = p.store(act(p.store(linear(p.operand(x), w.w_in))))  # p.operand: matmul inputs (float16 port)
    tap("adapter.hidden", hidden)
    a = p.store(linear(p.operand(hidden), w.w_out))
    tap("adapter.out", a)
    return a
