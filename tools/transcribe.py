"""Transcribe an audio file with greedy decoding, offline or streaming.

    voxtral-oracle transcribe [CKPT] [AUDIO] [--delay-ms N] [--stream] [--framing offline|vllm]
                              [--dtype float64|float32|bf16] [--chunk-ms N] [--json]

Without CKPT/AUDIO: the built-in tiny checkpoint and speech clip. Offline mirrors the reference's
offline path (HF processor, vLLM get_generation_prompt): the audio is quantized to int16 as their WAV
round trip does. --stream feeds the raw samples in chunks of --chunk-ms as the real-time paths do and
prints text as soon as it is produced.
"""

from __future__ import annotations

from oracle.blas import quiet_idle_threads

quiet_idle_threads()  # this file also runs as a script: before numpy loads OpenBLAS (see oracle/blas.py)

import json
import sys

from oracle import builtin
from oracle_tools import argtypes
from oracle.pipeline import chunked, load_setup, offline_tokens, read_audio, stream_tokens
from oracle.precision import policy
from oracle.streaming import FRAMINGS, choose_resident, resident_bytes
from oracle.tokenizer import IncrementalDecoder

from oracle_tools.progress import Progress


def add_arguments(p) -> None:
    p.add_argument("checkpoint", metavar="CKPT", nargs="?", help="checkpoint directory (default: built-in tiny)")
    p.add_argument("audio", metavar="AUDIO", nargs="?", help="audio file (default: built-in speech clip)")
    p.add_argument("--delay-ms", type=int, default=None, help="transcription delay (default: tekken.json's, 480)")
    p.add_argument("--stream", action="store_true", help="stream the audio in chunks, print text as produced")
    p.add_argument("--framing", choices=FRAMINGS, default="offline")
    p.add_argument("--dtype", choices=["float64", "float32", "bf16"], default="float32")
    p.add_argument("--chunk-ms", type=argtypes.positive_int, default=80, help="chunk size when streaming (default 80)")
    p.add_argument("--weights", choices=["auto", "resident", "streamed"], default="auto",
                   help="resident: convert every layer once and keep it (fast; 16 GB float32 at full size); "
                        "streamed: re-read each layer when used (small, slow); auto: resident if it fits 80%% of "
                        "available memory")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--json", action="store_true")


def run(args) -> int:
    ckpt = args.checkpoint or builtin.tiny_checkpoint()
    audio_path = args.audio or builtin.speech_clip()
    setup = load_setup(ckpt, args.delay_ms)
    p = policy(args.dtype)
    audio = read_audio(audio_path, setup.ckpt.config.audio.sampling_rate)
    resident = {"auto": choose_resident(setup.ckpt, p), "resident": True, "streamed": False}[args.weights]
    if not args.quiet and not args.json:
        size = resident_bytes(setup.ckpt, p) / 2**30
        print(f"weights: {'resident' if resident else 'streamed'} ({size:.2f} GiB as {p.name}"
              f"{', chosen by available memory' if args.weights == 'auto' else ''})", file=sys.stderr)
    progress = Progress("transcribe", enabled=False if args.quiet or args.stream else None)
    if args.stream or args.framing != "offline":
        chunk = max(1, args.chunk_ms * setup.ckpt.config.audio.sampling_rate // 1000)
        dec = [IncrementalDecoder(setup.tekken)]

        def show(new):
            if args.json:
                return
            for t in new:
                dec[0], text = dec[0].push(t)
                sys.stdout.write(text)
            sys.stdout.flush()

        tokens = stream_tokens(setup, chunked(audio, chunk), p, framing=args.framing,
                               on_tokens=show if args.stream else None, resident=resident)
        if args.stream and not args.json:
            dec[0], tail = dec[0].flush()
            sys.stdout.write(tail + "\n")
    else:
        tokens = offline_tokens(setup, audio, p, resident=resident, progress=progress)
    text = setup.tekken.decode(tokens)
    if args.json:
        prompt = [int(t) for t in setup.protocol.prompt]
        print(json.dumps({"tokens": prompt + tokens, "prompt_length": len(prompt), "text": text,
                          "delay_ms": setup.protocol.delay_ms, "framing": args.framing,
                          "mode": "stream" if args.stream else "offline", "dtype": p.name,
                          "weights": "resident" if resident else "streamed", "weights_choice": args.weights,
                          "checkpoint": str(ckpt), "audio": str(audio_path)}, ensure_ascii=False))
    elif not args.stream:
        print(text)
    return 0


if __name__ == "__main__":
    from oracle_tools.cli import run_as_script

    run_as_script("transcribe")
