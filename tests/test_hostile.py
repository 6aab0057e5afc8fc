"""Hostile input: every example of issue 16 in checkpoints, safetensors headers, params/config, tekken,
paths and the command line is one OracleError line (or one usage line) with the documented exit code,
bounded memory, no hang and nothing written outside the output directory.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import struct
import warnings
from contextlib import contextmanager
from pathlib import Path

import pytest

from oracle import builtin
from oracle.checkpoint import open_checkpoint, read_safetensors_header
from oracle.config import ModelConfig
from oracle.errors import OracleError
from oracle.jsonio import read_json_object
from oracle.pipeline import load_setup
from oracle.tokenizer import load_tekken
from oracle_tools import cli
from test_checkpoint import write_hf_copy

TINY = Path(builtin.tiny_checkpoint())


@contextmanager
def deadline(seconds: float = 20.0):
    """A FIFO that blocks would hang the suite: fail instead."""
    def boom(*_):
        raise AssertionError(f"blocked for more than {seconds} s")
    old = signal.signal(signal.SIGALRM, boom)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def one_line(fn, *args, match: str | None = None) -> str:
    with deadline(), pytest.raises(OracleError) as err:
        fn(*args)
    msg = str(err.value)
    assert "\n" not in msg and len(msg) < 600, msg
    if match:
        assert re.search(match, msg), msg
    return msg


@pytest.fixture
def ckpt(tmp_path) -> Path:
    out = tmp_path / "ck"
    shutil.copytree(TINY, out)
    return out


@pytest.fixture(scope="module")
def hf_ckpt(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("hf") / "ck"
    write_hf_copy(open_checkpoint(TINY), out, shards=2)
    return out


def edit_json(path: Path, edit) -> None:
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))


def encoder_audio(doc):
    return doc["multimodal"]["whisper_model_args"]["encoder_args"]["audio_encoding_args"]


# -- 1. FIFOs are refused without blocking -----------------------------------------------------

@pytest.mark.parametrize("name", ["params.json", "tekken.json", "consolidated.safetensors"])
def test_fifo_in_mistral_checkpoint(ckpt, name):
    (ckpt / name).unlink()
    os.mkfifo(ckpt / name)
    one_line(load_setup, ckpt, None, match=rf"{re.escape(name)}: is a named pipe, not a regular file$")


@pytest.mark.parametrize("name", ["config.json", "model-00001-of-00002.safetensors", "model.safetensors.index.json"])
def test_fifo_in_hf_checkpoint(hf_ckpt, tmp_path, name):
    ck = tmp_path / "hf"
    shutil.copytree(hf_ckpt, ck)
    (ck / name).unlink()
    os.mkfifo(ck / name)
    one_line(open_checkpoint, ck, match="is a named pipe, not a regular file$")


def test_fifo_json_reader(tmp_path):
    os.mkfifo(tmp_path / "x.json")
    one_line(read_json_object, tmp_path / "x.json", match="named pipe")


# -- 2. sizes from untrusted numbers are bounded before allocating ------------------------------

def test_tekken_huge_special_token_count(ckpt):
    edit_json(ckpt / "tekken.json", lambda d: d["config"].update(default_num_special_tokens=10**9))
    one_line(load_tekken, ckpt / "tekken.json", match=r"default_num_special_tokens: must be in \[1, 65536\]")


def test_tekken_vocab_size_bounded_by_file(ckpt):
    # within the cap but not what the file holds: the vocabulary's length is checked before anything
    edit_json(ckpt / "tekken.json", lambda d: d["config"].update(default_vocab_size=10**7))
    one_line(load_tekken, ckpt / "tekken.json", match=r"vocab: has 536 entries, config needs 9999000")


def test_params_huge_hop_length(ckpt):
    edit_json(ckpt / "params.json", lambda d: encoder_audio(d).update(hop_length=2**31 - 1))
    one_line(open_checkpoint, ckpt, match=r"audio hop_length must be 160 .* got 2147483647$")


def test_tekken_huge_left_pad(ckpt):
    edit_json(ckpt / "tekken.json", lambda d: d["audio"].update(streaming_n_left_pad_tokens=10**6))
    one_line(load_tekken, ckpt / "tekken.json", match=r"streaming_n_left_pad_tokens: must be in \[0, 1024\]")


# -- 3. JSON readers: deep nesting and huge integers ---------------------------------------------

DEEP = "[" * 5000 + "]" * 5000
BIG = "9" * 5000


@pytest.mark.parametrize("payload,match", [(DEEP, "nested too deeply"), (BIG, "integer string conversion")])
@pytest.mark.parametrize("name", ["params.json", "tekken.json"])
def test_json_deep_and_huge(ckpt, name, payload, match):
    text = (ckpt / name).read_text()
    (ckpt / name).write_text('{"x": ' + payload + ", " + text.lstrip()[1:])
    one_line(load_setup, ckpt, None, match=match)


@pytest.mark.parametrize("payload", [DEEP, BIG])
def test_json_deep_and_huge_hf_config(hf_ckpt, tmp_path, payload):
    ck = tmp_path / "hf"
    shutil.copytree(hf_ckpt, ck)
    (ck / "config.json").write_text('{"x": ' + payload + "}")
    one_line(open_checkpoint, ck, match=r"config\.json: not usable JSON")


def _write_header(path: Path, header: dict | str, data: bytes = b"") -> Path:
    raw = (header if isinstance(header, str) else json.dumps(header)).encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return path


@pytest.mark.parametrize("payload", [DEEP, BIG])
def test_safetensors_header_deep_and_huge(tmp_path, payload):
    p = _write_header(tmp_path / "x.safetensors", '{"t": ' + payload + "}")
    one_line(read_safetensors_header, p, match="safetensors header: not usable JSON")


# -- 4. safetensors headers are type-checked -----------------------------------------------------

GOOD = {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}


@pytest.mark.parametrize("change,match", [
    ({"dtype": []}, "unsupported dtype"),
    ({"dtype": None}, "unsupported dtype"),
    ({"data_offsets": "0,16"}, "data_offsets must be two"),
    ({"data_offsets": [0.0, 16.0]}, "data_offsets must be two"),
    ({"data_offsets": None}, "data_offsets must be two"),
    ({"data_offsets": [16, 0]}, "data_offsets must be two"),
    ({"data_offsets": [-4, 12]}, "data_offsets must be two"),
    ({"shape": [-1, -1]}, "shape must be a list of non-negative integers"),
    ({"shape": [10**20, 10**20]}, r"do not hold F32\[100000000000000000000, 100000000000000000000\]"),
    ({"shape": [2**62, 4]}, r"do not hold F32\[4611686018427387904, 4\] \(73786976294838206464 bytes\)"),
    ({"shape": [4.9]}, "shape must be a list of non-negative integers"),
    ({"shape": ["64"]}, "shape must be a list of non-negative integers"),
    ({"shape": [True]}, "shape must be a list of non-negative integers"),
])
def test_safetensors_header_types(tmp_path, change, match):
    p = _write_header(tmp_path / "x.safetensors", {"t": {**GOOD, **change}}, bytes(16))
    one_line(read_safetensors_header, p, match=match)


def test_safetensors_int64_wrap_is_not_zero(tmp_path):
    # [2**62, 4] F32 wraps to 0 bytes in int64: with empty offsets it would have been "valid"
    p = _write_header(tmp_path / "x.safetensors", {"t": {"dtype": "F32", "shape": [2**62, 4], "data_offsets": [0, 0]}})
    one_line(read_safetensors_header, p, match="do not hold")


def test_safetensors_data_section_must_be_covered(tmp_path):
    p = _write_header(tmp_path / "x.safetensors", {"t": GOOD}, bytes(24))
    one_line(read_safetensors_header, p, match=r"hold 16 bytes but the data section has 24")


def test_safetensors_valid_header_still_reads(tmp_path):
    p = _write_header(tmp_path / "x.safetensors", {"__metadata__": {"format": "pt"}, "t": GOOD}, bytes(16))
    assert read_safetensors_header(p)["t"].shape == (2, 2)


# -- 5. config values the model cannot run with are rejected at load -----------------------------

@pytest.mark.parametrize("edit,match", [
    (lambda d: encoder_audio(d).update(sampling_rate=0), "sampling_rate must be 16000"),
    (lambda d: encoder_audio(d).update(sampling_rate=2**63), "sampling_rate must be 16000"),
    (lambda d: d.update(sliding_window=10**20), r"decoder sliding_window must be in \[1, 16777216\]"),
    (lambda d: encoder_audio(d).update(num_mel_bins=80), "num_mel_bins must be 128"),
    (lambda d: encoder_audio(d).update(hop_length=161), "hop_length must be 160"),
    (lambda d: encoder_audio(d).update(frame_rate=float("nan")), "frame_rate must be"),
    (lambda d: d.update(rope_theta=0), "decoder rope_theta must be a finite positive number"),
    (lambda d: d.update(rope_theta=-1e6), "decoder rope_theta must be a finite positive number"),
    (lambda d: d.update(rope_theta=float("nan")), "decoder rope_theta must be a finite positive number"),
    (lambda d: d.update(rope_theta=float("inf")), "decoder rope_theta must be a finite positive number"),
    (lambda d: d.update(rope_theta="96"), "key rope_theta must be a number, got '96'"),
    (lambda d: d.update(norm_eps=-1e-5), r"decoder norm_eps must be a finite number in \(0, 1\)"),
    (lambda d: d.update(norm_eps=float("nan")), r"decoder norm_eps must be a finite number in \(0, 1\)"),
    (lambda d: d.update(rope_theta=10**400), "key rope_theta is too large"),
    (lambda d: d.update(use_biases=True), "key use_biases must be False for this model"),
])
def test_params_rejected_at_load(ckpt, edit, match):
    path = ckpt / "params.json"
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc, allow_nan=True))
    one_line(open_checkpoint, ckpt, match=match)


@pytest.mark.parametrize("edit,match", [
    (lambda d: d["text_config"].update(rope_parameters=7), "text_config.rope_parameters must be an object, got 7"),
    (lambda d: d["audio_config"]["rope_parameters"].update(rope_theta="96"), "must be a number, got '96'"),
    (lambda d: d["audio_config"].update(num_mel_bins=80), "num_mel_bins must be 128"),
    (lambda d: d["text_config"].update(rms_norm_eps=-1.0), "norm_eps must be"),
])
def test_hf_config_rejected_at_load(hf_ckpt, tmp_path, edit, match):
    ck = tmp_path / "hf"
    shutil.copytree(hf_ckpt, ck)
    edit_json(ck / "config.json", edit)
    one_line(open_checkpoint, ck, match=match)


@pytest.mark.parametrize("edit,match", [
    (lambda a: a.update(frame_rate=float("nan")), "audio.frame_rate: expected a finite number, got nan"),
    (lambda a: a.update(streaming_n_left_pad_tokens=-1), r"streaming_n_left_pad_tokens: must be in \[0, 1024\]"),
    (lambda a: a.update(streaming_look_back_ms=float("inf")), "streaming_look_back_ms: expected a finite number"),
])
def test_tekken_audio_rejected_at_load(ckpt, edit, match):
    path = ckpt / "tekken.json"
    doc = json.loads(path.read_text())
    edit(doc["audio"])
    path.write_text(json.dumps(doc, allow_nan=True))
    one_line(load_tekken, path, match=match)


def test_config_validation_keeps_the_real_model():
    from oracle.config import FULL, TINY as TINY_CFG
    for cfg in (FULL, TINY_CFG):
        assert ModelConfig.from_params(cfg.to_params()) == cfg
        assert ModelConfig.from_hf_config(cfg.to_hf_config()) == cfg


# -- 7. paths on input ---------------------------------------------------------------------------

def test_symlink_loop_among_hf_shards(hf_ckpt, tmp_path):
    ck = tmp_path / "hf"
    shutil.copytree(hf_ckpt, ck)
    victim = ck / "model-00002-of-00002.safetensors"
    victim.unlink()
    os.symlink(victim.name, victim)  # points at itself
    one_line(open_checkpoint, ck, match="model-00002-of-00002.safetensors: cannot read: Too many levels of symbolic links")


def test_hf_index_cannot_name_files_outside(hf_ckpt, tmp_path):
    ck = tmp_path / "hf"
    shutil.copytree(hf_ckpt, ck)
    edit_json(ck / "model.safetensors.index.json",
              lambda d: d["weight_map"].update({k: "../elsewhere.safetensors" for k in list(d["weight_map"])[:1]}))
    one_line(open_checkpoint, ck, match="is not a file name in the checkpoint directory")


def test_300_character_name(tmp_path):
    one_line(open_checkpoint, tmp_path / ("c" * 300), match="cannot read: File name too long")


# -- 7/9/10. the command line ----------------------------------------------------------------------

def run_cli(capsys, *argv):
    with deadline(120):
        code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def usage_line(err: str, command: str, match: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"voxtral-oracle {command}: error: ") and lines[0].endswith(
        f"(see voxtral-oracle {command} --help)"), lines[0]
    assert re.search(match, lines[0]), lines[0]


def cli_exit(capsys, argv) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exc:
        run_cli(capsys, *argv)
    return exc.value.code, capsys.readouterr().err


@pytest.mark.parametrize("argv,command,code,match", [
    (["compare", "a", "b", "--bogus"], "compare", 3, "unrecognized arguments: --bogus"),
    (["compare"], "compare", 3, "the following arguments are required"),
    (["inspect"], "inspect", 2, "the following arguments are required"),
    (["transcribe", "--chunk-ms", "-1"], "transcribe", 2, "--chunk-ms: must be a positive integer"),
    (["golden", "--out", "x", "--components", ","], "golden", 2, "--components: expected comma-separated names"),
    (["forward", ",", "--golden", "g", "--out", "x"], "forward", 2, "COMPONENT: expected comma-separated names"),
    (["synth", "x", "--seed", "-1"], "synth", 2, r"--seed: must be an integer in \[0, 2\*\*63\)"),
    (["trace38", "--out", "x", "--dither", "nan"], "trace38", 2, "--dither: must be a finite number"),
    (["trace38", "--out", ""], "trace38", 2, "argument out must not be empty"),
    (["forward", "rms_norm", "--golden", "g", "--out", ""], "forward", 2, "argument out must not be empty"),
    (["inspect", ""], "inspect", 2, "argument checkpoint must not be empty"),
    (["transcribe", "", ""], "transcribe", 2, "must not be empty"),
])
def test_usage_errors_are_one_line(capsys, argv, command, code, match):
    got, err = cli_exit(capsys, argv)
    assert got == code
    usage_line(err, command, match)


def test_no_command_is_one_line(capsys):
    got, err = cli_exit(capsys, [])
    assert got == 2 and len(err.strip().splitlines()) == 1


@pytest.fixture(scope="module")
def golden_set(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("g") / "g"
    assert cli.main(["golden", "--out", str(out), "--components", "rms_norm", "--quiet"]) == 0
    return out


@pytest.mark.parametrize("out,match", [
    ("{T}/missing/c.safetensors", "cannot write: directory .*missing does not exist"),
    ("{T}", "is a directory, expected an output file name"),
])
def test_forward_out_paths(capsys, tmp_path, golden_set, out, match):
    code, _, err = run_cli(capsys, "forward", "rms_norm", "--golden", golden_set, "--out", out.replace("{T}", str(tmp_path)))
    assert code == 2 and len(err.strip().splitlines()) == 1 and re.search(match, err), err


def test_forward_writes_atomically(capsys, tmp_path, golden_set):
    code, _, err = run_cli(capsys, "forward", "rms_norm", "--golden", golden_set, "--out", tmp_path / "c.safetensors")
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.safetensors"]  # no temp file left behind


def test_trace38_out_is_a_file(capsys, tmp_path):
    (tmp_path / "f").write_text("x")
    code, _, err = run_cli(capsys, "trace38", "--out", tmp_path / "f", "--no-faults", "--quiet")
    assert code == 2 and err.strip().endswith("f: exists and is not a directory"), err


def test_golden_out_under_a_file(capsys, tmp_path):
    (tmp_path / "f").write_text("x")
    code, _, err = run_cli(capsys, "golden", "--out", tmp_path / "f" / "g", "--components", "rms_norm", "--quiet")
    assert code == 2 and "cannot use as output: Not a directory" in err and len(err.strip().splitlines()) == 1, err


def test_synth_onto_existing_file(capsys, tmp_path):
    (tmp_path / "f").write_text("x")
    code, _, err = run_cli(capsys, "synth", tmp_path / "f", "--quiet")
    assert code == 2 and err.strip().endswith("exists and is not a directory"), err
    assert (tmp_path / "f").read_text() == "x"


def test_golden_does_not_write_through_planted_symlinks(capsys, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "index.json").symlink_to(tmp_path / "outside.json")
    (out / "01_rms_norm").symlink_to(tmp_path / "outside_dir")
    code, _, err = run_cli(capsys, "golden", "--out", out, "--components", "rms_norm", "--quiet")
    assert code == 0, err
    assert not (tmp_path / "outside.json").exists() and not (tmp_path / "outside_dir").exists()
    assert not (out / "index.json").is_symlink() and (out / "01_rms_norm" / "manifest.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # the staging directory is gone


def test_compare_report_path_is_checked(capsys, tmp_path, golden_set):
    code, _, err = run_cli(capsys, "compare", golden_set, golden_set / "01_rms_norm" / "tensors.safetensors",
                           "--json", tmp_path / "nope" / "r.json")
    assert code == 3 and "cannot write: directory" in err and len(err.strip().splitlines()) == 1, err


def test_no_warnings_without_verbose(capfd):
    """Without -v, Python warnings and C-level notes on fd 2 are dropped; Python's own stderr is kept."""
    import sys
    with cli._quiet_stderr(verbose=False):
        warnings.warn("numpy says something", RuntimeWarning)
        os.write(2, b"libmpg123 note\n")
        print("our line", file=sys.stderr)
    err = capfd.readouterr().err
    assert err == "our line\n", err
    with cli._quiet_stderr(verbose=True):
        os.write(2, b"libmpg123 note\n")
    assert "libmpg123 note" in capfd.readouterr().err


def test_fifo_candidate_is_refused_without_blocking(capsys, tmp_path, golden_set):
    """Issue 16's first example: `mkfifo c.safetensors; voxtral-oracle compare G c.safetensors` hung."""
    os.mkfifo(tmp_path / "c.safetensors")
    code, _, err = run_cli(capsys, "compare", golden_set, tmp_path / "c.safetensors")
    assert code == 3 and err.strip().endswith("c.safetensors: is a named pipe, not a regular file"), err
