"""Golden tensors: reproducible, verified, passed by the oracle's own float32/bf16 runs and by
transformers' float32 intermediates, and failed (with the right exit code and first stage) by every
mutation and every catalogued porting mistake."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from oracle import blas, builtin
from oracle.audio import load_audio, quantize_int16
from oracle.checkpoint import read_safetensors_header, read_tensor
from oracle.compare import compare
from oracle.diagnose import attach_diagnosis
from oracle.errors import OracleError
from oracle.faults import CATALOGUE, faulty_outputs, faulty_set
from oracle.golden import Context
from oracle.goldenset import load_golden
from oracle.pipeline import load_setup
from oracle.precision import FLOAT32
from oracle_tools.cli import main
from oracle_tools.reference_forward import replay_set
from hf_reference import build_hf_model, hf_intermediates

COMMITTED = Path(__file__).parents[1] / "golden" / "tiny_goldens"


def case_dir(root: Path, name: str) -> Path:
    """A case's directory, found by name through the set's index.json (never by its number)."""
    index = json.loads((root / "index.json").read_text())
    return root / next(c["dir"] for c in index["cases"] if c["name"] == name)


@pytest.fixture(scope="module")
def fresh(tmp_path_factory):
    out = tmp_path_factory.mktemp("golden") / "set"
    assert main(["golden", "--out", str(out), "--quiet"]) == 0
    return out


@pytest.fixture(scope="module")
def golden(fresh):
    return load_golden(fresh)


@pytest.fixture(scope="module")
def e2e_inputs(fresh):
    e2e = case_dir(fresh, "e2e")
    m = json.loads((e2e / "manifest.json").read_text())
    h = read_safetensors_header(e2e / "tensors.safetensors")
    return {k: np.asarray(read_tensor(h[k])) for k in m["inputs"]}


@pytest.fixture(scope="module")
def candidate32(fresh):
    return replay_set(fresh, "all", "float32")


def files(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def test_regenerating_is_byte_identical(fresh, tmp_path):
    assert main(["golden", "--out", str(tmp_path / "again"), "--quiet"]) == 0
    assert files(fresh) == files(tmp_path / "again")


def test_committed_goldens_match_a_regeneration(fresh):
    """Same cases, same manifests but for the sha256 of the tensor files (BLAS may differ in the last bits
    between machines), and every committed tensor within the float32 tolerance of the regenerated one."""
    committed = load_golden(COMMITTED)  # verifies every sha256 on load
    regenerated = {k: np.asarray(v) for k, v in load_candidate_from_set(fresh).items()}
    report = compare(committed, regenerated)
    assert report.exit_code == 0, report.text()
    for case in committed.cases:
        a = json.loads((case.dir / "manifest.json").read_text())
        b = json.loads((fresh / case.dir.name / "manifest.json").read_text())
        for m in (a, b):
            m.pop("sha256")
            for machine_fact in ("numpy_version", "python_version", "blas_kernel"):
                m["provenance"].pop(machine_fact, None)
            for o in m["outputs"].values():
                for t in o.get("tolerance", {}).values():
                    t.pop("measured_max_abs"), t.pop("atol"), t.pop("floor"), t.pop("envelope", None)
        assert a == b, case.name


def test_provenance_names_the_blas_kernel(fresh):
    """float32/float64 last bits depend on numpy's BLAS kernel: the set says which one it ran on."""
    index = json.loads((fresh / "index.json").read_text())
    case = json.loads(next(fresh.glob("*/manifest.json")).read_text())
    assert index["provenance"]["blas_kernel"] == case["provenance"]["blas_kernel"] == blas.kernel()
    assert blas.kernel() not in ("", "unknown")


def load_candidate_from_set(d: Path) -> dict[str, np.ndarray]:
    """A golden set's outputs as a candidate dict (qualified by case, so repeated names stay apart)."""
    out = {}
    for c in load_golden(d).cases:
        for o in c.outputs:
            out[f"{c.name}/{o.name}"] = np.asarray(o.array())
    return out


