"""How far each float32 log-mel variant lands from the float64 truth, in % of the golden float32 mel tolerance.

    .venv/bin/python benchmarks/mel_variants.py [--golden golden/tiny_goldens] [--markdown F]

Inputs: the built-in clip as is (centred STFT), the tiny golden's e2e input (the clip padded as the
offline protocol pads it: what the e2e `mel` golden is computed from) and a 0.5-amplitude 440 Hz tone
(loud and narrowband: FFT rounding is relative to a frame's peak energy, so low bins show it most).
Truth: ``oracle.mel.log_mel`` in float64 of the same float32 samples. Variants: ``oracle.mel_variants``
(honest and mistaken) and transformers' ``VoxtralRealtimeFeatureExtractor`` (the official float32
front end, torch FFT). Tolerance: the float32 ``atol`` of ``mel`` in the golden's e2e manifest.
Needs torch + transformers (this script only; oracle/ never imports them).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from oracle import mel, mel_variants
from oracle.audio import load_audio
from oracle.builtin import speech_clip, tiny_checkpoint
from oracle.pipeline import load_setup

ROOT = Path(__file__).resolve().parent.parent


def e2e_mel_tolerance(golden: Path) -> tuple[float, float]:
    index = json.loads((golden / "index.json").read_text())
    case = next(c["dir"] for c in index["cases"] if c["name"] == "e2e")
    out = json.loads((golden / case / "manifest.json").read_text())["outputs"]["mel"]["tolerance"]["float32"]
    return float(out["atol"]), float(out["measured_max_abs"])


def official(x32: np.ndarray) -> np.ndarray:
    from transformers import VoxtralRealtimeFeatureExtractor

    fe = VoxtralRealtimeFeatureExtractor()
    return fe(x32, sampling_rate=16000, return_tensors="np")["input_features"][0]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--golden", type=Path, default=ROOT / "golden" / "tiny_goldens")
    ap.add_argument("--markdown", type=Path)
    a = ap.parse_args(argv)
    atol, measured = e2e_mel_tolerance(a.golden)
    clip = load_audio(speech_clip())  # float32 samples of the int16 clip
    proto = load_setup(tiny_checkpoint()).protocol
    t = np.arange(16000 * 2) / 16000.0
    inputs = {
        "clip": clip.astype(np.float32),
        "e2e input (padded clip)": proto.pad_offline(clip).astype(np.float32),
        "tone 440 Hz, 0.5": (0.5 * np.sin(2 * np.pi * 440.0 * t)).astype(np.float32),
    }
    variants = {**{f"{k} (honest)": v for k, v in mel_variants.HONEST.items()},
                "transformers float32 (official)": official,
                **{f"{k} (MISTAKE)": v for k, v in mel_variants.MISTAKES.items()}}
    head = ["variant"] + [f"{name}: max abs (% of tol)" for name in inputs]
    rows = []
    for vname, fn in variants.items():
        row = [vname]
        for x in inputs.values():
            truth = mel.log_mel(x.astype(np.float64), np.float64)
            dev = float(np.abs(fn(x).astype(np.float64) - truth).max())
            row.append(f"{dev:.3g} ({100 * dev / atol:.0f}%)")
        rows.append(row)
    lines = [f"float32 mel tolerance (golden {a.golden.name}, e2e manifest): atol {atol:.3g} "
             f"= 10 x the oracle's own float32 deviation {measured:.3g}", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    text = "\n".join(lines)
    print(text)
    if a.markdown:
        a.markdown.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
