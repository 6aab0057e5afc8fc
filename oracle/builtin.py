"""The built-in defaults: the committed tiny checkpoint and speech clip, found after any install.

The tiny checkpoint lives in the repository's golden/ folder (ports copy that folder for their own CI)
and is installed as the package ``oracle_golden``; the clip is package data of ``oracle``. Both are
located through importlib.resources, so a plain (non-editable) ``pip install`` finds them too.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from .errors import OracleError

TINY_SEED = 0
BUILTIN_CLIP_LABEL = "builtin:clip.wav"  # how provenance names the built-in clip


def _package_path(package: str, *parts: str) -> Path:
    try:
        root = resources.files(package)
    except ModuleNotFoundError:
        raise OracleError(f"built-in data package {package!r} is not installed (reinstall voxtral-oracle)") from None
    path = Path(str(root.joinpath(*parts)))
    if not path.exists():
        raise OracleError(f"{path}: built-in data missing from the installation")
    return path


def tiny_checkpoint() -> Path:
    """golden/tiny: params.json + consolidated.safetensors + tekken.json of ``synth --size tiny --seed 0``."""
    return _package_path("oracle_golden", "tiny")


# Where the built-in clip is, for a golden set's provenance (``audio_file``): a port feeds this WAV to its
# own loader. Machine-independent on purpose (goldens are byte-identical across machines), so a place
# in the package and a one-liner that copies it out, not this machine's absolute path.
SPEECH_CLIP_WHERE = ("oracle/data/clip.wav in the voxtral-oracle package (and repository); copy it out with: "
                     "python -c \"import shutil, oracle.builtin as b; shutil.copy(b.speech_clip(), 'clip.wav')\"")


def speech_clip() -> Path:
    """A short int16-exact 16 kHz espeak-ng speech clip (see tools/make_clip.py)."""
    return _package_path("oracle", "data", "clip.wav")