def test_sha256_verified_on_load(fresh, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(fresh, bad)
    f = case_dir(bad, "rms_norm") / "tensors.safetensors"
    data = bytearray(f.read_bytes())
    data[-3] ^= 0xFF
    f.write_bytes(bytes(data))
    with pytest.raises(OracleError, match=r"tensors\.safetensors.*sha256"):
        load_golden(bad)


def test_oracle_float32_run_passes(golden, candidate32):
    report = compare(golden, candidate32, port_dtype="float32")
    assert report.exit_code == 0, report.text()
    worst = max(t.tolerance_used_pct or 0 for t in report.tensors)
    assert 1 < worst <= 25, worst  # measured deviation x safety 10: about 10% used


def test_oracle_bf16_run_passes_bf16_and_fails_float32(fresh, golden):
    cand = replay_set(fresh, "all", "bf16")
    report = compare(golden, cand, port_dtype="bf16")
    assert report.exit_code == 0, report.text()
    assert compare(golden, cand, port_dtype="float32").exit_code == 1  # the tolerances are not interchangeable


# -- mutations: every check fires, with the right exit code and first stage ------------------------

def mutate(c: dict, name: str, fn) -> dict:
    out = dict(c)
    out[name] = fn(np.array(c[name]))
    return out


def flip_largest(a):
    i = np.unravel_index(np.argmax(np.abs(a)), a.shape)
    a[i] = -a[i]
    return a


def set_nan(a):
    a.reshape(-1)[a.size // 2] = np.nan
    return a


@pytest.mark.parametrize("port", ["float32", "bf16"])
@pytest.mark.parametrize("kind,name,fn,code", [
    ("sign", "enc.L00.out", flip_largest, 1),
    ("sign", "rms_norm.out", flip_largest, 1),
    ("transpose", "mel", lambda a: np.ascontiguousarray(a.T), 2),
    ("nan", "adapter.out", set_nan, 2),
    ("shape", "dec.L01.out", lambda a: a[:-2], 2),  # N-1 rows are the N-P schedule (compare takes them)
])
def test_tensor_mutations(golden, candidate32, port, kind, name, fn, code):
    report = compare(golden, mutate(candidate32, name, fn), port_dtype=port)
    assert report.exit_code == code, report.text()
    assert report.first_divergence.name == name
    assert name in report.verdict
    if kind == "transpose":
        assert "transposed" in report.verdict


def test_missing_tensor(golden, candidate32):
    c = dict(candidate32)
    del c["enc.conv.out"]
    report = compare(golden, c)
    assert report.exit_code == 2 and report.first_divergence.name == "enc.conv.out"
    assert "not in the candidate" in report.verdict


@pytest.mark.parametrize("key,first,code", [
    ("window_plus_one", "enc.L00.out", 1),
    ("stem_stride2_symmetric", "enc.conv1.out", 2),  # the half-rate conv stem
    ("ada_dropped", "dec.L00.out", 1),
])
def test_model_mutations(golden, e2e_inputs, key, first, code):
    setup = load_setup(builtin.tiny_checkpoint())
    ctx = Context(setup, e2e_inputs["audio"].astype(np.float64), 0)
    cand = faulty_outputs(key, ctx, "e2e", e2e_inputs, FLOAT32)
    report = compare(golden, cand, only="e2e/*")
    assert report.exit_code == code, report.text()
    assert report.first_divergence.name == first
    assert report.verdict.startswith(f"FAIL: first divergence at {first}")


# -- the fault catalogue through compare -----------------------------------------------------------

@pytest.fixture(scope="module")
def dithered_set(tmp_path_factory):
    """A golden set from audio that is not int16-exact, so the unquantized-mel fault shows."""
    d = tmp_path_factory.mktemp("dither")
    clip = load_audio(builtin.speech_clip())
    original = clip + 1e-4 * np.random.default_rng(3).standard_normal(len(clip))
    sf.write(d / "dithered.wav", original.astype(np.float32), 16000, subtype="FLOAT")
    original = load_audio(d / "dithered.wav")
    out = d / "set"
    assert main(["golden", "--audio", str(d / "dithered.wav"), "--out", str(out), "--components",
                 "rope,time_ada,e2e", "--quiet"]) == 0
    return out, original


@pytest.mark.parametrize("key", [f.key for f in CATALOGUE])
def test_compare_names_each_catalogued_mistake(dithered_set, key):
    out, original = dithered_set
    golden = load_golden(out)
    setup = load_setup(builtin.tiny_checkpoint())
    cand = {}
    for c in golden.cases:
        m = c.manifest
        h = read_safetensors_header(c.dir / "tensors.safetensors")
        inputs = {k: np.asarray(read_tensor(h[k])) for k in m["inputs"]}
        ctx = Context(setup, quantize_int16(original), 0)
        cand.update(faulty_outputs(key, ctx, c.name, inputs, FLOAT32, original_audio=original))
    report = attach_diagnosis(compare(golden, cand), golden, cand)
    assert report.exit_code in (1, 2)
    named = [d["key"] for d in report.likely_mistakes]
    assert key in named and len(named) <= 3, (key, named, report.verdict)
    fault = next(f for f in CATALOGUE if f.key == key)
    if fault.lookalikes:  # the block cases are in the candidate, so the separating check decides
        assert named[0] == key, (key, named)
    text = report.text()
    assert "Likely mistakes" in text or "likely mistakes" in text.lower()


def _fault_candidate(golden, original, key):
    return faulty_set(key, load_setup(builtin.tiny_checkpoint()), golden, FLOAT32, original)


def test_diagnosis_checks_its_preconditions(dithered_set, tmp_path):
    """Never ``mel_unquantized`` when the golden says its audio was int16-exact (quantizing it changes
    nothing), never ``prompt_38`` when the candidate's tokens are the golden's plus one more (a 38-token
    prompt moves the generated tokens; it does not append one)."""
    out, original = dithered_set
    exact = tmp_path / "exact"
    shutil.copytree(out, exact)
    index = json.loads((exact / "index.json").read_text())
    assert index["provenance"]["audio_int16_exact"] is False  # the dithered clip is not
    index["provenance"]["audio_int16_exact"] = True  # provenance is information, not covered by a sha256
    (exact / "index.json").write_text(json.dumps(index))
    for gdir, named_expected in ((out, True), (exact, False)):
        golden = load_golden(gdir)
        cand = _fault_candidate(golden, original, "mel_unquantized")
        report = attach_diagnosis(compare(golden, cand), golden, cand)
        named = [d["key"] for d in report.likely_mistakes]
        assert ("mel_unquantized" in named) == named_expected, (gdir, named)

    golden = load_golden(out)
    cand = {f"{o.case}/{o.name}": np.asarray(o.array()) for _, o in golden.outputs()}
    tokens = cand["e2e/tokens"]
    cand["e2e/tokens"] = np.concatenate([tokens, tokens[-1:]])  # one extra generated token at the end
    report = attach_diagnosis(compare(golden, cand), golden, cand)
    assert report.exit_code in (1, 2)
    assert "prompt_38" not in [d["key"] for d in report.likely_mistakes], report.likely_mistakes


def test_a_tanh_gelu_is_named_first(dithered_set):
    """voxtral.c's real mistake: the e2e case's first failure is enc.conv1.out, and the evidence (the
    difference follows tanh − erf GELU of the pre-activation) names gelu_tanh first."""
    out, original = dithered_set
    golden = load_golden(out)
    cand = _fault_candidate(golden, original, "gelu_tanh")
    report = attach_diagnosis(compare(golden, cand), golden, cand)
    assert report.likely_mistakes and report.likely_mistakes[0]["key"] == "gelu_tanh", report.likely_mistakes
    assert report.likely_mistakes[0]["score"] == 1.0


# -- a second real implementation through the same tool ----------------------------------------------

def test_transformers_float32_intermediates_pass(fresh, golden, e2e_inputs):
    """transformers' own float32 intermediates, mapped to golden names, pass compare (e2e case)."""
    setup = load_setup(builtin.tiny_checkpoint())
    proto = setup.protocol
    from transformers import VoxtralRealtimeFeatureExtractor

    fe = VoxtralRealtimeFeatureExtractor()
    padded = proto.pad_offline(e2e_inputs["audio"].astype(np.float64))
    mel = fe(padded.astype(np.float32), sampling_rate=16000, return_tensors="np")["input_features"][0]
    model = build_hf_model(builtin.tiny_checkpoint(), torch.float32)
    inter = hf_intermediates(model, mel, e2e_inputs["tokens_in"], proto.delay_tokens)
    cand = {"mel": mel, **{k: v for k, v in inter.items()}}
    n_prompt = len(proto.prompt)
    with torch.no_grad():
        gen = model.generate(input_ids=torch.tensor(proto.prompt[None]), input_features=torch.tensor(mel[None]),
                             num_delay_tokens=proto.delay_tokens, do_sample=False)
    cand["tokens"] = gen[0, n_prompt:].numpy().astype(np.int64)
    names = [o.name for c in golden.cases if c.name == "e2e" for o in c.outputs]
    assert set(names) <= set(cand), set(names) - set(cand)
    report = compare(golden, {k: cand[k] for k in names}, only="e2e/*")
    assert report.exit_code == 0, report.text()


def test_forward_and_compare_cli(fresh, tmp_path, capsys):
    cand = tmp_path / "c.safetensors"
    assert main(["forward", "rms_norm,conv_stem", "--golden", str(fresh), "--out", str(cand)]) == 0
    code = main(["compare", str(fresh), str(cand), "--only", "rms_norm.*", "--markdown", str(tmp_path / "r.md"),
                 "--json", str(tmp_path / "r.json")])
    out = capsys.readouterr().out
    assert code == 0 and out.strip().splitlines()[-1].startswith("PASS")
    assert (tmp_path / "r.md").read_text().count("|") > 10
    assert json.loads((tmp_path / "r.json").read_text())["exit_code"] == 0


def test_comparator_selftest_is_current(tmp_path, capsys):
    """golden/selftest (for a port's own comparator) regenerates byte for byte and compare agrees with it."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_selftest", Path(__file__).parents[1] / "tools" / "make_selftest.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.build(tmp_path / "st")
    committed = Path(__file__).parents[1] / "golden" / "selftest"
    assert files(tmp_path / "st") == files(committed)
    expected = json.loads((committed / "expected.json").read_text())
    code = main(["compare", str(committed / "set"), str(committed / "candidate.safetensors"), "--json", str(tmp_path / "r.json")])
    assert code == expected["exit_code"] == 1
    got = json.loads((tmp_path / "r.json").read_text())
    fail = next(t for t in got["tensors"] if t["name"] == "selftest.fail")
    assert fail["metrics"]["mismatched"] == 2 and fail["metrics"]["first_mismatch_index"] == [0, 1]
    assert fail["metrics"]["max_abs_index"] == [1, 3]
    assert capsys.readouterr().out.strip().splitlines()[-1] == expected["verdict"]


def test_help_imports_no_heavy_module():
    """``voxtral-oracle --help`` (and a command's parser) load no numpy-stack module: start-up stays ~0.05 s."""
    import subprocess
    import sys

    code = ("import sys, contextlib, io\n"
            "from oracle_tools.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
            "    main(['--help'])\n"
            "print(sorted(m for m in ('numpy', 'scipy', 'ml_dtypes', 'oracle.golden') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out


def test_golden_cmd_choices_mirror_the_oracle():
    """golden_cmd keeps its parser's choices as literals (so --help imports nothing): they must stay in step."""
    from oracle.golden import STORED_NAMES
    from oracle.streaming import FRAMINGS
    from oracle_tools import golden_cmd

    assert golden_cmd.STORED_NAMES == STORED_NAMES and golden_cmd.FRAMINGS == FRAMINGS


def test_an_unknown_mistake_gets_no_entry_fits_with_evidence():
    """A mistake not in the catalogue (one channel of encoder layer 1 shifted): no wrong name, but the
    stage, the size and the rows, so the author knows where to look."""
    golden = load_golden(COMMITTED)
    cand = {f"{o.case}/{o.name}": np.asarray(o.array()) for c, o in golden.outputs() if c.name == "e2e"}
    shifted = cand["e2e/enc.L01.out"].copy()
    shifted[:, 3] += 0.05
    cand["e2e/enc.L01.out"] = shifted
    report = attach_diagnosis(compare(golden, cand, only=["e2e/*"]), golden, cand)
    assert [d["key"] for d in report.likely_mistakes] == [None], report.likely_mistakes
    got = report.likely_mistakes[0]
    assert got["title"] == "no catalogue entry fits"
    assert got["detail"].startswith("first failure e2e/enc.L01.out: max |diff| 0.05 against atol")
    assert "no catalogue entry fits" in report.text()
