"""The fuzz suite's CI subset: seeded hostile mutants of checkpoints (both layouts), safetensors headers,
params/config, the HF index, tekken.json, input/output paths and command lines, each run in an
RLIMIT_AS-capped worker process through the CLI's entry points. Zero defects allowed.

The long campaign (>= 10,000 cases, every kind, whole commands too) is `voxtral-oracle fuzz`; see README.
"""

from __future__ import annotations

import random

from oracle_tools import fuzz

CI_KINDS = ("params", "hf_config", "hf_index", "safetensors", "tekken", "paths", "cli")


def test_fuzz_ci_subset_has_no_defects():
    results = fuzz.campaign(seed=20261204, n_cases=2000, jobs=2, kinds=CI_KINDS, heavy_share=0.0)
    assert len(results) == 2000
    defects = [r for r in results if r["outcome"] in fuzz.DEFECTS]
    assert not defects, fuzz.table(results, CI_KINDS) + "\n" + "\n".join(map(str, defects[:10]))
    # The mutants must actually reach the validators: most are rejected, some pass as valid.
    rejected = sum(r["outcome"] == "clean_error" for r in results)
    assert 0.6 * len(results) < rejected < len(results)


def test_cases_are_reproducible_from_seed_and_index(tmp_path):
    bases = fuzz.Bases(tmp_path, {
        "params.json": b'{"dim": 1, "rope_theta": 1e6, "multimodal": {"x": [1, 2, 3]}}',
        "consolidated.safetensors": b"\x18\x00\x00\x00\x00\x00\x00\x00"
                                    b'{"t":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}'[:24] + bytes(4),
        "tekken.json": b'{"config": {"version": "v7"}, "vocab": []}',
        "clip.wav": b"RIFF",
    })
    a = fuzz.make_case(5, 3, bases, ("params",))
    b = fuzz.make_case(5, 3, bases, ("params",))
    assert (a.what, a.files, a.argv, a.invalid) == (b.what, b.files, b.argv, b.invalid)
    whats = {fuzz.make_case(5, i, bases, ("params",)).what for i in range(40)}
    assert len(whats) > 10  # different indices, different mutants


def test_json_mutations_flag_type_changes_as_invalid():
    rng = random.Random(0)
    doc = {"a": 1, "b": "x", "c": [1.5]}
    seen = set()
    for _ in range(300):
        new, what, invalid = fuzz.mutate_json(rng, doc)
        if what.startswith("set a=") and ("'x" in what or "'96'" in what):
            assert invalid, what
        if what.startswith("delete"):
            assert not invalid
        seen.add(what.split()[0])
    assert {"set", "delete", "scale", "top-level"} <= seen


def test_fuzz_ci_subset_of_audio_golden_sets_and_candidates():
    """The kinds whose cases run whole commands (transcribe, compare, forward): a smaller seeded subset."""
    kinds = ("audio", "golden", "candidate")
    results = fuzz.campaign(seed=20261205, n_cases=300, jobs=2, kinds=kinds, heavy_share=0.0)
    defects = [r for r in results if r["outcome"] in fuzz.DEFECTS]
    assert not defects, fuzz.table(results, kinds) + "\n" + "\n".join(map(str, defects[:10]))
    assert sum(r["outcome"] == "clean_error" for r in results) > 0.3 * len(results)
