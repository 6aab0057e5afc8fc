"""The proof: the numpy oracle equals transformers 5.23.0 ``models/voxtral_realtime`` stage by stage.

Both run on the same synthetic Mistral-layout checkpoint; the HF model receives it through the
project's name table (tests/hf_reference.py), so the mapping and the q/k permutation are checked too.
Every stage the oracle taps is compared (conv stem after each conv, each encoder layer, encoder
output, adapter output, decoder input, t_cond, each decoder layer, final norm, logits):

    metric   rel = max|oracle − hf| / max|hf|      (per tensor; scale-free across layers)
    float64  oracle FLOAT64 vs HF float64 with its float32 islands lifted     rel ≤ 1e-9
    float32  oracle FLOAT32 vs stock HF float32                              rel ≤ 1e-4
    stock    oracle FLOAT64 vs stock ``model.double()``: rel > 1e-12 at the logits (why the lift is
             needed: RMSNorm statistics, RoPE angles, time frequencies, eager softmax stay float32)
             and ≤ 1e-4 everywhere

Configs: TINY plus two with odd widths and head counts (3 × 10 encoder heads on width 45, GQA 6:2
and 5:1, odd FFN widths, non-default thetas and eps), windows 5–16, and sequences long enough that
both sliding windows are exceeded (encoder frames 4N and tokens N beyond their windows).
The KV-cache / incremental path is not compared here (offline forward only).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pytest
import torch

from oracle.checkpoint import Checkpoint, open_checkpoint
from oracle.config import TINY, DecoderConfig, EncoderConfig, ModelConfig
from oracle.forward import forward
from oracle.precision import FLOAT32, FLOAT64, Precision
from oracle.synth import write_checkpoint
from oracle.taps import Taps

from hf_reference import build_hf_model, hf_intermediates, hf_state_dict, lift_to_float64

TOL_F64_LIFTED = 1e-9
TOL_F32 = 1e-4
STOCK_F64_MIN_DIFF = 1e-12

ODD_A = ModelConfig(
    encoder=EncoderConfig(dim=45, n_layers=3, n_heads=3, n_kv_heads=3, head_dim=10, hidden_dim=75,
                          rope_theta=1e6, norm_eps=1e-5, sliding_window=7),
    decoder=DecoderConfig(dim=54, n_layers=3, n_heads=6, n_kv_heads=2, head_dim=14, hidden_dim=97,
                          vocab_size=1283, rope_theta=1e6, norm_eps=1e-5, sliding_window=12, ada_dim=32,
                          tied_embeddings=True),
    audio=TINY.audio,
    downsample_factor=4,
)
ODD_B = ModelConfig(
    encoder=EncoderConfig(dim=38, n_layers=1, n_heads=5, n_kv_heads=5, head_dim=8, hidden_dim=61,
                          rope_theta=1e4, norm_eps=1e-6, sliding_window=5),
    decoder=DecoderConfig(dim=70, n_layers=4, n_heads=5, n_kv_heads=1, head_dim=10, hidden_dim=83,
                          vocab_size=1259, rope_theta=2.5e5, norm_eps=1e-6, sliding_window=11, ada_dim=32,
                          tied_embeddings=True),
    audio=TINY.audio,
    downsample_factor=4,
)


@dataclass(frozen=True)
class Case:
    name: str
    cfg: ModelConfig
    seed: int  # weights
    n_tokens: int  # N decoder positions; mel is [128, 8N], encoder frames 4N
    n_pad: int  # tokens after BOS that are [STREAMING_PAD] (32); the rest random text ids >= 1000
    delay_tokens: int


CASES = {
    "tiny": Case("tiny", TINY, seed=11, n_tokens=44, n_pad=38, delay_tokens=6),
    "odd_a": Case("odd_a", ODD_A, seed=12, n_tokens=43, n_pad=20, delay_tokens=3),
    "odd_b": Case("odd_b", ODD_B, seed=13, n_tokens=50, n_pad=5, delay_tokens=12),
}


def case_inputs(case: Case) -> tuple[np.ndarray, np.ndarray]:
    """Seeded mel [128, 8N] (float32 values, in the range a real log-mel takes) and ids [N]."""
    rng = np.random.default_rng(1000 + case.seed)
    mel = rng.uniform(-0.625, 1.6, size=(case.cfg.audio.num_mel_bins, 8 * case.n_tokens)).astype(np.float32)
    n_text = case.n_tokens - 1 - case.n_pad
    ids = np.concatenate([[1], np.full(case.n_pad, 32), rng.integers(1000, case.cfg.decoder.vocab_size, n_text)])
    return mel, ids.astype(np.int64)


def stage_names(cfg: ModelConfig) -> list[str]:
    """Every compared stage, in pipeline order."""
    return ["enc.conv1.out", "enc.conv.out", *(f"enc.L{i:02d}.out" for i in range(cfg.encoder.n_layers)),
            "enc.out", "adapter.out", "dec.t_cond", "dec.in", *(f"dec.L{i:02d}.out" for i in range(cfg.decoder.n_layers)),
            "dec.norm", "logits"]


@dataclass
class Stage:
    stage: str
    rel: float  # max|a − b| / max|b|
    index: tuple  # of the worst element
    got: float
    ref: float

    def line(self) -> str:
        return f"{self.stage}: rel {self.rel:.3e} at index {self.index} (oracle {self.got!r}, hf {self.ref!r})"


def compare_stage(stage: str, got: np.ndarray, ref: np.ndarray) -> Stage:
    """Structure, then NaN/Inf, then the number; structural faults fail at once, naming the stage."""
    assert got.shape == ref.shape, f"{stage}: shape oracle {got.shape} != hf {ref.shape}"
    assert got.dtype == ref.dtype, f"{stage}: dtype oracle {got.dtype} != hf {ref.dtype}"
    for what, arr in (("oracle", got), ("hf", ref)):
        bad = ~np.isfinite(arr)
        assert not bad.any(), f"{stage}: {what} has {bad.sum()} non-finite values, first at {np.argwhere(bad)[0]}"
    diff = np.abs(got.astype(np.float64) - ref.astype(np.float64))
    i = tuple(int(j) for j in np.unravel_index(np.argmax(diff), diff.shape))
    scale = float(np.abs(ref.astype(np.float64)).max())
    assert scale > 0, f"{stage}: the reference is all zeros"
    return Stage(stage, float(diff[i]) / scale, i, float(got[i]), float(ref[i]))


def compare_all(cfg: ModelConfig, oracle: dict, hf: dict) -> list[Stage]:
    return [compare_stage(s, oracle[s], hf[s]) for s in stage_names(cfg)]


def table(rows: list[Stage], tol: float) -> str:
    return "\n".join(f"  {r.stage:14s} {r.rel:.3e}  ({100 * r.rel / tol:6.2f}% of {tol:g})" for r in rows)


def assert_within(rows: list[Stage], tol: float, what: str) -> None:
    bad = [r for r in rows if not r.rel <= tol]
    if bad:
        raise AssertionError(f"{what}: first diverging stage {bad[0].line()}; allowed {tol:g}. "
                             f"All over tolerance: " + "; ".join(r.line() for r in bad))


@dataclass
class Run:
    case: Case
    ckpt: Checkpoint
    mel: np.ndarray
    ids: np.ndarray
    oracle64: dict
    oracle32: dict
    hf32: dict
    hf64_stock: dict
    hf64_lifted: dict


def oracle_taps(ckpt: Checkpoint, mel, ids, delay, p: Precision) -> dict:
    taps = Taps()
    logits = forward(ckpt, mel, ids, delay, p, tap=taps)
    assert np.array_equal(logits, taps["logits"])
    return taps.values


@pytest.fixture(scope="module", params=list(CASES))
def run(request, tmp_path_factory) -> Run:
    case = CASES[request.param]
    case.cfg.validate(case.name)
    ckpt = open_checkpoint(write_checkpoint(tmp_path_factory.mktemp(f"conf_{case.name}"), case.cfg, seed=case.seed))
    mel, ids = case_inputs(case)
    o64 = oracle_taps(ckpt, mel, ids, case.delay_tokens, FLOAT64)
    o32 = oracle_taps(ckpt, mel, ids, case.delay_tokens, FLOAT32)
    m32 = build_hf_model(ckpt, torch.float32)
    h32 = hf_intermediates(m32, mel, ids, case.delay_tokens)
    m64 = build_hf_model(ckpt, torch.float64)
    h64s = hf_intermediates(m64, mel, ids, case.delay_tokens)
    with lift_to_float64(m64):
        h64l = hf_intermediates(m64, mel, ids, case.delay_tokens)
    return Run(case, ckpt, mel, ids, o64, o32, h32, h64s, h64l)


def test_sequences_exceed_both_windows(run):
    cfg, n = run.case.cfg, run.case.n_tokens
    assert run.oracle64["enc.conv.out"].shape[0] == 4 * n > cfg.encoder.sliding_window
    assert n > cfg.decoder.sliding_window
    assert run.ids[0] == 1 and (run.ids[1:run.case.n_pad + 1] == 32).all() and (run.ids[run.case.n_pad + 1:] >= 1000).all()


def test_float64_matches_lifted_transformers(run):
    rows = compare_all(run.case.cfg, run.oracle64, run.hf64_lifted)
    print(f"\n[{run.case.name}] oracle float64 vs transformers float64 (lifted)\n" + table(rows, TOL_F64_LIFTED))
    assert_within(rows, TOL_F64_LIFTED, f"[{run.case.name}] oracle FLOAT64 vs lifted transformers float64")


def test_float32_matches_stock_transformers(run):
    rows = compare_all(run.case.cfg, run.oracle32, run.hf32)
    print(f"\n[{run.case.name}] oracle float32 vs stock transformers float32\n" + table(rows, TOL_F32))
    assert_within(rows, TOL_F32, f"[{run.case.name}] oracle FLOAT32 vs stock transformers float32")


def test_stock_double_is_not_pure_float64(run):
    """``model.double()`` alone keeps float32 islands: it differs measurably from the float64 oracle,
    yet agrees to float32 level. This is why the comparison uses ``lift_to_float64``."""
    rows = compare_all(run.case.cfg, run.oracle64, run.hf64_stock)
    print(f"\n[{run.case.name}] oracle float64 vs stock transformers model.double()\n" + table(rows, TOL_F32))
    logits = rows[-1]
    assert logits.stage == "logits" and logits.rel > STOCK_F64_MIN_DIFF, (
        f"[{run.case.name}] stock model.double() logits equal the float64 oracle to {logits.rel:.3e}: "
        f"expected > {STOCK_F64_MIN_DIFF:g} (has transformers become pure float64?)")
    assert_within(rows, TOL_F32, f"[{run.case.name}] oracle FLOAT64 vs stock transformers model.double()")


# -- the reference harness itself ---------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory) -> Checkpoint:
    return open_checkpoint(write_checkpoint(tmp_path_factory.mktemp("conf_harness"), TINY, seed=11))


def test_lift_is_undone_on_exit(tiny_ckpt):
    """After the ``with`` block transformers is stock again: same class attributes, float32-valued
    buffers, and a stock forward reproduces the earlier stock result bit for bit."""
    from transformers.models.voxtral_realtime import modeling_voxtral_realtime as hf_mod

    case = CASES["tiny"]
    mel, ids = case_inputs(case)
    model = build_hf_model(tiny_ckpt, torch.float64)
    before = (hf_mod.VoxtralRealtimeRMSNorm.forward, hf_mod.VoxtralRealtimeRotaryEmbedding.forward,
              hf_mod.eager_attention_forward)
    stock = hf_intermediates(model, mel, ids, case.delay_tokens)
    with lift_to_float64(model):
        assert hf_mod.VoxtralRealtimeRMSNorm.forward is not before[0]
        lifted = hf_intermediates(model, mel, ids, case.delay_tokens)
    after = (hf_mod.VoxtralRealtimeRMSNorm.forward, hf_mod.VoxtralRealtimeRotaryEmbedding.forward,
             hf_mod.eager_attention_forward)
    assert after == before
    for m in model.modules():
        if isinstance(m, (hf_mod.VoxtralRealtimeRotaryEmbedding, hf_mod.VoxtralRealtimeTimeEmbedding)):
            assert torch.equal(m.inv_freq, m.inv_freq.float().double()), "inv_freq not restored to float32 values"
    again = hf_intermediates(model, mel, ids, case.delay_tokens)
    for name in stock:
        assert np.array_equal(stock[name], again[name]), f"{name}: stock forward changed after the lift"
    assert not np.array_equal(stock["logits"], lifted["logits"])


def test_strict_load_rejects_an_unmapped_name(tiny_ckpt):
    """The HF model is loaded strictly: a name missing from the table, or one the module tree lacks, fails."""
    model = build_hf_model(tiny_ckpt, torch.float32)
    state = hf_state_dict(tiny_ckpt, torch.float32)
    missing = dict(state)
    del missing["model.audio_tower.layers.1.self_attn.q_proj.bias"]
    with pytest.raises(RuntimeError, match=r"Missing key\(s\).*layers\.1\.self_attn\.q_proj\.bias"):
        model.load_state_dict(missing, strict=True)
    extra = dict(state)
    extra["model.audio_tower.layers.0.self_attn.k_proj.bias"] = torch.zeros(64)  # the k-bias trap (MODEL.md §11.5)
    with pytest.raises(RuntimeError, match=r"Unexpected key\(s\).*k_proj\.bias"):
        model.load_state_dict(extra, strict=True)


def test_without_the_qk_permutation_transformers_disagrees(tiny_ckpt):
    """Negative control: HF rotate-half on un-permuted (interleaved) q/k rows is the porting mistake of
    MODEL.md §11.4. Only encoder frame 0 (angle 0) can agree; the comparison must see the rest."""
    case = CASES["tiny"]
    mel, ids = case_inputs(case)
    wrong = hf_intermediates(build_hf_model(tiny_ckpt, torch.float32, rope_permute=False), mel, ids, case.delay_tokens)
    oracle = oracle_taps(tiny_ckpt, mel, ids, case.delay_tokens, FLOAT32)
    assert compare_stage("enc.conv.out", oracle["enc.conv.out"], wrong["enc.conv.out"]).rel <= TOL_F32
    layer0 = compare_stage("enc.L00.out", oracle["enc.L00.out"], wrong["enc.L00.out"])
    assert layer0.rel > 1e-2, layer0.line()
    first = compare_stage("enc.L00.out[0]", oracle["enc.L00.out"][:1], wrong["enc.L00.out"][:1])
    assert first.rel <= TOL_F32, first.line()
    assert compare_stage("logits", oracle["logits"], wrong["logits"]).rel > 1e-2


def test_window_off_by_one_is_visible(tiny_ckpt):
    """Negative control for the sliding-window boundary (MODEL.md §11.2): an HF model whose windows admit
    one more key (W+1) disagrees with the oracle, so the comparison does exercise the window edge."""
    case = CASES["tiny"]
    mel, ids = case_inputs(case)
    cfg = TINY
    wider = replace(cfg, encoder=replace(cfg.encoder, sliding_window=cfg.encoder.sliding_window + 1),
                    decoder=replace(cfg.decoder, sliding_window=cfg.decoder.sliding_window + 1))
    model = build_hf_model(tiny_ckpt, torch.float32)
    model.model.audio_tower.config.sliding_window = wider.encoder.sliding_window
    model.model.language_model.config.sliding_window = wider.decoder.sliding_window
    got = hf_intermediates(model, mel, ids, case.delay_tokens)
    oracle = oracle_taps(tiny_ckpt, mel, ids, case.delay_tokens, FLOAT32)
    w = cfg.encoder.sliding_window
    early = compare_stage("enc.L00.out[:W]", oracle["enc.L00.out"][:w], got["enc.L00.out"][:w])
    assert early.rel <= TOL_F32, early.line()  # frames before the window fills cannot tell
    assert compare_stage("enc.L00.out", oracle["enc.L00.out"], got["enc.L00.out"]).rel > 1e-3
