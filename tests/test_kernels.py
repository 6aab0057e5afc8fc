"""Every fast kernel (oracle/kernels.py) answers to its plain layer (oracle/layers.py).

The plain bodies are the reference and run here on every test run; the kernels must agree with them:
- float64: within 1e-13 of the plain result, relative to its largest element;
- float32: both paths within the rounding-error bound of the dot products involved, against the exact
  result (the plain body in float64 on the same float32 inputs). For a K-term dot product that bound
  is γ_K Σ|a||b| (γ_K = Ku / (1 − Ku), u = 2⁻²⁴): any summation order meets it, a wrong element
  does not (``test_the_bounds_reject_a_porting_mistake``). Softmax and SwiGLU carry it through their
  element-wise steps to first order;
- element-wise kernels (silu, RoPE): bit for bit, in both dtypes;
- the tiny checkpoint's offline forward: float64 logits within 1e-12 relative.
Every test runs the kernels with their thread splits on (two workers, no minimum size), as at full size.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from oracle import builtin, kernels, layers
from oracle.audio import load_audio
from oracle.forward import forward
from oracle.layers import rope_angles, window_mask
from oracle.pipeline import load_setup, offline_mel
from oracle.precision import FLOAT32, FLOAT64
from oracle_tools.cli import KERNELS_ENV, main

U32 = 2.0 ** -24  # unit roundoff of float32
EXP_ULPS = 4  # float32 exp: numpy's accuracy tests allow 3 ulp (umath-validation-set-exp.csv); one ulp ≤ 2u relative
HOT = ("linear", "silu", "swiglu", "apply_rope", "attention", "attention_probs")


@pytest.fixture(autouse=True)
def threads(split_everything):
    """Kernels split every array over two threads, as they do at full size (conftest.py)."""
    yield


def plain(fn, *args):
    """``fn`` (a function of oracle.layers) with the plain bodies: the reference."""
    before = layers.KERNELS
    layers.KERNELS = False
    try:
        return fn(*args)
    finally:
        layers.KERNELS = before


def gamma(k: int) -> float:
    return k * U32 / (1 - k * U32)


def wide(*arrays):
    return [None if a is None else a.astype(np.float64) for a in arrays]


def assert_float64_close(fast, ref):
    assert fast.dtype == ref.dtype == np.float64 and fast.shape == ref.shape
    assert np.abs(fast - ref).max() <= 1e-13 * np.abs(ref).max(), np.abs(fast - ref).max() / np.abs(ref).max()


def assert_within(got, exact, bound, what):
    err = np.abs(got.astype(np.float64) - exact)
    assert (err <= bound).all(), f"{what}: {(err > bound).sum()} elements outside the bound, worst {(err / bound).max():.3g}x"


# -- the bounds --------------------------------------------------------------------------------------


def linear_bound(x, w, b=None):
    """|fl(x Wᵀ + b) − (x Wᵀ + b)| ≤ γ_{K+1} (|x| |W|ᵀ + |b|), float32 inputs, any summation order."""
    x, w, b = wide(x, w, b)
    mag = np.abs(x) @ np.abs(w).T + (0 if b is None else np.abs(b))
    return gamma(x.shape[-1] + 1) * mag


def softmax_rel_bound(q, k, mask):
    """Relative error bound of each float32 attention weight p_hij, and the exact weights. [H, N, S] each.

    score s = q·k/√Dh: |δs| ≤ γ_{Dh+2} |q|·|k|/√Dh. After the row max m: |δ(s − m)| ≤ |δs| + max|δs| +
    u|s − m|. exp: relative error δ(s − m) + 4 ulp. Normalising by Z = Σe: + the weighted mean of those
    + γ_S + u. Masked keys weigh exactly 0 on both paths.
    """
    n, h, dh = q.shape
    s, kh, _ = k.shape
    q64, k64 = wide(q, k)
    exact = plain(layers.attention_probs, q64, k64, mask)  # [H, N, S]
    g = h // kh
    mag = np.einsum("nkgd,skd->kgns", np.abs(q64).reshape(n, kh, g, dh), np.abs(k64)).reshape(h, n, s) / np.sqrt(dh)
    ds = np.where(mask, gamma(dh + 2) * mag, 0.0)
    scores = np.einsum("nkgd,skd->kgns", q64.reshape(n, kh, g, dh), k64).reshape(h, n, s) / np.sqrt(dh)
    shifted = np.where(mask, scores - np.where(mask, scores, -np.inf).max(-1, keepdims=True), 0.0)
    rel_e = ds + ds.max(-1, keepdims=True) + U32 * np.abs(shifted) + EXP_ULPS * 2 * U32
    rel_p = rel_e + (exact * rel_e).sum(-1, keepdims=True) + gamma(s) + U32
    return np.where(mask, rel_p, 0.0), exact


TINY32 = float(np.finfo(np.float32).tiny)  # below it float32 loses relative precision (exp underflows)


def attention_bound(q, k, v, mask):
    """|δout| ≤ Σ_j p_j |v_j| (rel_p_j + γ_S): the weights' error plus the weighted sum's. [N, H, Dh]."""
    n, h, dh = q.shape
    s, kh, _ = k.shape
    rel_p, p = softmax_rel_bound(q, k, mask)
    pv = lambda w, vv: np.einsum("kgns,skd->nkgd", w.reshape(kh, h // kh, n, s), vv).reshape(n, h, dh)  # noqa: E731
    av = np.abs(v.astype(np.float64))
    return pv(p * rel_p + TINY32, av) + gamma(s) * pv(p, av)


def swiglu_bound(x, w1, w3, w2, b2):
    """gate g = x W1ᵀ and up = x W3ᵀ within γ_D; SiLU's slope lies in [−0.1, 1.1] and its evaluation
    adds 4 ulp of exp plus two roundings; the product one more; then the W2 dot product over F. [N, D]."""
    x, w1, w3, w2, b2 = wide(x, w1, w3, w2, b2)
    d = x.shape[-1]
    g, up = x @ w1.T, x @ w3.T
    eg, eu = gamma(d) * (np.abs(x) @ np.abs(w1).T), gamma(d) * (np.abs(x) @ np.abs(w3).T)
    sg = g / (1 + np.exp(-g))
    hidden = sg * up
    dh = 1.1 * eg * np.abs(up) + np.abs(sg) * eu + (EXP_ULPS * 2 + 3) * U32 * np.abs(hidden)
    return dh @ np.abs(w2).T + gamma(w2.shape[1] + 1) * (np.abs(hidden) @ np.abs(w2).T + (0 if b2 is None else np.abs(b2)))


# -- inputs --------------------------------------------------------------------------------------------


def attention_inputs(rng, dtype, n=300, s=None, h=6, kh=2, dh=16, window=100, random_mask=False):
    """N > QUERY_BLOCK queries so the kernel works in blocks and key bands; S > N puts a cache before them
    (streaming); a random mask makes the bands non-contiguous (fancy-indexed keys)."""
    s = s or n
    q, k, v = (rng.standard_normal(shape).astype(dtype) for shape in ((n, h, dh), (s, kh, dh), (s, kh, dh)))
    if random_mask:
        mask = rng.random((n, s)) < 0.3
        mask[np.arange(n), rng.integers(0, s, n)] = True  # every query sees a key
    else:
        mask = window_mask(np.arange(s - n, s), np.arange(s), window)
    return q, k, v, mask


ATTENTION_SHAPES = {
    "causal_window": {},
    "cache_before_queries": dict(n=150, s=420, window=250),
    "one_query": dict(n=1, s=40, window=64),
    "random_mask": dict(n=200, s=230, random_mask=True),
    "one_kv_head": dict(h=4, kh=1),
}
LINEAR_SHAPES = [(1, 96), (5, 96), (174, 2048), (38, 3072), (511, 2048), (600, 2048), (174, 1280)]


# -- float64: within 1e-13 ---------------------------------------------------------------------------


@pytest.mark.parametrize("m,k", LINEAR_SHAPES)
def test_linear_float64(m, k):
    rng = np.random.default_rng(m + k)
    x, w, b = rng.standard_normal((m, k)), rng.standard_normal((96, k)), rng.standard_normal(96)
    for args in ((x, w), (x, w, b)):
        assert_float64_close(kernels.linear(*args), plain(layers.linear, *args))


@pytest.mark.parametrize("case", ATTENTION_SHAPES)
def test_attention_float64(case):
    q, k, v, mask = attention_inputs(np.random.default_rng(len(case)), np.float64, **ATTENTION_SHAPES[case])
    assert_float64_close(kernels.attention(q, k, v, mask), plain(layers.attention, q, k, v, mask))
    assert_float64_close(kernels.attention_probs(q, k, mask), plain(layers.attention_probs, q, k, mask))


@pytest.mark.parametrize("d,f,bias", [(64, 160, True), (2048, 96, False)])
def test_swiglu_float64(d, f, bias):
    rng = np.random.default_rng(d)
    x, w1, w3, w2 = (rng.standard_normal(s) for s in ((40, d), (f, d), (f, d), (d, f)))
    b2 = rng.standard_normal(d) if bias else None
    assert_float64_close(kernels.swiglu(x, w1, w3, w2, b2), plain(layers.swiglu, x, w1, w3, w2, b2))


# -- float32: within the rounding bound --------------------------------------------------------------


@pytest.mark.parametrize("m,k", LINEAR_SHAPES)
def test_linear_float32(m, k):
    """Including the shapes where the kernel computes W xᵀ (1 < N < FEW_ROWS, K ≥ WIDE_INNER) and the
    LM head's column block written through ``out``."""
    rng = np.random.default_rng(m * 7 + k)
    x, w, b = (rng.standard_normal(s).astype(np.float32) for s in ((m, k), (96, k), (96,)))
    exact = x.astype(np.float64) @ w.astype(np.float64).T
    for got in (kernels.linear(x, w), plain(layers.linear, x, w)):
        assert got.dtype == np.float32 and got.shape == (m, 96) and got.flags.c_contiguous
        assert_within(got, exact, linear_bound(x, w), "x Wᵀ")
    for got in (kernels.linear(x, w, b), plain(layers.linear, x, w, b)):
        assert_within(got, exact + b, linear_bound(x, w, b), "x Wᵀ + b")
    for fn in (kernels.linear, lambda *a, **kw: plain(lambda: layers.linear(*a, **kw))):
        out = np.zeros((m, 200), np.float32)
        fn(x, w, out=out[:, 50:146])
        assert not out[:, :50].any() and not out[:, 146:].any()
        assert_within(out[:, 50:146], exact, linear_bound(x, w), "out=")


