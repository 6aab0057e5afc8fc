"""compare's stage-local view (oracle.local, oracle.local_view): each e2e stage replayed on the candidate's
own input says which stage *adds* the error. Honest float32/float16/bf16 ports pass every stage; a tanh
GELU fails at the GELU stages in every dtype, also in bf16 where it is far below the dtype's rounding;
the "adds the most" flag lands on the stage that adds the error even when an earlier stage is slightly
off (a mel at 1.2x, a conv stem at 15x), on the tiny and the odd configs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from oracle import builtin
from oracle.checkpoint import write_safetensors
from oracle.compare import compare, load_golden
from oracle.diagnose import attach_diagnosis
from oracle.errors import OracleError
from oracle.faults import faulty_outputs
from oracle.golden import Context, replay
from oracle.golden_writer import provenance_for, write_golden_set
from oracle.local import e2e_stages
from oracle.local_view import attach_local
from oracle.pipeline import load_setup
from oracle.precision import BFLOAT16, FLOAT16, FLOAT32, policy
from oracle.report import Report
from oracle.synth import write_checkpoint
from oracle_tools.cli import main
from test_conformance import ODD_A, ODD_B
from test_trace import dithered_context

COMMITTED = Path(__file__).parents[1] / "golden" / "tiny_goldens"


def e2e_inputs(golden) -> dict[str, np.ndarray]:
    return {k: np.asarray(v) for k, v in next(c for c in golden.cases if c.name == "e2e").read_inputs().items()}


@pytest.fixture(scope="module")
def tiny():
    golden = load_golden(COMMITTED)
    inputs = e2e_inputs(golden)
    ctx = Context(load_setup(builtin.tiny_checkpoint()), inputs["audio"].astype(np.float64), 0)
    return golden, inputs, ctx


def local_report(golden, cand, port_dtype, ckpt=None):
    report = compare(golden, cand, port_dtype=port_dtype, only=["e2e/*"])
    return attach_local(report, golden, cand, ckpt)


def statuses(report) -> dict[str, str]:
    return {r["name"]: r["status"] for r in report.local}


@pytest.mark.parametrize("dtype", ["float32", "float16", "bf16"])
def test_honest_ports_pass_every_stage_locally(tiny, dtype):
    golden, inputs, ctx = tiny
    report = local_report(golden, replay(ctx, "e2e", inputs, policy(dtype)), dtype)
    assert len(report.local) == 13 and set(statuses(report).values()) == {"ok"}, report.text()
    assert report.exit_code == 0 and report.adds_most is None
    if dtype == "float32":  # the oracle's own float32 stage: about 1/safety of its local tolerance
        assert max(r["local_pct"] for r in report.local if r["reads"][0] != "(golden inputs only)") < 15


@pytest.mark.parametrize("p", [FLOAT32, FLOAT16, BFLOAT16], ids=lambda p: p.name)
def test_tanh_gelu_fails_locally_at_the_gelu_stages(tiny, p):
    """In bf16 the tanh GELU (≤ 4.7e-4) is far below a BF16 value's rounding, and every tap passes the
    bf16 tolerances; locally, the port's error follows tanh − erf exactly (alpha ≈ 1; honest: ≈ 0)."""
    golden, inputs, ctx = tiny
    report = local_report(golden, faulty_outputs("gelu_tanh", ctx, "e2e", inputs, p), p.name)
    failing = [r["name"] for r in report.local_failing]
    assert failing == ["enc.conv1.out", "enc.conv.out"], report.text()
    assert report.adds_most["name"] in ("enc.conv1.out", "enc.conv.out")  # both GELUs add theirs
    assert all(abs(r["form"]["alpha"] - 1) < 0.05 for r in report.local_failing)
    assert report.exit_code == 1 and f"most error added at {report.adds_most['name']}" in report.verdict
    if p is BFLOAT16:
        assert not report.failing  # the loose bf16 envelope passes it: only the local view sees it
        assert report.verdict.startswith("FAIL: every tensor is within tolerance, but 2 stages add")


