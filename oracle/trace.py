"""The position-38 trace: the streaming protocol walked through position by position, with and without
each known porting mistake (MODEL.md §6.3, §6.6, §11).

The question it settles: a port reported that with the 39-token prompt (BOS + 38 STREAMING_PAD) its
position 38 had a collapsed hidden-state norm, very negative logits and always predicted
STREAMING_PAD, so it moved to 38 tokens and lost the transcript's first words. The trace shows what
the reference does at every prompt position, and re-runs the same trace with each catalogue fault
injected, so the symptom can be matched to its cause.

Shape legend: N positions, P prompt length, L decoder layers, H heads, V vocab, D width.

Everything is computed by the oracle's own functions (``audio_embeddings``, ``decode_positions``,
``generate_offline``) through taps; full-size checkpoints go layer by layer (``forward``'s memory bound).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .faults import CATALOGUE, FAULTS, inject
from .forward import audio_embeddings, decode_positions
from .golden import Context
from .layers import attention_probs, window_mask
from .precision import Precision
from .streaming import generate_offline
from .taps import Taps

WINDOW = tuple(range(30, 46))  # the positions the report tabulates
FOCUS = (36, 37, 38, 39)  # the anomaly's positions
TOPK = 5


@dataclass
class Run:
    """One trace run's numbers (the reference or one fault)."""

    label: str
    n_positions: int
    prompt: list[int]
    tokens: list[int]  # generated
    fed: np.ndarray  # [N] tokens fed (prompt + generated, PAD after an early stop)
    norms: np.ndarray  # [L, N] L2 norm of each decoder layer's output
    logits: np.ndarray  # [N, V] (teacher-forced on ``fed``)
    ada: np.ndarray  # [L, 3] min / mean / max of (1 + g)
    attn_mass: np.ndarray  # [L, len(FOCUS), 3] attention mass on BOS / left-pad positions / real-audio positions
    audio_speech: np.ndarray  # [N] bool: A[p] differs from the silence embedding (the position hears audio)
    outputs: dict  # e2e tap outputs for first-divergence analysis
    mel: np.ndarray


def run_trace(ctx: Context, p: Precision, label: str = "reference", fed: np.ndarray | None = None) -> Run:
    """Generate greedily, then run the teacher-forced forward on ``fed`` (default: this run's own prompt +
    generated tokens; the fault comparison passes the reference's, as the golden e2e case does)."""
    proto, cfg = ctx.setup.protocol, ctx.ckpt.config
    model = ctx.model(p)
    mel = ctx.variant.log_mel(proto.pad_offline(ctx.audio).astype(p.dtype), p.dtype, audio=cfg.audio, floor=ctx.mel_floor)
    tokens = generate_offline(model, mel, proto)
    taps = Taps("mel", "enc.conv1.out", "enc.conv.out", "enc.L*.out", "enc.out", "adapter.out", "dec.in",
                "dec.t_cond", "dec.L*.out", "dec.L*.q", "dec.L*.k", "dec.L*.ada_scale", "dec.norm", "logits")
    audio = audio_embeddings(ctx.ckpt, mel, p, tap=taps, variant=ctx.variant)
    n = len(audio)
    fed = np.concatenate([proto.prompt, tokens]) if fed is None else fed
    fed = np.concatenate([fed[:n], np.full(max(n - len(fed), 0), proto.pad, dtype=np.int64)])
    logits = decode_positions(ctx.ckpt, audio, fed, proto.t, p, tap=taps, variant=ctx.variant)
    n_layers = cfg.decoder.n_layers
    norms = np.stack([np.linalg.norm(taps[f"dec.L{i:02d}.out"], axis=-1) for i in range(n_layers)])
    ada = np.stack([[s.min(), s.mean(), s.max()] for s in (taps[f"dec.L{i:02d}.ada_scale"][0] for i in range(n_layers))])
    left = proto.left_pad_tokens
    pos = np.arange(n)
    mask = window_mask(pos, pos, cfg.decoder.sliding_window)
    focus = [f for f in FOCUS if f < n]
    mass = np.zeros((n_layers, len(FOCUS), 3))
    for i in range(n_layers):
        probs = attention_probs(taps[f"dec.L{i:02d}.q"], taps[f"dec.L{i:02d}.k"], mask).mean(axis=0)  # [N, S]
        for j, f in enumerate(focus):
            row = probs[f]
            mass[i, j] = [row[0], row[1:left].sum(), row[left:].sum()]
    # A position hears speech iff its audio embedding differs from the one an all-silent stream of the
    # same length gives there (the encoder is causal, so this isolates what the position has heard).
    silent_mel = ctx.variant.log_mel(np.zeros(len(proto.pad_offline(ctx.audio)), p.dtype), p.dtype, audio=cfg.audio,
                         floor=ctx.mel_floor)
    silent = audio_embeddings(ctx.ckpt, silent_mel, p, variant=ctx.variant)
    speech = np.abs(audio - silent).max(axis=-1) > 1e-6 * max(float(np.abs(audio).max()), 1e-30)
    outputs = {k: v for k, v in taps.values.items() if not (k.endswith(".q") or k.endswith(".k") or k.endswith("ada_scale"))}
    outputs["tokens"] = np.array(tokens, dtype=np.int64)
    return Run(label, n, [int(t) for t in proto.prompt], tokens, fed, norms, logits, ada, mass, speech, outputs, mel)


