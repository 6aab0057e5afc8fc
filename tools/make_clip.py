"""Regenerate oracle/data/clip.wav, the built-in speech clip (16 kHz mono int16 WAV, about 5 s).

    python tools/make_clip.py [OUT]          # default OUT: oracle/data/clip.wav

Pipeline: espeak-ng (voice "en", default speed, 22050 Hz 16-bit WAV) -> sox resample to 16 kHz mono
signed 16-bit with dither off (-D), so the output is deterministic for a given espeak-ng and sox.
The committed clip was made with eSpeak NG 1.51 (Debian data in /usr/lib/x86_64-linux-gnu/espeak-ng-data)
and SoX 14.4.2; other versions may synthesize slightly different audio, which is why the clip is
committed rather than regenerated in tests.

The text is the opening of vLLM's test clip ("First words I spoke in the original phonograph ...",
MODEL.md §11.1), spoken by a synthetic voice so the file carries no recording licence.
Samples are int16, hence int16-exact (``oracle.audio.is_int16_exact``): the offline reference's WAV
round trip leaves them unchanged.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

TEXT = "First words I spoke in the original phonograph. A little piece of practical poetry."
DEFAULT_OUT = Path(__file__).resolve().parent.parent / "oracle" / "data" / "clip.wav"


def make_clip(out: Path, text: str = TEXT) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "espeak.wav"
        subprocess.run(["espeak-ng", "-v", "en", "-w", str(raw), text], check=True)
        # -D: no dither (sox dithers by default when it requantizes to 16 bits; dither is random noise).
        cmd = ["sox", "-D", str(raw), "-r", "16000", "-c", "1", "-b", "16", "-e", "signed-integer", str(out)]
        subprocess.run(cmd, check=True)
    return out


def main(argv: list[str]) -> int:
    out = Path(argv[1]) if len(argv) > 1 else DEFAULT_OUT
    print(make_clip(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
