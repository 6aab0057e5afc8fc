# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 8 · Bringing up a port with goldens and `compare`
#
# A port is checked one building block at a time, in the order of the golden set's `index.json`. This
# notebook plays the port: it reads golden inputs with nothing but the safetensors format (no oracle
# code), computes three blocks in plain numpy — with a classic RoPE mistake — writes its outputs the way
# a C or Rust port would, and lets `compare` find the mistake. Then it fixes it.
#
# Format: `golden/SPEC.md`; guide: `docs/PORTING.md`.

# %%
import os

CHECKPOINT = os.environ.get("VOXTRAL_CHECKPOINT")  # unused: the committed tiny goldens are the subject here
AUDIO = os.environ.get("VOXTRAL_AUDIO")

import json
import struct
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from oracle import builtin
from oracle.compare import compare
from oracle.diagnose import attach_diagnosis
from oracle.goldenset import load_candidate, load_golden

GOLDEN = Path(builtin.tiny_checkpoint()).parent / "tiny_goldens"
index = json.loads((GOLDEN / "index.json").read_text())
for c in index["cases"]:
    m = json.loads((GOLDEN / c["dir"] / "manifest.json").read_text())
    outs = ", ".join(f"{k} {v['shape']}" for k, v in m["outputs"].items())
    print(f"{c['dir']:22s} {outs[:90]}")

# %% [markdown]
# ## Reading a golden case without the oracle
#
# A safetensors file is an 8-byte little-endian header length, a JSON header (name → dtype, shape, byte
# offsets), then raw little-endian data. Twenty lines read it in any language:

# %%
DT = {"F32": np.float32, "F64": np.float64, "I64": np.int64, "BF16": np.uint16}


def read_safetensors(path):
    raw = Path(path).read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        out[name] = np.frombuffer(raw[8 + n + a:8 + n + b], DT[info["dtype"]]).reshape(info["shape"])
    return out


