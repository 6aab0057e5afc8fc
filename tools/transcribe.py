"""Transcribe an audio file with greedy decoding, offline or streaming.

    voxtral-oracle transcribe [CKPT] [AUDIO] [--delay-ms N] [--stream] [--framing offline|vllm]
                              [--dtype float64|float32|bf16] [--chunk-ms N] [--max-audio-seconds S] [--json]

Without CKPT/AUDIO: the built-in tiny checkpoint and speech clip. AUDIO is any file libsndfile reads
(WAV, FLAC, OGG/Vorbis, MP3, ...), any rate and channel count: it is brought to 16 kHz mono exactly as
mistral-common's Audio.from_file(strict=False) + Audio.resample do (float32 channel mean, soxr HQ).
Offline mirrors the reference's offline path (HF processor, vLLM get_generation_prompt): the 16 kHz
audio is quantized to int16 as their WAV round trip does. --stream decodes and resamples the file as
it goes (soxr's stream resampler: the same samples as offline's one-shot call, bit for bit) and feeds
the unquantized 16 kHz samples in chunks of --chunk-ms as the real-time paths do, printing text as soon
as it is produced; memory stays bounded by the model's windows, whatever the file's length. A live
client of vLLM's realtime API must itself send 16 kHz PCM16.
"""

from __future__ import annotations

from oracle.blas import quiet_idle_threads

quiet_idle_threads()  # this file also runs as a script: before numpy loads OpenBLAS (see oracle/blas.py)

import json
import sys

from oracle import builtin
from oracle.audio import MAX_AUDIO_SECONDS
from oracle_tools import argtypes
from oracle.errors import OracleError
from oracle.pipeline import check_offline_memory, load_setup, offline_tokens, read_audio, stream_audio, stream_tokens
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
    p.add_argument("--dtype", choices=["float64", "float32", "bf16", "float16"], default="float32")
    p.add_argument("--chunk-ms", type=argtypes.positive_int, default=80, help="chunk size when streaming (default 80)")
    p.add_argument("--max-audio-seconds", type=argtypes.nonneg_finite, default=MAX_AUDIO_SECONDS, metavar="S",
                   help=f"refuse longer audio, checked from the file's header before decoding "
                        f"(default {MAX_AUDIO_SECONDS:g} s = 2 hours)")
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
    rate = setup.ckpt.config.audio.sampling_rate
    streaming = args.stream or args.framing != "offline"
    if streaming:
        if args.chunk_ms < 1:
            raise OracleError(f"--chunk-ms must be a positive number of milliseconds, got {args.chunk_ms}")
        # opened and checked now; decoded and resampled as the session consumes it
        chunks = stream_audio(audio_path, rate, max(1, args.chunk_ms * rate // 1000), args.max_audio_seconds)
    else:
        audio = read_audio(audio_path, rate, args.max_audio_seconds)
        check_offline_memory(setup, len(audio), p, audio_path)
    resident = {"auto": choose_resident(setup.ckpt, p), "resident": True, "streamed": False}[args.weights]
    if not args.quiet and not args.json:
        size = resident_bytes(setup.ckpt, p) / 2**30
        print(f"weights: {'resident' if resident else 'streamed'} ({size:.2f} GiB as {p.name}"
              f"{', chosen by available memory' if args.weights == 'auto' else ''})", file=sys.stderr)
    progress = Progress("transcribe", enabled=False if args.quiet or args.stream else None)
    if streaming:
        dec = [IncrementalDecoder(setup.tekken)]

        def show(new):
            if args.json:
                return
            for t in new:
                dec[0], text = dec[0].push(t)
                sys.stdout.write(text)
            sys.stdout.flush()

        tokens = stream_tokens(setup, chunks, p, framing=args.framing,
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
