"""A streaming session teacher-forced on known tokens, computed one layer at a time across all feeds.

Shape legend:  S encoder frames   De/D encoder/decoder width   n decoded positions   V vocab

A live session (oracle.streaming) runs every layer for every feed, so without resident weights each
layer is re-read once per feed. Teacher-forced on known tokens, streaming is causal per layer: layer l
of feed k needs only layer l's cache from feeds < k and layer l-1's output for feed k. So the same
tensors come out of:

    plan     replay the session's schedule (its framing, chunking, stopping) with the conv stem only:
             the frames each encoder step adds, the positions and tokens each decoder step feeds, the
             feed that emitted each token, the cache lengths (``Plan``, a StreamingSession whose two
             computations are replaced)
    encoder  layer by layer over all frames at once: a frame at position i attends to the keys i - W < j
             <= i, exactly what the cached step saw (keys before it from earlier feeds, its own feed's
             keys up to itself)
    decoder  likewise over the fed positions, then the final norm and LM head

The weights of each layer are read once. Rows are computed in one matmul instead of one per feed: the
same sums in another order, equal to step-by-step streaming to ~1e-15 relative in float64
(tests/test_layer_major.py). ``StreamingSession`` stays the user-facing streaming path.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .adapter import adapter
from .cache import KV
from .checkpoint import Arena
from .decoder import decoder_input, final_norm, layer_ada_scale, lm_head
from .encoder import ConvState, encoder_layer, encoder_norm
from .streaming import DecoderState, EncoderState, Model, StreamingSession
from .taps import Taps, no_tap


def _placeholder_kv(n_heads: int) -> KV:
    """A cache that tracks positions only (head dim 0): the plan's cache lengths, without the tensors."""
    return KV.empty(n_heads, 0, np.float64)


class Plan(StreamingSession):
    """The schedule of a session fed ``tokens`` (teacher forcing), with the conv stem computed and the
    transformer layers left out. After feeding: ``frames`` (the conv-stem frames of each encoder step),
    ``fed`` (the token fed at each decoder position) and the session's own counters."""

    def __init__(self, model: Model, proto, framing: str, tokens):
        super().__init__(model, proto, framing=framing, forced=tokens)
        c = model.config
        self.enc = EncoderState(self.enc.conv, tuple(_placeholder_kv(c.encoder.n_heads) for _ in self.enc.kv), 0)
        self.dec = DecoderState(tuple(_placeholder_kv(c.decoder.n_kv_heads) for _ in self.dec.kv), 0)
        self.frames: list[np.ndarray] = []
        self.fed: list[np.ndarray] = []
        self._conv = model.conv()  # once, also when the model streams its weights

    def _encoder_step(self, mel, conv_state: ConvState | None = None, drop_frames: int = 0) -> np.ndarray:
        model, p, c = self.model, self.model.p, self.model.config
        cs = self.enc.conv if conv_state is None else conv_state
        x, new_conv = model.variant.conv_stem(p.array(mel), self._conv, p, state=cs)
        x = x[drop_frames:]
        self.frames.append(x)
        self.enc = EncoderState(new_conv, self._grow(self.enc, len(x), c.encoder.sliding_window), self.enc.position + len(x))
        return np.zeros((len(x) // c.downsample_factor, 0))  # stands for the embeddings: only their count matters

    def _decoder_step(self, audio: np.ndarray, tokens: np.ndarray) -> int:
        self.fed.append(np.asarray(tokens, dtype=np.int64))
        self.dec = DecoderState(self._grow(self.dec, len(tokens), self.model.config.decoder.sliding_window),
                                self.dec.position + len(tokens))
        return self.proto.pad  # replaced by the forced token; past the given tokens the check catches it

    @property
    def n_fed(self) -> int:
        """Decoder positions fed so far (rows of the session's logits)."""
        return sum(len(f) for f in self.fed)

    @staticmethod
    def _grow(state, n: int, window: int) -> tuple[KV, ...]:
        pos = state.position + np.arange(n, dtype=np.int64)
        z = np.zeros((n, state.kv[0].k.shape[1], 0))
        return tuple(kv.extend(z, z, pos).keep_for_window(window) for kv in state.kv)


@dataclass
class Fed:
    """What a session did, feed by feed: the int outputs of the stream golden."""

    tokens: list[int]  # emitted tokens
    emitted_at: list[int]  # the feed index that emitted each (the last index is finish())
    enc_cache_len: list[int]  # layer 0's cache length after each feed
    dec_cache_len: list[int]


def feed_all(session: StreamingSession, audio: np.ndarray, chunk: int) -> Fed:
    """Feed ``audio`` in chunks of ``chunk`` samples, then finish(); record what each feed did."""
    out = Fed([], [], [], [])
    feeds = [audio[k:k + chunk] for k in range(0, len(audio), chunk)]
    for step, piece in enumerate(feeds + [None]):
        new = session.feed(piece) if piece is not None else session.finish()
        out.tokens += new
        out.emitted_at += [step] * len(new)
        out.enc_cache_len.append(len(session.enc.kv[0]))
        out.dec_cache_len.append(len(session.dec.kv[0]))
    return out


def teacher_forced(plan: Plan, model: Model, tap=no_tap) -> np.ndarray:
    """Run the planned session's layers one at a time over all its feeds. -> logits [n, V] of every
    decoded position (the rows a step-by-step session's ``logits`` tap concatenates)."""
    c, p, ckpt = model.config, model.p, model.ckpt
    fed = np.concatenate(plan.fed) if plan.fed else np.zeros(0, np.int64)  # [n]
    n = len(fed)
    x = np.concatenate(plan.frames)  # [S, De], positions 0..S-1 (the session never skips one)
    positions = np.arange(x.shape[0], dtype=np.int64)
    arena = Arena()
    for i in range(c.encoder.n_layers):  # read once per pass even for a resident model (it keeps the decoder)
        w = ckpt.encoder_layer(i, p, arena)
        x, _ = encoder_layer(x, positions, w, c.encoder, p, tap=tap, name=f"enc.L{i:02d}")
    x = encoder_norm(x, model.encoder_norm(), c.encoder, p, tap=tap)
    audio = adapter(x, model.adapter(), c.downsample_factor, p, tap=tap)[:n]
    emb = model.embedding_rows(fed)
    x = decoder_input(audio, emb, p, tap=tap)
    positions = np.arange(n, dtype=np.int64)
    for i in range(c.decoder.n_layers):
        w = model.decoder_layer(i) if model.keeps("dec_layer") else ckpt.decoder_layer(i, p, arena)
        x, _ = model.variant.decoder_layer(x, positions, w, layer_ada_scale(plan.t_cond, w, p), c.decoder, p,
                                           tap=tap, name=f"dec.L{i:02d}")
    x = final_norm(x, model.decoder_norm(), c.decoder, p, tap=tap)
    rows = model.embedding_rows if model.keeps("embedding") else (lambda r: ckpt.embedding_rows(r, p, arena))
    return lm_head(x, rows, c.decoder.vocab_size, p, tap=tap)


def stream_teacher_forced(model: Model, proto, framing: str, audio: np.ndarray, chunk: int,
                          tokens) -> tuple[Fed, np.ndarray]:
    """Plan the session fed ``audio`` in ``chunk``-sample feeds and forced to emit ``tokens``, then compute
    it layer-major. -> (what each feed did, logits [n, V])."""
    plan = Plan(model, proto, framing, tokens)
    record = feed_all(plan, audio, chunk)
    taps = Taps("logits")
    teacher_forced(plan, model, tap=taps)
    return record, taps["logits"]
