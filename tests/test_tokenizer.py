"""oracle/tokenizer.py against mistral-common 1.13.1 (the reference) and transformers' MistralCommonBackend.

Each packaged 15–19 MB tekken file is loaded once per module, by us and by MC.
"""

from __future__ import annotations

import codecs
import json
import os
from pathlib import Path

import mistral_common
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mistral_common.tokens.tokenizers.base import SpecialTokenPolicy
from mistral_common.tokens.tokenizers.tekken import Tekkenizer

from oracle.errors import OracleError
from oracle.tokenizer import (
    DEPRECATED_SPECIAL_TOKENS,
    STANDARD_SPECIAL_TOKENS,
    TEKKEN_PATTERN,
    IncrementalDecoder,
    StreamingAudioConfig,
    Tekken,
    decode_incrementally,
    incomplete_utf8_tail,
)
from oracle.synth_tekken import tekken_document, write_tekken

DATA = Path(mistral_common.__file__).parent / "data"
PACKAGED = ["tekken_240718.json", "tekken_240911.json"]
N_BULK = 3000  # random sequences per packaged file compared with MC


def mc_decode(mc: Tekkenizer, ids) -> str:
    # The reference call: Tekkenizer.decode with its default policy, spelled out.
    return mc.decode([int(i) for i in ids], special_token_policy=SpecialTokenPolicy.IGNORE)


_PARTIAL: dict[str, np.ndarray] = {}


def partial_utf8_ids(tk: Tekken) -> np.ndarray:
    """Ids whose bytes are not valid UTF-8 on their own (pieces of multi-byte characters); cached per file."""
    if tk.path in _PARTIAL:
        return _PARTIAL[tk.path]
    bad = []
    for rank, raw in enumerate(tk.token_bytes):
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            bad.append(rank + tk.num_special_tokens)
    _PARTIAL[tk.path] = np.array(bad)
    return _PARTIAL[tk.path]


@pytest.fixture(scope="module", params=PACKAGED)
def packaged(request):
    path = DATA / request.param
    return Tekken.from_file(path), Tekkenizer.from_file(path), path


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    folder = tmp_path_factory.mktemp("synthetic_tekken")
    path = write_tekken(folder / "tekken.json", vocab_size=1536)
    return Tekken.from_file(path), Tekkenizer.from_file(path), path


def random_sequences(tk: Tekken, rng: np.random.RandomState, n: int) -> list[np.ndarray]:
    """Mixed sequences: control ids, single bytes, partial-UTF-8 tokens and arbitrary normal tokens."""
    partial = partial_utf8_ids(tk)
    ns = tk.num_special_tokens
    pools = [
        lambda k: rng.randint(0, ns, size=k),                       # control ids (dropped, split runs)
        lambda k: rng.randint(ns, ns + 256, size=k),                # single bytes, incl. 0x80–0xFF
        lambda k: rng.choice(partial, size=k),                      # partial characters
        lambda k: rng.randint(ns, tk.vocab_size, size=k),           # anything in the used vocab
        lambda k: rng.choice([ns + 0xE2, ns + 0x82, ns + 0xAC, ns + 0xF0, ns + 0x9F], size=k),  # € and 🤗 pieces
    ]
    out = []
    for _ in range(n):
        length = rng.randint(0, 31)
        which = rng.randint(len(pools), size=length)
        seq = np.array([pools[w](1)[0] for w in which], dtype=np.int64)
        out.append(seq)
    return out


# ------------------------------------------------------------------------------------------------
# Loading the packaged files
# ------------------------------------------------------------------------------------------------

