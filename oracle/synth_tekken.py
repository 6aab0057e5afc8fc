"""Synthetic tekken.json files in the real Tekken (v7) format, for synthetic checkpoints (``oracle.synth``).

Shape legend
    V   vocab_size: 1000 special ids + the used byte-token vocabulary (V − 1000 entries)

What is written
    vocab           the 256 single bytes (ranks 0..255, as every Tekken file has), then byte-pair
                    merges learned from a fixed English text, then (with a seed) random joins of two
                    existing tokens until V − 1000 entries
    special_tokens  the 35 standard Mistral names (MODEL.md §7.3), then ``<SPECIAL_i>`` up to 999, all
                    control tokens
    audio           the streaming section (MODEL.md §6.2), or nothing

The reader is ``oracle.tokenizer``; this module only writes. It lives beside ``synth.py`` (its only
caller in the package) because a real checkpoint brings its own tekken.json: nothing here is needed to
run the model.
"""

from __future__ import annotations

import base64
import json
import re
from collections import Counter
from pathlib import Path

import numpy as np

from .errors import OracleError
from .tokenizer import (
    NUM_SPECIAL_TOKENS,
    SPECIAL_TOKEN_TEMPLATE,
    STANDARD_SPECIAL_TOKENS,
    TEKKEN_PATTERN,
    StreamingAudioConfig,
    audio_to_json,
)

DEFAULT_MERGES_TEXT = """\
The old lighthouse keeper wrote in his journal every evening, just after the lamp was lit. He wrote
about the weather, the ships that passed, and the birds that rested on the rocks below the tower.
On calm nights the sea was so quiet that he could hear the engines of the fishing boats long before
he could see their lights. On stormy nights the wind spoke louder than any voice, and the waves
struck the walls with a sound like distant thunder. He liked to say that the sea never repeated
itself, although the tides came and went at the times printed in the almanac. In the spring of
1968 a young woman from the city came to record the sounds of the coast. She carried a heavy tape
machine, two microphones and a notebook full of questions. Where do the gulls sleep? Why does the
foghorn sound lower in winter? How far away can a bell be heard across the water? The keeper
answered what he could and admitted what he did not know. Together they listened to the morning
chorus, the rain on the glass, the creak of the iron stairs and the long silence between two
waves. When she left, she promised to send him a copy of every recording. The parcel arrived in
the autumn, wrapped in brown paper and tied with string. For the rest of his life he played the
tapes on Sunday afternoons, and he said that listening to them was like hearing the house remember
its own voice. People who visit the lighthouse today can still hear those recordings in the small
museum beside the harbour, where a speaker plays them quietly while the real sea answers outside.
"""

# A stdlib-re stand-in for TEKKEN_PATTERN (no \\p{..} in re): words keep one leading non-letter
# (usually the space), digits stand alone, punctuation runs keep an optional leading space. It only
# decides which merges are learned; any merges make a valid Tekken file.
_PRESPLIT = re.compile(r"[^\r\n\w]?[^\W\d_]+|\d| ?[^\s\w]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+|_")


def learn_merges(text: str, n_merges: int) -> list[bytes]:
    """Up to ``n_merges`` new tokens from greedy byte-pair merging of ``text`` (deterministic).

    Each step merges the most frequent adjacent pair inside pre-split words (ties: smallest bytes
    of the pair, then of its parts) whose concatenation is not yet a token. Stops early when the
    words are fully merged.
    """
    words = Counter(tuple(bytes([b]) for b in piece.encode("utf-8")) for piece in _PRESPLIT.findall(text))
    known = {bytes([b]) for b in range(256)}
    merges: list[bytes] = []
    while len(merges) < n_merges:
        pairs: Counter = Counter()
        for word, count in words.items():
            for a, b in zip(word, word[1:]):
                if a + b not in known:
                    pairs[(a, b)] += count
        if not pairs:
            break
        best = min(pairs, key=lambda ab: (-pairs[ab], ab[0] + ab[1], ab))
        merges.append(best[0] + best[1])
        known.add(best[0] + best[1])
        words = Counter({_merge_pair(w, best): c for w, c in words.items()})
    return merges


def _merge_pair(word: tuple[bytes, ...], pair: tuple[bytes, bytes]) -> tuple[bytes, ...]:
    out: list[bytes] = []
    i = 0
    while i < len(word):
        if i + 1 < len(word) and (word[i], word[i + 1]) == pair:
            out.append(word[i] + word[i + 1])
            i += 2
        else:
            out.append(word[i])
            i += 1
    return tuple(out)


