"""The full-size benchmark's own arithmetic (the benchmark itself runs outside the suite: it needs the
8.9 GB synthetic checkpoint and about 10 minutes)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from oracle.config import FULL, TINY
from oracle.weights import expected


def load_benchmark():
    path = Path(__file__).parents[1] / "benchmarks" / "full_size.py"
    spec = importlib.util.spec_from_file_location("full_size", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_flop_count_of_the_full_model():
    """10 s of speech = 174 decoder positions: 2.62 TFLOP, of which the weight matmuls are all but the
    attention scores; per position the weight matmuls are 2 x (encoder 4 frames + adapter + decoder + head)."""
    fs = load_benchmark()
    assert fs.forward_flops(FULL, 174) == 2_623_124_176_896
    mm = {what: (m, k, o, c) for what, m, k, o, c in fs.forward_matmuls(FULL, 174)}
    assert mm["enc w1/w3"] == (696, 1280, 5120, 64) and mm["dec k/v"] == (174, 3072, 1024, 52)
    assert mm["lm head"] == (174, 3072, 131072, 1)
    # each 2-D weight of the checkpoint (the tied embedding as the head; ADA's [32, D] pair excepted: it
    # runs once per layer, not per position) is one of the listed matmuls, once
    listed = sum(k * o * c for what, m, k, o, c in fs.forward_matmuls(FULL, 174) if not what.startswith("conv"))
    stored = sum(int(np.prod(shape)) for _, spec, _, shape in expected(FULL, "mistral")
                 if len(shape) == 2 and not spec.field.startswith("ada"))
    assert listed == stored


def test_matmul_floor_times_every_matmul():
    fs = load_benchmark()
    r = fs.matmul_floor(TINY, 12, "numpy", reps=1)
    assert set(r["per_matmul_seconds"]) == {w for w, *_ in fs.forward_matmuls(TINY, 12)}
    assert r["seconds"] > 0 and r["flops"] < fs.forward_flops(TINY, 12)


def test_rounds_swap_who_goes_first():
    """Every round runs every task once; in every second round transformers runs before the oracle in each
    pair (the process that ran just before changes the next one's time on a VM), singletons stay put."""
    fs = load_benchmark()
    r = fs.rounds(fs.TASKS, 3)
    n = len(fs.TASKS)
    assert r[:n] == fs.TASKS == r[2 * n:] and sorted(r[n:2 * n]) == sorted(fs.TASKS)
    second = r[n:2 * n]
    assert second.index("hf:forward_f32") + 1 == second.index("oracle:forward_f32")
    assert second.index("hf:load") == 0 and second.index("oracle:forward_f64") == fs.TASKS.index("oracle:forward_f64")


def test_stream_task_reports_seconds_per_feed():
    """`stream` compares seconds per 80 ms feed (the oracle's StreamingSession here, on the tiny model)."""
    from oracle import builtin

    fs = load_benchmark()
    assert {"oracle:stream", "hf:stream", "oracle:golden", "oracle:golden_e2e"} <= set(fs.TASKS)
    r = fs.run_one("oracle:stream", Path(builtin.tiny_checkpoint()), 1.0, 1)
    assert r["feeds"] == 13 and r["tokens"] > 0  # 16000 samples in 1280-sample feeds
    assert np.isclose(r["seconds"] * r["feeds"], r["total_seconds"]) and r["median_feed_seconds"] <= r["max_feed_seconds"]
