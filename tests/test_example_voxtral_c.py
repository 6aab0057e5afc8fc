"""examples/voxtral-c without the network: the dump code compiles and writes .npy files numpy reads with
the golden layouts, run.py reads tokens_in from a golden set, and the patches are well-formed diffs of
the files the adapter says they touch."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
EX = ROOT / "examples" / "voxtral-c"
GOLDEN = ROOT / "golden" / "tiny_goldens"

HARNESS = r"""
#include "voxtral_dump.h"
#include <stdio.h>
int main(int argc, char **argv) {
    if (vox_dump_init(argv[1], argc > 2 ? argv[2] : NULL) != 0) return 2;
    float mel[3 * 4];                       /* voxtral.c keeps the mel frame-major [T, 128]-like */
    for (int i = 0; i < 12; i++) mel[i] = (float)i;
    vox_dump_rows("mel", mel, 2, 4);        /* two calls append: 3 frames of 4 bins */
    vox_dump_rows("mel", mel + 8, 1, 4);
    float colmajor[2 * 3] = {1, 2, 3, 10, 20, 30};   /* [dim 2, len 3] */
    vox_dump_colmajor("enc.conv1.out", colmajor, 2, 3);
    for (int l = 0; l < 2; l++) vox_dump_rows_layer("dec.L%02d.out", l, mel, 1, 4);
    float t[4] = {0.5f, 1.5f, 2.5f, 3.5f};
    vox_dump_rows("dec.t_cond", t, 1, 4);
    printf("%d %d\n", vox_dump_fed_token(1, 777), vox_dump_fed_token(3, 777));
    int toks[5] = {1000, 1001, 2, 1002, 1003};  /* EOS = 2 ends the recorded tokens */
    for (int i = 0; i < 5; i++) vox_dump_token(toks[i], 2);
    return vox_dump_finish();
}
"""


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    d = tmp_path_factory.mktemp("dump")
    (d / "h.c").write_text(HARNESS)
    cc = shutil.which("gcc") or shutil.which("cc")
    assert cc, "a C compiler is needed for the example adapter test"
    subprocess.run([cc, "-Wall", "-Wextra", "-Werror", "-O1", "-I", str(EX), str(d / "h.c"), str(EX / "voxtral_dump.c"),
                    "-o", str(d / "h")], check=True)
    return d / "h"


def test_dump_writes_golden_layouts(harness, tmp_path):
    tokens_in = tmp_path / "tokens_in.npy"
    np.save(tokens_in, np.array([1, 32, 32, 1234], dtype=np.int64))
    out = tmp_path / "cand"
    out.mkdir()
    r = subprocess.run([str(harness), str(out), str(tokens_in)], capture_output=True, text=True, check=True)
    assert r.stdout.split() == ["32", "1234"]  # teacher forcing: tokens_in[p], not the model's own token
    mel = np.load(out / "mel.npy", allow_pickle=False)
    assert mel.shape == (4, 3) and mel.dtype == np.float32  # [bins, frames]
    assert np.array_equal(mel, np.arange(12, dtype=np.float32).reshape(3, 4).T)
    conv = np.load(out / "enc.conv1.out.npy", allow_pickle=False)
    assert np.array_equal(conv, np.array([[1, 10], [2, 20], [3, 30]], dtype=np.float32))  # [len, dim]
    assert np.load(out / "dec.t_cond.npy").shape == (4,)
    assert {p.name for p in out.iterdir()} >= {"dec.L00.out.npy", "dec.L01.out.npy"}
    tokens = np.load(out / "tokens.npy", allow_pickle=False)
    assert tokens.dtype == np.int64 and tokens.tolist() == [1000, 1001, 2]  # stops after the first EOS


def test_free_run_feeds_pad_after_eos(tmp_path):
    """Without tokens_in: the port's own token, then STREAMING_PAD once it has emitted EOS."""
    src = tmp_path / "f.c"
    src.write_text('#include "voxtral_dump.h"\n#include <stdio.h>\nint main(int c, char **v) { (void)c;'
                   ' vox_dump_init(v[1], NULL); printf("%d ", vox_dump_fed_token(5, 1001)); vox_dump_token(2, 2);'
                   ' printf("%d %d\\n", vox_dump_fed_token(6, 2), vox_dump_past_eos()); return vox_dump_finish(); }')
    subprocess.run([shutil.which("gcc") or "cc", "-Wall", "-Werror", "-I", str(EX), str(src), str(EX / "voxtral_dump.c"),
                    "-o", str(tmp_path / "f")], check=True)
    r = subprocess.run([str(tmp_path / "f"), str(tmp_path)], capture_output=True, text=True, check=True)
    assert r.stdout.split() == ["1001", "32", "1"]


def test_dump_rejects_a_bad_tokens_file(harness, tmp_path):
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros(4, dtype=np.float32))
    r = subprocess.run([str(harness), str(tmp_path), str(bad)], capture_output=True, text=True)
    assert r.returncode == 2 and "expected a 1-D '<i8'" in r.stderr


def test_run_py_reads_tokens_in_from_a_golden_set():
    spec = importlib.util.spec_from_file_location("voxtral_c_run", EX / "run.py")
    run = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run)
    tokens = run.golden_tokens_in(GOLDEN)
    index = json.loads((GOLDEN / "index.json").read_text())
    case = next(c["dir"] for c in index["cases"] if c["name"] == "e2e")
    manifest = json.loads((GOLDEN / case / "manifest.json").read_text())
    assert tokens.dtype == np.int64 and list(tokens.shape) == manifest["inputs"]["tokens_in"]["shape"]
    assert tokens[: manifest["params"]["prompt_length"]].tolist() == manifest["params"]["prompt"]


@pytest.mark.parametrize("patch", sorted(p.name for p in EX.glob("**/*.patch")))
def test_patches_are_unified_diffs_of_voxtral_c_files(patch):
    text = next(EX.glob(f"**/{patch}")).read_text()
    files = re.findall(r"^\+\+\+ b/(\S+)$", text, flags=re.M)
    assert files and set(files) <= {"Makefile", "main.c", "voxtral.c", "voxtral_audio.c", "voxtral_kernels.c",
                                    "voxtral_encoder.c", "voxtral_decoder.c"}, files
    assert re.search(r"^@@ -\d+,\d+ \+\d+,\d+ @@", text, flags=re.M)
