"""The float64 greedy fixpoint (oracle.fixpoint) gives exactly the tokens of float64 step-by-step greedy.

Checkpoints: the built-in tiny one, the two odd configs of test_conformance, and ``near_tie``: tiny with
two embedding rows a < b made to tie to 1e-9 at the position where a is first generated. float32 cannot
see the difference (the rows are equal in float32, so its argmax takes a), float64 must take b.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from oracle import builtin
from oracle.audio import load_audio
from oracle.checkpoint import read_safetensors_header, read_tensor, write_safetensors
from oracle.fixpoint import GUARD, first_mismatch, greedy_fixpoint
from oracle.golden import Context, e2e_fixpoint, offline_audio
from oracle.pipeline import load_setup, offline_mel
from oracle.precision import FLOAT32, FLOAT64
from oracle.streaming import generate_offline
from oracle.synth import write_checkpoint

from test_conformance import ODD_A, ODD_B

EMBEDDING = "mm_streams_embeddings.embedding_module.tok_embeddings.weight"
TIE = 1e-9


def clip(n: int | None = None) -> np.ndarray:
    audio = load_audio(builtin.speech_clip())
    return offline_audio(audio if n is None else audio[:n])


def stepwise(setup, audio) -> list[int]:
    """Today's definition of the golden tokens: float64 step-by-step greedy on the stored audio."""
    a = audio.astype(np.float32).astype(np.float64)
    return generate_offline(Context(setup, audio, 0).model(FLOAT64), offline_mel(a, setup.protocol, FLOAT64, quantize=False),
                            setup.protocol)


def make_near_tie(directory: Path) -> dict:
    """Copy the tiny checkpoint with its embedding in F64 and row b = row a + TIE u, where h·u = 1 for the
    final-normed hidden state h of the position that first generates a. There logit_b - logit_a = TIE;
    u lives on components where |row a| > 0.1, so b rounds to a in float32."""
    src = Path(builtin.tiny_checkpoint())
    setup = load_setup(src)
    audio = clip()
    fx = e2e_fixpoint(Context(setup, audio, 0))
    tokens, n_prompt = fx["tokens"], len(setup.protocol.prompt)
    k = next(k for k, t in enumerate(tokens) if t >= 1000)
    a = tokens[k]
    b = next(t for t in range(a + 1, setup.ckpt.config.decoder.vocab_size) if t not in tokens)
    h = fx["outputs"]["dec.norm"][n_prompt - 1 + k]
    header = read_safetensors_header(src / "consolidated.safetensors")
    arrays = {name: np.array(read_tensor(e)) for name, e in header.items()}
    table = arrays[EMBEDDING].astype(np.float64)
    big = np.abs(table[a]) > 0.1
    u = np.where(big, h, 0.0) / np.sum(h[big] ** 2)
    table[b] = table[a] + TIE * u
    assert np.array_equal(table[b].astype(np.float32), table[a].astype(np.float32))
    arrays[EMBEDDING] = table
    directory.mkdir(parents=True, exist_ok=True)
    write_safetensors(directory / "consolidated.safetensors", [(n, v.dtype, v.shape, v) for n, v in sorted(arrays.items())])
    for f in ("params.json", "tekken.json"):
        (directory / f).write_bytes((src / f).read_bytes())
    return {"k": k, "a": a, "b": b}


@pytest.fixture(scope="module")
def near_tie(tmp_path_factory):
    d = tmp_path_factory.mktemp("near_tie")
    info = make_near_tie(d)
    return load_setup(d), info


@pytest.fixture(scope="module", params=["tiny", "odd_a", "odd_b"])
def model_setup(request, tmp_path_factory):
    if request.param == "tiny":
        return load_setup(builtin.tiny_checkpoint())
    cfg, seed = {"odd_a": (ODD_A, 12), "odd_b": (ODD_B, 13)}[request.param]
    return load_setup(write_checkpoint(tmp_path_factory.mktemp(request.param), cfg, seed=seed))