def slightly_off_mel_then_bad_stem(golden, ckpt, inputs) -> dict[str, np.ndarray]:
    """A float32 port whose mel is 1.2x its tolerance (a few elements) and whose conv1 adds 15x its local
    tolerance (a handful of elements, no catalogued pattern); every later stage is honest float32."""
    case = next(c for c in golden.cases if c.name == "e2e")
    out = {o.name: o for o in case.outputs}
    mel = out["mel"].array().astype(np.float64)
    rng = np.random.default_rng(1)
    above_floor = np.argwhere(mel > mel.min() + 0.5)  # speech, not the floor (a floor pattern is catalogued)
    idx = tuple(above_floor[rng.choice(len(above_floor), 5, replace=False)].T)
    mel[idx] += 1.2 * out["mel"].tolerance["float32"].atol
    cand = {"mel": mel.astype(np.float32)}
    for st in e2e_stages(ckpt):
        x = {r: FLOAT32.array(cand[r] if r in cand else out[r].array()) for r in st.reads}
        y = np.asarray(st.run({**x, "tokens_in": inputs["tokens_in"]}, FLOAT32), dtype=np.float32)
        if st.name == "enc.conv1.out":
            at = tuple(rng.integers(0, s, 4) for s in y.shape)
            y[at] += np.float32(15 * out[st.name].local["tolerance"]["float32"]["limit"])
        cand[st.name] = y
    cand["dec.t_cond"] = out["dec.t_cond"].array()
    return cand


def odd_golden(tmp_path, cfg, name):
    write_checkpoint(tmp_path / name, cfg, seed=7)
    ctx, _ = dithered_context(tmp_path / name)
    prov = provenance_for(ctx, str(tmp_path / name), None, None, "float32", "test")
    return load_golden(write_golden_set(ctx, tmp_path / "g", ["e2e"], "float32", prov)), ctx


@pytest.mark.parametrize("config", ["tiny", "odd_a", "odd_b"])
def test_adds_error_flag_lands_on_the_conv_stem_not_the_slightly_off_mel(config, tiny, tmp_path):
    if config == "tiny":
        golden, inputs, ctx = tiny
    else:
        golden, ctx = odd_golden(tmp_path, {"odd_a": ODD_A, "odd_b": ODD_B}[config], config)
        inputs = e2e_inputs(golden)
    cand = slightly_off_mel_then_bad_stem(golden, ctx.ckpt, inputs)
    report = local_report(golden, cand, "float32")
    assert report.first_divergence.name == "mel"  # what compare alone says
    rows = {r["name"]: r for r in report.local}
    assert 100 < rows["mel"]["local_pct"] < 130 and rows["mel"]["status"] == "FAIL"
    assert 1400 < rows["enc.conv1.out"]["local_pct"] < 1600
    assert report.adds_most["name"] == "enc.conv1.out", report.text()
    assert [r["name"] for r in report.local_failing] == ["mel", "enc.conv1.out"]
    text = report.text()
    assert "<< adds the most" in next(line for line in text.splitlines() if " enc.conv1.out " in line and "mel" in line)
    # a mistake no catalogue entry describes: no name, and the evidence of the stage that adds the error
    attach_diagnosis(report, golden, cand)
    assert [m["title"] for m in report.likely_mistakes] == ["no catalogue entry fits"], report.likely_mistakes
    detail = report.likely_mistakes[0]["detail"]
    assert "stage adding the most error e2e/enc.conv1.out: this stage itself adds the error" in detail, detail


def test_decoder_taps_without_the_last_position_are_replayed_on_their_rows(tiny):
    """A port on the N − P schedule never feeds the last position: its decoder taps have N − 1 rows."""
    golden, inputs, ctx = tiny
    cand = replay(ctx, "e2e", inputs, FLOAT32)
    for k in [k for k in cand if k.startswith("dec.L") or k in ("dec.in", "dec.norm", "logits")]:
        cand[k] = cand[k][:-1]
    report = attach_local(compare(golden, cand, port_dtype="float32", only=["e2e/*"]), golden, cand)
    assert all(r["status"] == "ok" for r in report.local if r["name"] != "mel"), report.text()


def test_local_view_needs_the_goldens_checkpoint(tiny, tmp_path):
    golden, inputs, ctx = tiny
    cand = replay(ctx, "e2e", inputs, FLOAT32)
    write_checkpoint(tmp_path / "other", ODD_A, seed=1)
    with pytest.raises(OracleError, match="not the checkpoint the golden was written from") as err:
        attach_local(compare(golden, cand, only=["e2e/*"]), golden, cand, tmp_path / "other")
    assert err.value.exit_code == 3
    report = attach_local(compare(golden, cand, only=["e2e/*"]), golden, cand, tmp_path / "missing")
    assert not report.local and any("stage-local view skipped: checkpoint" in n for n in report.notes)