def test_packaged_metadata_matches_mc(packaged):
    tk, mc, path = packaged
    assert tk.version == "v3" and tk.pattern == TEKKEN_PATTERN
    assert tk.vocab_size == mc.n_words == 131072
    assert tk.num_special_tokens == mc.num_special_tokens == 1000
    assert len(tk.token_bytes) == 130072  # the used-vocab cut-off, not the 150000 entries in the file
    assert list(tk.special_tokens) == [t["token_str"] for t in mc._all_special_tokens]
    assert list(DEPRECATED_SPECIAL_TOKENS) == [t["token_str"] for t in Tekkenizer.DEPRECATED_SPECIAL_TOKENS]
    assert (tk.bos_id, tk.eos_id) == (mc.bos_id, mc.eos_id) == (1, 2)
    # v3 files name only ranks 0–19; MC fills 20–999 with <SPECIAL_i>, so there is no [STREAMING_PAD].
    assert tk.streaming_pad_id is None and tk.streaming_word_id is None
    assert tk.special_tokens[32] == "<SPECIAL_32>"
    with pytest.raises(ValueError):
        mc.get_special_token("[STREAMING_PAD]")
    assert tk.audio is None
    rng = np.random.RandomState(7)
    for token_id in [*range(1000, 1256), *rng.randint(1000, 131072, size=2000), 131071]:
        assert tk.id_bytes(token_id) == mc.id_to_byte_piece(int(token_id))
    # Ids quoted in MODEL.md §7.2.
    assert tk.decode([1362, 19135]) == " I spoke"


# ------------------------------------------------------------------------------------------------
# decode == MC decode
# ------------------------------------------------------------------------------------------------

def test_decode_matches_mc_bulk(packaged):
    tk, mc, _ = packaged
    rng = np.random.RandomState(20240911)
    n_replacement = 0
    for seq in random_sequences(tk, rng, N_BULK):
        expected = mc_decode(mc, seq)
        assert tk.decode(seq) == expected, seq.tolist()
        assert "".join(decode_incrementally(tk, seq)) == expected, seq.tolist()
        n_replacement += "\ufffd" in expected
    # The sample must actually exercise the U+FFFD paths, not only clean text.
    assert n_replacement > N_BULK // 4


def test_split_character_examples(packaged):
    tk, mc, _ = packaged
    e2, x82, xac = 1000 + 0xE2, 1000 + 0x82, 1000 + 0xAC
    cases = {
        (e2, x82, xac): "€",
        (e2, x82, 32, xac): "\ufffd\ufffd",       # run 1 ends truncated, run 2 is a lone continuation
        (e2, 2, x82, xac): "\ufffd\ufffd\ufffd",
        (e2, x82): "\ufffd",                      # truncated tail at the end
        (1, 2, 32, 33): "",
        (): "",
    }
    for ids, text in cases.items():
        assert tk.decode(ids) == mc_decode(mc, ids) == text
        assert "".join(decode_incrementally(tk, ids)) == text


@settings(max_examples=150)
@given(data=st.data())
def test_decode_matches_mc_hypothesis(packaged, data):
    tk, mc, _ = packaged
    partial = partial_utf8_ids(tk)
    token = st.one_of(
        st.integers(0, 999),
        st.integers(1000, 1255),
        st.sampled_from(partial.tolist()),
        st.integers(1000, tk.vocab_size - 1),
    )
    ids = data.draw(st.lists(token, max_size=40))
    assert tk.decode(ids) == mc_decode(mc, ids)
    assert "".join(decode_incrementally(tk, ids)) == tk.decode(ids)


def test_out_of_range_ids(packaged):
    tk, mc, path = packaged
    assert tk.decode([tk.vocab_size - 1]) == mc_decode(mc, [tk.vocab_size - 1])
    # Entry 130072 exists in the file's vocab list but is past the cut-off: not an id (MC: KeyError).
    for bad in (tk.vocab_size, tk.vocab_size + 5, 10**9):
        with pytest.raises(KeyError):
            mc_decode(mc, [bad])
        with pytest.raises(OracleError) as err:
            tk.decode([5, 1362, bad])
        assert str(err.value).startswith(f"{path}: token id {bad} is outside the vocabulary")
    # Negative ids: MC silently drops them (they are < num_special); the oracle refuses them.
    assert mc_decode(mc, [-1, 1362]) == " I"
    with pytest.raises(OracleError, match="token id -1 is outside"):
        tk.decode([-1, 1362])


