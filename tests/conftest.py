"""Shared test setup: a fixed, derandomized hypothesis profile so every run draws the same examples,
and the fixture that splits every array over two threads."""

import pytest
from hypothesis import HealthCheck, settings

from oracle import parallel

settings.register_profile(
    "ci",
    derandomize=True,
    deadline=None,
    max_examples=40,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile("ci")


@pytest.fixture
def split_everything(monkeypatch):
    """Every array of two rows or more is split across two threads (as at full size); restored afterwards."""
    monkeypatch.setattr(parallel, "MIN_ELEMENTS", 1)
    before = parallel.workers()
    parallel.set_workers(2)
    yield
    parallel.set_workers(before)
