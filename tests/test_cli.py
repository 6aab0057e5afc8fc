"""The command line: every user-caused error is one line on stderr with a non-zero exit; the main jobs
work on the built-in defaults.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from oracle import builtin
from oracle.audio import load_audio
from oracle.pipeline import load_setup, offline_tokens
from oracle.precision import FLOAT32
from oracle_tools.cli import main
from test_checkpoint import BAD_KINDS, expected_error, make_bad_checkpoint, write_hf_copy

from oracle.checkpoint import open_checkpoint


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(err: str, pattern: str | None = None) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("voxtral-oracle "), lines[0]
    assert "Traceback" not in err
    if pattern:
        assert re.search(pattern, lines[0]), (pattern, lines[0])


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_bad_checkpoint_cli(kind, tmp_path, capsys):
    path = make_bad_checkpoint(kind, tmp_path)
    code, out, err = run_cli(capsys, "inspect", path, "--no-stats")
    assert code == 2
    prefix = "voxtral-oracle inspect: error: "
    assert err.startswith(prefix)
    assert_one_line_error(err, expected_error(kind, path).lstrip("^").join(["^" + re.escape(prefix), ""]))


def _bad_audio(kind: str, tmp: Path) -> tuple[Path, str]:
    if kind == "missing":
        return tmp / "nope.wav", r"nope\.wav: no such file"
    p = tmp / f"{kind}.wav"
    if kind == "not_audio":
        p.write_text("this is not a wav file\n")
        return p, r"not_audio\.wav: not a readable audio file"
    if kind == "empty":
        sf.write(p, np.zeros(0, np.int16), 16000, subtype="PCM_16")
        return p, r"empty\.wav: empty audio"
    x = np.zeros(4000, np.float32)
    x[100] = np.nan if kind == "nan" else np.inf
    sf.write(p, x, 16000, subtype="FLOAT")
    return p, rf"{kind}\.wav: contains {'NaN' if kind == 'nan' else 'Inf'} samples"


@pytest.mark.parametrize("kind", ["missing", "not_audio", "empty", "nan", "inf"])
@pytest.mark.parametrize("stream", [False, True])
def test_bad_audio_cli(kind, stream, tmp_path, capsys):
    path, pattern = _bad_audio(kind, tmp_path)
    code, out, err = run_cli(capsys, "transcribe", builtin.tiny_checkpoint(), path, *(["--stream"] if stream else []))
    assert code == 2 and out == ""
    assert_one_line_error(err, pattern)


@pytest.mark.parametrize("delay", ["100", "0", "1280", "4800", "-80"])
def test_bad_delay_cli(delay, capsys):
    code, out, err = run_cli(capsys, "transcribe", "--delay-ms", delay)
    assert code == 2
    assert_one_line_error(err, rf"delay {delay} ms is not supported")


def test_usage_error_exit_code(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["transcribe", "--dtype", "float8"])
    assert exc.value.code == 2


def test_transcribe_json_on_builtin_defaults(capsys):
    code, out, err = run_cli(capsys, "transcribe", "--json", "--dtype", "float32")
    assert code == 0, err
    got = json.loads(out)
    setup = load_setup(builtin.tiny_checkpoint())
    audio = load_audio(builtin.speech_clip())
    ref = offline_tokens(setup, audio, FLOAT32)
    assert got["tokens"] == [int(t) for t in setup.protocol.prompt] + ref
    assert got["text"] == setup.tekken.decode(ref) and got["delay_ms"] == 480 and got["framing"] == "offline"


def test_transcribe_stream_prints_same_text(capsys):
    code, out, err = run_cli(capsys, "transcribe", "--stream", "--chunk-ms", "250")
    assert code == 0, err
    code2, out2, _ = run_cli(capsys, "transcribe")
    assert out == out2  # the clip is int16-exact, so offline quantization changes nothing


def test_synth_full_dry_run_counts(capsys):
    code, out, err = run_cli(capsys, "synth", "/nonexistent/never-written", "--size", "full", "--dry-run", "--json")
    assert code == 0, err
    counts = json.loads(out)["parameters"]
    assert counts["total"] == 4_429_679_360
    assert counts["tensors"] == 711
    assert (counts["encoder"], counts["adapter"], counts["embedding"], counts["decoder"]) == (
        970_395_392, 25_165_824, 402_653_184, 3_031_464_960)
    assert counts["ada (in decoder)"] == 5_111_808
    assert not Path("/nonexistent/never-written").exists()


def test_synth_with_params_any_dims(tmp_path, capsys):
    params = json.loads((builtin.tiny_checkpoint() / "params.json").read_text())
    params["n_heads"], params["n_kv_heads"], params["head_dim"], params["sliding_window"] = 6, 3, 10, 5
    (tmp_path / "p.json").write_text(json.dumps(params))
    code, out, err = run_cli(capsys, "synth", tmp_path / "ck", "--params", tmp_path / "p.json", "--seed", "4")
    assert code == 0, err
    ck = open_checkpoint(tmp_path / "ck")
    assert ck.config.decoder.n_heads == 6 and ck.config.decoder.sliding_window == 5


def test_builtin_tiny_checkpoint_is_synth_seed_0(tmp_path, capsys):
    """golden/tiny is exactly what `synth --size tiny --seed 0` writes (byte for byte)."""
    code, _, err = run_cli(capsys, "synth", tmp_path / "t", "--size", "tiny", "--seed", str(builtin.TINY_SEED))
    assert code == 0, err
    for name in ("params.json", "consolidated.safetensors", "tekken.json"):
        assert (tmp_path / "t" / name).read_bytes() == (builtin.tiny_checkpoint() / name).read_bytes(), name


def test_inspect_both_layouts(tmp_path, capsys):
    hf = write_hf_copy(open_checkpoint(builtin.tiny_checkpoint()), tmp_path / "hf")
    code, out, err = run_cli(capsys, "inspect", hf, "--json")
    assert code == 0, err
    got = json.loads(out)
    assert got["layout"] == "hf" and got["components"]["total"] == 479_648
    row = next(r for r in got["tensors"] if r["name"].endswith("layers.0.self_attn.q_proj.weight"))
    assert row["nan"] == 0 and row["std"] > 0
    code, out, err = run_cli(capsys, "inspect", builtin.tiny_checkpoint(), "--filter", "norm.weight", "--dump", "*")
    assert code == 0 and "norm.weight BF16[96]" in out


def test_console_script_installed():
    """The real entry point, as a user runs it."""
    r = subprocess.run(["voxtral-oracle", "inspect", "/definitely/missing"], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.strip() == "voxtral-oracle inspect: error: /definitely/missing: checkpoint directory not found"
    r = subprocess.run([sys.executable, str(Path(__file__).parents[1] / "tools" / "inspect_weights.py"), "/definitely/missing"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "checkpoint directory not found" in r.stderr