# ------------------------------------------------------------------------------------------------
# Incremental decoding
# ------------------------------------------------------------------------------------------------

@settings(max_examples=200)
@given(data=st.data())
def test_incremental_is_prefix_stable(synthetic, data):
    tk, _, _ = synthetic
    token = st.one_of(st.integers(0, 40), st.integers(1000, 1255), st.integers(1000, tk.vocab_size - 1),
                      st.sampled_from([1000 + b for b in b"\xe2\x82\xac\xf0\x9f\xa4\x97\xc3\xa9\xed\xa0\xf4\x90"]))
    ids = data.draw(st.lists(token, max_size=50))
    full = tk.decode(ids)
    state, emitted = IncrementalDecoder(tk), ""
    for token_id in ids:
        state, text = state.push(token_id)
        emitted += text
        assert full.startswith(emitted)          # nothing emitted is ever taken back
        assert len(state.pending) <= 3           # at most an incomplete character is held
    state, text = state.flush()
    assert emitted + text == full and state.pending == b""


@settings(max_examples=300)
@given(head=st.binary(max_size=12), tail=st.binary(max_size=6))
def test_held_back_tail_is_safe_and_matches_cpython(head, tail):
    """Decoding ``head`` minus its held-back tail, then the rest, equals decoding everything at once."""
    keep = incomplete_utf8_tail(head)
    cut = len(head) - keep
    whole = (head + tail).decode("utf-8", "replace")
    assert head[:cut].decode("utf-8", "replace") + (head[cut:] + tail).decode("utf-8", "replace") == whole
    # CPython's incremental decoder buffers exactly the same bytes.
    dec = codecs.getincrementaldecoder("utf-8")("replace")
    dec.decode(head, final=False)
    assert dec.getstate()[0] == head[cut:]


@settings(max_examples=300)
@given(raw=st.lists(st.integers(0x80, 0xFF) | st.integers(0, 0x7F), max_size=10).map(bytes))
def test_held_back_tail_high_bytes(raw):
    # Same as above, drawn mostly from non-ASCII bytes so every UTF-8 lead/continuation case appears.
    dec = codecs.getincrementaldecoder("utf-8")("replace")
    dec.decode(raw, final=False)
    assert dec.getstate()[0] == raw[len(raw) - incomplete_utf8_tail(raw):]


# ------------------------------------------------------------------------------------------------
# token_text
# ------------------------------------------------------------------------------------------------

def test_token_text(packaged, synthetic):
    tk, _, _ = packaged
    syn, _, _ = synthetic
    assert syn.token_text(32) == "[STREAMING_PAD]" and syn.token_text(1) == "<s>"
    assert tk.token_text(1362) == " I" and tk.token_text(19135) == " spoke"
    assert tk.token_text(1000 + ord("\n")) == "'\\n'"
    assert tk.token_text(1000 + 0xE2) == "b'\\xe2'"
    assert tk.token_text(1300) == "b' \\xd0'"
    with pytest.raises(OracleError):
        tk.token_text(tk.vocab_size)


# ------------------------------------------------------------------------------------------------
# Synthetic tekken files
# ------------------------------------------------------------------------------------------------

