"""The teaching notebooks run top to bottom, and the committed .ipynb files match their .py sources.

Each notebook's assertions (its piece built from scratch == the oracle) are the checks: a failing cell
fails the test. Execution goes through ``notebooks/build.py`` (the code path that writes the committed
notebooks) into a temporary directory, so the committed outputs are never touched. The built-in tiny
checkpoint and clip are used whatever VOXTRAL_CHECKPOINT / VOXTRAL_AUDIO say.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def _load_build():
    spec = importlib.util.spec_from_file_location("notebooks_build", NOTEBOOKS / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


build = _load_build()
SOURCES = build.sources()


def test_there_are_notebooks():
    assert [p.name[:2] for p in SOURCES] == [f"{i:02d}" for i in range(1, len(SOURCES) + 1)], SOURCES
    assert len(SOURCES) >= 6


@pytest.mark.parametrize("py", SOURCES, ids=[p.stem for p in SOURCES])
def test_notebook_runs(py, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("VOXTRAL_CHECKPOINT", "VOXTRAL_AUDIO")}
    out, seconds = build.build_notebook(py, out_dir=tmp_path, env=env)
    nb = nbformat.read(out, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.execution_count is not None for c in code), f"{py.name}: not every cell ran"
    assert seconds < 60, f"{py.name} took {seconds:.1f} s on the tiny checkpoint"


@pytest.mark.parametrize("py", SOURCES, ids=[p.stem for p in SOURCES])
def test_committed_notebook_matches_source(py):
    ipynb = py.with_suffix(".ipynb")
    assert ipynb.exists(), f"{ipynb.name} is missing: run python notebooks/build.py {py.name[:2]}"
    committed = nbformat.read(ipynb, as_version=4)
    source = build.to_notebook(py)
    cells = lambda nb: [(c.cell_type, c.source) for c in nb.cells]  # noqa: E731
    assert cells(committed) == cells(source), (
        f"{ipynb.name} is stale (its cells differ from {py.name}): run python notebooks/build.py {py.name[:2]}")
    code = [c for c in committed.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in code), f"{ipynb.name} was committed unexecuted"
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1)), f"{ipynb.name}: not one clean run"