def write_safetensors(path, tensors):
    """What a C port writes: header JSON (offsets contiguous), padded with spaces to 8 bytes, then data."""
    header, blobs, off = {}, [], 0
    for name, arr in tensors.items():
        data = np.ascontiguousarray(arr, np.float32).tobytes()
        header[name] = {"dtype": "F32", "shape": list(arr.shape), "data_offsets": [off, off + len(data)]}
        blobs.append(data)
        off += len(data)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    Path(path).write_bytes(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def case(name):
    entry = next(c for c in index["cases"] if c["name"] == name)
    d = GOLDEN / entry["dir"]
    return json.loads((d / "manifest.json").read_text()), read_safetensors(d / "tensors.safetensors")


m_rms, t_rms = case("rms_norm")
m_rope, t_rope = case("rope")
m_swi, t_swi = case("swiglu")
print("rms_norm weights to load from the checkpoint:", list(m_rms["weights"])[0])
print("rope params:", m_rope["params"])

# %% [markdown]
# ## The port's three blocks
#
# The weights come from the checkpoint (BF16 on disk: the high 16 bits of a float32). The port's first
# RoPE pairs dimension $i$ with $i + D_h/2$ (rotate-half, the NeoX/HF convention) on Mistral-layout data,
# whose pairs are $(2i, 2i+1)$.

# %%
ck = read_safetensors(Path(builtin.tiny_checkpoint()) / "consolidated.safetensors")
bf16 = lambda name: (ck[name].astype(np.uint32) << 16).view(np.float32)
enc0 = "mm_streams_embeddings.embedding_module.whisper_encoder.transformer.layers.0."


def port_rms_norm(x, w, eps):
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w


def port_rope(x, pos, dh, theta, interleaved):
    inv = 1.0 / theta ** (np.arange(0, dh, 2, dtype=np.float32) / dh)
    ang = pos[:, None].astype(np.float32) * inv  # float32 angles, like the references
    c, s = np.cos(ang)[:, None], np.sin(ang)[:, None]
    if interleaved:
        x0, x1 = x[..., 0::2], x[..., 1::2]
        out = np.empty_like(x)
        out[..., 0::2], out[..., 1::2] = x0 * c - x1 * s, x0 * s + x1 * c
        return out
    x0, x1 = x[..., : dh // 2], x[..., dh // 2:]
    return np.concatenate([x0 * c - x1 * s, x0 * s + x1 * c], -1)


def port_swiglu(x, w1, w3, w2, b2):
    g = x @ w1.T
    return ((g / (1 + np.exp(-g))) * (x @ w3.T)) @ w2.T + b2


def run_port(interleaved):
    return {
        "rms_norm.out": port_rms_norm(t_rms["rms_norm.x"], bf16(enc0 + "attention_norm.weight"), m_rms["params"]["eps"]),
        "rope.out": port_rope(t_rope["rope.x"], t_rope["rope.positions"], m_rope["params"]["head_dim"],
                              m_rope["params"]["theta"], interleaved),
        "swiglu.out": port_swiglu(t_swi["swiglu.x"], bf16(enc0 + "feed_forward.w1.weight"), bf16(enc0 + "feed_forward.w3.weight"),
                                  bf16(enc0 + "feed_forward.w2.weight"), bf16(enc0 + "feed_forward.w2.bias")),
    }


work = Path(tempfile.mkdtemp())
write_safetensors(work / "port_v1.safetensors", run_port(interleaved=False))

# %% [markdown]
# ## Compare
#
# Only the three blocks the port has so far (`--only`). The report is in pipeline order; the verdict
# names the first divergence; the fault catalogue, asked by `attach_diagnosis` (as the `compare` command
# does), suggests what it looks like.

# %%
golden = load_golden(GOLDEN)
only = ["rms_norm.*", "rope.*", "swiglu.*"]
candidate = load_candidate(work / "port_v1.safetensors")
report = attach_diagnosis(compare(golden, candidate, only=only), golden, candidate)
print(report.text().replace(str(work), "<work>").replace(str(GOLDEN), "golden/tiny_goldens"))
assert report.exit_code == 1 and report.first_divergence.name == "rope.out"
assert report.likely_mistakes and report.likely_mistakes[0]["key"] == "rope_rotate_half"

# %% [markdown]
# `rms_norm` and `swiglu` use about 10% of their tolerance — the tolerance is ten times the deviation the
# oracle's own float32 run has from the float64 golden, so an honest float32 port lands near 10%. `rope`
# fails everywhere except at position 0, where every rotation is the identity. Fix the pairing:

# %%
write_safetensors(work / "port_v2.safetensors", run_port(interleaved=True))
fixed = compare(golden, load_candidate(work / "port_v2.safetensors"), only=only)
print(fixed.verdict)
assert fixed.exit_code == 0

names = [t.name for t in fixed.tensors]
fig, ax = plt.subplots(figsize=(7, 2.4))
ax.barh(names, [t.tolerance_used_pct for t in fixed.tensors])
ax.axvline(100, color="red", label="tolerance")
ax.set_xlabel("% of tolerance used (worst element)")
ax.set_xlim(0, 110)
ax.legend(fontsize=7)
ax.set_title("the fixed port, block by block")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## A float32 drift worth knowing
#
# The `rope` case includes positions up to 20000. A port that computes the angle $p\,\theta^{-2i/D_h}$
# in float32 — as both references do — drifts from the float64 truth as $p$ grows; the golden's float32
# tolerance was measured on exactly that, so a float32 port passes, and a port computing angles in
# float64 passes with room to spare.

# %%
x, pos = t_rope["rope.x"].astype(np.float64), t_rope["rope.positions"]
dh, theta = m_rope["params"]["head_dim"], m_rope["params"]["theta"]
inv64 = 1.0 / theta ** (np.arange(0, dh, 2) / dh)
err = np.abs(pos[:, None] * inv64 - pos[:, None].astype(np.float32) * (1.0 / theta ** (np.arange(0, dh, 2, dtype=np.float32) / dh)))
plt.figure(figsize=(6, 2.4))
plt.semilogy(pos, err.max(1) + 1e-12, "o")
plt.xlabel("position")
plt.ylabel("max |angle error| (rad)")
plt.title("float32 RoPE angles vs float64")
plt.tight_layout()
plt.show()
print("rope.out float32 tolerance (atol):", m_rope["outputs"]["rope.out"]["tolerance"]["float32"]["atol"])