def first_divergence(ref: Run, other: Run) -> dict:
    """The first stage (pipeline order) where ``other`` differs from ``ref`` beyond float64 noise."""
    order = [k for k in ref.outputs]  # Taps keep insertion order = pipeline order
    for k in order:
        a, b = ref.outputs[k], other.outputs.get(k)
        if b is None:
            return {"stage": k, "kind": "missing"}
        if a.shape != b.shape:
            return {"stage": k, "kind": "shape", "golden": list(a.shape), "candidate": list(b.shape)}
        if a.dtype.kind in "iu":
            if not np.array_equal(a, b):
                step = int(np.argmax(a != b))
                return {"stage": k, "kind": "tokens", "first_step": step}
            continue
        scale = max(float(np.abs(a).max()), 1e-30)
        bad = np.abs(a - b) > 1e-9 * scale
        if bad.any():
            rows = np.unique(np.argwhere(bad)[:, 0]) if a.ndim >= 2 else np.argwhere(bad)[:, 0]
            return {"stage": k, "kind": "values", "max_rel": float(np.abs(a - b).max() / scale),
                    "first_row": int(rows[0]), "rows": int(len(rows)), "of_rows": int(a.shape[0])}
    return {"stage": None, "kind": "none"}


def alignment(ctx: Context, run: Run) -> list[dict]:
    """Per position: what it covers and what it is trained to predict (MODEL.md §6.3)."""
    proto = ctx.setup.protocol
    spt, n_prompt, left, delay = proto.samples_per_token, len(run.prompt), proto.left_pad_tokens, proto.delay_tokens
    rows = []
    for p in range(min(run.n_positions, max(WINDOW) + 1)):
        if p < n_prompt - 1:
            why = ("left-pad silence" if p < left else
                   f"real audio, but the text lags {delay} tokens: its text is due at position {p + delay + 1}")
            target = f"[STREAMING_PAD] (forced by the prompt: {why})"
        elif p == n_prompt - 1:
            target = f"first free prediction: the token of position {p + 1} (text of real audio token {p + 1 - delay - left}, if any)"
        else:
            target = f"token of position {p + 1}"
        rows.append({
            "position": p,
            "samples": [spt * p, spt * (p + 1)],
            "real_time_ms": [(p - left) * 80, (p - left + 1) * 80],
            "mel_frames": [8 * p, 8 * p + 7],
            "encoder_frames": [4 * p, 4 * p + 3],
            "fed": ctx.setup.tekken.token_text(int(run.fed[p])) if p < len(run.fed) else None,
            "hears_audio": bool(run.audio_speech[p]) if p < len(run.audio_speech) else None,
            "trained_to_predict": target,
        })
    return rows


def topk(ctx: Context, run: Run, positions=WINDOW) -> list[dict]:
    out = []
    for p in positions:
        if p >= run.n_positions:
            break
        row = run.logits[p]
        idx = np.argsort(-row)[:TOPK]
        out.append({"position": p, "top": [{"id": int(i), "text": ctx.setup.tekken.token_text(int(i)), "logit": float(row[i])}
                                          for i in idx],
                    "pad_logit": float(row[ctx.setup.protocol.pad])})
    return out