def _random_merges(base: list[bytes], n: int, seed: int) -> list[bytes]:
    """``n`` extra tokens, each two random ``base`` tokens joined (still a merge of two existing tokens).

    Drawing both halves from the base (bytes + text merges) keeps tokens short and the draw fast;
    it caps the fill at a fraction of ``len(base)²`` distinct pairs.
    """
    if n > len(base) ** 2 // 4:
        raise OracleError(f"write_tekken: cannot fill {n} random merges from {len(base)} base tokens")
    rng = np.random.RandomState(seed)
    seen = set(base)
    out: list[bytes] = []
    while len(out) < n:
        for a, b in rng.randint(len(base), size=(n - len(out), 2)).tolist():
            token = base[a] + base[b]
            if token not in seen:
                seen.add(token)
                out.append(token)
    return out


def _token_str(raw: bytes) -> str | None:
    # Real files store the UTF-8 text of a token, or null when its bytes are not valid UTF-8.
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _dump(doc: dict) -> str:
    """JSON with sorted keys and one list element per line, so a committed tiny file diffs readably."""
    def compact(value) -> str:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)

    parts = []
    for key in sorted(doc):
        value = doc[key]
        if isinstance(value, list):
            body = ",\n".join(compact(item) for item in value)
            parts.append(f"{compact(key)}:[\n{body}\n]")
        else:
            parts.append(f"{compact(key)}:{compact(value)}")
    return "{\n" + ",\n".join(parts) + "\n}\n"


def tekken_document(
    *, vocab_size: int, merges_text: str = DEFAULT_MERGES_TEXT, seed: int | None = None,
    audio: StreamingAudioConfig | None = StreamingAudioConfig(),
) -> dict:
    """The tekken.json object ``write_tekken`` writes (see there)."""
    n_vocab = vocab_size - NUM_SPECIAL_TOKENS
    if n_vocab < 256:
        raise OracleError(f"write_tekken: vocab_size {vocab_size} must be ≥ {NUM_SPECIAL_TOKENS + 256} "
                          f"({NUM_SPECIAL_TOKENS} special + 256 byte tokens)")
    tokens = [bytes([b]) for b in range(256)] + learn_merges(merges_text, n_vocab - 256)
    if len(tokens) < n_vocab:
        if seed is None:
            raise OracleError(f"write_tekken: merges_text yields only {len(tokens) - 256} merges, "
                              f"vocab_size {vocab_size} needs {n_vocab - 256}; pass seed= to fill the rest")
        tokens += _random_merges(tokens, n_vocab - len(tokens), seed)
    names = list(STANDARD_SPECIAL_TOKENS) + [
        SPECIAL_TOKEN_TEMPLATE.format(id=i) for i in range(len(STANDARD_SPECIAL_TOKENS), NUM_SPECIAL_TOKENS)]
    doc = {
        "config": {
            "pattern": TEKKEN_PATTERN, "num_vocab_tokens": n_vocab, "default_vocab_size": vocab_size,
            "default_num_special_tokens": NUM_SPECIAL_TOKENS, "version": "v7",
        },
        "vocab": [
            {"rank": r, "token_bytes": base64.b64encode(t).decode("ascii"), "token_str": _token_str(t)}
            for r, t in enumerate(tokens)
        ],
        "special_tokens": [{"rank": i, "token_str": name, "is_control": True} for i, name in enumerate(names)],
    }
    if audio is not None:
        doc["audio"] = audio_to_json(audio)
    return doc


def write_tekken(
    path, *, vocab_size: int, merges_text: str = DEFAULT_MERGES_TEXT, seed: int | None = None,
    audio: StreamingAudioConfig | None = StreamingAudioConfig(),
) -> Path:
    """Write a real Tekken-format (v7) tekken.json for a synthetic checkpoint; returns the path.

    Vocab: the 256 single bytes, then BPE merges learned from ``merges_text`` up to
    ``vocab_size − 1000`` entries (with ``seed``, random concatenations fill any shortfall; without,
    a shortfall is an error). Special tokens: the 35 standard names, then ``<SPECIAL_i>`` up to 999,
    all control. ``audio``: the streaming section (MODEL.md §6.2 by default; None omits it).
    Same arguments → byte-identical file.
    """
    doc = tekken_document(vocab_size=vocab_size, merges_text=merges_text, seed=seed, audio=audio)
    path = Path(path)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write(_dump(doc))
    return path



__all__ = ["DEFAULT_MERGES_TEXT", "learn_merges", "tekken_document", "write_tekken"]