@pytest.mark.parametrize("case", ATTENTION_SHAPES)
def test_attention_float32(case):
    q, k, v, mask = attention_inputs(np.random.default_rng(len(case)), np.float32, **ATTENTION_SHAPES[case])
    exact = plain(layers.attention, *wide(q, k, v), mask)
    bound = attention_bound(q, k, v, mask)
    rel_p, p = softmax_rel_bound(q, k, mask)
    for path, att, probs in (("fast", kernels.attention, kernels.attention_probs),
                             ("plain", lambda *a: plain(layers.attention, *a), lambda *a: plain(layers.attention_probs, *a))):
        got = att(q, k, v, mask)
        assert got.dtype == np.float32
        assert_within(got, exact, bound, f"{path} attention")
        weights = probs(q, k, mask)
        assert weights.dtype == np.float32 and not weights[:, ~mask].any()  # masked keys weigh exactly 0
        assert_within(weights, p, p * rel_p + np.where(mask, TINY32, 0.0), f"{path} attention weights")


@pytest.mark.parametrize("d,f,bias", [(64, 160, True), (2048, 96, False)])
def test_swiglu_float32(d, f, bias):
    """(2048, ...): the gate and up projections take the kernel's W xᵀ orientation."""
    rng = np.random.default_rng(d + 1)
    x, w1, w3, w2 = (rng.standard_normal(s).astype(np.float32) for s in ((40, d), (f, d), (f, d), (d, f)))
    w1, w3 = w1 / np.float32(np.sqrt(d)), w3 / np.float32(np.sqrt(d))  # gate values O(1), as after a norm
    b2 = rng.standard_normal(d).astype(np.float32) if bias else None
    exact = plain(layers.swiglu, *wide(x, w1, w3, w2, b2))
    bound = swiglu_bound(x, w1, w3, w2, b2)
    for path, got in (("fast", kernels.swiglu(x, w1, w3, w2, b2)), ("plain", plain(layers.swiglu, x, w1, w3, w2, b2))):
        assert got.dtype == np.float32
        assert_within(got, exact, bound, f"{path} swiglu")


