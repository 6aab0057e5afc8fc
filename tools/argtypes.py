"""Argument types shared by the commands: each rejects what the command cannot use, as a usage error.

argparse turns the ``ArgumentTypeError`` raised here into one usage line (see cli._Parser.error), so
``--chunk-ms -1``, ``--seed -3``, ``--dither nan`` and ``--components ,`` stop before any work starts.
"""

from __future__ import annotations

import argparse
import math
import re


def _int(text: str) -> int:
    try:
        return int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def positive_int(text: str) -> int:
    value = _int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def seed(text: str) -> int:
    """A seed numpy accepts: a non-negative integer below 2**63."""
    value = _int(text)
    if not 0 <= value < 1 << 63:
        raise argparse.ArgumentTypeError(f"must be an integer in [0, 2**63), got {text!r}")
    return value


def delay_ms(text: str) -> int:
    value = _int(text)
    if not 0 < value <= 100_000:
        raise argparse.ArgumentTypeError(f"must be a positive number of milliseconds, got {text!r}")
    return value


def nonneg_finite(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text!r}")
    return value


def name_list(text: str) -> str:
    """A comma-separated list of names: no empty items (``,`` or ``a,,b`` is a typo, not "all")."""
    items = [item.strip() for item in text.split(",")]
    if not text.strip() or not all(items):
        raise argparse.ArgumentTypeError(f"expected comma-separated names, got {text!r}")
    return ",".join(items)


_FRONT_END_STAGES = "mel, enc.conv1.out, enc.conv.out, enc.L00.out .. enc.LNN.out (one per encoder layer), enc.out, adapter.out"


def front_end_stage(text: str) -> str:
    """An e2e front-end tap (``golden --stop-after``). The layer number is checked against the checkpoint
    once it is loaded (oracle.taps.check_stop_after); here, the form."""
    if text in ("mel", "enc.conv1.out", "enc.conv.out", "enc.out", "adapter.out") or re.fullmatch(r"enc\.L\d{2,}\.out", text):
        return text
    raise argparse.ArgumentTypeError(f"{text!r} is not an e2e front-end tap: choose from {_FRONT_END_STAGES}")
