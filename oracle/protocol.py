"""The streaming protocol: delay, prompt, padding (MODEL.md §6.2, §6.3; MC ``AudioEncoder``).

    n_delay      = delay_ms / 80                              (6 at the default 480 ms)
    prompt       = [BOS] + [STREAMING_PAD] × (32 + n_delay)   (39 tokens at 480 ms)
    left pad     = 32 × 1280 zero samples, before the audio
    right pad    = offline: (1280 − L mod 1280) mod 1280 alignment zeros + (n_delay + 11) × 1280 zeros
                   online:  (n_delay + 11) × 1280 zeros when the stream ends
    t_cond       = time embedding of n_delay

Decoder position p covers padded samples [1280p, 1280p + 1280), i.e. real time (p − 32)·80 ms, and
always gets audio embedding A[p]. The prompt forces STREAMING_PAD as the "text" of positions 1..38;
the first free prediction is the output at the last prompt position. The three delay-dependent
values (prompt length, right pad, t) must agree; this record keeps them together.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .config import AudioConfig, ModelConfig
from .errors import OracleError
from .tokenizer import OFFLINE_STREAMING_BUFFER_TOKENS, STANDARD_SPECIAL_TOKENS, StreamingAudioConfig

# Ids of the standard special-token list (MODEL.md §6.1): 1, 2, 32, 33. A loaded tekken.json overrides them.
BOS, EOS, STREAMING_PAD, STREAMING_WORD = (STANDARD_SPECIAL_TOKENS.index(name) for name in
                                           ("<s>", "</s>", "[STREAMING_PAD]", "[STREAMING_WORD]"))
# Without a tekken.json: the defaults of its "audio" section (MODEL.md §6.2), 32 tokens and 480 ms.
LEFT_PAD_TOKENS = StreamingAudioConfig.streaming_n_left_pad_tokens
DEFAULT_DELAY_MS = int(StreamingAudioConfig.transcription_delay_ms)
# The model card / vLLM recipe: 80..1200 ms in 80 ms steps, plus 2400 ms (t in {1..15, 30}).
SUPPORTED_DELAYS_MS = tuple(range(80, 1201, 80)) + (2400,)


@dataclass(frozen=True)
class Protocol:
    delay_ms: int
    delay_tokens: int  # n_delay = t
    left_pad_tokens: int
    samples_per_token: int  # 1280
    audio: AudioConfig  # the checkpoint's front end: how the padded stream becomes mel frames (oracle.mel)
    bos: int = BOS
    pad: int = STREAMING_PAD
    eos: int = EOS
    # Deviations the fault catalogue injects (oracle.faults); 0 is the model. A port that gets these
    # wrong keeps the three delay-dependent values (prompt, right pad, t) out of step.
    prompt_pad_delta: int = 0  # -1: the 38-token prompt (MODEL.md §11.9)
    t_delta: int = 0  # t_cond built from n_delay + t_delta (MODEL.md §11.7: t from the wrong delay)
    left_pad_delta: int = 0  # tokens of left-pad silence beyond left_pad_tokens; the prompt keeps its length
    extra_steps: int = 0  # greedy steps beyond N − P: 1 feeds A[N−1], more feed zero audio past the end

    @property
    def prompt(self) -> np.ndarray:
        """[BOS] + [STREAMING_PAD] × (left pad + delay): 1 + 32 + n_delay tokens."""
        pads = self.left_pad_tokens + self.delay_tokens + self.prompt_pad_delta
        return np.array([self.bos] + [self.pad] * pads, dtype=np.int64)

    @property
    def t(self) -> float:
        """The time-conditioning value: n_delay (6 at 480 ms), passed to the time embedding as a float."""
        return float(self.delay_tokens + self.t_delta)

    @property
    def right_pad_tokens(self) -> int:
        """(n_delay + 1) + 10: the delay, the BOS position, and a maximum word length (MC n_right_pad_tokens)."""
        return self.delay_tokens + 1 + OFFLINE_STREAMING_BUFFER_TOKENS

    @property
    def left_pad_samples(self) -> int:
        return (self.left_pad_tokens + self.left_pad_delta) * self.samples_per_token

    def right_pad_samples(self, n_samples: int | None) -> int:
        """Offline (n_samples given): align to a whole token, then the right pad. Online (None): the pad alone."""
        align = 0 if n_samples is None else (-n_samples) % self.samples_per_token
        return align + self.right_pad_tokens * self.samples_per_token

    def pad_offline(self, audio: np.ndarray) -> np.ndarray:
        """The padded offline stream: left pad + audio + alignment + right pad. [L] -> [1280 N]."""
        assert audio.ndim == 1, audio.shape
        left = np.zeros(self.left_pad_samples, dtype=audio.dtype)
        right = np.zeros(self.right_pad_samples(len(audio)), dtype=audio.dtype)
        return np.concatenate([left, audio, right])

    def n_positions(self, n_samples: int) -> int:
        """N decoder positions of the offline padded stream for L real samples."""
        return (self.left_pad_samples + n_samples + self.right_pad_samples(n_samples)) // self.samples_per_token


def delay_tokens_for(delay_ms, samples_per_token_ms: float) -> int:
    """delay in ms -> n_delay tokens (a token is 80 ms: ``ModelConfig.samples_per_token`` samples);
    anything but a supported delay is one clear error."""
    try:
        ms = float(delay_ms)
    except (TypeError, ValueError):
        raise OracleError(f"delay {delay_ms!r} ms is not a number") from None
    if not ms.is_integer() or int(ms) not in SUPPORTED_DELAYS_MS:
        raise OracleError(
            f"delay {delay_ms} ms is not supported: use a multiple of 80 from 80 to 1200, or 2400")
    return int(ms) // int(samples_per_token_ms)


def make_protocol(cfg: ModelConfig, delay_ms: int | None = None, tekken=None) -> Protocol:
    """The protocol for a model and delay. With a loaded ``tekken`` (oracle.tokenizer.Tekken), its
    "audio" section supplies the default delay and the left pad, and its special ids BOS/EOS/PAD."""
    audio = getattr(tekken, "audio", None)
    if delay_ms is None:
        delay_ms = getattr(audio, "transcription_delay_ms", None) or DEFAULT_DELAY_MS
    left = getattr(audio, "streaming_n_left_pad_tokens", None) or LEFT_PAD_TOKENS
    token_ms = 1000.0 * cfg.samples_per_token / cfg.audio.sampling_rate
    ids = {}
    if tekken is not None:
        ids = {"bos": tekken.bos_id, "eos": tekken.eos_id}
        if tekken.streaming_pad_id is not None:
            ids["pad"] = tekken.streaming_pad_id
    n_delay = delay_tokens_for(delay_ms, token_ms)
    return Protocol(delay_ms=int(float(delay_ms)), delay_tokens=n_delay, left_pad_tokens=int(left),
                    samples_per_token=cfg.samples_per_token, audio=cfg.audio, **ids)
