"""Build the teaching notebooks: ``NN_name.py`` (jupytext percent format, the source of truth) ->
executed ``NN_name.ipynb`` with outputs, written next to it.

    python notebooks/build.py          # every notebook
    python notebooks/build.py 03 05    # the notebooks whose name starts with 03 or 05

The environment's ``VOXTRAL_CHECKPOINT`` / ``VOXTRAL_AUDIO`` reach the kernels (each notebook's one
switch); commit notebooks built without them (the built-in tiny checkpoint and clip).

Deterministic output, so a rebuild on the same machine and library versions rewrites identical bytes:
cell ids are derived from the cell index; no execution timestamps (``record_timing=False``); consecutive
prints merged into one output however the kernel batched them (``coalesce_streams``); notebook
metadata reduced to the kernelspec and the language name; figures are PNGs without the matplotlib
version stamp (an IPython profile in a temporary IPYTHONDIR sets the inline backend's options); the
kernel is this interpreter (a temporary kernelspec), not whatever "python3" the machine registers;
BLAS runs on one thread so printed floating-point values do not depend on thread scheduling. A cell
that errors, or writes to stderr (a warning), fails the build.

``tests/test_notebooks.py`` runs the same ``build_notebook`` into a temporary directory.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import jupytext
import nbformat
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent
KERNEL = "python3"
TIMEOUT = 600  # seconds per cell; the tiny checkpoint needs a few seconds per notebook
KERNELSPEC = {"display_name": "Python 3", "language": "python", "name": KERNEL}

# The IPython kernel profile used while building (figures only; the notebooks themselves stay plain).
KERNEL_CONFIG = """\
c = get_config()  # noqa: F821
c.InlineBackend.figure_formats = {"png"}
c.InlineBackend.rc = {"figure.dpi": 80, "savefig.dpi": 80, "font.size": 10}
c.InlineBackend.print_figure_kwargs = {"bbox_inches": "tight", "metadata": {"Software": None}}
c.HistoryManager.enabled = False
c.IPKernelApp.log_level = "ERROR"  # not the kernel's transport notices; cell warnings still reach stderr
"""
# An object's default repr (``<... at 0x7f...>``) changes every run: end such a cell with ``;``.
ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+>")
# Single-threaded BLAS: identical floating-point results (and printed digits) on every run.
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


class NotebookError(RuntimeError):
    pass


def sources(selection: list[str] | None = None) -> list[Path]:
    """The notebook sources ``NN_*.py`` in order, optionally only those whose name starts with a selector."""
    found = sorted(p for p in HERE.glob("[0-9][0-9]_*.py"))
    if not selection:
        return found
    chosen = [p for p in found if any(p.name.startswith(s) for s in selection)]
    missing = [s for s in selection if not any(p.name.startswith(s) for p in found)]
    if missing:
        raise NotebookError(f"no notebook source matches {', '.join(missing)} in {HERE}")
    return chosen


def to_notebook(py: Path) -> nbformat.NotebookNode:
    """Read a percent-format source into an unexecuted notebook with normalized, deterministic metadata."""
    nb = jupytext.read(py, fmt="py:percent")
    nb.metadata = nbformat.from_dict({"kernelspec": dict(KERNELSPEC), "language_info": {"name": "python"}})
    for i, cell in enumerate(nb.cells):
        cell.id = f"cell-{i:02d}"
        cell.metadata = nbformat.from_dict({})
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    nbformat.validate(nb)
    return nb


def kernel_env(ipython_dir: Path, base: dict | None = None) -> dict:
    env = dict(os.environ if base is None else base)
    env["IPYTHONDIR"] = str(ipython_dir)
    env["PYTHONHASHSEED"] = "0"
    env["PYDEVD_DISABLE_FILE_VALIDATION"] = "1"
    for var in THREAD_VARS:
        env[var] = "1"
    return env


def execute(nb: nbformat.NotebookNode, cwd: Path, env: dict | None = None, timeout: int = TIMEOUT):
    """Run every cell top to bottom in a fresh python3 kernel; raises on the first failing cell."""
    with tempfile.TemporaryDirectory(prefix="voxtral-nb-") as tmp:
        profile = Path(tmp) / "ipython" / "profile_default"
        profile.mkdir(parents=True)
        (profile / "ipython_kernel_config.py").write_text(KERNEL_CONFIG)
        # The kernel is this interpreter (where the oracle is installed), whatever other "python3"
        # kernelspecs the machine has.
        spec_dir = Path(tmp) / "kernels" / KERNEL
        spec_dir.mkdir(parents=True)
        spec = dict(KERNELSPEC, argv=[sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"])
        (spec_dir / "kernel.json").write_text(json.dumps(spec))
        km = AsyncKernelManager(kernel_name=KERNEL, kernel_spec_manager=KernelSpecManager(
            kernel_dirs=[str(spec_dir.parent)], ensure_native_kernel=False))
        # coalesce_streams: consecutive prints form one output however the kernel happened to batch them.
        client = NotebookClient(nb, km=km, timeout=timeout, record_timing=False, coalesce_streams=True,
                                allow_errors=False, resources={"metadata": {"path": str(cwd)}})
        # cleanup_kc: shut the kernel down afterwards (nbclient keeps kernels of a caller's manager alive).
        client.execute(env=kernel_env(Path(tmp) / "ipython", env), cleanup_kc=True)
    # nbclient copies the kernel's language_info in; keep only the stable part.
    nb.metadata = nbformat.from_dict({"kernelspec": dict(KERNELSPEC), "language_info": {"name": "python"}})
    for i, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream" and out.get("name") == "stderr":
                raise NotebookError(f"cell {i} wrote to stderr:\n{out.get('text', '')}")
            if out.get("output_type") == "error":
                raise NotebookError(f"cell {i} raised {out.get('ename')}: {out.get('evalue')}")
            text = out.get("text", "") + "".join(out.get("data", {}).get("text/plain", ""))
            if ADDRESS.search(text):
                raise NotebookError(f"cell {i} shows a memory address (not reproducible): {text.strip()[:80]}")
    nbformat.validate(nb)
    return nb


def build_notebook(py: Path, out_dir: Path | None = None, env: dict | None = None) -> tuple[Path, float]:
    """Convert, execute and write ``py`` as ``out_dir/<stem>.ipynb`` (default: next to the source).

    Returns the written path and the execution time in seconds.
    """
    # Build matplotlib's font cache (once per machine) here, so no kernel reports building it on stderr.
    import matplotlib.font_manager  # noqa: F401

    py = Path(py).resolve()
    out = (Path(out_dir) if out_dir is not None else py.parent) / f"{py.stem}.ipynb"
    nb = to_notebook(py)
    start = time.perf_counter()
    execute(nb, cwd=py.parent, env=env)
    seconds = time.perf_counter() - start
    tmp = out.with_suffix(".ipynb.tmp")
    with open(tmp, "w", encoding="utf-8", newline="\n") as f:
        nbformat.write(nb, f)
    tmp.replace(out)
    return out, seconds


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("select", nargs="*", help="notebook number prefixes, e.g. 03 (default: all)")
    args = ap.parse_args(argv)
    try:
        todo = sources(args.select)
    except NotebookError as err:
        print(f"build: {err}", file=sys.stderr)
        return 2
    for var in ("VOXTRAL_CHECKPOINT", "VOXTRAL_AUDIO"):
        if os.environ.get(var):
            print(f"build: note: {var}={os.environ[var]} (do not commit these outputs)", file=sys.stderr)
    failed = 0
    for py in todo:
        try:
            out, seconds = build_notebook(py)
        except Exception as err:  # report and go on with the others
            failed += 1
            print(f"FAIL {py.name}: {type(err).__name__}: {err}", file=sys.stderr)
            continue
        print(f"ok   {out.relative_to(HERE.parent)}  {seconds:.1f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
