"""Tekken tokenizer: load tekken.json, decode ids to text (whole or streaming).

What is computed
----------------
Ids ``0 ≤ id < num_special_tokens`` (1000) are special tokens; id ``num_special_tokens + r`` is the
byte string ``vocab[r].token_bytes`` (base64). Only the first ``default_vocab_size − num_special``
vocab entries are used (the "used-vocab cut-off"); later entries do not exist as ids.

    decode(ids) = concat over maximal runs R of normal ids of
                  utf8_decode_replace(b"".join(bytes(id) for id in R))

Special ids are dropped (policy IGNORE). Runs are decoded separately, so a multi-byte character cut
by a special id decodes to U+FFFD on both sides. ``IncrementalDecoder`` emits the same text piece by
piece, holding back an incomplete UTF-8 tail until it is completed, broken, or flushed.

Mirrors mistral-common 1.13.1 ``tokens/tokenizers/tekken.py``: ``Tekkenizer.from_file`` (special
token list, deprecated v3 list), ``_reload_mergeable_ranks`` (cut-off, rank and byte checks),
``Tekkenizer._decode_all`` / ``decode`` (IGNORE); ``audio.py`` ``AudioConfig`` (streaming fields and
derived token counts). tiktoken's ``decode`` is ``bytes.decode("utf-8", errors="replace")`` of the
concatenated token bytes; that is written out here.

Deliberately different from mistral-common (both are loud errors where MC is silent or obscure):
ids ≥ vocab_size raise ``OracleError`` (MC: tiktoken ``KeyError``); negative ids raise
``OracleError`` (MC silently drops them, since they are ``< num_special``). Text *encoding* (regex
pre-split + BPE) is not implemented: transcription prompts contain only special tokens.
"""

from __future__ import annotations

import base64
import binascii
import math
import operator
import re
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Iterable


from oracle.config import FULL
from oracle.errors import OracleError, shown, where
from oracle.jsonio import read_json_object

# Ranks 0–34 of the standard Mistral special-token list (MODEL.md §7.3). Ranks 35.. are "<SPECIAL_i>".
STANDARD_SPECIAL_TOKENS: tuple[str, ...] = (
    "<unk>", "<s>", "</s>", "[INST]", "[/INST]", "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]",
    "[TOOL_RESULTS]", "[/TOOL_RESULTS]", "[TOOL_CALLS]", "[IMG]", "<pad>", "[IMG_BREAK]", "[IMG_END]",
    "[PREFIX]", "[MIDDLE]", "[SUFFIX]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]", "[TOOL_CONTENT]",
    "[BBOX]", "[/BBOX]", "[STEP]", "[/STEP]", "[AUDIO]", "[BEGIN_AUDIO]", "[OUTPUT_AUDIO]", "[REF]",
    "[/REF]", "[REASONING]", "[VERIFICATION]", "[SCORE]", "[STREAMING_PAD]", "[STREAMING_WORD]",
    "[REPEAT_AUDIO_TEXT]",
)
# MC Tekkenizer.DEPRECATED_SPECIAL_TOKENS: used for files (≤ v7) without a "special_tokens" list.
DEPRECATED_SPECIAL_TOKENS: tuple[str, ...] = STANDARD_SPECIAL_TOKENS[:20]
SPECIAL_TOKEN_TEMPLATE = "<SPECIAL_{id}>"