def test_synthetic_loads_in_mc(synthetic):
    tk, mc, path = synthetic
    assert mc.version.value == tk.version == "v7"
    assert tk.vocab_size == mc.n_words == 1536 and len(tk.token_bytes) == 536
    assert list(tk.special_tokens) == [t["token_str"] for t in mc._all_special_tokens]
    assert list(tk.special_tokens[:35]) == list(STANDARD_SPECIAL_TOKENS)
    assert tk.special_tokens[35] == "<SPECIAL_35>" and tk.special_tokens[999] == "<SPECIAL_999>"
    assert all(t["is_control"] for t in mc._all_special_tokens)
    assert (tk.bos_id, tk.eos_id, tk.streaming_pad_id, tk.streaming_word_id) == (1, 2, 32, 33)
    assert mc.get_special_token("[STREAMING_PAD]") == 32 and mc.get_special_token("[STREAMING_WORD]") == 33
    # The merges are English: "the" and " and" are tokens, and MC's own BPE uses them.
    assert b" the" in tk.token_bytes and b" and" in tk.token_bytes
    encoded = mc.encode("The keeper listened to the sea.", bos=True, eos=False)
    assert len(encoded) < 20 and tk.decode(encoded) == "The keeper listened to the sea."
    rng = np.random.RandomState(1536)
    for seq in random_sequences(tk, rng, 1000):
        assert tk.decode(seq) == mc_decode(mc, seq)
        assert "".join(decode_incrementally(tk, seq)) == mc_decode(mc, seq)


def test_synthetic_audio_matches_mc(synthetic):
    tk, mc, _ = synthetic
    cfg = tk.audio
    assert cfg == StreamingAudioConfig()
    a = mc.audio
    assert (a.sampling_rate, a.frame_rate, a.transcription_format) == (16000, 12.5, "streaming")
    assert (a.encoding_config.num_mel_bins, a.encoding_config.hop_length, a.encoding_config.window_size) == (
        cfg.num_mel_bins, cfg.hop_length, cfg.window_size) == (128, 160, 400)
    assert (a.transcription_delay_ms, a.streaming_look_ahead_ms, a.streaming_look_back_ms) == (480, 2.5, 52.5)
    assert a.get_num_delay_tokens() == cfg.num_delay_tokens == 6
    assert a.n_right_pad_tokens() == cfg.num_right_pad_tokens == 17
    assert a.n_left_pad_tokens == cfg.streaming_n_left_pad_tokens == 32
    assert a.raw_audio_length_per_tok == cfg.samples_per_token == 1280
    assert a.audio_length_per_tok == cfg.frames_per_token == 8


@pytest.mark.parametrize("delay_ms, n_delay, right_pad", [(80, 1, 12), (160, 2, 13), (960, 12, 23),
                                                         (1200, 15, 26), (2400, 30, 41)])
def test_other_delays_match_mc_and_spec_table(tmp_path, delay_ms, n_delay, right_pad):
    # vocab_size 1256: bytes only, so no merges to learn; the MODEL.md §6.2 table gives n_delay and right pad.
    audio = StreamingAudioConfig(transcription_delay_ms=delay_ms)
    path = write_tekken(tmp_path / "tekken.json", vocab_size=1256, audio=audio)
    tk, mc = Tekken.from_file(path), Tekkenizer.from_file(path)
    assert tk.audio == audio
    assert tk.audio.num_delay_tokens == mc.audio.get_num_delay_tokens() == n_delay
    assert tk.audio.num_right_pad_tokens == mc.audio.n_right_pad_tokens() == right_pad


def test_mc_instruct_tokenizer_sees_streaming_ids(synthetic):
    from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

    _, _, path = synthetic
    ids = MistralTokenizer.from_file(str(path)).instruct_tokenizer.audio_encoder.special_ids
    assert (ids.streaming_pad, ids.audio, ids.begin_audio, ids.audio_to_text) == (32, 24, 25, 34)


