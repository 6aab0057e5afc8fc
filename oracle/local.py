"""Stage-local error: how much error each stage of a port *adds*, apart from what it inherits.

Shape legend:
    M mel bins   T mel frames   S encoder frames   De encoder width   N decoder positions   D decoder width
    V vocabulary

compare's numbers at a tap are inherited: max |port − golden| there holds the error of every stage
before it. A port's e2e dump has a tap at every stage boundary, so each stage can also be judged alone:
replay the oracle's stage on the port's *own* input tap and compare with the port's output tap.

    inherited(stage) = port_out − golden_out                (everything up to here)
    local(stage)     = port_out − stage*(port_in)           (this stage only)

``stage*`` is the stage computed exactly (float64 arithmetic) *at the port dtype's rounding points*
(``EXACT``): for a float32 port there are none, so it is the float64 stage; for a bf16 port the
tensors the BF16 reference stores are rounded to BF16, for a float16 port the weights and matmul
operands are float16 (``oracle.precision``). What is left is what the port adds beyond rounding where
its dtype says it rounds: float32 accumulation for an honest port, a wrong formula for a mistaken one.
A tanh GELU adds 4.7e-4 at most, far below a BF16 value's own rounding (2^-8 relative), so no
element-wise measure sees it in a bf16 port; but an honest port agrees with the replay at bf16's
rounding points but for a few rounding flips, while the tanh GELU's rounded values move by its error
on average, which ``form_test`` finds (alpha = 1; honest ports: 0).

The measure (``LOCAL_METRIC``): a float32 stage rounds nowhere but in its arithmetic, so the local error
is max |local|. A bf16 or float16 stage rounds tensors (BF16 stores; float16 matmul operands), and
float32-vs-float64 arithmetic legitimately flips the last bit of a few of them; one flip inside a
stage moves an output by about one unit of that dtype, so max |local| says nothing about the rest.
There the measure is the *fraction of elements further from the replay than one spacing of the port
dtype* (s·(|replay| + rms(replay)), s = 2^-7 for bf16 and 2^-10 for float16):
an honest port has a few such elements, a wrong formula has them wherever it is wrong
(``beyond_fraction``).

Local tolerances are measured when the golden is written (``measure_local``) exactly as compare uses
them: the oracle's own port-precision stage on the golden input, against the exact replay on the same
input, times a safety factor, with a floor. They are stored per output as ``local`` in the manifest
(golden/SPEC.md). Stages whose only input is a golden input (``mel`` from ``audio``, ``dec.t_cond``)
have local = inherited and get no entry.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .adapter import adapter
from .checkpoint import Checkpoint
from .decoder import decoder_input, decoder_layer, final_norm, layer_ada_scale, lm_head
from .encoder import encoder_layer, encoder_norm, stem_conv1, stem_conv2
from .layers import gelu_tanh, silu
from .precision import BFLOAT16, FLOAT16, FLOAT32, FLOAT64, Precision

# Exact arithmetic at each port dtype's rounding points (see the module docstring).
BF16_EXACT = Precision("bf16-exact", np.dtype(np.float64), bf16_storage=True, angles="float32")
FLOAT16_EXACT = Precision("float16-exact", np.dtype(np.float64), bf16_storage=False, f16_operands=True,
                          angles="float32")
EXACT = {"float32": FLOAT64, "bf16": BF16_EXACT, "float16": FLOAT16_EXACT}
PORT = {"float32": FLOAT32, "bf16": BFLOAT16, "float16": FLOAT16}
LOCAL_METRIC = {"float32": "max_abs", "float16": "beyond_fraction", "bf16": "beyond_fraction"}
LOCAL_SAFETY = {"float32": 10.0, "float16": 10.0, "bf16": 10.0}
# One unit in the last place relative to the value, at its widest (values just above a power of 2).
SPACING = {"bf16": 2.0 ** -7, "float16": 2.0 ** -10}
FRACTION_FLOOR = 1e-4  # a bf16/float16 stage may have 0.01% of its elements beyond, whatever was measured


@dataclass(frozen=True)
class Stage:
    """One e2e stage: its output tap, the port taps it reads, the golden inputs it reads, and the stage
    itself, ``run(inputs, p) -> output`` with inputs already in ``p``'s dtype (``p.array``)."""

    name: str
    reads: tuple[str, ...]
    given: tuple[str, ...]
    run: Callable[..., np.ndarray]  # run(inputs, p, act=None): ``act`` swaps the stage's GELU
    forms: tuple[str, ...] = ()  # the known wrong forms (``FORMS``) its local error is tested against


