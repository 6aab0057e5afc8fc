"""Ports can ask for less: ``golden --stop-after STAGE`` (a front-end e2e golden: no decoder, no greedy
tokens), ``golden --tolerances-from DIR`` (reuse a set's measured tolerances instead of re-running every
case in float32, bf16 and float16), and the provenance's ``audio_file`` (where the built-in clip is)."""

from __future__ import annotations

import hashlib
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
    from oracle.taps import front_end_taps

    assert front_end_taps(load_setup(builtin.tiny_checkpoint(), None).ckpt.config) == STAGES


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

    def fake(ctx, stage, cases, stored, prov, progress=None, reuse=None):
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


# -- --tolerances-from --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A small set to take tolerances from: two block cases and the whole e2e case."""
    out = tmp_path_factory.mktemp("source") / "set"
    assert main(["golden", "--out", str(out), "--components", "rms_norm,conv_stem,e2e", "--quiet"]) == 0
    return out


def golden_code(argv) -> int:
    try:
        return main(["golden", *argv])
    except SystemExit as exit_:
        return exit_.code


def edit_manifest(root: Path, name: str, edit) -> None:
    """Change one case's manifest and re-seal it (its sha256 in index.json), as a later version would write it."""
    index = json.loads((root / "index.json").read_text())
    entry = next(c for c in index["cases"] if c["name"] == name)
    path = root / entry["dir"] / "manifest.json"
    m = json.loads(path.read_text())
    edit(m)
    text = json.dumps(m, indent=1, ensure_ascii=False) + "\n"
    path.write_text(text, encoding="utf-8")
    entry["sha256"] = hashlib.sha256(text.encode()).hexdigest()
    (root / "index.json").write_text(json.dumps(index, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def test_reused_tolerances_equal_the_measured_ones_and_no_tolerance_run_happens(source, tmp_path, monkeypatch):
    import oracle.golden_writer as gw

    def no(*a, **k):
        raise AssertionError("a tolerance run happened")

    monkeypatch.setattr(gw, "measure_tolerances", no)
    out = tmp_path / "set"
    assert main(["golden", "--out", str(out), "--components", "rms_norm,conv_stem,e2e",
                 "--tolerances-from", str(source), "--quiet"]) == 0
    for name in ("rms_norm", "conv_stem", "e2e"):
        a, b = manifest(source, name), manifest(out, name)
        pa, pb = a.pop("provenance"), b.pop("provenance")
        assert a == b, name  # tensors (sha256) and tolerances alike
        assert pb["tolerances_from"]["path"] == str(source)
        assert pb["tolerances_from"]["index_sha256"] == hashlib.sha256((source / "index.json").read_bytes()).hexdigest()
        assert pb["tolerances_from"]["command"] == pa["command"]
        assert pb["command"].endswith(f"--tolerances-from {source}")
        assert {k: v for k, v in pb.items() if k not in ("tolerances_from", "command")} == \
               {k: v for k, v in pa.items() if k != "command"}
        jsonschema.validate({**b, "provenance": pb}, SCHEMA)
    jsonschema.validate(json.loads((out / "index.json").read_text()), INDEX_SCHEMA)
    assert compare(load_golden(out), replay_set(out, "all", "float32")).exit_code == 0


def test_a_front_end_set_takes_the_whole_e2e_cases_tolerances(source, front, tmp_path):
    out = tmp_path / "set"
    assert main(["golden", "--out", str(out), "--components", "e2e", "--stop-after", "enc.out",
                 "--tolerances-from", str(source), "--quiet"]) == 0
    a, b = manifest(front, "e2e"), manifest(out, "e2e")  # measured itself vs taken from the whole case
    assert a["outputs"] == b["outputs"]


def test_whole_tolerance_entries_are_copied(source, tmp_path):
    """Keys this version does not know (a later version's, e.g. stage-local tolerances) carry over."""
    src = tmp_path / "src"
    shutil.copytree(source, src)

    def add(m):
        for o in m["outputs"].values():
            for t in o.get("tolerance", {}).values():
                t["later_key"] = {"atol": 0.5, "why": "test"}

    edit_manifest(src, "conv_stem", add)
    out = tmp_path / "set"
    assert main(["golden", "--out", str(out), "--components", "conv_stem", "--tolerances-from", str(src), "--quiet"]) == 0
    tol = manifest(out, "conv_stem")["outputs"]["conv_stem.out"]["tolerance"]
    assert tol["float32"]["later_key"] == {"atol": 0.5, "why": "test"} and set(tol) == {"float32", "bf16", "float16"}


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("voxtral-oracle golden: error:"), err
    return err


@pytest.mark.parametrize("argv, words", [
    (["--components", "rms_norm", "--seed", "1"], ["its seed 0 differs from this run's 1"]),
    (["--components", "rms_norm", "--delay-ms", "560"], ["its delay_ms 480 differs from this run's 560"]),
    (["--components", "rms_norm", "--framing", "vllm"], ["its framing 'offline' differs"]),
    (["--components", "rms_norm,rope"], ["has no rope case to take tolerances from (it has: rms_norm, conv_stem, e2e)"]),
    (["--components", "rms_norm", "--dtype", "float64"], ["case rms_norm input rms_norm.x differs from this run's"]),
])
def test_a_mismatched_source_is_one_line(source, tmp_path, capsys, argv, words):
    assert golden_code(["--out", str(tmp_path / "x"), "--tolerances-from", str(source), *argv, "--quiet"]) == 2
    err = _one_line(capsys)
    assert str(source) in err, err
    for w in words:
        assert w in err, err
    assert not (tmp_path / "x").exists()


def test_another_checkpoint_or_audio_is_refused(source, tmp_path, capsys):
    ckpt = tmp_path / "ckpt"
    assert main(["synth", str(ckpt), "--size", "tiny", "--seed", "1"]) == 0
    assert golden_code([str(ckpt), "--out", str(tmp_path / "x"), "--components", "rms_norm",
                        "--tolerances-from", str(source), "--quiet"]) == 2
    assert "its checkpoint_sha256" in _one_line(capsys)
    clip = tmp_path / "clip.wav"
    data, rate = sf.read(builtin.speech_clip(), dtype="int16")
    sf.write(clip, data[: len(data) // 2], rate, subtype="PCM_16")
    assert golden_code(["--audio", str(clip), "--out", str(tmp_path / "x"), "--components", "rms_norm",
                        "--tolerances-from", str(source), "--quiet"]) == 2
    assert "its audio_sha256" in _one_line(capsys)


def test_changed_params_or_a_front_end_source_are_refused(source, front, tmp_path, capsys):
    src = tmp_path / "src"
    shutil.copytree(source, src)
    edit_manifest(src, "e2e", lambda m: m["params"].update(encoder_window=99))
    assert golden_code(["--out", str(tmp_path / "x"), "--components", "e2e", "--stop-after", "mel",
                        "--tolerances-from", str(src), "--quiet"]) == 2
    assert "case e2e params differ (encoder_window)" in _one_line(capsys)
    assert golden_code(["--out", str(tmp_path / "x"), "--components", "e2e",
                        "--tolerances-from", str(front), "--quiet"]) == 2
    assert "its e2e case stops after enc.out (golden --stop-after)" in _one_line(capsys)
    assert golden_code(["--out", str(tmp_path / "x"), "--components", "e2e", "--stop-after", "adapter.out",
                        "--tolerances-from", str(front), "--quiet"]) == 2
    assert "case e2e has no float output adapter.out" in _one_line(capsys)
    assert golden_code(["--out", str(tmp_path / "x"), "--tolerances-from", str(tmp_path / "nowhere"), "--quiet"]) == 2
    assert "--tolerances-from" in _one_line(capsys)


def test_an_output_of_another_shape_is_refused(source):
    from oracle.tolerance_reuse import ReusedTolerances

    reuse = ReusedTolerances(load_golden(source), str(source))
    x = np.asarray(load_golden(source).cases[0].read_inputs()["rms_norm.x"])
    with pytest.raises(Exception, match=r"output rms_norm.out has shape \[37, 64\], this run \[36, 64\]"):
        reuse.tolerances("rms_norm", {"rms_norm.x": x}, {"rms_norm.out": np.zeros((36, 64))})


# -- where the built-in clip is -----------------------------------------------------------------


def test_the_provenance_says_where_the_builtin_clip_is_and_its_one_liner_copies_it(front, tmp_path):
    """audio_file names the clip's place and a one-liner; run as written, it writes the very file whose
    sha256 the provenance records (what a port feeds its own loader)."""
    import shlex
    import subprocess
    import sys

    for prov in (manifest(front, "e2e")["provenance"], manifest(ROOT / "golden" / "tiny_goldens", "e2e")["provenance"],
                 json.loads((ROOT / "golden" / "tiny_goldens" / "index.json").read_text())["provenance"]):
        assert prov["audio"] == "builtin:clip.wav"
        where = prov["audio_file"]
        assert where.startswith("oracle/data/clip.wav ") and (ROOT / "oracle" / "data" / "clip.wav").is_file()
        argv = shlex.split(where.split("copy it out with: ", 1)[1])
        assert argv[:2] == ["python", "-c"]
        subprocess.run([sys.executable, *argv[1:]], cwd=tmp_path, check=True, timeout=60)
        assert hashlib.sha256((tmp_path / "clip.wav").read_bytes()).hexdigest() == prov["audio_sha256"]
        (tmp_path / "clip.wav").unlink()


def test_a_given_audio_file_has_no_audio_file_note(tmp_path):
    clip = tmp_path / "mine.wav"
    shutil.copy(builtin.speech_clip(), clip)
    out = tmp_path / "set"
    assert main(["golden", "--audio", str(clip), "--out", str(out), "--components", "e2e", "--stop-after", "mel",
                 "--quiet"]) == 0
    prov = manifest(out, "e2e")["provenance"]
    assert prov["audio"] == str(clip) and prov["audio_file"] is None
    jsonschema.validate(manifest(out, "e2e"), SCHEMA)


@pytest.mark.parametrize("what", ["fifo", "file", "empty dir", "missing", "one case", "damaged", "empty string"])
def test_a_hostile_tolerances_from_is_one_line(source, tmp_path, capsys, what):
    import os

    target = tmp_path / "t"
    if what == "fifo":
        os.mkfifo(target)
    elif what == "file":
        target.write_bytes(b"not a golden set")
    elif what == "empty dir":
        target.mkdir()
    elif what == "one case":
        shutil.copytree(source / json.loads((source / "index.json").read_text())["cases"][0]["dir"], target)
    elif what == "damaged":
        shutil.copytree(source, target)
        f = next(target.glob("*_rms_norm/tensors.safetensors"))
        data = bytearray(f.read_bytes())
        data[-1] ^= 1
        f.write_bytes(bytes(data))
    arg = "" if what == "empty string" else str(target)
    assert golden_code(["--out", str(tmp_path / "x"), "--components", "rms_norm", "--tolerances-from", arg,
                        "--quiet"]) == 2
    err = _one_line(capsys)
    assert "tolerances-from" in err, err
    assert not (tmp_path / "x").exists()