# -- element-wise: bit for bit -------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_elementwise_kernels_are_bit_identical(dtype):
    rng = np.random.default_rng(5)
    z = (rng.standard_normal((300, 200)) * 8).astype(dtype)
    assert np.array_equal(kernels.silu(z), plain(layers.silu, z))
    x = rng.standard_normal((300, 4, 32)).astype(dtype)
    cos, sin = rope_angles(np.arange(1000, 1300), 32, 1e6, dtype)
    assert np.array_equal(kernels.apply_rope(x, cos, sin), plain(layers.apply_rope, x, cos, sin))


def test_the_bounds_reject_a_porting_mistake():
    """The float32 bounds are tight enough to matter: a window one key too wide (MODEL.md §11.2), the
    gate and up projections swapped, or one weight row off by 1e-3 all land outside them."""
    q, k, v, mask = attention_inputs(np.random.default_rng(7), np.float32)
    wrong = window_mask(np.arange(300), np.arange(300), 101)
    exact = plain(layers.attention, *wide(q, k, v), mask)
    err = np.abs(kernels.attention(q, k, v, wrong) - exact)
    assert (err > attention_bound(q, k, v, mask)).any()

    rng = np.random.default_rng(8)
    x, w1, w3, w2 = (rng.standard_normal(s).astype(np.float32) for s in ((40, 64), (160, 64), (160, 64), (64, 160)))
    b2 = np.zeros(64, np.float32)
    exact = plain(layers.swiglu, *wide(x, w1, w3, w2, b2))
    assert (np.abs(kernels.swiglu(x, w3, w1, w2, b2) - exact) > swiglu_bound(x, w1, w3, w2, b2)).any()

    w = w1.copy()
    w[3] *= np.float32(1 + 1e-3)
    exact = x.astype(np.float64) @ w1.astype(np.float64).T
    assert (np.abs(kernels.linear(x, w) - exact) > linear_bound(x, w1)).any()
    assert (np.abs(kernels.linear(x, w1) - exact) <= linear_bound(x, w1)).all()  # and the right one inside


