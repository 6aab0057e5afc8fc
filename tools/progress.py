"""A one-line progress display for long work (full-size synth, layer-by-layer forward, generation).

Shown only when stderr is a terminal and not --quiet; otherwise silent, so logs and tests stay clean.
"""

from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, label: str, enabled: bool | None = None, stream=None):
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.label, self.t0, self._last = label, time.monotonic(), 0.0

    def __call__(self, done: int, total: int, what: str = "") -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if done < total and now - self._last < 0.2:
            return
        self._last = now
        el = now - self.t0
        eta = el / done * (total - done) if done else 0.0
        pct = 100.0 * done / max(total, 1)
        self.stream.write(f"\r{self.label}: {done}/{total} ({pct:5.1f}%) {el:6.1f}s elapsed, ~{eta:5.1f}s left  {what[:50]:<50}")
        if done >= total:
            self.stream.write("\n")
        self.stream.flush()