def e2e_stages(ckpt: Checkpoint) -> list[Stage]:
    """The stages of the offline e2e case, in pipeline order, that read at least one port tap (the delay
    enters through the port's own ``dec.t_cond`` tap, which the decoder layers read)."""
    cfg = ckpt.config
    n_enc, n_dec = cfg.encoder.n_layers, cfg.decoder.n_layers

    def conv1(x, p, act=None):
        mel = x["mel"]  # [M, T]
        return stem_conv1(mel, ckpt.conv(p), p, np.zeros((mel.shape[0], 2), p.dtype), act=act).T  # [T, De]

    def conv2(x, p, act=None):
        h1 = np.ascontiguousarray(x["enc.conv1.out"].T)  # [De, T]
        return np.ascontiguousarray(stem_conv2(h1, ckpt.conv(p), p, np.zeros((h1.shape[0], 1), p.dtype), act=act).T)

    def enc_layer(i, src):
        def run(x, p, act=None):
            h = x[src]
            return encoder_layer(h, np.arange(h.shape[0]), ckpt.encoder_layer(i, p), cfg.encoder, p)[0]
        return run

    def dec_layer(i, src):
        def run(x, p, act=None):  # act: the ADA MLP's GELU
            w = ckpt.decoder_layer(i, p)
            h = x[src]
            scale = layer_ada_scale(x["dec.t_cond"], w, p, act=act)
            return decoder_layer(h, np.arange(h.shape[0]), w, scale, cfg.decoder, p)[0]
        return run

    def dec_in(x, p, act=None):
        a = x["adapter.out"]
        return decoder_input(a, ckpt.embedding_rows(np.asarray(x["tokens_in"][: a.shape[0]], np.int64), p), p)

    gelu = ("tanh GELU",)
    stages = [Stage("enc.conv1.out", ("mel",), (), conv1, forms=gelu),
              Stage("enc.conv.out", ("enc.conv1.out",), (), conv2, forms=gelu)]
    for i in range(n_enc):
        src = "enc.conv.out" if i == 0 else f"enc.L{i - 1:02d}.out"
        stages.append(Stage(f"enc.L{i:02d}.out", (src,), (), enc_layer(i, src)))
    last_enc, last_dec = f"enc.L{n_enc - 1:02d}.out", f"dec.L{n_dec - 1:02d}.out"
    stages += [
        Stage("enc.out", (last_enc,), (), lambda x, p, act=None: encoder_norm(x[last_enc], ckpt.encoder_norm(p), cfg.encoder, p)),
        Stage("adapter.out", ("enc.out",), (), lambda x, p, act=None: adapter(
            x["enc.out"], ckpt.adapter(p), cfg.downsample_factor, p, act=act), forms=gelu),
        Stage("dec.in", ("adapter.out",), ("tokens_in",), dec_in),
    ]
    for i in range(n_dec):
        src = "dec.in" if i == 0 else f"dec.L{i - 1:02d}.out"
        # the ADA MLP's GELU; its other known wrong forms once, in layer 0 (the scale is the same kind in every layer)
        forms = gelu + ADA_FORMS if i == 0 else gelu
        stages.append(Stage(f"dec.L{i:02d}.out", (src, "dec.t_cond"), (), dec_layer(i, src), forms=forms))
    stages += [
        Stage("dec.norm", (last_dec,), (), lambda x, p, act=None: final_norm(x[last_dec], ckpt.decoder_norm(p), cfg.decoder, p)),
        Stage("logits", ("dec.norm",), (), lambda x, p, act=None: lm_head(
            x["dec.norm"], lambda r: ckpt.embedding_rows(r, p), cfg.decoder.vocab_size, p)),
    ]
    return stages


def local_error(port_dtype: str, got: np.ndarray, replay: np.ndarray) -> tuple[float, tuple | None]:
    """The local measure of ``got`` against the exact replay, and where it is worst (a multi-index)."""
    assert got.shape == replay.shape, (got.shape, replay.shape)
    if got.size == 0:
        return 0.0, None
    d = np.abs(got.astype(np.float64) - replay)
    if LOCAL_METRIC[port_dtype] == "max_abs":
        at = int(np.argmax(d))
        return float(d.reshape(-1)[at]), tuple(int(i) for i in np.unravel_index(at, d.shape))
    beyond = d > SPACING[port_dtype] * (np.abs(replay) + float(np.sqrt(np.mean(replay * replay))))
    rel = np.where(beyond, d / np.maximum(np.abs(replay), np.finfo(np.float64).tiny), 0.0)
    at = int(np.argmax(rel))
    return float(beyond.mean()), (tuple(int(i) for i in np.unravel_index(at, d.shape)) if beyond.any() else None)


