#!/usr/bin/env python3
"""Build antirez/voxtral.c with the e2e tap dump and run it: the candidate directory for `voxtral-oracle compare`.

    python examples/voxtral-c/run.py CHECKOUT --ckpt CKPT_DIR [--golden GOLDEN_DIR] --out CANDIDATE_DIR
        [--audio clip.wav] [--fix 1-gelu-erf --fix 2-dft-angle-mod-n ...] [--build BUILD_DIR]

CHECKOUT is a voxtral.c source tree (`git clone https://github.com/antirez/voxtral.c`; this script never
touches the network nor the checkout). It is copied to BUILD_DIR (default CANDIDATE_DIR + ".build"),
dump-taps.patch and voxtral_dump.[ch] are added, the chosen fixes/*.patch are applied in the order given,
and `make blas` builds it (OpenBLAS: `apt-get install libopenblas-dev`).

The golden's `tokens_in` (prompt + the golden greedy tokens) is passed with --tokens-in: voxtral.c then
feeds tokens_in[p] at every position p (teacher forcing) and decodes past EOS, so every float tap covers
the golden's N positions. The `tokens` tap is what voxtral.c's own loop emits (up to and including its
first EOS): with teacher forcing it agrees with a free run up to the first differing token, which is the
only part compare looks at. Without --golden, voxtral.c feeds its own tokens (STREAMING_PAD after its
first EOS, the golden's rule for tokens_in): the same taps whenever its tokens equal the golden's.
"""

from __future__ import annotations

import argparse
import json
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
FIXES = sorted(p.stem for p in (HERE / "fixes").glob("*.patch"))
BLAS_INCLUDES = ["/usr/include/openblas", "/usr/include/x86_64-linux-gnu/openblas-pthread",
                 "/usr/include/aarch64-linux-gnu/openblas-pthread", "/usr/include"]


def fail(msg: str) -> None:
    print(f"run.py: {msg}", file=sys.stderr)
    sys.exit(1)


def golden_tokens_in(golden: Path) -> np.ndarray:
    """tokens_in of the e2e case, from a golden set (index.json) or the case directory (manifest.json)."""
    case = golden
    if (golden / "index.json").is_file():
        index = json.loads((golden / "index.json").read_text())
        dirs = [c["dir"] for c in index.get("cases", []) if c.get("name") == "e2e"]
        if not dirs:
            fail(f"{golden}/index.json: the set has no e2e case")
        case = golden / dirs[0]
    manifest = case / "manifest.json"
    if not manifest.is_file():
        fail(f"{golden}: neither a golden set (index.json) nor a case directory (manifest.json)")
    tensors = case / json.loads(manifest.read_text())["file"]
    with open(tensors, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        if n > 100_000_000:
            fail(f"{tensors}: safetensors header of {n} bytes")
        header = json.loads(f.read(n))
        entry = header.get("tokens_in")
        if entry is None or entry["dtype"] != "I64" or len(entry["shape"]) != 1:
            fail(f"{tensors}: no 1-D I64 tensor tokens_in")
        start, end = entry["data_offsets"]
        f.seek(8 + n + start)
        return np.frombuffer(f.read(end - start), dtype="<i8").copy()


def blas_include() -> str:
    for d in BLAS_INCLUDES:
        if (Path(d) / "cblas.h").is_file():
            return d
    fail("cblas.h not found: install OpenBLAS (apt-get install libopenblas-dev)")
    return ""


def build(checkout: Path, build_dir: Path, fixes: list[str]) -> Path:
    if not (checkout / "voxtral.c").is_file() or not (checkout / "Makefile").is_file():
        fail(f"{checkout}: not a voxtral.c checkout (no voxtral.c / Makefile)")
    if build_dir.exists():
        shutil.rmtree(build_dir)
    shutil.copytree(checkout, build_dir, ignore=shutil.ignore_patterns(".git", "*.o", "voxtral"))
    for name in ("voxtral_dump.c", "voxtral_dump.h"):
        shutil.copy(HERE / name, build_dir / name)
    for patch in [HERE / "dump-taps.patch"] + [HERE / "fixes" / f"{f}.patch" for f in fixes]:
        r = subprocess.run(["patch", "-p1", "--forward", "--no-backup-if-mismatch", "-i", str(patch)],
                           cwd=build_dir, capture_output=True, text=True)
        if r.returncode != 0:
            fail(f"{patch.name} does not apply to {checkout} (written for voxtral.c 134d366):\n{r.stdout}{r.stderr}")
    flags = f"-Wall -Wextra -O3 -march=native -ffast-math -I{blas_include()}"  # upstream's flags + include dir
    r = subprocess.run(["make", "blas", f"CFLAGS_BASE={flags}"], cwd=build_dir, capture_output=True, text=True)
    if r.returncode != 0:
        fail(f"make blas failed in {build_dir}:\n{r.stdout[-3000:]}{r.stderr[-3000:]}")
    return build_dir / "voxtral"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkout", type=Path, help="voxtral.c source tree")
    ap.add_argument("--ckpt", type=Path, required=True, help="checkpoint dir: consolidated.safetensors + tekken.json")
    ap.add_argument("--golden", type=Path, help="golden set or e2e case dir: teacher forcing on its tokens_in")
    ap.add_argument("--out", type=Path, required=True, help="candidate directory to write (.npy per tap)")
    ap.add_argument("--audio", type=Path, help="16-bit PCM WAV (default: the oracle's built-in clip)")
    ap.add_argument("--fix", action="append", default=[], choices=FIXES, help="apply fixes/NAME.patch (repeatable, in order)")
    ap.add_argument("--build", type=Path, help="build directory (default: OUT.build)")
    ap.add_argument("--encoder-only", action="store_true",
                    help="stop after adapter.out (front-end work: compare with --only 'mel' --only 'enc.*' ...)")
    a = ap.parse_args(argv)
    if a.audio is None:
        from oracle.builtin import speech_clip
        a.audio = speech_clip()
    build_dir = a.build or a.out.with_name(a.out.name + ".build")
    exe = build(a.checkout.resolve(), build_dir.resolve(), a.fix)
    a.out.mkdir(parents=True, exist_ok=True)
    for old in a.out.glob("*.npy"):
        old.unlink()
    cmd = [str(exe), "-d", str(a.ckpt), "-i", str(a.audio), "--dump", str(a.out)]
    if a.encoder_only:
        cmd.append("--dump-encoder-only")
    if a.golden is not None:
        tokens_in = build_dir / "tokens_in.npy"
        np.save(tokens_in, golden_tokens_in(a.golden))
        cmd += ["--tokens-in", str(tokens_in)]
    print("+", " ".join(cmd), file=sys.stderr)
    r = subprocess.run(cmd)
    if r.returncode != 0:
        fail(f"voxtral.c exited with {r.returncode}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
