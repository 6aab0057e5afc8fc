"""Ports can ask for less: ``golden --stop-after STAGE`` (a front-end e2e golden: no decoder, no greedy
tokens), ``golden --tolerances-from DIR`` (reuse a set's measured tolerances instead of re-running every
case in float32, bf16 and float16), and the provenance's ``audio_file`` (where the built-in clip is)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import soundfile as sf

from oracle import builtin, golden as golden_mod
from oracle.compare import compare
from oracle.goldenset import load_golden
from oracle_tools.cli import main
from oracle_tools.reference_forward import replay_set

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = json.loads((ROOT / "golden" / "schema" / "manifest.schema.json").read_text())
INDEX_SCHEMA = json.loads((ROOT / "golden" / "schema" / "index.schema.json").read_text())
STAGES = ["mel", "enc.conv1.out", "enc.conv.out", "enc.L00.out", "enc.L01.out", "enc.out", "adapter.out"]  # tiny: 2 layers


def manifest(root: Path, name: str) -> dict:
    index = json.loads((root / "index.json").read_text())
    return json.loads((root / next(c["dir"] for c in index["cases"] if c["name"] == name) / "manifest.json").read_text())


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    """The whole e2e case of the built-in tiny checkpoint and clip (the reference for the cut ones)."""
    out = tmp_path_factory.mktemp("full") / "set"
    assert main(["golden", "--out", str(out), "--components", "e2e", "--quiet"]) == 0
    return out


@pytest.fixture(scope="module")
def front(tmp_path_factory):
    out = tmp_path_factory.mktemp("front") / "set"
    assert main(["golden", "--out", str(out), "--components", "e2e", "--stop-after", "enc.out", "--quiet"]) == 0
    return out


# -- --stop-after -------------------------------------------------------------------------------


def test_the_valid_stages_are_the_front_end_taps_of_the_checkpoint():
    from oracle.pipeline import load_setup

    assert golden_mod.e2e_stop_stages(load_setup(builtin.tiny_checkpoint(), None).ckpt.config) == STAGES


@pytest.mark.parametrize("stage", STAGES)
def test_stop_after_writes_the_taps_up_to_the_stage_equal_to_the_full_case(full, tmp_path, stage, monkeypatch):
    """Same bytes and same tolerances as the whole e2e case's taps, up to STAGE and nothing after it; the
    decoder and greedy generation never run (they raise here)."""
    def no(*a, **k):
        raise AssertionError("the decoder ran")

    for name in ("decode_positions", "generate_offline", "greedy_decode", "e2e_fixpoint"):
        monkeypatch.setattr(golden_mod, name, no)
    out = tmp_path / "set"
    assert main(["golden", "--out", str(out), "--components", "e2e", "--stop-after", stage, "--quiet"]) == 0
    cut, whole = load_golden(out).cases[0], load_golden(full).cases[0]
    want = STAGES[: STAGES.index(stage) + 1]
    assert [o.name for o in cut.outputs] == want
    m, mf = manifest(out, "e2e"), manifest(full, "e2e")
    for o in cut.outputs:
        assert np.array_equal(np.asarray(o.array()), np.asarray(whole.output(o.name).array())), o.name
        assert m["outputs"][o.name]["tolerance"] == mf["outputs"][o.name]["tolerance"], o.name
    assert m["params"]["stop_after"] == stage
    assert {k: v for k, v in m["params"].items() if k != "stop_after"} == mf["params"]
    assert list(m["inputs"]) == ["audio"] and m["aux"] == {}
    assert m["provenance"]["command"].endswith(f"--stop-after {stage}")
    jsonschema.validate(m, SCHEMA)


def test_a_front_end_set_is_compared_and_replayed(front, tmp_path):
    """compare reads a cut set; the `forward` tool replays it (cut too); a wrong conv stem still fails."""
    cand = replay_set(front, "all", "float32")
    assert sorted(cand) == sorted(STAGES[:6])
    report = compare(load_golden(front), cand)
    assert report.exit_code == 0, report.text()
    cand["enc.conv.out"] = cand["enc.conv.out"] * 1.01
    report = compare(load_golden(front), cand)
    assert report.exit_code == 1 and report.first_divergence.name == "enc.conv.out", report.text()
    assert main(["forward", "e2e", "--golden", str(front), "--out", str(tmp_path / "c.safetensors")]) == 0
    assert main(["compare", str(front), str(tmp_path / "c.safetensors")]) == 0


def test_stop_after_leaves_the_stream_case_out_of_the_default_cases(tmp_path, monkeypatch):
    seen = {}

    def fake(ctx, stage, cases, stored, prov, progress=None):
        seen["cases"] = cases
        Path(stage).mkdir(parents=True, exist_ok=True)
        (Path(stage) / "index.json").write_text("{}")

    import oracle.golden_writer as gw

    monkeypatch.setattr(gw, "write_golden_set", fake)
    assert main(["golden", "--out", str(tmp_path / "s"), "--stop-after", "mel", "--quiet"]) == 0
    assert seen["cases"] == [c for c in golden_mod.CASES if c != "stream"]


@pytest.mark.parametrize("argv, words", [
    (["--stop-after", "dec.L00.out"], ["'dec.L00.out' is not an e2e front-end tap", "mel, enc.conv1.out", "adapter.out"]),
    (["--stop-after", "enc.L07.out"], ["--stop-after enc.L07.out: not an e2e front-end tap of this checkpoint",
                                       "mel, enc.conv1.out, enc.conv.out, enc.L00.out, enc.L01.out, enc.out, adapter.out"]),
    (["--stop-after", "enc.out", "--components", "e2e,stream"], ["the stream case runs the whole model"]),
])
def test_a_bad_stop_after_is_one_line(tmp_path, capsys, argv, words):
    try:
        code = main(["golden", "--out", str(tmp_path / "x"), *argv])
    except SystemExit as exit_:  # argparse's usage errors leave through SystemExit
        code = exit_.code
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("voxtral-oracle golden: error:"), err
    for w in words:
        assert w in err, err
    assert not (tmp_path / "x").exists()
