"""Render a trace38 result as Markdown + JSON + PNG plots (the report a port author reads).

The numbers come from ``oracle.trace``; this module only lays them out. Plots use matplotlib's Agg
backend with fixed metadata so reruns write identical PNGs.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .trace import FOCUS, WINDOW

PNG_META = {"Software": None}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"figure.dpi": 100, "font.size": 9, "svg.hashsalt": "voxtral-oracle"})
    return plt


def plot_alignment(run, report, path: Path) -> None:
    plt = _plt()
    n_prompt, left = report["prompt_length"], report["left_pad_tokens"]
    n_show = min(run.n_positions, max(WINDOW) + 8)
    fig, ax = plt.subplots(figsize=(10, 3.2))
    ax.imshow(run.mel[:, : 8 * n_show], aspect="auto", origin="lower", cmap="magma", interpolation="nearest")
    for p in range(n_show + 1):
        ax.axvline(8 * p - 0.5, color="white", lw=0.3, alpha=0.4)
    ax.axvspan(-0.5, 8 * left - 0.5, color="cyan", alpha=0.12, label=f"left pad ({left} tokens of silence)")
    ax.axvspan(8 * left - 0.5, 8 * n_prompt - 0.5, color="lime", alpha=0.15, label=f"prompt positions hearing audio ({left}..{n_prompt - 1})")
    ax.axvline(8 * (n_prompt - 1) - 0.5, color="red", lw=1.2, label=f"position {n_prompt - 1}: first free prediction")
    ticks = list(range(0, n_show, 4))
    ax.set_xticks([8 * t + 3.5 for t in ticks], [str(t) for t in ticks])
    ax.set_xlabel("decoder position (8 mel frames = 80 ms each)")
    ax.set_ylabel("mel bin")
    ax.set_title("log-mel of the padded stream on the token grid")
    ax.legend(loc="upper right", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, metadata=PNG_META)
    plt.close(fig)


def plot_norms(run, report, path: Path) -> None:
    plt = _plt()
    n_prompt = report["prompt_length"]
    n_show = min(run.n_positions, max(WINDOW) + 8)
    fig, ax = plt.subplots(figsize=(10, 3.2))
    im = ax.imshow(run.norms[:, :n_show], aspect="auto", origin="lower", cmap="viridis", interpolation="nearest")
    ax.axvline(n_prompt - 1, color="red", lw=1)
    ax.axvline(report["left_pad_tokens"] - 0.5, color="white", lw=0.8, ls="--")
    ax.set_xlabel("decoder position")
    ax.set_ylabel("decoder layer")
    ax.set_title("L2 norm of each decoder layer's output (red: last prompt position)")
    fig.colorbar(im, ax=ax, fraction=0.03)
    fig.tight_layout()
    fig.savefig(path, metadata=PNG_META)
    plt.close(fig)


def plot_prompts(ref, alt, report, path: Path, pad_id: int) -> None:
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.0))
    pos = np.array([p for p in WINDOW if p < min(ref.n_positions, alt.n_positions)])
    for run, style, label in ((ref, "-o", f"{len(ref.prompt)}-token prompt"), (alt, "--s", f"{len(alt.prompt)}-token prompt")):
        axes[0].plot(pos, run.norms[-1][pos], style, ms=3, label=label)
        axes[1].plot(pos, run.logits[pos].max(axis=1), style, ms=3, label=f"max logit, {label}")
        axes[1].plot(pos, run.logits[pos, pad_id], style, ms=3, alpha=0.5, label=f"PAD logit, {label}")
    for ax in axes:
        ax.axvline(len(ref.prompt) - 1, color="red", lw=0.8)
        ax.axvline(len(alt.prompt) - 1, color="orange", lw=0.8, ls="--")
        ax.set_xlabel("decoder position")
        ax.legend(fontsize=6)
    axes[0].set_title("last layer norm")
    axes[1].set_title("logits")
    fig.tight_layout()
    fig.savefig(path, metadata=PNG_META)
    plt.close(fig)


def plot_faults(report, runs, path: Path) -> None:
    plt = _plt()
    keys = [f["key"] for f in report["faults"]]
    fig, ax = plt.subplots(figsize=(10, 4))
    ref = runs["reference"]
    pos = np.array([p for p in WINDOW if p < ref.n_positions])
    ax.plot(pos, ref.norms[-1][pos], "k-", lw=2.5, label="reference")
    for key in keys:
        run = runs[key]
        q = pos[pos < run.n_positions]
        ax.plot(q, run.norms[-1][q], lw=1, label=key)
    ax.axvline(report["prompt_length"] - 1, color="red", lw=0.8)
    ax.set_xlabel("decoder position")
    ax.set_title("last decoder layer norm at positions 30-45, reference and each fault")
    ax.legend(fontsize=6, ncol=3)
    fig.tight_layout()
    fig.savefig(path, metadata=PNG_META)
    plt.close(fig)


def _fmt(x, spec=".3g"):
    return "—" if x is None else format(x, spec)


def markdown(report: dict) -> str:
    r = report
    lines = [
        "# The position-38 trace",
        "",
        f"Checkpoint `{r['checkpoint_label']}`, audio `{r['audio_label']}`, delay {r['delay_ms']} ms "
        f"(n_delay = {r['delay_tokens']}), prompt {r['prompt_length']} tokens, {r['n_positions']} decoder positions, "
        f"windows: encoder {r['windows']['encoder']} frames, decoder {r['windows']['decoder']} positions, "
        f"computed in {r['precision']}. Regenerate with `{r['command']}`.",
        "",
        "## Conclusion",
        "",
        *r["conclusion"],
        "",
        "## 1. Alignment of every prompt position",
        "",
        "![alignment](alignment.png)",
        "",
        "| pos | padded samples | real time (ms) | mel frames | enc frames | fed | hears audio | trained to predict (output at this position) |",
        "|---:|---|---|---|---|---|---|---|",
    ]
    for a in r["alignment"]:
        lines.append(f"| {a['position']} | {a['samples'][0]}–{a['samples'][1]} | {a['real_time_ms'][0]}…{a['real_time_ms'][1]} "
                     f"| {a['mel_frames'][0]}–{a['mel_frames'][1]} | {a['encoder_frames'][0]}–{a['encoder_frames'][1]} "
                     f"| `{a['fed']}` | {'yes' if a['hears_audio'] else 'no'} | {a['trained_to_predict']} |")
    n_layers = len(r["norms"])
    lines += ["", "## 2. Hidden-state norms per layer and position", "", "![norms](norms.png)", "",
              "| layer | " + " | ".join(str(p) for p in WINDOW if p < r["n_positions"]) + " |",
              "|---:|" + "---:|" * len([p for p in WINDOW if p < r["n_positions"]])]
    for i in range(n_layers):
        lines.append(f"| {i} | " + " | ".join(_fmt(r["norms"][i][p], ".1f") for p in WINDOW if p < r["n_positions"]) + " |")
    lines += ["", "## 3. Where the last prompt positions attend",
              "", "Attention mass (mean over heads) on BOS (position 0), on the other left-pad positions "
              f"(1..{r['left_pad_tokens'] - 1}) and on positions carrying real audio (≥ {r['left_pad_tokens']}). "
              f"The decoder window is {r['windows']['decoder']} positions, so a query at p sees keys p−{r['windows']['decoder'] - 1}..p.",
              "", "| layer | position | BOS | left pad | real audio |", "|---:|---:|---:|---:|---:|"]
    for f, per_layer in r["attention_mass"].items():
        for i, (bos, pad, real) in enumerate(per_layer):
            lines.append(f"| {i} | {f} | {bos:.3f} | {pad:.3f} | {real:.3f} |")
    lines += ["", "## 4. ADA scales (1 + g) per layer", "", "| layer | min | mean | max |", "|---:|---:|---:|---:|"]
    for i, (lo, mean, hi) in enumerate(r["ada"]):
        lines.append(f"| {i} | {lo:.4f} | {mean:.4f} | {hi:.4f} |")
    lines += ["", "## 5. Top-5 logits at positions 30–45", "", "| pos | top-5 (id `text` logit) | PAD logit |", "|---:|---|---:|"]
    for t in r["topk"]:
        tops = ", ".join(f"{x['id']} `{x['text']}` {x['logit']:.2f}" for x in t["top"])
        lines.append(f"| {t['position']} | {tops} | {t['pad_logit']:.2f} |")
    lines += ["", "## 6. The 39- and 38-token prompts side by side", "", "![prompts](prompts.png)", "",
              "| | 39-token prompt (reference) | 38-token prompt |", "|---|---|---|"]
    p38 = next(f for f in r["faults"] if f["key"] == "prompt_38")
    for f in FOCUS:
        a, b = r["focus"].get(str(f)), p38["focus"].get(str(f))
        if a and b:
            lines.append(f"| position {f}: last-layer norm / max logit / PAD logit / top-1 | "
                         f"{a['norm_last_layer']:.1f} / {a['max_logit']:.2f} / {a['pad_logit']:.2f} / {a['top1']} | "
                         f"{b['norm_last_layer']:.1f} / {b['max_logit']:.2f} / {b['pad_logit']:.2f} / {b['top1']} |")
    lines.append(f"| first tokens | {r['tokens'][:12]} | {p38['first_tokens']} |")
    lines.append(f"| text | `{r['text'][:80]}` | `{p38['text'][:80]}` |")
    lines += ["", "## 7. First generated tokens and text", "", f"Tokens: `{r['tokens'][:40]}`", "",
              f"Text: `{r['text']}`", "", "## 8. The fault catalogue", "", "![faults](faults.png)", "",
              "Each known porting mistake injected into the same run. *First divergence* is the first stage, in "
              "pipeline order, that differs from the reference when both are fed the reference's tokens. "
              "*Hears speech* counts left-pad positions whose audio embedding differs from that of an all-silent "
              "stream (the reference: 0). *Norm ratio* is the last layer's norm at the last prompt position over the "
              "mean of the two before it (the reported anomaly: 452 / ~1050 = 0.43).", "",
              "| fault | first divergence | N (ref " + str(r["n_positions"]) + ") | hears speech | norm ratio (ref "
              + _fmt(r["anomaly_reference"]["norm_ratio_at_last_prompt_position"]) + ") | PAD at last prompt pos | reproduces the anomaly's cause |",
              "|---|---|---:|---:|---:|---|---|"]
    for f in r["faults"]:
        d, an = f["first_divergence"], f["anomaly"]
        where = d["stage"] or "none"
        if d["kind"] == "shape":
            where += f" (shape {d['golden']} → {d['candidate']})"
        elif d["kind"] == "values":
            where += f" (from row {d['first_row']}, {d['rows']}/{d['of_rows']} rows)"
        elif d["kind"] == "tokens":
            where += f" (from step {d['first_step']})"
        lines.append(f"| `{f['key']}`: {f['title']} | {where} | {f['n_positions']} | {an['left_pad_positions_hearing_speech']} "
                     f"| {_fmt(an['norm_ratio_at_last_prompt_position'])} | {'yes' if an['predicts_pad_at_last_prompt_position'] else 'no'} "
                     f"| {f['reproduces']} |")
    lines += ["", "Look-alikes and the check that separates them:", ""]
    for f in r["faults"]:
        if f["lookalikes"]:
            lines.append(f"- `{f['key']}` ~ {', '.join('`' + k + '`' for k in f['lookalikes'])}: {f['separate']}.")
    lines += ["", "Each fault, in detail:", ""]
    for f in r["faults"]:
        lines.append(f"- **`{f['key']}`** — {f['mistake']}. Reference: {f['reference']}. Expected signature: {f['expected_signature']}.")
    return "\n".join(lines) + "\n"


def write_report(report: dict, runs: dict, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    pad = report["pad_id"]
    plot_alignment(runs["reference"], report, out_dir / "alignment.png")
    plot_norms(runs["reference"], report, out_dir / "norms.png")
    if "prompt_38" in runs:
        plot_prompts(runs["reference"], runs["prompt_38"], report, out_dir / "prompts.png", pad)
    plot_faults(report, runs, out_dir / "faults.png")
    (out_dir / "report.md").write_text(markdown(report), encoding="utf-8")
    (out_dir / "report.json").write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
