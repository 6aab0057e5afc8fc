"""Write golden tensors: one case per building block in bring-up order, plus end-to-end and streaming.

    voxtral-oracle golden [CKPT] [--audio AUDIO] --out DIR [--dtype float32|float64|bf16]
                          [--components LIST] [--framing offline|vllm] [--delay-ms N] [--seed N]
                          [--weights auto|resident|streamed] [--stop-after STAGE] [--tolerances-from DIR]

Without CKPT / --audio: the built-in tiny checkpoint and speech clip (the project's main job).
Values are computed in float64 and stored in --dtype (default float32); tolerances for float32,
float16 and bf16 ports are measured by re-running every case in those precisions (golden/SPEC.md). The float64 greedy
tokens are guessed by a float32 run and checked by one float64 forward (oracle/fixpoint.py); --weights
says whether that float32 run keeps its converted decoder weights (fast) or re-reads them per token.

--stop-after STAGE (front-end work): the e2e case stops after that tap (mel .. adapter.out): no decoder,
no greedy tokens, no fixpoint; the stream case (a whole-model run) is then left out of the default cases.
--tolerances-from DIR: the tolerances of an existing set, checked to belong to the same checkpoint, audio,
seed and cases (oracle/tolerance_reuse.py), instead of the float32/bf16/float16 runs.
"""

from __future__ import annotations

from oracle.blas import quiet_idle_threads

quiet_idle_threads()  # this file also runs as a script: before numpy loads OpenBLAS (see oracle/blas.py)

import hashlib
import sys
from pathlib import Path

from oracle_tools import argtypes
from oracle_tools.outputs import output_dir, staged_dir
from oracle_tools.progress import Progress

# Only what the parser needs is imported here (``voxtral-oracle --help`` builds every parser); the
# oracle's modules load when the command runs.
STORED_NAMES = ("float32", "float64", "bf16")  # oracle.golden.STORED_NAMES
FRAMINGS = ("offline", "vllm")  # oracle.streaming.FRAMINGS
CASES_NEEDING_GREEDY = {"e2e", "stream"}


def add_arguments(p) -> None:
    p.add_argument("checkpoint", metavar="CKPT", nargs="?", help="checkpoint directory (default: built-in tiny)")
    p.add_argument("--audio", metavar="AUDIO", help="audio file for the end-to-end cases (default: built-in clip)")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--dtype", choices=list(STORED_NAMES), default="float32", help="stored dtype (computed in float64)")
    p.add_argument("--components", metavar="LIST", type=argtypes.name_list, help="comma-separated case names (default: all)")
    p.add_argument("--framing", choices=FRAMINGS, default="offline", help="framing of the streaming case")
    p.add_argument("--delay-ms", type=int, default=None)
    p.add_argument("--seed", type=argtypes.seed, default=0, help="seed of the random block inputs")
    p.add_argument("--weights", choices=["auto", "resident", "streamed"], default="auto",
                   help="float32/bf16 runs: resident keeps the converted decoder + embedding (13.7 GB at full "
                        "size, fast greedy); streamed re-reads a layer when used; auto: resident if it fits 80%% of "
                        "available memory. float64 streams one layer at a time unless the whole model fits. The goldens are "
                        "the same")
    p.add_argument("--stop-after", metavar="STAGE", type=argtypes.front_end_stage,
                   help="e2e case: stop after this tap (mel, enc.conv1.out, enc.conv.out, enc.LNN.out, enc.out, "
                        "adapter.out): no decoder, no greedy generation; params.stop_after records it")
    p.add_argument("--tolerances-from", metavar="DIR",
                   help="take the tolerances of this golden set (same checkpoint, audio, seed and case params; "
                        "checked) instead of measuring them: no float32/bf16/float16 runs")
    p.add_argument("--quiet", action="store_true")