def measure_local(stages: list[Stage], taps: dict[str, np.ndarray], given: dict[str, np.ndarray],
                  progress=None) -> dict[str, dict]:
    """Per stage: {"reads": [...], "tolerance": {port dtype: {...}}}, from the oracle's own port-precision
    stage on the golden (float64) inputs against the exact replay at that dtype's rounding points.

    For float32 the exact replay on the golden input *is* the golden output (the same float64 stage on
    the same float64 input), so only bf16 and float16 cost a replay."""
    out: dict[str, dict] = {}
    for k, st in enumerate(stages):
        if st.name not in taps or any(r not in taps for r in st.reads):
            continue
        tol = {}
        for port, p in PORT.items():
            exact = EXACT[port]
            x_port = {**{r: p.array(taps[r]) for r in st.reads}, **{g: given[g] for g in st.given}}
            got = np.asarray(st.run(x_port, p), dtype=np.float64)
            if exact is FLOAT64:  # the float64 stage of the golden input: the golden output itself
                replay = taps[st.name]
            else:  # as compare will: exactly, on the very values the port stage read
                replay = np.asarray(st.run({**{r: exact.array(x_port[r].astype(np.float64)) for r in st.reads},
                                            **{g: given[g] for g in st.given}}, exact), dtype=np.float64)
            measured, _ = local_error(port, got, replay)
            if LOCAL_METRIC[port] == "max_abs":
                floor = float(np.finfo(np.float32).eps) * float(np.abs(replay).max()) if replay.size else 0.0
            else:
                floor = FRACTION_FLOOR / LOCAL_SAFETY[port]
            tol[port] = {"metric": LOCAL_METRIC[port], "limit": LOCAL_SAFETY[port] * max(measured, floor),
                         "measured": measured, "floor": floor, "safety": LOCAL_SAFETY[port]}
        out[st.name] = {"reads": list(st.reads), "tolerance": tol}
        if progress:
            progress(k + 1, len(stages), st.name)
    return out


def _no_term(x: np.ndarray) -> np.ndarray:
    return np.zeros_like(x)


# Known wrong forms, each what a port computes instead of a stage's exact GELU (``Stage.run(act=...)``):
# the tanh approximation (antirez/voxtral.c), SiLU in the ADA MLP and no ADA term at all (the Burn port;
# act = 0 makes the scale 1 + W_up·0 = 1). The fault catalogue reads the results (``LocalResult.forms``).
FORMS = {"tanh GELU": gelu_tanh, "SiLU": silu, "no ADA term": _no_term}
ADA_FORMS = ("SiLU", "no ADA term")
FORM_SIGNIFICANCE = 10.0  # alpha / its standard error: a form is "followed" only far beyond noise
FORM_BAND = (0.5, 1.5)  # ... and with alpha near 1: the port's error *is* the form's, not merely like it


def form_test(local: np.ndarray, predicted: np.ndarray) -> tuple[float, float] | None:
    """alpha and its standard error in ``local ≈ alpha · predicted`` (least squares through 0), where
    ``predicted`` is what a known wrong form (the tanh GELU) changes in this stage's output. An honest
    port's local error is rounding, uncorrelated with the form: alpha ≈ 0. A port computing the form:
    alpha ≈ 1, also when the form's error is far below the dtype's rounding (bf16), because rounding
    the form's value moves it by the form's error on average. None when the form changes nothing."""
    e, d = local.reshape(-1), predicted.reshape(-1)
    dd = float(d @ d)
    if dd == 0.0 or e.size < 2:
        return None
    alpha = float(e @ d) / dd
    r = e - alpha * d
    return alpha, float(np.sqrt(max(float(r @ r), 0.0) / (e.size - 1) / dd))


@dataclass
class LocalResult:
    """One stage judged alone. ``inherited_pct`` is compare's % of tolerance at the tap (None when it
    did not compare numbers); ``local`` the measure (``metric``) against the exact replay, ``limit`` its
    tolerance, ``status`` "ok", "FAIL" or "skipped" (``why``)."""

    case: str
    name: str
    reads: list[str]
    metric: str
    status: str
    local: float | None = None
    limit: float | None = None
    worst_index: list[int] | None = None
    inherited_pct: float | None = None
    why: str = ""
    form: dict | None = None  # the form test shown: the one the error follows, else the first tested
    forms: list = field(default_factory=list)  # every form tested: {"name", "alpha", "se", "follows"}

    @property
    def local_pct(self) -> float | None:
        if self.local is None or not self.limit:
            return None
        return 100.0 * self.local / self.limit