def test_transformers_backend_loads_synthetic_dir_offline(synthetic, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from transformers import MistralCommonBackend

    tk, _, path = synthetic
    assert sorted(os.listdir(path.parent)) == ["tekken.json"]
    backend = MistralCommonBackend.from_pretrained(str(path.parent))
    assert (backend.bos_token_id, backend.eos_token_id, len(backend)) == (1, 2, 1536)
    ids = [1, 32, 32, 33, 1300, 1301, 33, 1400, 2]
    assert backend.decode(ids, skip_special_tokens=True) == tk.decode(ids)
    # The HF processor built on it yields the MODEL.md §6.3 prompt and padding (32,333 samples → 75 tokens).
    from transformers import VoxtralRealtimeFeatureExtractor, VoxtralRealtimeProcessor

    processor = VoxtralRealtimeProcessor(feature_extractor=VoxtralRealtimeFeatureExtractor(), tokenizer=backend)
    audio = (0.1 * np.random.RandomState(0).randn(32333)).astype(np.float32)
    out = processor(audio, return_tensors="pt")
    assert out["input_ids"][0].tolist() == [1] + [32] * 38
    assert tuple(out["input_features"].shape) == (1, 128, 75 * 8)
    assert int(out["num_delay_tokens"]) == tk.audio.num_delay_tokens == 6


def test_write_is_deterministic(tmp_path, synthetic):
    _, _, path = synthetic
    again = write_tekken(tmp_path / "tekken.json", vocab_size=1536)
    assert again.read_bytes() == path.read_bytes()
    assert path.read_bytes().isascii() and len(path.read_bytes()) < 100_000
    doc = json.loads(path.read_text())
    assert doc["config"] == {"pattern": TEKKEN_PATTERN, "num_vocab_tokens": 536, "default_vocab_size": 1536,
                             "default_num_special_tokens": 1000, "version": "v7"}
    assert doc["audio"]["audio_encoding_config"] == {"num_mel_bins": 128, "hop_length": 160, "window_size": 400}


def test_seed_fills_large_vocab(tmp_path):
    with pytest.raises(OracleError, match="pass seed="):
        tekken_document(vocab_size=4000)
    a = write_tekken(tmp_path / "a.json", vocab_size=4000, seed=3)
    b = write_tekken(tmp_path / "b.json", vocab_size=4000, seed=3)
    c = write_tekken(tmp_path / "c.json", vocab_size=4000, seed=4)
    assert a.read_bytes() == b.read_bytes() != c.read_bytes()
    tk, mc = Tekken.from_file(a), Tekkenizer.from_file(a)
    rng = np.random.RandomState(4000)
    for seq in random_sequences(tk, rng, 300):
        assert tk.decode(seq) == mc_decode(mc, seq)


def test_write_rejects_too_small_vocab(tmp_path):
    with pytest.raises(OracleError, match="vocab_size 1100 must be"):
        write_tekken(tmp_path / "t.json", vocab_size=1100)


# ------------------------------------------------------------------------------------------------
# Bad files: one line, starting with the path, naming the key
# ------------------------------------------------------------------------------------------------

def _small_doc() -> dict:
    return tekken_document(vocab_size=1270)


def _set(dotted: str, value):
    def edit(doc):
        *parents, last = dotted.split(".")
        node = doc
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value
    return edit


def _delete(dotted: str):
    def edit(doc):
        *parents, last = dotted.split(".")
        node = doc
        for key in parents:
            node = node[key]
        del node[last]
    return edit


def _edit_vocab(index: int, **changes):
    def edit(doc):
        doc["vocab"][index].update(changes)
    return edit


# (name, edit of a valid document or raw text, expected message fragment, does MC also reject it?)
BAD_FILES = [
    ("not_json", "{not json", "not valid JSON (Expecting property name", True),
    ("top_level_list", "[]", "must be a JSON object at the top level, got an array", True),
    ("no_config", _delete("config"), "config: missing", True),
    ("no_vocab_size", _delete("config.default_vocab_size"), "config.default_vocab_size: missing", True),
    ("no_num_special", _delete("config.default_num_special_tokens"),
     "config.default_num_special_tokens: missing", True),
    ("no_pattern", _delete("config.pattern"), "config.pattern: missing", True),
    ("bad_version", _set("config.version", "seven"), "config.version: expected a string like 'v7'", True),
    ("no_vocab", _delete("vocab"), "vocab: missing", True),
    ("vocab_too_short", lambda d: d.update(vocab=d["vocab"][:200]), "vocab: has 200 entries, config needs 270",
     True),
    ("rank_not_index", _edit_vocab(262, rank=263), "vocab[262].rank: must equal its index 262", True),
    ("byte_rank_wrong_bytes", _edit_vocab(65, token_bytes="Qg=="),
     "vocab[65].token_bytes: ranks 0–255 must be the single byte", True),
    ("vocab_extra_key", _edit_vocab(10, extra=1), "vocab[10]: expected keys rank, token_bytes, token_str", True),
    ("vocab_missing_key", lambda d: d["vocab"][270 - 1].pop("token_str"),
     "vocab[269]: expected keys", True),
    ("bad_base64", _edit_vocab(260, token_bytes="!!"), "vocab[260].token_bytes: not base64", False),
    ("duplicate_bytes", _edit_vocab(261, token_bytes="QQ=="), "vocab[261].token_bytes: duplicates vocab[65]", True),
    ("special_rank_not_index", _set("special_tokens.3", {"rank": 4, "token_str": "[INST]", "is_control": True}),
     "special_tokens[3].rank: must equal its index 3", False),
    ("special_duplicate", _set("special_tokens.3", {"rank": 3, "token_str": "<s>", "is_control": True}),
     "special_tokens: '<s>' appears more than once", True),
    ("special_too_many", lambda d: d["special_tokens"].append({"rank": 1000, "token_str": "x", "is_control": True}),
     "special_tokens: 1001 entries but config.default_num_special_tokens is 1000", True),
    ("no_specials_after_v7", lambda d: (d.pop("special_tokens"), d["config"].update(version="v11")),
     "special_tokens: missing (required for versions after v7)", True),
    ("no_bos", _set("special_tokens.1", {"rank": 1, "token_str": "<bos>", "is_control": True}),
     "special_tokens: no token named '<s>'", False),
    ("audio_no_sampling_rate", _delete("audio.sampling_rate"), "audio.sampling_rate: missing", True),
    ("audio_no_mel_bins", _delete("audio.audio_encoding_config.num_mel_bins"),
     "audio.audio_encoding_config.num_mel_bins: missing", True),
    ("audio_delay_not_multiple", _set("audio.transcription_delay_ms", 500),
     "audio.transcription_delay_ms: 500.0 is not a multiple of the 80.0 ms token duration", True),
    ("audio_string_rate", _set("audio.sampling_rate", "16000"), "audio.sampling_rate: expected int, got '16000'",
     True),
    ("audio_unknown_key", _set("audio.delay", 480), "audio.delay: unknown key", True),
    ("audio_instruct", _set("audio.transcription_format", "instruct"),
     "audio.transcription_format: 'instruct' is not 'streaming'", True),
]


@pytest.mark.parametrize("name, edit, fragment, mc_rejects", BAD_FILES, ids=[c[0] for c in BAD_FILES])
def test_bad_file_one_line_message(tmp_path, name, edit, fragment, mc_rejects):
    path = tmp_path / "tekken.json"
    if isinstance(edit, str):
        path.write_text(edit)
    else:
        doc = _small_doc()
        edit(doc)
        path.write_text(json.dumps(doc))
    with pytest.raises(OracleError) as err:
        Tekken.from_file(path)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{path}: "), message
    assert fragment in message, message
    if mc_rejects:  # MC fails too (with an assert, KeyError or ValueError), so the file is really bad
        with pytest.raises(Exception):
            Tekkenizer.from_file(path)


def test_missing_file(tmp_path):
    path = tmp_path / "absent.json"
    with pytest.raises(OracleError, match=f"^{path}: file not found$"):
        Tekken.from_file(path)