# -- the dispatch and the switch ---------------------------------------------------------------------


LAYER_ARGS = {
    "linear": lambda r: (r.standard_normal((3, 4)), r.standard_normal((5, 4))),
    "silu": lambda r: (r.standard_normal(7),),
    "swiglu": lambda r: (r.standard_normal((3, 4)), r.standard_normal((6, 4)), r.standard_normal((6, 4)),
                         r.standard_normal((4, 6))),
    "apply_rope": lambda r: (r.standard_normal((3, 2, 4)), *rope_angles(np.arange(3), 4, 1e4, np.float64)),
    "attention": lambda r: (*attention_inputs(r, np.float64, n=3, h=2, kh=1, dh=4, window=2)[:3],
                            window_mask(np.arange(3), np.arange(3), 2)),
    "attention_probs": lambda r: (*attention_inputs(r, np.float64, n=3, h=2, kh=1, dh=4, window=2)[:2],
                                  window_mask(np.arange(3), np.arange(3), 2)),
}


@pytest.mark.parametrize("name", HOT)
def test_each_hot_layer_dispatches_to_its_kernel_by_default(name, monkeypatch):
    """The kernel runs while KERNELS is on (the default), the plain body when it is off; same signature."""
    assert layers.KERNELS is True and layers.path() == "fast"
    args = LAYER_ARGS[name](np.random.default_rng(0))
    monkeypatch.setattr(kernels, name, lambda *a: "kernel")
    assert getattr(layers, name)(*args) == "kernel"
    assert isinstance(plain(getattr(layers, name), *args), np.ndarray)