def focus_numbers(run: Run, pad_id: int) -> dict:
    """Norm (last layer) and logits at positions 36-39, the anomaly's fingerprint."""
    last = run.norms[-1]
    res = {}
    for f in FOCUS:
        if f < run.n_positions:
            res[str(f)] = {"norm_last_layer": float(last[f]), "max_logit": float(run.logits[f].max()),
                           "pad_logit": float(run.logits[f, pad_id]), "top1": int(run.logits[f].argmax())}
    return res


def anomaly_pattern(ref: Run, run: Run, left_pad_tokens: int, n_prompt: int, pad_id: int) -> dict:
    """The reported symptoms, measured: prompt positions that hear speech, position P-1's norm relative to
    P-3/P-2, its logits, and whether its prediction is STREAMING_PAD."""
    last = run.norms[-1]
    pp = n_prompt - 1
    ok = pp < run.n_positions
    hears = int(run.audio_speech[:min(left_pad_tokens, run.n_positions)].sum())
    ratio = float(last[pp] / np.mean(last[pp - 2:pp])) if ok else None
    ref_ratio = float(ref.norms[-1][pp] / np.mean(ref.norms[-1][pp - 2:pp]))
    return {
        "left_pad_positions_hearing_speech": hears,
        "norm_ratio_at_last_prompt_position": ratio,
        "reference_norm_ratio": ref_ratio,
        "predicts_pad_at_last_prompt_position": bool(ok and run.logits[pp].argmax() == pad_id),
        "sequence_length_change": run.n_positions - ref.n_positions,
    }


def trace38(ctx: Context, p: Precision, faults: bool = True, original_audio: np.ndarray | None = None,
            progress=None) -> dict:
    """The whole report's numbers: reference, 38-token prompt side by side, and every catalogue fault."""
    proto = ctx.setup.protocol
    ref = run_trace(ctx, p)
    tk = ctx.setup.tekken
    report = {
        "checkpoint": str(ctx.ckpt.directory),
        "delay_ms": proto.delay_ms,
        "delay_tokens": proto.delay_tokens,
        "prompt_length": len(proto.prompt),
        "left_pad_tokens": proto.left_pad_tokens,
        "n_positions": ref.n_positions,
        "windows": {"encoder": ctx.ckpt.config.encoder.sliding_window, "decoder": ctx.ckpt.config.decoder.sliding_window},
        "precision": p.name,
        "alignment": alignment(ctx, ref),
        "norms": ref.norms.tolist(),
        "attention_mass": {str(f): ref.attn_mass[:, j].tolist() for j, f in enumerate(FOCUS) if f < ref.n_positions},
        "ada": ref.ada.tolist(),
        "topk": topk(ctx, ref),
        "focus": focus_numbers(ref, proto.pad),
        "tokens": ref.tokens,
        "text": tk.decode(ref.tokens),
        "faults": [],
    }
    runs = {"reference": ref}
    keys = [f.key for f in CATALOGUE] if faults else ["prompt_38"]
    for k, key in enumerate(keys):
        fctx = inject(key, ctx, original_audio if original_audio is not None else ctx.audio)
        run = run_trace(fctx, p, key)
        forced = run_trace(fctx, p, key, fed=ref.fed)  # same fed tokens as the reference: where does it diverge?
        runs[key] = run
        fault = FAULTS[key]
        report["faults"].append({
            "key": key,
            "title": fault.title,
            "mistake": fault.mistake,
            "reference": fault.reference,
            "expected_signature": fault.expect,
            "lookalikes": list(fault.lookalikes),
            "separate": fault.separate,
            "first_divergence": first_divergence(ref, forced),
            "n_positions": run.n_positions,
            "prompt_length": len(run.prompt),
            "focus": focus_numbers(run, proto.pad),
            "anomaly": anomaly_pattern(ref, run, proto.left_pad_tokens, len(run.prompt), proto.pad),
            "first_tokens": run.tokens[:12],
            "text": tk.decode(run.tokens),
            "topk_38": topk(fctx, run, positions=[f for f in FOCUS if f < run.n_positions]),
        })
        if progress:
            progress(k + 1, len(keys), key)
    report["anomaly_reference"] = anomaly_pattern(ref, ref, proto.left_pad_tokens, len(ref.prompt), proto.pad)
    report["pad_id"] = proto.pad
    for f in report["faults"]:
        f["reproduces"] = reproduces(f, report)
    report["conclusion"] = conclusion(report)
    return report, runs