def context_from(checkpoint: str | None, audio: str | None, delay_ms, seed: int, framing: str, weights: str = "auto",
                 stop_after: str | None = None):
    import numpy as np

    from oracle import builtin
    from oracle.audio import load_audio
    from oracle.golden import Context, offline_audio
    from oracle.pipeline import load_setup
    from oracle.taps import check_stop_after

    ckpt_path = checkpoint or builtin.tiny_checkpoint()
    audio_path = audio or builtin.speech_clip()
    setup = load_setup(ckpt_path, delay_ms)
    check_stop_after(setup.ckpt.config, stop_after)  # before the audio is decoded
    raw = load_audio(audio_path, setup.ckpt.config.audio.sampling_rate)
    samples = offline_audio(raw)
    ctx = Context(setup, samples, seed, framing, weights=weights, stop_after=stop_after)
    labels = ("builtin:tiny" if checkpoint is None else str(checkpoint),
              builtin.BUILTIN_CLIP_LABEL if audio is None else str(audio),
              hashlib.sha256(Path(audio_path).read_bytes()).hexdigest(), bool(np.array_equal(raw, samples)))
    return ctx, labels


def run(args) -> int:
    from oracle.errors import OracleError
    from oracle.golden import CASES, RESIDENT_GROUPS, select_cases
    from oracle.golden_writer import provenance_for, write_golden_set
    from oracle.precision import FLOAT32, FLOAT64
    from oracle.streaming import resident_bytes

    cases = select_cases(args.components)
    if args.stop_after is not None:
        if args.components and "stream" in cases:
            raise OracleError("--stop-after: the stream case runs the whole model; leave it out of --components")
        cases = [c for c in cases if c != "stream"]
    output_dir(args.out)  # checked before the (long) computation
    ctx, (ckpt_label, audio_label, audio_sha, audio_exact) = context_from(args.checkpoint, args.audio, args.delay_ms, args.seed,
                                                             args.framing, args.weights, args.stop_after)
    parts = ["voxtral-oracle golden"] + ([ckpt_label] if args.checkpoint else [])
    parts += ([f"--audio {audio_label}"] if args.audio else []) + ["--out <DIR>", f"--dtype {args.dtype}"]
    parts += ([f"--components {','.join(cases)}"] if args.components else [])
    parts += [f"--framing {args.framing}", f"--delay-ms {ctx.setup.protocol.delay_ms}", f"--seed {args.seed}"]
    parts += [f"--stop-after {args.stop_after}"] if args.stop_after else []
    parts += [f"--tolerances-from {args.tolerances_from}"] if args.tolerances_from is not None else []
    prov = provenance_for(ctx, ckpt_label, audio_label, audio_sha, args.dtype, " ".join(parts), audio_exact)
    reuse = None
    if args.tolerances_from is not None:  # checked before the computation too
        from oracle.tolerance_reuse import ReusedTolerances

        reuse = ReusedTolerances.from_dir(args.tolerances_from, prov)
        for name in cases:
            reuse.check_case(name, CASES[name](ctx).params)
        prov["tolerances_from"] = reuse.provenance_entry()
    needs_greedy = set(cases) & (CASES_NEEDING_GREEDY - ({"e2e"} if args.stop_after else set()))
    if not args.quiet and needs_greedy:
        size = resident_bytes(ctx.ckpt, FLOAT32, RESIDENT_GROUPS) / 2**30
        print(f"weights: float32 decoder + embedding {'resident' if ctx.resident(FLOAT32) else 'streamed'} "
              f"({size:.2f} GiB{', chosen by available memory' if args.weights == 'auto' else ''}); "
              f"float64 {'resident' if ctx.resident(FLOAT64) else 'streamed one layer at a time'}", file=sys.stderr)
    progress = Progress("golden", enabled=False if args.quiet else None)
    # index.json moves in last: a reader never sees an index naming cases that are not there yet.
    with staged_dir(args.out, last=("index.json",)) as stage:
        write_golden_set(ctx, stage, cases, args.dtype, prov, progress=progress, reuse=reuse)
    print(f"wrote {len(cases)} cases to {args.out} ({', '.join(cases)})")
    return 0


if __name__ == "__main__":
    from oracle_tools.cli import run_as_script

    run_as_script("golden")