def fits(shape: tuple, golden_shape: tuple) -> bool:
    """A candidate tap the replay may read: the golden's shape, or fewer rows of it (a port that skips
    the prompt rows or the last position). Bounds the replay's memory by the golden's, whatever is given."""
    shape, golden_shape = tuple(shape), tuple(golden_shape)
    return (len(shape) == len(golden_shape) and shape[1:] == golden_shape[1:]
            and (not shape or 0 < shape[0] <= golden_shape[0]))


def replay_local(stages: list[Stage], local_tol: dict[str, dict], candidate: dict[str, np.ndarray],
                 given: dict[str, np.ndarray], port_dtype: str, case: str, inherited: dict[str, float | None],
                 shapes: dict[str, tuple], cuts: dict[str, tuple[int, int]] | None = None,
                 progress=None) -> list[LocalResult]:
    """Replay every stage whose taps the candidate has, at ``port_dtype``'s rounding points, on the
    candidate's own inputs. ``local_tol``: the golden's ``local`` entries; ``inherited``: compare's %;
    ``shapes``: the golden's shape of every tap (a tap that does not ``fits`` is not replayed); ``cuts``:
    {tap: (first, end)} the golden rows a candidate tap with fewer rows holds (compare's
    ``rows_a_port_computes``). A replay's rows are the golden's from row 0 (no stage input skips rows)."""
    cuts = cuts or {}

    def held(name: str, replay: np.ndarray, got: np.ndarray) -> np.ndarray | None:
        if got.shape == replay.shape:
            return replay
        if name not in cuts:
            return None
        first, end = cuts[name]
        return replay[first:end] if end <= replay.shape[0] and replay[first:end].shape == got.shape else None

    exact = EXACT[port_dtype]
    results = []
    for k, st in enumerate(stages):
        entry = local_tol.get(st.name)
        if entry is None or port_dtype not in entry.get("tolerance", {}):
            continue
        tol = entry["tolerance"][port_dtype]
        r = LocalResult(case, st.name, list(st.reads), tol["metric"], "skipped", limit=tol["limit"],
                        inherited_pct=inherited.get(st.name))
        results.append(r)
        missing = [t for t in (st.name, *st.reads) if t not in candidate]
        if missing:
            r.why = f"the candidate has no {', '.join(missing)}"
            continue
        odd = [t for t in (st.name, *st.reads) if t in shapes and not fits(np.shape(candidate[t]), shapes[t])]
        if odd:
            r.why = f"{', '.join(odd)} not in the golden's shape"
            continue
        x = {t: exact.array(np.asarray(candidate[t], dtype=np.float64)) for t in st.reads}
        if any(not np.isfinite(v).all() for v in x.values()):
            r.why = f"{', '.join(st.reads)} holds NaN/Inf"
            continue
        got = np.asarray(candidate[st.name], dtype=np.float64)
        try:
            replay = np.asarray(st.run({**x, **{g: given[g] for g in st.given}}, exact), dtype=np.float64)
        except (AssertionError, ValueError, IndexError) as err:  # the port's input tap has another shape
            r.why = f"cannot replay on the candidate's {', '.join(st.reads)} ({type(err).__name__}: shapes {', '.join(str(list(v.shape)) for v in x.values())})"
            continue
        rows = held(st.name, replay, got)
        if rows is None:
            r.why = f"candidate shape {list(got.shape)}, replay {list(replay.shape)}"
            continue
        if not np.isfinite(got).all():
            r.why = "the candidate holds NaN/Inf"
            continue
        r.local, at = local_error(port_dtype, got, rows)
        r.worst_index = list(at) if at is not None else None
        r.status = "FAIL" if r.local > r.limit else "ok"
        xin = {**x, **{g: given[g] for g in st.given}}
        for name in st.forms:
            alt = held(st.name, np.asarray(st.run(xin, exact, act=FORMS[name]), dtype=np.float64), got)
            fit = form_test(got - rows, alt - rows)
            if fit is not None:
                alpha, se = fit
                follows = FORM_BAND[0] < alpha < FORM_BAND[1] and alpha > FORM_SIGNIFICANCE * se
                r.forms.append({"name": name, "alpha": alpha, "se": se, "follows": follows})
        if r.forms:
            r.form = next((f for f in r.forms if f["follows"]), r.forms[0])
            if r.form["follows"]:
                r.status = "FAIL"
        if progress:
            progress(k + 1, len(stages), st.name)
    return results