def test_tiny_forward_logits_agree_between_the_paths():
    """The whole offline forward on the tiny checkpoint, float64: plain and fast logits within 1e-12.
    (float32: within the tolerance the goldens give a float32 port; the same greedy tokens.)"""
    setup = load_setup(builtin.tiny_checkpoint())
    for p in (FLOAT64, FLOAT32):
        mel = offline_mel(load_audio(builtin.speech_clip()), setup.protocol, p, quantize=False)
        n = mel.shape[1] // 8
        ids = np.concatenate([setup.protocol.prompt, np.arange(n - len(setup.protocol.prompt)) % 700 + 1000])
        fast = forward(setup.ckpt, mel, ids, setup.protocol.delay_tokens, p)
        ref = plain(forward, setup.ckpt, mel, ids, setup.protocol.delay_tokens, p)
        if p is FLOAT64:
            assert_float64_close(fast, ref)
            assert np.abs(fast - ref).max() <= 1e-12 * np.abs(ref).max()
        else:
            assert np.abs(fast - ref).max() <= 1e-5 * np.abs(ref).max()
            assert np.array_equal(fast.argmax(-1), ref.argmax(-1))


def test_plain_path_regenerates_the_committed_end_to_end_goldens(tmp_path):
    """``voxtral-oracle --plain-layers golden``: the offline and streaming end-to-end cases, computed in
    float64 by the plain bodies, land within one float32 ulp (stored dtype) of the committed goldens,
    which the fast kernels made; the tokens are the same."""
    committed = Path(__file__).parents[1] / "golden" / "tiny_goldens"
    out = tmp_path / "plain"
    assert main(["--plain-layers", "golden", "--out", str(out), "--components", "e2e,stream", "--quiet"]) == 0
    dirs = lambda d: {c["name"]: d / c["dir"] for c in json.loads((d / "index.json").read_text())["cases"]}  # noqa: E731
    new, old = dirs(out), dirs(committed)
    for case in ("e2e", "stream"):
        assert json.loads((new[case] / "manifest.json").read_text())["provenance"]["layers"] == "plain"
        got, ref = load_file(new[case] / "tensors.safetensors"), load_file(old[case] / "tensors.safetensors")
        assert got.keys() == ref.keys()
        for name, r in ref.items():
            g = got[name]
            assert g.dtype == r.dtype and g.shape == r.shape, name
            if np.issubdtype(r.dtype, np.floating):
                scale = np.abs(r).max()
                assert (np.abs(g - r) <= np.spacing(np.abs(r)) + 1e-12 * scale).all(), name
            else:
                assert np.array_equal(g, r), name


def test_cli_switch_and_provenance(tmp_path, monkeypatch, capsys):
    """--plain-layers or VOXTRAL_ORACLE_KERNELS=plain: the goldens say "plain"; the default says "fast";
    the switch holds for that command only; a bad value is one line and exit 2."""
    def provenance(out):
        return json.loads((out / "index.json").read_text())["provenance"]["layers"]

    monkeypatch.delenv(KERNELS_ENV, raising=False)
    assert main(["golden", "--out", str(tmp_path / "a"), "--components", "swiglu", "--quiet"]) == 0
    assert provenance(tmp_path / "a") == "fast" and layers.KERNELS
    assert main(["--plain-layers", "golden", "--out", str(tmp_path / "b"), "--components", "swiglu", "--quiet"]) == 0
    assert provenance(tmp_path / "b") == "plain" and layers.KERNELS
    monkeypatch.setenv(KERNELS_ENV, "plain")
    assert main(["golden", "--out", str(tmp_path / "c"), "--components", "swiglu", "--quiet"]) == 0
    assert provenance(tmp_path / "c") == "plain" and layers.KERNELS
    monkeypatch.setenv(KERNELS_ENV, "turbo")
    capsys.readouterr()
    assert main(["golden", "--out", str(tmp_path / "d"), "--components", "swiglu", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "VOXTRAL_ORACLE_KERNELS='turbo'" in err and "plain" in err
    assert not (tmp_path / "d").exists() and layers.KERNELS

