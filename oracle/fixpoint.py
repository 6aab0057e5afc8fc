"""Exact float64 greedy tokens for the price of one float64 forward: greedy decoding is a fixpoint.

Shape legend:  N decoder positions   P prompt length   V vocab   m generated tokens (m <= N - P)

Tokens t_0..t_{m-1} are the greedy ones exactly when, teacher-forced on prompt + t, the argmax of
position P-1+k's logits is t_k for every k, and generation stops where greedy stops (after EOS, or
after N - P tokens). Checking that needs ONE offline forward over all positions, which streams each
layer's weights once, instead of once per generated token. So:

    guess   a cheap run (float32, resident weights) proposes the tokens
    check   one float64 teacher-forced forward: the first position k whose argmax differs is wrong
    repair  take the float64 argmax there, let the cheap run continue from tokens[:k+1], check again

Every round fixes at least one more token, so it ends (in one round when float32 agrees, the usual case).

The checking forward computes a position's logits in another matmul shape than a one-token step, equal
to ~1e-14 relative rather than bit for bit. Where a checked position's float64 margin (top-1 minus
top-2) is below ``GUARD`` x its largest |logit|, that difference could decide the argmax, so the caller's
exact step-by-step run decides instead: the result is always what step-by-step float64 greedy gives.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

GUARD = 1e-11  # relative margin under which two schedules' rounding (~1e-14) could swap the argmax


@dataclass
class Fixpoint:
    tokens: list[int]  # the float64 greedy tokens (EOS kept)
    logits: np.ndarray | None  # [N', V] the last check's teacher-forced logits (None after a fallback)
    rounds: int  # float64 checks run
    repaired: list[int] = field(default_factory=list)  # token indices where the guess was wrong
    near_ties: list[int] = field(default_factory=list)  # token indices closer than GUARD (exact run decided)


def first_mismatch(logits: np.ndarray, tokens: list[int], n_prompt: int, max_new: int, eos: int) -> tuple[int, int] | None:
    """(k, argmax) of the first generated token that is not the argmax of its row; (k, -1) when greedy
    stops after k tokens but ``tokens`` goes on; None when ``tokens`` is the greedy output of these
    teacher-forced logits. [N', V] with N' >= P - 1 + min(len(tokens) + 1, max_new) rows."""
    for k in range(max_new):
        row = n_prompt - 1 + k
        assert row < logits.shape[0], ("too few rows to check", row, logits.shape)
        best = int(np.argmax(logits[row]))
        if k >= len(tokens) or tokens[k] != best:
            return k, best
        if best == eos:
            return None if len(tokens) == k + 1 else (k + 1, -1)
    return None if len(tokens) == max_new else (max_new, -1)


def margins(logits: np.ndarray) -> np.ndarray:
    """top-1 minus top-2 per row. [n, V] -> [n]."""
    top2 = np.partition(logits, -2, axis=-1)[:, -2:]
    return top2[:, 1] - top2[:, 0]


def near_ties(logits: np.ndarray, n_tokens: int, n_prompt: int) -> list[int]:
    """Token indices whose deciding row has a margin below GUARD x max |logit| of that row."""
    rows = logits[n_prompt - 1: n_prompt - 1 + n_tokens]
    scale = np.maximum(np.abs(rows).max(axis=-1), np.finfo(np.float64).tiny)
    return [int(k) for k in np.nonzero(margins(rows) <= GUARD * scale)[0]]


def greedy_fixpoint(guess: Callable[[list[int]], list[int]], check: Callable[[list[int]], np.ndarray],
                    exact: Callable[[], list[int]], n_prompt: int, max_new: int, eos: int) -> Fixpoint:
    """The greedy tokens of ``check``'s model.

    guess(prefix)  a cheap greedy run forced to start with ``prefix``: the whole token list
    check(tokens)  teacher-forced logits [N', V] (rows 0.. of prompt + tokens) in the exact precision
    exact()        step-by-step greedy in the exact precision (only for near-ties)
    """
    tokens, rounds, repaired = guess([]), 0, []
    while True:
        logits = check(tokens)
        rounds += 1
        bad = first_mismatch(logits, tokens, n_prompt, max_new, eos)
        if bad is None:
            break
        k, best = bad
        if best < 0:  # greedy stops after k tokens: drop the rest (checked again, so the last check is on these)
            tokens = tokens[:k]
            continue
        repaired.append(k)
        tokens = guess(tokens[:k] + [best])
        assert tokens[:k + 1] == tokens[:k] + [best], "the guess must start with the prefix it was given"
    ties = near_ties(logits, len(tokens), n_prompt)
    if ties:
        return Fixpoint(exact(), None, rounds, repaired, ties)
    return Fixpoint(tokens, logits, rounds, repaired, [])
