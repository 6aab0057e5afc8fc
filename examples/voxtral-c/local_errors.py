#!/usr/bin/env python3
"""Which stage of a port *adds* error: replay each oracle stage in float64 on the port's own input tap.

    python examples/voxtral-c/local_errors.py CANDIDATE_DIR --ckpt CKPT (--golden E2E_CASE_DIR | --truth TRUTH_DIR)
        [--stages front|all] [--markdown F]

For every e2e tap whose input tap the candidate also has, the stage is recomputed by the oracle in
float64 from the candidate's input and compared with the candidate's output. "inherited" is
max|candidate − golden| (what compare reports: error added here plus everything before); "local" is
max|candidate − stage(candidate's input)|: the error this stage adds by itself. Both in % of the
golden's float32 atol for that tap (when a golden manifest is given). With --truth (truth64.py's
float64 taps for the candidate's own fed tokens) instead of a golden, the same without the atol. A
stand-alone sketch of issue 15's stage-local attribution, used
for docs/case-studies/voxtral-c.md; it reads the golden case directory directly (manifest.json +
tensors.safetensors) and .npy candidates.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from oracle.adapter import adapter
from oracle.checkpoint import open_checkpoint, read_safetensors_header, read_tensor
from oracle.decoder import decoder_layer, final_norm, layer_ada_scale, lm_head, time_condition
from oracle.encoder import encoder_layer, encoder_norm
from oracle.layers import conv1d, gelu
from oracle.pipeline import load_setup
from oracle.precision import FLOAT64


def load_golden(case: Path) -> tuple[dict, dict]:
    manifest = json.loads((case / "manifest.json").read_text())
    header = read_safetensors_header(case / manifest["file"])
    return manifest, header


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("candidate", type=Path, help="directory of .npy taps")
    ap.add_argument("--golden", type=Path, help="the e2e case directory (manifest.json)")
    ap.add_argument("--truth", type=Path, help="directory of float64 .npy taps (truth64.py)")
    ap.add_argument("--truth32", type=Path, help="with --truth: the oracle's float32 taps (truth64.py --dtype "
                    "float32), for atol = 10 x max(float32 deviation, eps32 x max|truth|) (the golden's rule)")
    ap.add_argument("--ckpt", type=Path, required=True)
    ap.add_argument("--stages", choices=("front", "all"), default="all", help="front: up to adapter.out")
    ap.add_argument("--markdown", type=Path)
    a = ap.parse_args(argv)
    if (a.golden is None) == (a.truth is None):
        ap.error("give exactly one of --golden and --truth")
    manifest, header = load_golden(a.golden) if a.golden else ({}, {})
    ckpt = open_checkpoint(a.ckpt)
    cfg, p = ckpt.config, FLOAT64
    cand = {f.stem: np.load(f, allow_pickle=False) for f in a.candidate.glob("*.npy")}

    def c(name):  # a candidate tap in float64
        return cand[name].astype(np.float64)

    def golden(name):
        if a.truth:
            return np.load(a.truth / f"{name}.npy", allow_pickle=False).astype(np.float64)
        return np.asarray(read_tensor(header[name]), dtype=np.float64)

    conv = ckpt.conv(p)
    de = conv.w1.shape[0]
    n_enc, n_dec = cfg.encoder.n_layers, cfg.decoder.n_layers
    replays = {  # output tap -> (input tap, float64 stage on the candidate's input)
        "enc.conv1.out": ("mel", lambda: gelu(conv1d(c("mel"), conv.w1, conv.b1, 1, np.zeros((c("mel").shape[0], 2)))).T),
        "enc.conv.out": ("enc.conv1.out",
                         lambda: gelu(conv1d(c("enc.conv1.out").T, conv.w2, conv.b2, 2, np.zeros((de, 1)))).T),
    }
    for i in range(n_enc):
        src = "enc.conv.out" if i == 0 else f"enc.L{i - 1:02d}.out"
        replays[f"enc.L{i:02d}.out"] = (src, lambda i=i, src=src: encoder_layer(
            c(src), np.arange(c(src).shape[0]), ckpt.encoder_layer(i, p), cfg.encoder, p)[0])
    replays["enc.out"] = (f"enc.L{n_enc - 1:02d}.out",
                          lambda: encoder_norm(c(f"enc.L{n_enc - 1:02d}.out"), ckpt.encoder_norm(p), cfg.encoder, p))
    replays["adapter.out"] = ("enc.out", lambda: adapter(c("enc.out"), ckpt.adapter(p), cfg.downsample_factor, p))
    delay = manifest["params"]["delay_tokens"] if manifest else load_setup(a.ckpt).protocol.t
    replays["dec.t_cond"] = ("", lambda: time_condition(delay, cfg.decoder, p))
    if a.stages == "all":
        for i in range(n_dec):
            src = "dec.in" if i == 0 else f"dec.L{i - 1:02d}.out"
            replays[f"dec.L{i:02d}.out"] = (src, lambda i=i, src=src: decoder_layer(
                c(src), np.arange(c(src).shape[0]), ckpt.decoder_layer(i, p),
                layer_ada_scale(c("dec.t_cond"), ckpt.decoder_layer(i, p), p), cfg.decoder, p)[0])
        replays["dec.norm"] = (f"dec.L{n_dec - 1:02d}.out", lambda: final_norm(
            c(f"dec.L{n_dec - 1:02d}.out"), ckpt.decoder_norm(p), cfg.decoder, p))
        replays["logits"] = ("dec.norm", lambda: lm_head(
            c("dec.norm"), lambda r: ckpt.embedding_rows(r, p), cfg.decoder.vocab_size, p))

    lines = ["| stage | input tap | float32 atol | inherited (% of atol) | local (% of atol) |", "|---|---|---|---|---|"]
    for name, (src, stage) in replays.items():
        if name not in cand or (src and src not in cand) or (a.truth and not (a.truth / f"{name}.npy").exists()):
            continue
        atol = manifest["outputs"][name]["tolerance"]["float32"]["atol"] if manifest else float("nan")
        if a.truth32 is not None and (a.truth32 / f"{name}.npy").exists():
            t64 = golden(name)
            dev = float(np.abs(np.load(a.truth32 / f"{name}.npy").astype(np.float64) - t64).max())
            atol = 10.0 * max(dev, float(np.finfo(np.float32).eps) * float(np.abs(t64).max()))
        got = c(name)
        gold = golden(name)
        rows = ""
        if got.ndim == 2 and gold.ndim == 2 and got.shape[0] < gold.shape[0] and name.startswith(("dec.", "logits")):
            # A port on the N - P schedule never feeds the last position: compare the rows it computes.
            rows, gold = f" (rows 0..{got.shape[0] - 1})", gold[: got.shape[0]]
        if got.shape != gold.shape:
            lines.append(f"| {name} | {src or '-'} | {atol:.3g} | shape {got.shape} vs {gold.shape} | |")
            continue
        inherited = float(np.abs(got - gold).max())
        replay = stage()
        local = float(np.abs(got - replay[: got.shape[0]]).max())
        def pct(v):
            return f"{v:.3g} ({100 * v / atol:.0f}%)" if np.isfinite(atol) else f"{v:.3g}"
        lines.append(f"| {name}{rows} | {src or '-'} | {atol:.3g} | {pct(inherited)} | {pct(local)} |")
        print(lines[-1], flush=True)
    text = "\n".join(lines)
    if a.markdown:
        a.markdown.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
