#!/usr/bin/env python3
"""The oracle's float64 e2e taps for the tokens a candidate fed itself (no greedy generation).

    python examples/voxtral-c/truth64.py CANDIDATE_DIR --ckpt CKPT --out TRUTH_DIR [--audio WAV]

A stand-in for the e2e golden when only its float taps are needed and the full golden run (four
float64/float32/bf16 generations at full size) is too slow: the same pipeline (offline padding, log-mel,
conv stem, encoder, adapter, decoder teacher-forced, LM head) in float64, fed prompt + the candidate's
own `tokens` (STREAMING_PAD after its first EOS, the golden's tokens_in rule). `tokens` here is the
float64 argmax at positions P-1 ... N-2: the float64 greedy sequence up to and including the first
step where it differs from the candidate's (beyond that it is teacher-forced, not greedy).
Writes one .npy per tap (float64) into TRUTH_DIR; `local_errors.py --truth TRUTH_DIR` reads them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from oracle.audio import load_audio
from oracle.builtin import speech_clip
from oracle.forward import audio_embeddings, decode_positions
from oracle.mel import log_mel
from oracle.pipeline import load_setup
from oracle.precision import policy
from oracle.taps import Taps


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("candidate", type=Path)
    ap.add_argument("--ckpt", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--audio", type=Path)
    ap.add_argument("--front-only", action="store_true", help="stop after adapter.out")
    ap.add_argument("--dtype", choices=("float64", "float32"), default="float64",
                    help="float32: the oracle's own float32 run, for tolerances by the golden's rule")
    a = ap.parse_args(argv)
    setup = load_setup(a.ckpt)
    proto, ckpt = setup.protocol, setup.ckpt
    audio = load_audio(a.audio or speech_clip()).astype(np.float32).astype(np.float64)
    p = policy(a.dtype)
    mel = log_mel(proto.pad_offline(audio), p.dtype)
    taps = Taps("mel", "enc.conv1.out", "enc.conv.out", "enc.L??.out", "enc.out", "adapter.out", "dec.in", "dec.t_cond",
                "dec.L??.out", "dec.norm", "logits", "tokens")  # the e2e golden names only
    emb = audio_embeddings(ckpt, mel, p, tap=taps)
    a.out.mkdir(parents=True, exist_ok=True)
    if not a.front_only:
        n, n_prompt = emb.shape[0], len(proto.prompt)
        own = np.load(a.candidate / "tokens.npy", allow_pickle=False).astype(np.int64)
        if (own == proto.eos).any():
            own = np.concatenate([own[: int(np.argmax(own == proto.eos)) + 1], np.full(n, proto.pad, np.int64)])
        fed = np.concatenate([proto.prompt, own, np.full(n, proto.pad, np.int64)])[:n]
        np.save(a.out / "tokens_in.npy", fed)
        logits = decode_positions(ckpt, emb, fed, proto.t, p, tap=taps)  # taps "logits" itself
        taps("tokens", np.argmax(logits[n_prompt - 1: n - 1], axis=-1).astype(np.int64))
    for name, value in taps.values.items():
        np.save(a.out / f"{name}.npy", value)
    print(f"wrote {len(taps.values)} taps to {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
