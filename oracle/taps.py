"""Taps: every intermediate of the forward pass, by name, without a second copy of the math.

The forward functions call ``tap(name, array)`` at each named point; a ``Taps`` recorder keeps the
arrays whose names match its patterns (fnmatch globs), the null tap keeps nothing. Names are
hierarchical and in pipeline order, e.g.::

    mel  enc.conv1.out  enc.conv.out  enc.L07.attn.out  enc.L07.out  enc.out
    adapter.in  adapter.out  dec.in  dec.t_cond  dec.L12.ada_scale  dec.L12.out  dec.norm  logits

The golden writer, the trace and the conformance tests all read the same taps.
"""

from __future__ import annotations

import fnmatch

import numpy as np

from .errors import OracleError


class Taps:
    """Record arrays whose names match any of ``patterns`` (default: everything)."""

    def __init__(self, *patterns: str):
        self.patterns = patterns or ("*",)
        self.values: dict[str, np.ndarray] = {}

    def wants(self, name: str) -> bool:
        return any(fnmatch.fnmatchcase(name, p) for p in self.patterns)

    def __call__(self, name: str, x: np.ndarray, axis: int = 0) -> None:
        """Record ``x``. Streaming calls the same point once per step: the steps are concatenated
        along ``axis``, the time axis of that tensor (positions/frames; 1 for the [M, T] mel)."""
        if self.wants(name):
            if name in self.values:
                self.values[name] = np.concatenate([self.values[name], np.array(x, copy=True)], axis=axis)
            else:
                self.values[name] = np.array(x, copy=True)

    def __getitem__(self, name: str) -> np.ndarray:
        return self.values[name]

    def __contains__(self, name: str) -> bool:
        return name in self.values


def no_tap(name: str, x: np.ndarray, axis: int = 0) -> None:
    """The default tap: records nothing."""


class StopForward(Exception):
    """Raised by ``TapsUpTo`` once its last tap is recorded: the forward pass stops there (the caller
    catches it). Not an error: a front-end golden (``golden --stop-after``) computes nothing past its stage."""


class TapsUpTo(Taps):
    """Records like ``Taps`` and stops the forward pass (``StopForward``) right after tap ``stop``: the
    same functions as the full pass, no second copy of the math, and nothing computed past the stage."""

    def __init__(self, names, stop: str):
        super().__init__(*names)
        self.stop = stop

    def __call__(self, name: str, x: np.ndarray, axis: int = 0) -> None:
        super().__call__(name, x, axis)
        if name == self.stop:
            raise StopForward


def e2e_tap_names(cfg) -> list[str]:
    """The taps the e2e golden case stores, in pipeline order (cfg: a ``ModelConfig``)."""
    return (["mel", "enc.conv1.out", "enc.conv.out"] + [f"enc.L{i:02d}.out" for i in range(cfg.encoder.n_layers)]
            + ["enc.out", "adapter.out", "dec.in", "dec.t_cond"] + [f"dec.L{i:02d}.out" for i in range(cfg.decoder.n_layers)]
            + ["dec.norm", "logits"])


def front_end_taps(cfg) -> list[str]:
    """The e2e taps a front-end golden may stop after (``golden --stop-after``): mel .. adapter.out. The
    decoder taps need ``tokens_in``, i.e. the float64 greedy tokens, which is the cost stopping avoids."""
    names = e2e_tap_names(cfg)
    return names[: names.index("adapter.out") + 1]


def check_stop_after(cfg, stage: str | None) -> None:
    """A usage error (one line listing the valid stages) unless ``stage`` is None or one of them."""
    stages = front_end_taps(cfg)
    if stage is not None and stage not in stages:
        layers = [s for s in stages if s.startswith("enc.L")]
        shown = stages if len(layers) <= 2 else (stages[:3] + [f"{layers[0]} .. {layers[-1]}"] + stages[-2:])
        raise OracleError(f"--stop-after {stage}: not an e2e front-end tap of this checkpoint; choose from {', '.join(shown)}")