def reproduces(fault: dict, report: dict) -> str:
    """Does this mistake reproduce the reported anomaly's mechanism: prompt positions that should be
    silence hear speech, with the 32-token left pad covering fewer positions (TrevorS CHANGELOG: '32
    left-pad tokens ... produces only 16 decoder tokens of silence')?"""
    an = fault["anomaly"]
    hears, left = an["left_pad_positions_hearing_speech"], report["left_pad_tokens"]
    if fault["key"] == "prompt_38":
        return "no: it is the port's workaround; it moves the first free prediction one position (80 ms) early"
    if hears and an["sequence_length_change"] < 0:
        return (f"**yes**: {hears} of {left} left-pad positions hear speech and the sequence shrinks "
                f"from {report['n_positions']} to {fault['n_positions']} positions")
    if hears and FAULTS[fault["key"]].shows_at[0] == "mel":  # a front-end fault: silence itself encodes differently
        return f"no: the left pad's silence is encoded differently ({hears} positions differ from silence), no position hears speech early"
    if hears:
        return f"partly: {hears} left-pad positions hear speech"
    return "no: every left-pad position stays silent"


def conclusion(report: dict) -> list[str]:
    """The finding, stated plainly, with the numbers it rests on."""
    ref = report["anomaly_reference"]
    left, n_prompt = report["left_pad_tokens"], report["prompt_length"]
    cause = [f for f in report["faults"] if f["reproduces"].startswith("**yes**")]
    lines = [
        f"- **With the reference front end nothing is anomalous at position {n_prompt - 1}.** No left-pad position "
        f"hears speech ({ref['left_pad_positions_hearing_speech']} of {left}); positions {left}..{n_prompt - 2} hear the "
        f"first {n_prompt - 1 - left} real-audio tokens but are trained to emit STREAMING_PAD because the text lags "
        f"{report['delay_tokens']} tokens; the output at position {n_prompt - 1} is the first free prediction.",
    ]
    for f in cause:
        lines.append(
            f"- **The anomaly's cause is `{f['key']}` ({f['title']}).** It is the only catalogue fault that makes "
            f"left-pad positions hear speech: {f['anomaly']['left_pad_positions_hearing_speech']} of {left}, because "
            f"8N mel frames become 2N encoder frames and N/2 decoder positions of 160 ms each, so the 2.56 s left pad "
            f"covers only {left // 2} positions and positions {left // 2}..{n_prompt - 1} of the prompt see speech the "
            f"model was trained to see as silence. In a compare report it shows at the first stage: "
            f"`{f['first_divergence']['stage']}` has {f['first_divergence'].get('candidate', ['?'])[0]} frames instead of "
            f"{f['first_divergence'].get('golden', ['?'])[0]}.")
    p38 = next((f for f in report["faults"] if f["key"] == "prompt_38"), None)
    if p38:
        lines.append(
            f"- **The 38-token prompt is not a fix.** Every tensor up to the logits is unchanged; the first free "
            f"prediction moves one position (80 ms) earlier and the run generates one more token "
            f"({p38['first_divergence']['stage']}: {p38['first_divergence'].get('golden')} → "
            f"{p38['first_divergence'].get('candidate')}), which desynchronizes text and audio — with a correct stem it only loses alignment, "
            f"with the broken stem it hid the real bug.")
    lines.append(
        "- **What a port should do:** conv1 stride 1 with 2 zero frames on the left, conv2 stride 2 with 1 zero frame "
        "on the left, no right padding (pad manually; Burn's `PaddingConfig1d::Explicit(n)` pads both sides); keep the "
        f"{n_prompt}-token prompt; feed A[p] at position p. Then check the e2e golden with `voxtral-oracle compare`: "
        "the first stage, `mel`, and `enc.conv1.out` must pass before anything else is worth debugging.")
    return lines