def test_cli_local_table_json_and_no_local(tiny, tmp_path, capsys):
    golden, inputs, ctx = tiny
    cand = faulty_outputs("gelu_tanh", ctx, "e2e", inputs, BFLOAT16)
    path = tmp_path / "c.safetensors"
    write_safetensors(path, [(k, v.dtype, v.shape, v) for k, v in cand.items()])
    args = ["compare", str(COMMITTED), str(path), "--only", "e2e/*", "--port-dtype", "bf16"]
    assert main(args + ["--json", str(tmp_path / "r.json")]) == 1
    out = capsys.readouterr().out
    assert "Where error is added" in out and "follows the tanh GELU" in out
    back = Report.from_json((tmp_path / "r.json").read_text())
    assert back.local == json.loads((tmp_path / "r.json").read_text())["local"] and back.exit_code == 1
    assert main(args + ["--no-local"]) == 0
    assert "Where error is added" not in capsys.readouterr().out


def test_a_broken_local_entry_is_a_damaged_golden(tmp_path):
    g = tmp_path / "g"
    shutil.copytree(COMMITTED / "15_e2e", g)
    m = json.loads((g / "manifest.json").read_text())
    m["outputs"]["enc.conv1.out"]["local"]["tolerance"]["float32"]["limit"] = -1
    (g / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(OracleError, match=r"outputs.enc.conv1.out.local.tolerance.float32.limit must be a finite") as err:
        load_golden(g)
    assert err.value.exit_code == 2


@pytest.mark.parametrize("key", ["ada_silu", "ada_dropped"])
def test_ada_lookalikes_are_told_apart_from_an_e2e_dump_alone(tiny, key):
    """Without the time_ada block case the four ADA look-alikes fail alike end to end; replayed on the
    port's own dec.in, layer 0's error follows exactly one known form (SiLU; no ADA term), which names it."""
    golden, inputs, ctx = tiny
    cand = faulty_outputs(key, ctx, "e2e", inputs, FLOAT32)
    report = attach_diagnosis(local_report(golden, cand, "float32"), golden, cand)
    layer0 = next(r for r in report.local if r["name"] == "dec.L00.out")
    follows = [f["name"] for f in layer0["forms"] if f["follows"]]
    assert follows == [{"ada_silu": "SiLU", "ada_dropped": "no ADA term"}[key]], layer0["forms"]
    assert [m["key"] for m in report.likely_mistakes] == [key], report.likely_mistakes
    honest = local_report(golden, replay(ctx, "e2e", inputs, FLOAT32), "float32")
    assert not any(f["follows"] for r in honest.local for f in r.get("forms") or [])


def test_a_tap_of_another_shape_is_not_replayed(tiny):
    """The replay reads only taps of the golden's shape (or fewer rows): its memory is bounded by the
    golden's whatever a candidate holds, and a transposed or longer tap is reported, not computed on."""
    golden, inputs, ctx = tiny
    cand = replay(ctx, "e2e", inputs, FLOAT32)
    cand["mel"] = np.zeros((cand["mel"].shape[0], 50 * cand["mel"].shape[1]), np.float32)
    cand["enc.L00.out"] = np.ascontiguousarray(cand["enc.L00.out"].T)
    rows = {r["name"]: r for r in local_report(golden, cand, "float32").local}
    assert rows["enc.conv1.out"]["status"] == "skipped" and "mel not in the golden's shape" in rows["enc.conv1.out"]["why"]
    assert rows["enc.L00.out"]["why"] == "enc.L00.out not in the golden's shape"
    assert rows["enc.L01.out"]["why"] == "enc.L00.out not in the golden's shape"
    assert rows["enc.conv.out"]["status"] == "ok"


def test_a_hostile_provenance_cannot_point_the_checkpoint_check_outside(tmp_path):
    g = tmp_path / "g"
    shutil.copytree(COMMITTED / "15_e2e", g)
    m = json.loads((g / "manifest.json").read_text())
    m["provenance"]["checkpoint_sha256"] = {"../../../etc/passwd": "0" * 64}
    (g / "manifest.json").write_text(json.dumps(m))
    golden = load_golden(g)
    cand = {o.name: np.asarray(o.array()) for o in golden.cases[0].outputs}
    with pytest.raises(OracleError, match="not a file name") as err:
        attach_local(compare(golden, cand), golden, cand)
    assert err.value.exit_code == 2


def test_logits_without_prompt_rows_are_replayed_on_the_rows_they_hold(tiny):
    """Full-length dec.norm, logits rows P-1 .. N-2 only: the replay's rows are taken as compare takes
    the golden's (rows_a_port_computes), not guessed from the end."""
    golden, inputs, ctx = tiny
    cand = replay(ctx, "e2e", inputs, FLOAT32)
    p = len(next(c for c in golden.cases if c.name == "e2e").manifest["params"]["prompt"])
    cand["logits"] = cand["logits"][p - 1:-1]
    rows = {r["name"]: r for r in local_report(golden, cand, "float32").local}
    assert rows["logits"]["status"] == "ok" and rows["logits"]["local_pct"] < 15, rows["logits"]