def test_fixpoint_equals_stepwise_greedy(model_setup):
    audio = clip(48000)
    fx = e2e_fixpoint(Context(model_setup, audio, 0))
    assert fx["tokens"] == stepwise(model_setup, audio)
    assert len(set(fx["tokens"])) >= 3, fx["tokens"]  # not a degenerate fixture


def test_a_wrong_guess_is_repaired(model_setup, monkeypatch):
    """Whatever the cheap run proposes, the float64 check repairs it: here its first guess has two
    tokens changed (as if float32 had flipped two near-ties)."""
    import oracle.golden_fixpoints as golden  # where the fixpoints guess with greedy_decode

    setup = model_setup
    audio = clip(48000)
    want = stepwise(setup, audio)
    real, calls = golden.greedy_decode, []

    def bad_guess(model, a, proto, forced=(), **kw):
        out = real(model, a, proto, forced=forced, **kw)
        if not calls:
            for k in (2, 7):
                out[k] = proto.pad if out[k] != proto.pad else proto.pad + 1
        calls.append(len(forced))
        return out

    monkeypatch.setattr(golden, "greedy_decode", bad_guess)
    fx = e2e_fixpoint(Context(setup, audio, 0))
    assert fx["tokens"] == want
    assert fx["fixpoint"].repaired == [2] and fx["fixpoint"].rounds == 2 and calls == [0, 3]


def test_near_tie_needs_float64(near_tie):
    setup, info = near_tie
    audio = clip()
    ctx = Context(setup, audio, 0)
    fx = e2e_fixpoint(ctx)
    want = stepwise(setup, audio)
    assert fx["tokens"] == want
    k, a, b = info["k"], info["a"], info["b"]
    assert want[k] == b  # float64 sees the 1e-9 lead of b ...
    a32 = audio.astype(np.float32).astype(np.float64)
    f32 = generate_offline(ctx.model(FLOAT32), offline_mel(a32, setup.protocol, FLOAT32, quantize=False), setup.protocol)
    assert f32[:k] == want[:k] and f32[k] == a  # ... float32 cannot: its rows a and b are equal
    assert k in fx["fixpoint"].repaired
    # the golden reports how close it was (the e2e margins aux)
    n_prompt = len(setup.protocol.prompt)
    row = fx["outputs"]["logits"][n_prompt - 1 + k]
    assert abs((row[b] - row[a]) - TIE) < 1e-12 and 0 < np.sort(row)[-1] - np.sort(row)[-2] <= TIE * 1.001


def test_exact_ties_fall_back_to_stepwise():
    """Margins under GUARD: the step-by-step run decides (two schedules may round a tie differently)."""
    logits = np.zeros((4, 5))
    logits[1, 3] = logits[1, 2] = 1.0  # an exact tie at the first generated position (P = 2)
    logits[2, 2] = 1.0
    logits[3, 0] = 1.0
    calls = []
    fx = greedy_fixpoint(lambda prefix: list(prefix) + [2, 2][len(prefix):], lambda t: logits,
                         lambda: calls.append(1) or [2, 2], n_prompt=2, max_new=2, eos=4)
    assert calls and fx.tokens == [2, 2] and fx.near_ties == [0] and fx.logits is None
    assert GUARD < 1e-9 < 1e-7  # a 1e-9 tie is resolved by float64, not by the fallback


def test_first_mismatch_stopping_rules():
    eos = 4
    logits = np.zeros((5, 6))
    for row, best in enumerate([0, 1, 2, 4, 5]):
        logits[row, best] = 1.0
    # P = 2: tokens predicted at rows 1.. -> [1, 2, 4(EOS)]
    assert first_mismatch(logits, [1, 2, 4], 2, 4, eos) is None
    assert first_mismatch(logits, [1, 3, 4], 2, 4, eos) == (1, 2)
    assert first_mismatch(logits, [1, 2], 2, 4, eos) == (2, 4)  # too short: greedy goes on
    assert first_mismatch(logits, [1, 2, 4, 5], 2, 4, eos) == (3, -1)  # greedy stops after EOS
    assert first_mismatch(logits[:3], [1], 2, 1, eos) is None  # max_new reached
    assert first_mismatch(logits[:3], [1, 2], 2, 1, eos) == (1, -1)