# The pre-split regex of every Tekken file (tiktoken pat_str; needs \p{..}, so stdlib re cannot run it).
TEKKEN_PATTERN = (
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|"
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|"
    r"\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
NUM_SPECIAL_TOKENS = 1000
# MC audio.py OFFLINE_STREAMING_BUFFER_TOKENS: right-pad allowance for the longest word (10 × 80 ms).
OFFLINE_STREAMING_BUFFER_TOKENS = 10
_VOCAB_ENTRY_KEYS = frozenset({"rank", "token_bytes", "token_str"})  # MC asserts exactly these
_AUDIO_KEYS = frozenset({
    "sampling_rate", "frame_rate", "audio_encoding_config", "chunk_length_s", "transcription_format",
    "transcription_delay_ms", "streaming_look_ahead_ms", "streaming_look_back_ms",
    "streaming_n_left_pad_tokens", "voice_num_audio_tokens",
})  # the fields of MC AudioConfig; anything else makes MC's AudioConfig(**audio) fail
# Bounds on numbers that size memory or loops before anything else can check them (the real file:
# 1000 special tokens, 131072 ids, 32 left-pad tokens, 480 ms delay, 16 kHz). A hostile file with
# default_num_special_tokens = 10**9 would otherwise build 10**9 names from 89 KB.
MAX_SPECIAL_TOKENS = 1 << 16
MAX_VOCAB_SIZE = 1 << 24
MAX_LEFT_PAD_TOKENS = 1024
MAX_AUDIO_MS = 10_000.0  # delay, look-ahead and look-back
MAX_AUDIO_INT = 1 << 20  # sampling rate, mel bins, hop, window


# ----------------------------------------------------------------------------------------------
# Audio section
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class StreamingAudioConfig:
    """The tekken.json ``"audio"`` section of a streaming (realtime) model; defaults are MODEL.md §6.2.

    ``num_mel_bins``, ``hop_length`` and ``window_size`` live under ``audio_encoding_config`` in
    the file (MC ``AudioSpectrogramConfig``); they are flattened here.
    """

    # The front-end numbers default to the real model's (their home is oracle.config).
    sampling_rate: int = FULL.audio.sampling_rate  # 16000
    frame_rate: float = FULL.audio.frame_rate  # 12.5 decoder tokens per second
    num_mel_bins: int = FULL.audio.num_mel_bins  # 128
    hop_length: int = FULL.audio.hop_length  # 160
    window_size: int = FULL.audio.window_size  # 400
    transcription_delay_ms: float = 480.0
    streaming_look_ahead_ms: float = 2.5
    streaming_look_back_ms: float = 52.5
    streaming_n_left_pad_tokens: int = 32
    transcription_format: str = "streaming"

    @property
    def samples_per_token(self) -> int:
        """Audio samples per decoder token: ``sampling_rate // frame_rate`` (MC raw_audio_length_per_tok)."""
        return int(self.sampling_rate // self.frame_rate)

    @property
    def frames_per_token(self) -> int:
        """Mel frames per decoder token: ``samples_per_token / hop_length`` (MC audio_length_per_tok)."""
        return int(self.samples_per_token / self.hop_length)

    @property
    def num_delay_tokens(self) -> int:
        """Tokens the text lags the audio by; MC ``get_num_delay_tokens`` (480 ms → 6).

        MC counts the delay's samples in hop frames (rounding a partial hop as ``ceil(n/hop − 1)``)
        and then in tokens (ceil); kept verbatim so odd delays agree with MC too.
        """
        delay_samples = int(self.transcription_delay_ms / 1000.0 * self.sampling_rate)
        if delay_samples % self.hop_length != 0:
            frames = math.ceil(delay_samples / self.hop_length - 1)
        else:
            frames = delay_samples // self.hop_length
        return math.ceil(frames / self.frames_per_token)

    @property
    def num_right_pad_tokens(self) -> int:
        """Offline right pad in tokens: delay + BOS + the 10-token word buffer (MC n_right_pad_tokens; 17)."""
        return self.num_delay_tokens + 1 + OFFLINE_STREAMING_BUFFER_TOKENS


def _number(path, label: str, value, kind: type):
    """``value`` as ``kind`` (int or float); bools and strings are rejected, ints accepted as floats."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok or (kind is int and not isinstance(value, int)):
        raise OracleError(where(path, f"{label}: expected {kind.__name__}, got {shown(value)}"))
    if kind is float and (abs(value) > 1e300 or not math.isfinite(value)):
        raise OracleError(where(path, f"{label}: expected a finite number, got {shown(value)}"))
    return kind(value)


def _bounded(path, label: str, value, kind: type, low, high):
    """``value`` as ``kind`` within [low, high]."""
    number = _number(path, label, value, kind)
    if not low <= number <= high:
        raise OracleError(where(path, f"{label}: must be in [{low:g}, {high:g}], got {shown(value)}"))
    return number


def _positive(path, label: str, value, kind: type):
    number = _number(path, label, value, kind)
    if number <= 0:
        raise OracleError(where(path, f"{label}: must be > 0, got {shown(value)}"))
    return number


def _require(path, obj: dict, key: str, label: str):
    if key not in obj:
        raise OracleError(where(path, f"{label}: missing"))
    return obj[key]


def parse_audio(path, audio) -> StreamingAudioConfig:
    """Parse and check a tekken.json ``"audio"`` object; the checks are MC ``AudioConfig.__post_init__``'s."""
    if not isinstance(audio, dict):
        raise OracleError(where(path, f"audio: expected an object, got {type(audio).__name__}"))
    unknown = sorted(set(audio) - _AUDIO_KEYS)
    if unknown:
        raise OracleError(where(path, f"audio.{unknown[0]}: unknown key"))
    fmt = audio.get("transcription_format", "instruct")  # MC's default is INSTRUCT
    if fmt != "streaming":
        raise OracleError(where(
            path, f"audio.transcription_format: {fmt!r} is not 'streaming'; only the realtime model is supported"))
    if audio.get("chunk_length_s") is not None:
        raise OracleError(where(path, "audio.chunk_length_s: must be null for a streaming model"))
    enc = _require(path, audio, "audio_encoding_config", "audio.audio_encoding_config")
    if not isinstance(enc, dict):
        raise OracleError(where(path, "audio.audio_encoding_config: expected an object"))

    def get(obj: dict, key: str, prefix: str, kind: type, high=MAX_AUDIO_INT, low=None):
        """A number in [low, high], or in (0, high] when ``low`` is None."""
        label = f"{prefix}.{key}"
        value = _require(path, obj, key, label)
        if low is None:
            _positive(path, label, value, kind)
            low = 0
        return _bounded(path, label, value, kind, low, high)

    cfg = StreamingAudioConfig(
        sampling_rate=get(audio, "sampling_rate", "audio", int),
        frame_rate=get(audio, "frame_rate", "audio", float),
        num_mel_bins=get(enc, "num_mel_bins", "audio.audio_encoding_config", int),
        hop_length=get(enc, "hop_length", "audio.audio_encoding_config", int),
        window_size=get(enc, "window_size", "audio.audio_encoding_config", int),
        transcription_delay_ms=get(audio, "transcription_delay_ms", "audio", float, MAX_AUDIO_MS),
        streaming_look_ahead_ms=get(audio, "streaming_look_ahead_ms", "audio", float, MAX_AUDIO_MS, 0),
        streaming_look_back_ms=get(audio, "streaming_look_back_ms", "audio", float, MAX_AUDIO_MS, 0),
        # MC never checks the sign; a negative pad would silently shorten the audio (MODEL.md §6.2).
        streaming_n_left_pad_tokens=get(audio, "streaming_n_left_pad_tokens", "audio", int, MAX_LEFT_PAD_TOKENS, 0),
        transcription_format=fmt,
    )
    if cfg.sampling_rate < cfg.frame_rate or cfg.frames_per_token <= 0:
        raise OracleError(where(path, "audio.frame_rate: a token must span at least one hop of samples"))
    # MC asserts delay % (1000 / frame_rate) == 0: the delay is a whole number of tokens.
    if cfg.transcription_delay_ms % (1000.0 / cfg.frame_rate) != 0:
        raise OracleError(where(path, f"audio.transcription_delay_ms: {cfg.transcription_delay_ms} is not a "
                                      f"multiple of the {1000.0 / cfg.frame_rate} ms token duration"))
    return cfg


def audio_to_json(cfg: StreamingAudioConfig) -> dict:
    """The tekken.json ``"audio"`` object for ``cfg`` (inverse of ``parse_audio``)."""
    def num(x):
        # 480.0 is written as 480, like the real file; 12.5 stays 12.5.
        return int(x) if float(x).is_integer() else float(x)

    return {
        "sampling_rate": cfg.sampling_rate,
        "frame_rate": num(cfg.frame_rate),
        "audio_encoding_config": {
            "num_mel_bins": cfg.num_mel_bins, "hop_length": cfg.hop_length, "window_size": cfg.window_size,
        },
        "transcription_delay_ms": num(cfg.transcription_delay_ms),
        "streaming_look_ahead_ms": num(cfg.streaming_look_ahead_ms),
        "streaming_look_back_ms": num(cfg.streaming_look_back_ms),
        "streaming_n_left_pad_tokens": cfg.streaming_n_left_pad_tokens,
        "transcription_format": cfg.transcription_format,
    }


# ----------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Tekken:
    """A loaded tekken.json. Id layout: ``[0, num_special)`` special, ``[num_special, vocab_size)`` bytes."""

    path: str
    version: str                  # config.version, e.g. "v3", "v7"
    pattern: str = field(repr=False)  # config.pattern (kept for reference; encoding is not implemented)
    vocab_size: int               # config.default_vocab_size: number of valid ids
    num_special_tokens: int       # config.default_num_special_tokens (1000)
    special_tokens: tuple[str, ...] = field(repr=False)  # [num_special] name of special id i
    token_bytes: tuple[bytes, ...] = field(repr=False)   # [vocab_size − num_special] bytes of rank r
    bos_id: int
    eos_id: int
    streaming_pad_id: int | None  # None when the file does not name it (v3 files)
    streaming_word_id: int | None
    audio: StreamingAudioConfig | None

    @classmethod
    def from_file(cls, path) -> "Tekken":
        return load_tekken(path)

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ``ids``, exactly MC ``Tekkenizer.decode(ids)`` (IGNORE policy); see the module doc."""
        return "".join(_utf8(run) for run in self._byte_runs(ids))

    def _byte_runs(self, ids: Iterable[int]) -> list[bytes]:
        # Maximal runs of normal ids, each as its concatenated bytes (MC groupby on id < num_special).
        runs: list[list[bytes]] = [[]]
        for token_id in ids:
            token_id = self.check_id(token_id)
            if token_id < self.num_special_tokens:
                runs.append([])  # a special id ends the run (empty runs decode to "")
            else:
                runs[-1].append(self.token_bytes[token_id - self.num_special_tokens])
        return [b"".join(run) for run in runs]

    def check_id(self, token_id) -> int:
        """``token_id`` as an int, or ``OracleError`` if it is not a valid id of this vocabulary."""
        token_id = operator.index(token_id)  # numpy ints pass; floats are a TypeError (a bug, not user input)
        if not 0 <= token_id < self.vocab_size:
            raise OracleError(where(self.path, f"token id {token_id} is outside the vocabulary [0, {self.vocab_size})"))
        return token_id

    def is_special(self, token_id) -> bool:
        return self.check_id(token_id) < self.num_special_tokens

    def id_bytes(self, token_id) -> bytes:
        """Bytes of a normal id; ``b""`` for a special id (MC ``id_to_byte_piece``, IGNORE)."""
        token_id = self.check_id(token_id)
        if token_id < self.num_special_tokens:
            return b""
        return self.token_bytes[token_id - self.num_special_tokens]

    def token_text(self, token_id) -> str:
        """Readable form for reports: ``[STREAMING_PAD]``, `` spoke``, ``'\\n'``, ``b'\\xe2\\x82'``."""
        token_id = self.check_id(token_id)
        if token_id < self.num_special_tokens:
            return self.special_tokens[token_id]
        raw = self.token_bytes[token_id - self.num_special_tokens]
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            return repr(raw)  # a partial character: show the bytes
        return text if text.isprintable() else repr(text)

    def special_id(self, name: str) -> int:
        """Id of the special token called ``name`` (e.g. ``"[STREAMING_PAD]"``)."""
        try:
            return self.special_tokens.index(name)
        except ValueError:
            raise OracleError(where(self.path, f"special_tokens: no token named {name!r}")) from None


def _read_json(path) -> dict:
    return read_json_object(path)


def _version_number(path, version) -> int:
    match = re.fullmatch(r"v(\d+)", version) if isinstance(version, str) else None
    if match is None:
        raise OracleError(where(path, f"config.version: expected a string like 'v7', got {version!r}"))
    return int(match.group(1))


def _parse_vocab(path, vocab, n_used: int) -> tuple[bytes, ...]:
    """The bytes of the first ``n_used`` entries; MC ``_reload_mergeable_ranks`` checks, on those only."""
    if not isinstance(vocab, list):
        raise OracleError(where(path, "vocab: expected a list"))
    if len(vocab) < n_used:
        raise OracleError(where(path, f"vocab: has {len(vocab)} entries, config needs {n_used} "
                                      "(default_vocab_size − default_num_special_tokens)"))
    out: list[bytes] = []
    for rank, entry in enumerate(vocab[:n_used]):
        label = f"vocab[{rank}]"
        if not isinstance(entry, dict) or set(entry) != _VOCAB_ENTRY_KEYS:
            keys = sorted(entry) if isinstance(entry, dict) else type(entry).__name__
            raise OracleError(where(path, f"{label}: expected keys rank, token_bytes, token_str, got {keys}"))
        if entry["rank"] != rank or isinstance(entry["rank"], bool):
            raise OracleError(where(path, f"{label}.rank: must equal its index {rank}, got {entry['rank']!r}"))
        try:
            raw = base64.b64decode(entry["token_bytes"], validate=True)
        except (binascii.Error, TypeError, ValueError):
            raise OracleError(where(path, f"{label}.token_bytes: not base64: {entry['token_bytes']!r}")) from None
        if rank < 256 and raw != bytes([rank]):
            raise OracleError(where(path, f"{label}.token_bytes: ranks 0–255 must be the single byte "
                                          f"{bytes([rank])!r}, got {raw!r}"))
        if rank >= 256 and not raw:
            raise OracleError(where(path, f"{label}.token_bytes: empty"))
        out.append(raw)
    if len(set(out)) != len(out):
        seen: dict[bytes, int] = {}
        for rank, raw in enumerate(out):
            if raw in seen:
                raise OracleError(where(path, f"vocab[{rank}].token_bytes: duplicates vocab[{seen[raw]}] ({raw!r})"))
            seen[raw] = rank
    return tuple(out)


def _parse_special_tokens(path, doc: dict, version: int, num_special: int) -> tuple[str, ...]:
    """Names of all ``num_special`` special ids; missing ones become ``<SPECIAL_i>`` as in MC."""
    listed = doc.get("special_tokens")
    if listed is None:
        # MC: files up to v7 may omit the list and get the deprecated 20-name list; later ones may not.
        if version > 7:
            raise OracleError(where(path, "special_tokens: missing (required for versions after v7)"))
        names = list(DEPRECATED_SPECIAL_TOKENS)
    else:
        if not isinstance(listed, list):
            raise OracleError(where(path, "special_tokens: expected a list"))
        names = []
        for i, entry in enumerate(listed):
            label = f"special_tokens[{i}]"
            if not isinstance(entry, dict):
                raise OracleError(where(path, f"{label}: expected an object"))
            rank = _require(path, entry, "rank", f"{label}.rank")
            # MC indexes the list by position but looks names up by "rank": they must agree.
            if rank != i or isinstance(rank, bool):
                raise OracleError(where(path, f"{label}.rank: must equal its index {i}, got {rank!r}"))
            name = _require(path, entry, "token_str", f"{label}.token_str")
            if not isinstance(name, str):
                raise OracleError(where(path, f"{label}.token_str: expected a string, got {name!r}"))
            names.append(name)
    if len(names) > num_special:
        raise OracleError(where(path, f"special_tokens: {len(names)} entries but "
                                      f"config.default_num_special_tokens is {num_special}"))
    names += [SPECIAL_TOKEN_TEMPLATE.format(id=i) for i in range(len(names), num_special)]
    duplicates = [name for name, n in Counter(names).items() if n > 1]
    if duplicates:
        raise OracleError(where(path, f"special_tokens: {duplicates[0]!r} appears more than once"))
    return tuple(names)


def load_tekken(path) -> Tekken:
    """Load and check a tekken.json (MC ``Tekkenizer.from_file``); every failure is one ``OracleError`` line."""
    path = str(path)
    doc = _read_json(path)
    config = _require(path, doc, "config", "config")
    if not isinstance(config, dict):
        raise OracleError(where(path, "config: expected an object"))
    pattern = _require(path, config, "pattern", "config.pattern")
    if not isinstance(pattern, str):
        raise OracleError(where(path, "config.pattern: expected a string"))
    version_str = _require(path, config, "version", "config.version")
    version = _version_number(path, version_str)
    vocab_size = _bounded(path, "config.default_vocab_size", _require(
        path, config, "default_vocab_size", "config.default_vocab_size"), int, 1, MAX_VOCAB_SIZE)
    num_special = _bounded(path, "config.default_num_special_tokens", _require(
        path, config, "default_num_special_tokens", "config.default_num_special_tokens"), int, 1,
        MAX_SPECIAL_TOKENS)
    if vocab_size < num_special + 256:
        raise OracleError(where(path, f"config.default_vocab_size: {vocab_size} leaves room for fewer than the "
                                      f"256 byte tokens after {num_special} special tokens"))
    # The vocabulary is checked (cheaply, by length first) before the special names are built, so
    # the sizes taken from "config" are bounded by what the file really holds.
    token_bytes = _parse_vocab(path, _require(path, doc, "vocab", "vocab"), vocab_size - num_special)
    special = _parse_special_tokens(path, doc, version, num_special)
    if doc.get("audio") is not None and not isinstance(doc["audio"], dict):  # MC would take a falsy [] or 0 as absent
        raise OracleError(where(path, f"audio: expected an object, got {shown(doc['audio'])}"))
    audio = parse_audio(path, doc["audio"]) if doc.get("audio") else None  # MC: empty section = absent

    def named(name: str, required: bool) -> int | None:
        if name in special:
            return special.index(name)
        if required:
            raise OracleError(where(path, f"special_tokens: no token named {name!r}"))
        return None

    return Tekken(
        path=path, version=version_str, pattern=pattern, vocab_size=vocab_size, num_special_tokens=num_special,
        special_tokens=special, token_bytes=token_bytes,
        bos_id=named("<s>", True), eos_id=named("</s>", True),
        streaming_pad_id=named("[STREAMING_PAD]", False), streaming_word_id=named("[STREAMING_WORD]", False),
        audio=audio,
    )


# ----------------------------------------------------------------------------------------------
# Decoding
# ----------------------------------------------------------------------------------------------

def _utf8(raw: bytes) -> str:
    # tiktoken Encoding.decode: one UTF-8 decode of the run with errors="replace" (one U+FFFD per
    # maximal ill-formed subpart, Python's rule).
    return raw.decode("utf-8", errors="replace")


def _continuation_range(lead: int) -> tuple[int, int]:
    """Allowed range of the byte after ``lead`` (Unicode Table 3-7): excludes overlongs and surrogates."""
    return {0xE0: (0xA0, 0xBF), 0xED: (0x80, 0x9F), 0xF0: (0x90, 0xBF), 0xF4: (0x80, 0x8F)}.get(lead, (0x80, 0xBF))


def _sequence_length(lead: int) -> int:
    """Length of the well-formed UTF-8 sequence ``lead`` starts; 0 if it cannot start one of length ≥ 2."""
    if 0xC2 <= lead <= 0xDF:
        return 2
    if 0xE0 <= lead <= 0xEF:
        return 3
    if 0xF0 <= lead <= 0xF4:
        return 4
    return 0


def incomplete_utf8_tail(raw: bytes) -> int:
    """Length (0–3) of the suffix of ``raw`` that is a proper prefix of a well-formed UTF-8 character.

    Holding exactly this suffix back is safe: everything before it starts at a lead byte boundary,
    and a lead byte can never continue an earlier sequence, so the decoding of the prefix cannot
    depend on bytes that arrive later.
    """
    for n in range(1, min(3, len(raw)) + 1):
        lead = raw[-n]
        if 0x80 <= lead <= 0xBF:
            continue  # a continuation byte: the sequence starts further back
        if _sequence_length(lead) <= n:
            return 0
        if n >= 2:
            lo, hi = _continuation_range(lead)
            if not lo <= raw[-n + 1] <= hi:
                return 0
        return n
    return 0


@dataclass(frozen=True)
class IncrementalDecoder:
    """Streaming ``Tekken.decode``: ``push`` one id at a time, ``flush`` at the end; values, not mutation.

    ``pending`` holds the incomplete UTF-8 tail of the current run of normal ids. The concatenation
    of all emitted strings equals ``tekken.decode(all ids)`` exactly: a special id or ``flush``
    ends the run and decodes a truncated tail to U+FFFD, as a whole-sequence decode does.
    """

    tekken: Tekken = field(repr=False)
    pending: bytes = b""

    def push(self, token_id) -> tuple["IncrementalDecoder", str]:
        """``(next_state, text)`` after one more id."""
        if self.tekken.is_special(token_id):
            return self.flush()
        buffered = self.pending + self.tekken.id_bytes(token_id)
        keep = incomplete_utf8_tail(buffered)
        cut = len(buffered) - keep
        return replace(self, pending=buffered[cut:]), _utf8(buffered[:cut])

    def flush(self) -> tuple["IncrementalDecoder", str]:
        """``(empty_state, text)``: end of the run; an incomplete tail becomes U+FFFD."""
        return replace(self, pending=b""), _utf8(self.pending)


def decode_incrementally(tekken: Tekken, ids: Iterable[int]) -> list[str]:
    """The pieces an ``IncrementalDecoder`` emits for ``ids`` (one per id, plus the final flush)."""
    state = IncrementalDecoder(tekken)
    pieces = []
    for token_id in ids:
        state, text = state.push(token_id)
        pieces.append(text)
    state, text = state.flush()
    pieces.append(text)
    return pieces


__all__ = [
    "DEPRECATED_SPECIAL_TOKENS", "IncrementalDecoder", "NUM_SPECIAL_TOKENS", "SPECIAL_TOKEN_TEMPLATE",
    "STANDARD_SPECIAL_TOKENS", "StreamingAudioConfig", "TEKKEN_PATTERN", "Tekken", "audio_to_json",
    "decode_incrementally", "incomplete_utf8_tail", "load_tekken", "parse_audio",
]
