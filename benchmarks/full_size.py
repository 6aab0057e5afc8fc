"""Full-size benchmark: the oracle against transformers on the same synthetic checkpoint and speech.

    python benchmarks/full_size.py [--checkpoint DIR] [--seconds 10] [--out results.json] [--repeat N]
                                   [--steps 12] [--no-transformers] [--only TASKS]

Makes (or reuses) a synthetic full-size checkpoint (`voxtral-oracle synth --size full`) and a speech
clip (the built-in clip repeated to --seconds), then runs each measurement in its own process (so
peak RSS is that measurement's alone), alternating oracle and transformers (with --repeat, every
second round puts transformers first in each pair: see ``rounds``):

    load            oracle: open + validate the checkpoint (lazy); transformers: build the float32 model
    forward_f32     one offline forward: mel + token ids -> logits [N, V]
    forward_f64     the oracle's float64 forward (transformers has no float64 run here)
    decode_step     median seconds per greedy step after the prompt, float32 (oracle: resident decoder)
    matmul_floor    the forward's weight matmuls alone, float32, random operands of the same shapes:
                    the oracle's layers.linear (numpy, OpenBLAS) and torch's F.linear (MKL); the floor
                    under each side's forward on this machine
    golden          `voxtral-oracle golden CKPT`: the full 16-case golden set of the built-in clip (the
                    main job: float64 values, float32/bf16 tolerances), wall time and peak RSS
    golden_e2e      the same with `--components e2e` alone
    stream          seconds per 80 ms feed of a float32 streaming session (`transcribe --stream`: oracle
                    StreamingSession, weights resident when they fit; transformers: the model doc's
                    streaming generate with an input-features generator), the clip repeated to --seconds

The oracle's forward starts with the checkpoint in the OS page cache (read through once, untimed),
as transformers' forward starts with its weights in memory; both loads are timed apart.

Prints a table (wall time, peak RSS, GFLOP/s against the analytic FLOP count, oracle/transformers
ratio) and writes JSON. The oracle's speed is numpy's BLAS kernel: it prints which OpenBLAS kernel set
runs and says when the environment pins one (OPENBLAS_CORETYPE, see oracle/blas.py). transformers runs
only when it is installed (the test extra).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from oracle import blas

blas.quiet_idle_threads()  # before numpy loads OpenBLAS (oracle/blas.py says why)

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TASKS = ["oracle:load", "hf:load", "oracle:forward_f32", "hf:forward_f32", "oracle:forward_f64",
         "oracle:decode_step", "hf:decode_step", "oracle:matmul_floor", "hf:matmul_floor",
         "oracle:golden", "oracle:golden_e2e", "oracle:stream", "hf:stream"]
MEASUREMENTS = ("load", "forward_f32", "forward_f64", "decode_step", "matmul_floor", "golden", "golden_e2e", "stream")


# -- analytic FLOPs --------------------------------------------------------------------------------

def forward_matmuls(cfg, n: int) -> list[tuple[str, int, int, int, int]]:
    """The weight matmuls of one offline forward over N decoder positions (4N encoder frames, 8N mel):
    (what, M rows, K inner, N outputs, how many). The conv stem is its im2col matmul."""
    e, d = cfg.encoder, cfg.decoder
    s, t = 4 * n, 8 * n
    he = e.n_heads * e.head_dim
    hq, hk = d.n_heads * d.head_dim, d.n_kv_heads * d.head_dim
    return [
        ("conv1", t, cfg.audio.num_mel_bins * 3, e.dim, 1),
        ("conv2", s, e.dim * 3, e.dim, 1),
        ("enc q/k/v", s, e.dim, he, 3 * e.n_layers),
        ("enc o", s, he, e.dim, e.n_layers),
        ("enc w1/w3", s, e.dim, e.hidden_dim, 2 * e.n_layers),
        ("enc w2", s, e.hidden_dim, e.dim, e.n_layers),
        ("adapter in", n, 4 * e.dim, d.dim, 1),
        ("adapter out", n, d.dim, d.dim, 1),
        ("dec q", n, d.dim, hq, d.n_layers),
        ("dec k/v", n, d.dim, hk, 2 * d.n_layers),
        ("dec o", n, hq, d.dim, d.n_layers),
        ("dec w1/w3", n, d.dim, d.hidden_dim, 2 * d.n_layers),
        ("dec w2", n, d.hidden_dim, d.dim, d.n_layers),
        ("lm head", n, d.dim, d.vocab_size, 1),
    ]


def forward_flops(cfg, n: int) -> float:
    """Multiply-adds x 2 of one offline forward: the weight matmuls plus attention's q·k and p·v over the
    keys each query sees (causal, windowed)."""
    e, d = cfg.encoder, cfg.decoder
    s = 4 * n
    w = min(s, e.sliding_window)
    enc_attn = e.n_heads * e.head_dim * 2 * sum(min(i + 1, w) for i in range(s))
    dec_attn = d.n_heads * d.head_dim * 2 * sum(min(i + 1, d.sliding_window) for i in range(n))
    macs = sum(m * k * o * c for _, m, k, o, c in forward_matmuls(cfg, n)) + e.n_layers * enc_attn + d.n_layers * dec_attn
    return 2.0 * macs


def matmul_floor(cfg, n: int, engine: str, reps: int = 3) -> dict:
    """Seconds that the forward's weight matmuls alone take (random float32 operands of the same shapes,
    each shape timed ``reps`` times after a warm-up, best time x count): the floor under a float32
    forward, for the oracle (engine "numpy": ``layers.linear`` on OpenBLAS) and for transformers (engine
    "torch": ``F.linear`` on MKL)."""
    rng = np.random.default_rng(0)
    if engine == "torch":
        import torch

        def mm(x, w):
            return torch.nn.functional.linear(x, w)
        make = lambda r, c: torch.from_numpy(rng.standard_normal((r, c), dtype=np.float32))  # noqa: E731
    else:
        from oracle.layers import linear as mm  # the oracle's own matmul (it picks W xᵀ for few rows)
        make = lambda r, c: rng.standard_normal((r, c), dtype=np.float32)  # noqa: E731
    total, per = 0.0, {}
    for what, m, k, o, c in forward_matmuls(cfg, n):
        x, w = make(m, k), make(o, k)
        mm(x, w)
        best = float("inf")
        for _ in range(reps):
            t = time.perf_counter()
            mm(x, w)
            best = min(best, time.perf_counter() - t)
        per[what] = best * c
        total += best * c
    flops = 2.0 * sum(m * k * o * c for _, m, k, o, c in forward_matmuls(cfg, n))
    return {"seconds": total, "flops": flops, "per_matmul_seconds": per}


def step_flops(cfg) -> float:
    d = cfg.decoder
    hq, hk = d.n_heads * d.head_dim, d.n_kv_heads * d.head_dim
    return 2.0 * (d.n_layers * (d.dim * hq + 2 * d.dim * hk + hq * d.dim + 3 * d.dim * d.hidden_dim) + d.dim * d.vocab_size)


# -- inputs ----------------------------------------------------------------------------------------

def inputs(ckpt_dir: Path, seconds: float):
    from oracle import builtin
    from oracle.audio import load_audio
    from oracle.mel import log_mel
    from oracle.pipeline import load_setup

    setup = load_setup(ckpt_dir)
    clip = load_audio(builtin.speech_clip())
    n = int(seconds * 16000)
    audio = np.resize(clip, n)  # the clip repeated
    proto = setup.protocol
    mel = log_mel(proto.pad_offline(audio), audio=proto.audio)
    n_pos = mel.shape[1] // 8
    ids = np.concatenate([proto.prompt, 1000 + (np.arange(n_pos - len(proto.prompt)) % 500)]).astype(np.int64)
    return setup, mel, ids


# -- one measurement (in its own process) ----------------------------------------------------------

def build_hf(ckpt, dtype):
    """transformers' model with the checkpoint's weights, built on the meta device and filled in place
    (no second copy), through the oracle's name table."""
    import torch
    from transformers import VoxtralRealtimeConfig, VoxtralRealtimeForConditionalGeneration

    from oracle.weights import TENSORS, permute_rows

    cfg = ckpt.config
    with torch.device("meta"):
        model = VoxtralRealtimeForConditionalGeneration(VoxtralRealtimeConfig(**cfg.to_hf_config()))
    state = {}
    for spec in TENSORS:
        count = {"enc_layer": cfg.encoder.n_layers, "dec_layer": cfg.decoder.n_layers}.get(spec.group)
        for i in range(count) if count is not None else [None]:
            arr = ckpt.field(spec, i, _F32)
            if spec.rope is not None:
                arr = permute_rows(arr, *spec.rope(cfg))
            state[spec.names(i)[1]] = torch.from_numpy(np.ascontiguousarray(arr)).to(dtype)
    state["lm_head.weight"] = state["model.language_model.embed_tokens.weight"]
    model.load_state_dict(state, strict=True, assign=True)
    model.tie_weights()
    for mod in model.modules():  # rebuild the non-persistent buffers the meta device left empty
        if hasattr(mod, "inv_freq") and hasattr(mod, "compute_default_rope_parameters"):
            inv, _ = mod.compute_default_rope_parameters(mod.config)
            mod.inv_freq = inv
            mod.original_inv_freq = inv.clone()
        if type(mod).__name__ == "VoxtralRealtimeTimeEmbedding":
            import math

            mod.inv_freq = torch.exp(-math.log(mod.theta) * torch.arange(mod.dim // 2).float() / (mod.dim // 2))
    model.config._attn_implementation = ATTENTION
    for sub in (model.config.audio_config, model.config.text_config):
        sub._attn_implementation = ATTENTION
    return model.eval()


_F32 = None
ATTENTION = "sdpa"  # transformers' attention kernel (--hf-attention): sdpa (its default) or eager


def read_through(files) -> float:
    """Read the checkpoint once, untimed, so the oracle's forward finds it in the OS page cache, as
    transformers' timed forward finds its weights in memory (its load is timed apart, as the oracle's
    is). A cold cache adds the disk: on this project's VM 8.9 GB read at about 0.5 GB/s (17.6 s)."""
    t = time.perf_counter()
    buf = bytearray(16 << 20)
    for f in files:
        with open(f, "rb", buffering=0) as fh:
            while fh.readinto(buf):
                pass
    return time.perf_counter() - t


def run_one(task: str, ckpt_dir: Path, seconds: float, steps: int) -> dict:
    global _F32
    from oracle.checkpoint import open_checkpoint
    from oracle.forward import forward
    from oracle.precision import FLOAT32, FLOAT64
    from oracle.streaming import DecoderState, Model, decoder_step
    from oracle.decoder import time_condition
    from oracle.forward import audio_embeddings

    _F32 = FLOAT32
    who, what = task.split(":")
    t0 = time.perf_counter()
    ckpt = open_checkpoint(ckpt_dir)
    setup, mel, ids = inputs(ckpt_dir, seconds)
    n = len(ids)
    res: dict = {"task": task, "n_positions": n}
    if what == "matmul_floor":
        if who == "hf":
            import torch

            torch.set_num_threads(os.cpu_count() or 1)
        res.update(matmul_floor(ckpt.config, n, "torch" if who == "hf" else "numpy"))
    elif who == "oracle":
        if what == "load":
            res["seconds"] = time.perf_counter() - t0
        elif what in ("forward_f32", "forward_f64"):
            p = FLOAT32 if what.endswith("f32") else FLOAT64
            res["page_cache_seconds"] = read_through(ckpt.files)
            t = time.perf_counter()
            logits = forward(ckpt, mel.astype(p.dtype), ids, setup.protocol.delay_tokens, p)
            res["seconds"] = time.perf_counter() - t
            res["flops"] = forward_flops(ckpt.config, n)
            res["checksum"] = float(np.abs(logits).sum())
        elif what in ("golden", "golden_e2e"):
            import tempfile

            from oracle_tools.cli import main as cli

            res["page_cache_seconds"] = read_through(ckpt.files)
            with tempfile.TemporaryDirectory() as out:
                t = time.perf_counter()
                rc = cli(["golden", str(ckpt_dir), "--out", out, "--quiet"]
                         + (["--components", "e2e"] if what == "golden_e2e" else []))
                res["seconds"] = time.perf_counter() - t
                assert rc == 0, rc
                index = json.loads((Path(out) / "index.json").read_text())
                res["cases"] = len(index["cases"])
        elif what == "stream":
            from oracle.streaming import StreamingSession, choose_resident

            audio = np.resize(load_clip(), int(seconds * 16000))
            model = Model(ckpt, FLOAT32, resident=choose_resident(ckpt, FLOAT32))
            session = StreamingSession(model, setup.protocol)
            spt = setup.protocol.samples_per_token
            times, tokens = [], 0
            t = time.perf_counter()
            for start in range(0, len(audio), spt):  # transcribe --stream's default 80 ms chunks
                f = time.perf_counter()
                tokens += len(session.feed(audio[start:start + spt]))
                times.append(time.perf_counter() - f)
            tokens += len(session.finish())
            res.update(stream_result(time.perf_counter() - t, times, tokens))
            res["resident"] = model.resident
        elif what == "decode_step":
            model = Model(ckpt, FLOAT32, resident=True)
            audio = audio_embeddings(ckpt, mel.astype(np.float32), FLOAT32)
            t_cond = time_condition(setup.protocol.delay_tokens, ckpt.config.decoder, FLOAT32)
            P = len(setup.protocol.prompt)
            t = time.perf_counter()
            logits, st = decoder_step(model, audio[:P], setup.protocol.prompt, t_cond, DecoderState.start(model))
            res["prefill_seconds"] = time.perf_counter() - t  # includes converting the resident weights once
            tok, times = int(logits[-1].argmax()), []
            for k in range(steps):
                t = time.perf_counter()
                logits, st = decoder_step(model, audio[P + k:P + k + 1], np.array([tok]), t_cond, st)
                tok = int(logits[-1].argmax())
                times.append(time.perf_counter() - t)
            res["step_seconds"] = times
            res["seconds"] = float(np.median(times))
            res["flops"] = step_flops(ckpt.config)
    else:
        import torch

        torch.set_num_threads(os.cpu_count() or 1)
        t = time.perf_counter()
        model = build_hf(ckpt, torch.float32)
        load = time.perf_counter() - t
        if what == "load":
            res["seconds"] = load
        else:
            feats = torch.from_numpy(mel[None].astype(np.float32))
            ids_t = torch.from_numpy(ids[None])
            with torch.no_grad():
                if what == "forward_f32":
                    t = time.perf_counter()
                    out = model(input_ids=ids_t, input_features=feats, num_delay_tokens=setup.protocol.delay_tokens)
                    res["seconds"] = time.perf_counter() - t
                    res["flops"] = forward_flops(ckpt.config, n)
                    res["checksum"] = float(out.logits.abs().sum())
                elif what == "stream":
                    res.update(hf_stream(model, ckpt_dir, np.resize(load_clip(), int(seconds * 16000))))
                elif what == "decode_step":
                    P = len(setup.protocol.prompt)
                    prompt = torch.from_numpy(setup.protocol.prompt[None])
                    def gen(k):
                        t = time.perf_counter()
                        model.generate(input_ids=prompt, input_features=feats, num_delay_tokens=setup.protocol.delay_tokens,
                                       do_sample=False, max_new_tokens=k, min_new_tokens=k)
                        return time.perf_counter() - t
                    one, many = gen(1), gen(1 + steps)
                    res["seconds"] = (many - one) / steps
                    res["prefill_seconds"] = one
                    res["flops"] = step_flops(ckpt.config)
    return res


def load_clip() -> np.ndarray:
    from oracle import builtin
    from oracle.audio import load_audio

    return load_audio(builtin.speech_clip())


def stream_result(total: float, feed_seconds: list[float], tokens: int) -> dict:
    """A streaming run's numbers: ``seconds`` is the mean time per 80 ms feed (what the table compares)."""
    return {"seconds": total / len(feed_seconds), "total_seconds": total, "feeds": len(feed_seconds),
            "median_feed_seconds": float(np.median(feed_seconds)), "max_feed_seconds": float(np.max(feed_seconds)),
            "tokens": tokens}


def hf_stream(model, ckpt_dir: Path, audio: np.ndarray) -> dict:
    """transformers' streaming generate, the model doc's recipe (tests/test_generate_hf.py runs the same
    one for equality): the processor's first chunk, then 1280 new samples per chunk from a generator;
    each chunk's time is measured between the generator's pulls."""
    import torch
    from transformers import MistralCommonBackend, VoxtralRealtimeFeatureExtractor, VoxtralRealtimeProcessor

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from hf_reference import hf_stream_chunks  # the project's transformers harness

    proc = VoxtralRealtimeProcessor(feature_extractor=VoxtralRealtimeFeatureExtractor(),
                                    tokenizer=MistralCommonBackend.from_pretrained(str(ckpt_dir)))
    first, chunks = hf_stream_chunks(proc, audio)
    pulls: list[float] = []

    def features():
        for chunk in chunks:
            pulls.append(time.perf_counter())
            yield chunk

    t = time.perf_counter()
    with torch.no_grad():
        out = model.generate(input_ids=first.input_ids, input_features=features(),
                             num_delay_tokens=first.num_delay_tokens, do_sample=False)
    total = time.perf_counter() - t
    feed_seconds = list(np.diff(pulls + [t + total]))
    return stream_result(total, feed_seconds, int(out.shape[1] - first.input_ids.shape[1]))


def rounds(tasks: list[str], repeat: int) -> list[str]:
    """The task list ``repeat`` times; in every second round each measurement's transformers run goes
    before the oracle's. Which process ran just before matters on a VM: measured on this project's 2-core
    KVM guest, the oracle's forward took 30-35 s right after a transformers process (17 GB, which also
    evicts the page cache) and 26-31 s after one of its own. So neither side always goes second."""
    out = []
    for r in range(repeat):
        order, i = list(tasks), 0
        while r % 2 and i + 1 < len(order):
            if order[i].split(":")[1] == order[i + 1].split(":")[1]:  # an oracle/transformers pair
                order[i], order[i + 1] = order[i + 1], order[i]
                i += 1
            i += 1
        out += order
    return out


def measure(task: str, args) -> dict:
    """Run one task in a child process; its own peak RSS comes from wait4's rusage."""
    cmd = [sys.executable, __file__, "--one", task, "--checkpoint", str(args.checkpoint), "--seconds", str(args.seconds),
           "--steps", str(args.steps), "--hf-attention", args.hf_attention]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.stdout.close()
    if os.waitstatus_to_exitcode(status) != 0:
        return {"task": task, "error": f"exit {os.waitstatus_to_exitcode(status)}"}
    res = json.loads(out.strip().splitlines()[-1])
    res["peak_rss_gib"] = usage.ru_maxrss / 2**20  # KiB -> GiB
    if res.get("flops") and res.get("seconds"):
        res["gflops"] = res["flops"] / res["seconds"] / 1e9
    return res


def summarize(results: list[dict]) -> dict[str, dict]:
    """Per task over its repeats: the median time (its GFLOP/s recomputed), the largest peak RSS."""
    by: dict[str, list[dict]] = {}
    for r in results:
        by.setdefault(r["task"], []).append(r)
    out = {}
    for task, runs in by.items():
        ok = [r for r in runs if "seconds" in r]
        if not ok:
            out[task] = runs[-1]
            continue
        r = dict(ok[0])
        r["seconds"] = float(np.median([x["seconds"] for x in ok]))
        r["all_seconds"] = [x["seconds"] for x in ok]
        r["peak_rss_gib"] = max(x["peak_rss_gib"] for x in ok)
        if r.get("flops"):
            r["gflops"] = r["flops"] / r["seconds"] / 1e9
        out[task] = r
    return out


def table(results: list[dict]) -> str:
    by = summarize(results)
    lines = [f"{'measurement':<14} {'oracle s':>9} {'RSS GiB':>8} {'GFLOP/s':>8} | {'transformers s':>14} {'RSS GiB':>8} "
             f"{'GFLOP/s':>8} | {'ratio':>6}"]
    for what in MEASUREMENTS:
        o, h = by.get(f"oracle:{what}"), by.get(f"hf:{what}")
        def cols(r):
            if not r or "seconds" not in r:
                return f"{'-':>9} {'-':>8} {'-':>8}" if r is None or "error" not in r else f"{r['error']:>27}"
            return f"{r['seconds']:>9.3f} {r['peak_rss_gib']:>8.2f} {r.get('gflops', float('nan')):>8.1f}"
        ratio = f"{o['seconds'] / h['seconds']:>6.2f}" if o and h and "seconds" in o and "seconds" in h else f"{'-':>6}"
        lines.append(f"{what:<14} {cols(o)} | {cols(h).rjust(32)} | {ratio}")
    f32, f64 = by.get("oracle:forward_f32"), by.get("oracle:forward_f64")
    if f32 and f64 and "seconds" in f32 and "seconds" in f64:
        lines.append(f"oracle float64 / float32 forward: {f64['seconds'] / f32['seconds']:.2f}x")
    for who, name in (("oracle", "oracle"), ("hf", "transformers")):
        fw, fl = by.get(f"{who}:forward_f32"), by.get(f"{who}:matmul_floor")
        if fw and fl and "seconds" in fw and "seconds" in fl:
            lines.append(f"{name} float32 forward beyond its matmul floor: {fw['seconds'] - fl['seconds']:.2f} s "
                         f"(floor {fl['seconds']:.2f} s)")
    if any(len(r.get("all_seconds", [])) > 1 for r in by.values()):
        lines.append("(median of the repeats; peak RSS is the largest)")
        for what in MEASUREMENTS:  # the machine's speed drifts: each round's oracle/transformers pair ran back to back
            o, h = by.get(f"oracle:{what}", {}).get("all_seconds"), by.get(f"hf:{what}", {}).get("all_seconds")
            if o and h and len(o) == len(h) > 1:
                lines.append(f"{what} ratio per round: " + ", ".join(f"{a / b:.2f}" for a, b in zip(o, h)))
    return "\n".join(lines)


def machine() -> dict:
    """What the numbers depend on: the CPU, its vector units, numpy's BLAS."""
    info: dict = {"numpy": np.__version__, "OPENBLAS_THREAD_TIMEOUT": os.environ.get("OPENBLAS_THREAD_TIMEOUT"),
                  "blas_kernel": blas.kernel(), "openblas_env": blas.forced()}
    try:
        cpu = Path("/proc/cpuinfo").read_text()
        info["cpu"] = next(line.split(":", 1)[1].strip() for line in cpu.splitlines() if line.startswith("model name"))
        flags = next(line for line in cpu.splitlines() if line.startswith("flags")).split()
        info["vector"] = [f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    except (OSError, StopIteration):
        pass
    cfg = np.show_config(mode="dicts") if hasattr(np, "show_config") else {}
    try:
        info["blas"] = cfg["Build Dependencies"]["blas"]["name"]
    except (TypeError, KeyError):
        pass
    return info


def kernel_line(info: dict) -> str:
    """numpy's BLAS kernel, and what pins it (a machine may set OPENBLAS_CORETYPE for older builds)."""
    line = f"numpy's BLAS kernel: {info['blas_kernel']}"
    if info["openblas_env"]:
        pins = " ".join(f"{k}={v}" for k, v in info["openblas_env"].items())
        line += (f" (pinned by {pins}: OpenBLAS runs that, not what it would pick for this CPU; "
                 "`env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE` before the command lets it pick)")
    return line


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", type=Path, default=ROOT / "out" / "full-synth")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--out", type=Path, default=ROOT / "out" / "benchmark.json")
    ap.add_argument("--no-transformers", action="store_true")
    ap.add_argument("--only", help="comma-separated tasks, e.g. oracle:forward_f32,hf:forward_f32")
    ap.add_argument("--hf-attention", choices=["sdpa", "eager"], default="sdpa",
                    help="transformers' attention implementation (its default is sdpa)")
    ap.add_argument("--repeat", type=int, default=1, help="run the task list this many times (alternating); "
                    "the table shows medians")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    global ATTENTION
    ATTENTION = args.hf_attention
    if args.one:
        print(json.dumps(run_one(args.one, args.checkpoint, args.seconds, args.steps)))
        return 0
    if not (args.checkpoint / "consolidated.safetensors").exists():
        print(f"writing a synthetic full-size checkpoint to {args.checkpoint} (about 2.5 minutes, 8.9 GB)")
        subprocess.run([sys.executable, "-m", "oracle_tools.cli", "synth", str(args.checkpoint), "--size", "full"], check=True)
    tasks = args.only.split(",") if args.only else TASKS
    info = machine()
    print(kernel_line(info))
    try:
        import transformers  # noqa: F401
        have_hf = not args.no_transformers
    except ImportError:
        have_hf = False
    results = []
    for task in rounds(tasks, max(1, args.repeat)):
        if task.startswith("hf:") and not have_hf:
            continue
        print(f"running {task} ...", flush=True)
        r = measure(task, args)
        results.append(r)
        print(f"  {json.dumps({k: v for k, v in r.items() if k != 'step_seconds'})}", flush=True)
    print()
    print(table(results))
    print(kernel_line(info))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"checkpoint": str(args.checkpoint), "seconds_of_audio": args.seconds,
                                    "hf_attention": args.hf_attention,
                                    "cpu_count": os.cpu_count(), "machine": info, "summary": summarize(results),
                                    "results": results}, indent=1) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
