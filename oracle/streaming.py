"""Incremental inference: greedy decoding with explicit caches, offline schedule and live streaming.

Shape legend:
    L samples of the padded stream (1280 per token)   M mel bins   De/D encoder/decoder width
    P prompt length (1 + 32 + n_delay)                N decoder positions   V vocab

Run-state (llama2.c's RunState, kept apart from weights and config):

    EncoderState  conv padding state (last 2 mel frames, last conv1 frame), one KV cache per encoder
                  layer (at most W_e − 1 keys), the next encoder position
    DecoderState  one KV cache per decoder layer (at most W_d − 1 keys), the next decoder position

Positions never reset while a stream lives. Both states are immutable values: every step returns new
ones, so a session can be inspected at any point.

Two framings of the audio (MODEL.md §6.5):

    offline  token p's 8 mel frames are computed from padded samples [1280p − 200, 1280p + 1320) on
             the offline 160·m grid, so streaming equals the offline forward (HF streaming does this).
    vllm     vLLM's realtime buffer: step 0 takes samples [0, 1280P + 40); step k ≥ 1 takes a window
             [s − 840, s + 1320), s = 1280(P + k − 1), computes its own centred mel (14 frames, last
             dropped, first dropped to make it even: 12), runs the convs from zeros and keeps the last
             4 encoder frames. The look-back of 840 = 5.25 hops puts every later mel frame on a grid
             40 samples earlier than offline (MODEL.md §11.10). Reproduce it only for vLLM parity.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .adapter import adapter
from .cache import KV
from .checkpoint import Arena, Checkpoint
from .decoder import decoder_input, final_norm, lm_head, time_condition
from .encoder import ConvState, encoder_layer, encoder_norm
from .errors import OracleError
from .forward import audio_embeddings
from .mel import log_mel
from .precision import Precision
from .protocol import Protocol
from .taps import no_tap
from .variant import REFERENCE, Variant

VLLM_LOOK_BACK = 840  # samples before the token's span (52.5 ms)
VLLM_LOOK_AHEAD = 40  # samples after it (2.5 ms)
FRAMINGS = ("offline", "vllm")


def resident_bytes(ckpt: Checkpoint, p: Precision, groups=None) -> int:
    """Bytes of every layer converted to the compute dtype (the embedding stays memory-mapped), or of the
    given weight groups (e.g. the decoder and embedding a greedy decode keeps)."""
    n = sum(int(np.prod(e.shape)) for (g, _, _), name in ckpt.names.items()
            if (g in groups if groups is not None else g != "embedding") for e in [ckpt.index[name]])
    return n * p.dtype.itemsize


def available_memory() -> int | None:
    """MemAvailable from /proc/meminfo (Linux), in bytes; None where it cannot be read."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def choose_resident(ckpt: Checkpoint, p: Precision, budget: float = 0.8, groups=None) -> bool:
    """Keep converted weights resident when they fit in ``budget`` of the available memory (the full model:
    16 GB in float32 fits a 24 GB machine, 32 GB in float64 does not and is streamed layer by layer)."""
    avail = available_memory()
    return avail is None or resident_bytes(ckpt, p, groups) <= budget * avail


class Model:
    """Config + typed weights in one precision. ``resident=True`` converts every layer once and keeps it
    (fast decoding); ``resident=False`` re-reads a layer from the checkpoint each time it is used
    (small: one layer in memory at a time); ``None`` chooses by available memory (``choose_resident``).
    ``keep``: when resident, only these weight groups are kept (e.g. the decoder and embedding a greedy
    run reads every token), the others are streamed."""

    def __init__(self, ckpt: Checkpoint, p: Precision, resident: bool | None = None, variant: Variant = REFERENCE,
                 keep: tuple[str, ...] | None = None, converted: dict | None = None):
        resident = choose_resident(ckpt, p, groups=keep) if resident is None else resident
        self.ckpt, self.p, self.resident, self.variant, self.keep = ckpt, p, resident, variant, keep
        self.config = ckpt.config
        self._cache: dict = {} if converted is None else converted  # converted weights, maybe a twin's
        self._arena = Arena()  # streamed layers reuse one set of buffers (kept ones are converted apart)

    def keeps(self, group: str) -> bool:
        """Whether weight group ``group`` stays converted once loaded."""
        return self.resident and (self.keep is None or group in self.keep)

    def sharing(self, p: Precision) -> "Model":
        """A Model in policy ``p`` (same compute dtype) that reuses this one's converted weights: the bf16
        emulation computes with the float32 weights, so its tolerance run need not convert them again."""
        assert p.dtype == self.p.dtype, (p.name, self.p.name)
        return Model(self.ckpt, p, resident=self.resident, variant=self.variant, keep=self.keep, converted=self._cache)

    def _get(self, group: str, key, load, small: bool = False):
        """``load(arena)`` once when the group is kept (or the value is ``small``), every time otherwise
        (into the shared arena: one streamed layer alive at a time)."""
        if not (self.keeps(group) or small):
            return load(self._arena)
        if key not in self._cache:
            self._cache[key] = load(None)
        return self._cache[key]

    def conv(self):
        return self._get("conv", "conv", lambda arena: self.ckpt.conv(self.p))

    def encoder_layer(self, i):
        return self._get("enc_layer", ("enc", i), lambda arena: self.ckpt.encoder_layer(i, self.p, arena))

    def encoder_norm(self):
        return self._get("enc_norm", "enc_norm", lambda arena: self.ckpt.encoder_norm(self.p))

    def adapter(self):
        return self._get("adapter", "adapter", lambda arena: self.ckpt.adapter(self.p))

    def decoder_layer(self, i):
        return self._get("dec_layer", ("dec", i), lambda arena: self.ckpt.decoder_layer(i, self.p, arena))

    def decoder_norm(self):
        return self._get("dec_norm", "dec_norm", lambda arena: self.ckpt.decoder_norm(self.p))

    def ada_scale(self, i, t_cond):
        return self._get("ada", ("ada", self.p.name, i, t_cond.tobytes()),
                         lambda arena: self.variant.ada_scale(t_cond, self.decoder_layer(i), self.p), small=True)

    def embedding_rows(self, rows):
        """Token rows of the embedding (also the tied head). Resident: the table converted once (1.6 GB in
        float32 at full size; the LM head reads all of it every step). Streamed: memory-mapped and
        converted on use, so the 131072 x 3072 matrix is never converted whole."""
        if self.keeps("embedding"):
            return self._get("embedding", "embedding", lambda arena: self.p.weight(self.ckpt.embedding_table()))[rows]
        return self.p.weight(self.ckpt.embedding_table()[rows])


@dataclass(frozen=True)
class EncoderState:
    conv: ConvState
    kv: tuple[KV, ...]
    position: int  # next encoder frame index

    @staticmethod
    def start(model: Model) -> "EncoderState":
        c, dt = model.config, model.p.dtype
        e = c.encoder
        return EncoderState(ConvState.zeros(c.audio.num_mel_bins, e.dim, dt),
                            tuple(KV.empty(e.n_heads, e.head_dim, dt) for _ in range(e.n_layers)), 0)


@dataclass(frozen=True)
class DecoderState:
    kv: tuple[KV, ...]
    position: int  # next decoder position

    @staticmethod
    def start(model: Model) -> "DecoderState":
        d, dt = model.config.decoder, model.p.dtype
        return DecoderState(tuple(KV.empty(d.n_kv_heads, d.head_dim, dt) for _ in range(d.n_layers)), 0)


def encoder_step(model: Model, mel: np.ndarray, state: EncoderState, tap=no_tap,
                 conv_state: ConvState | None = None, drop_frames: int = 0) -> tuple[np.ndarray, EncoderState]:
    """Encode new mel frames [M, 2k] with the cached context. -> (A [k', D], new state).

    ``conv_state`` overrides the carried conv state (vLLM framing restarts the convs from zeros on each
    window) and ``drop_frames`` discards leading conv frames before the transformer (vLLM keeps the
    last 4 of each window). The transformer layers see only the kept frames, at consecutive positions.
    """
    c, p = model.config, model.p
    cs = state.conv if conv_state is None else conv_state
    x, new_conv = model.variant.conv_stem(p.array(mel), model.conv(), p, state=cs, tap=tap)
    x = x[drop_frames:]
    positions = state.position + np.arange(x.shape[0], dtype=np.int64)
    kvs = []
    for i in range(c.encoder.n_layers):
        x, kv = encoder_layer(x, positions, model.encoder_layer(i), c.encoder, p, past=state.kv[i], tap=tap,
                              name=f"enc.L{i:02d}")
        kvs.append(kv.keep_for_window(c.encoder.sliding_window))
    x = encoder_norm(x, model.encoder_norm(), c.encoder, p, tap=tap)
    a = adapter(x, model.adapter(), c.downsample_factor, p, tap=tap)
    return a, EncoderState(new_conv, tuple(kvs), state.position + x.shape[0])


def decoder_step(model: Model, audio: np.ndarray, tokens: np.ndarray, t_cond: np.ndarray, state: DecoderState,
                 tap=no_tap) -> tuple[np.ndarray, DecoderState]:
    """Run n new positions (A + Emb[token]) through the decoder with its caches. -> (logits [n, V], state)."""
    c, p = model.config.decoder, model.p
    tokens = np.asarray(tokens, dtype=np.int64)
    x = decoder_input(audio, model.embedding_rows(tokens), p, tap=tap)
    positions = state.position + np.arange(len(tokens), dtype=np.int64)
    kvs = []
    for i in range(c.n_layers):
        x, kv = model.variant.decoder_layer(x, positions, model.decoder_layer(i), model.ada_scale(i, t_cond), c, p,
                              past=state.kv[i], tap=tap, name=f"dec.L{i:02d}")
        kvs.append(kv.keep_for_window(c.sliding_window))
    x = final_norm(x, model.decoder_norm(), c, p, tap=tap)
    logits = lm_head(x, model.embedding_rows, c.vocab_size, p, tap=tap)
    return logits, DecoderState(tuple(kvs), state.position + len(tokens))


def greedy(logits_row: np.ndarray) -> int:
    """argmax, first index on ties (torch.argmax and np.argmax agree on that)."""
    return int(np.argmax(logits_row))


def generate_offline(model: Model, mel: np.ndarray, proto: Protocol, tap=no_tap, progress=None) -> list[int]:
    """The offline greedy schedule of HF ``generate`` (MODEL.md §6.4).

    A[0..N) from the whole padded stream; prefill the P prompt positions; then feed the previous token
    at p = P, P+1, ... Stops after EOS (kept in the output) or after generating N − P tokens (HF's
    max_length = N: the last audio embedding A[N−1] is never consumed).
    """
    audio = audio_embeddings(model.ckpt, mel, model.p, tap=tap, variant=model.variant, progress=progress)
    return greedy_decode(model, audio, proto, tap=tap, progress=progress)


def greedy_decode(model: Model, audio: np.ndarray, proto: Protocol, forced=(), tap=no_tap, progress=None) -> list[int]:
    """Greedy tokens from audio embeddings A [N, D] (``generate_offline`` after the encoder).

    ``forced``: the first tokens, given rather than chosen (prefilled with the prompt in one step); the
    greedy fixpoint (oracle.fixpoint) continues a cheap run from a corrected prefix this way. The
    output starts with them."""
    audio = model.variant.audio_to_decoder(audio)
    prompt, forced = proto.prompt, [int(t) for t in forced]
    n, n_prompt = audio.shape[0], len(prompt)
    if n <= n_prompt - 1:
        raise OracleError(f"audio gives {n} positions, fewer than the {n_prompt}-token prompt")
    steps = n - n_prompt + proto.extra_steps  # N − P (the model); more only for a fault (Protocol.extra_steps)
    assert len(forced) <= steps and proto.eos not in forced[:-1], (len(forced), steps)
    if forced and (forced[-1] == proto.eos or len(forced) == steps):
        return forced  # nothing left to generate
    t_cond = time_condition(proto.t, model.config.decoder, model.p, tap=tap)
    first = np.concatenate([prompt, np.array(forced, dtype=np.int64)])
    logits, state = decoder_step(model, audio[:len(first)], first, t_cond, DecoderState.start(model), tap=tap)
    out = forced + [greedy(logits[-1])]
    while state.position < n_prompt - 1 + steps and out[-1] != proto.eos:
        pos = state.position
        # past the audio (a fault only) a port feeds a zero embedding: the token's alone
        a = audio[pos:pos + 1] if pos < n else np.zeros((1, audio.shape[1]), audio.dtype)
        logits, state = decoder_step(model, a, np.array([out[-1]]), t_cond, state, tap=tap)
        out.append(greedy(logits[-1]))
        if progress:
            progress(state.position - n_prompt + 1, n - n_prompt, "generating")
    return out


class StreamingSession:
    """Feed audio chunks of any size (down to one sample); get tokens as soon as they are due.

    The session holds the padded stream's recent samples, the encoder and decoder states and the audio
    embeddings not yet consumed. ``feed`` returns the tokens generated by that chunk; ``finish`` appends
    the online right pad, flushes, and returns the rest. Tokens are those of ``generate_offline`` for
    the offline framing (the offline right pad only adds the alignment, which the online pad lacks but
    which is silence either way; see ``finish``).
    """

    def __init__(self, model: Model, proto: Protocol, framing: str = "offline", tap=no_tap, forced=()):
        if framing not in FRAMINGS:
            raise OracleError(f"unknown framing {framing!r}: choose one of {', '.join(FRAMINGS)}")
        self.model, self.proto, self.framing, self.tap = model, proto, framing, tap
        self.prompt = proto.prompt
        self.enc = EncoderState.start(model)
        self.dec = DecoderState.start(model)
        self.t_cond = time_condition(proto.t, model.config.decoder, model.p, tap=tap)
        self.buf = np.zeros(0, dtype=np.float64)  # padded-stream samples from index buf_start
        self.buf_start = 0
        self.total = 0  # padded-stream samples received so far
        self.audio: list[np.ndarray] = []  # embeddings not yet fed to the decoder, positions from dec.position
        self.n_audio = 0  # audio embeddings computed so far
        self.last_token: int | None = None
        self.n_real = 0
        self.finished = False
        self.done = False  # EOS seen or stream exhausted
        self.n_positions: int | None = None  # known at finish
        self.forced = [int(t) for t in forced]  # the first tokens, given instead of chosen (oracle.fixpoint)
        self.n_emitted = 0
        self._push(np.zeros(proto.left_pad_samples))

    # -- audio intake ---------------------------------------------------------------------------

    def feed(self, samples: np.ndarray) -> list[int]:
        if self.finished:
            raise OracleError("feed() after finish(): start a new session")
        samples = np.asarray(samples, dtype=np.float64).reshape(-1)
        if not np.isfinite(samples).all():
            raise OracleError("audio chunk contains NaN or Inf samples")
        self.n_real += len(samples)
        self._push(samples)
        return self._advance()

    def finish(self) -> list[int]:
        """End of stream: append the right pad and flush.

        The pad is the offline one (alignment to a whole token + (n_delay + 11) tokens): with it the
        stream has exactly the offline N positions, which is what makes streaming token-identical to
        offline. (MC's online pad omits the alignment; the extra zeros are silence and change nothing
        but N.)"""
        if self.finished:
            return []
        self.finished = True
        self._push(np.zeros(self.proto.right_pad_samples(self.n_real)))
        self.n_positions = self.total // self.proto.samples_per_token
        return self._advance()

    def _push(self, samples: np.ndarray) -> None:
        self.buf = np.concatenate([self.buf, samples])
        self.total += len(samples)

    def _window(self, start: int, stop: int) -> np.ndarray:
        """Padded-stream samples [start, stop); indices before 0 read the left pad's reflection (zeros),
        indices past the end of a finished stream read zeros (the reflection of the zero right pad)."""
        out = np.zeros(stop - start)
        lo, hi = max(start, self.buf_start), min(stop, self.buf_start + len(self.buf))
        if hi > lo:
            out[lo - start:hi - start] = self.buf[lo - self.buf_start:hi - self.buf_start]
        return out

    def _forget_before(self, index: int) -> None:
        """Drop samples no future window needs (keeps the buffer bounded)."""
        cut = min(max(index - self.buf_start, 0), len(self.buf))
        self.buf = self.buf[cut:]
        self.buf_start += cut

    # -- the schedule ---------------------------------------------------------------------------

    def _advance(self) -> list[int]:
        out: list[int] = []
        spt = self.proto.samples_per_token
        n_prompt = len(self.prompt)
        while not self.done:
            p = self.n_audio  # next audio embedding to compute
            if self.framing == "offline":
                if self.n_positions is not None and p >= self.n_positions:
                    break
                if not self.finished and self.total < self._offline_window(p)[1]:
                    break
                self._encode_offline(p)
            else:
                if p == 0:
                    end = n_prompt * spt + VLLM_LOOK_AHEAD
                    if self.total < end:
                        break
                    self._encode_vllm_first(end)
                else:
                    end = p * spt + spt + VLLM_LOOK_AHEAD
                    if self.total < end:  # a trailing partial window is discarded, as in vLLM
                        break
                    self._encode_vllm_step(p)
            out.extend(self._decode())
        if not self.done and self.finished:
            self.done = True
        return out

    def _offline_window(self, p: int) -> tuple[int, int]:
        """Samples token p's mel frames 8p..8p+7 read: centres 160·m ± 200, i.e. [1280p − 200, 1280p + 1320)."""
        c = self.model.config
        start = self.proto.samples_per_token * p - c.audio.window_size // 2
        return start, start + (c.mel_frames_per_token - 1) * c.audio.hop_length + c.audio.window_size

    def _mel(self, window: np.ndarray, center: bool) -> np.ndarray:
        """Log-mel of a slice of the padded stream, with the checkpoint's front end.  [L] -> [M, T]"""
        dtype = self.model.p.dtype
        return log_mel(window.astype(dtype), dtype, center=center, audio=self.model.config.audio)

    def _encode_offline(self, p: int) -> None:
        spt = self.proto.samples_per_token
        window = self._window(*self._offline_window(p))
        mel = self._mel(window, center=False)  # [M, 8]
        self.tap("mel", mel, axis=1)
        self._queue(self._encoder_step(mel))
        self._forget_before(spt * (p + 1) - self.model.config.audio.window_size // 2)

    def _encode_vllm_first(self, end: int) -> None:
        mel = self._mel(self._window(0, end), center=True)
        usable = mel.shape[1] - mel.shape[1] % self.model.config.mel_frames_per_token
        mel = mel[:, :usable]
        self.tap("mel", mel, axis=1)
        self._queue(self._encoder_step(mel))

    def _encode_vllm_step(self, p: int) -> None:
        spt, c = self.proto.samples_per_token, self.model.config
        s = spt * p
        mel = self._mel(self._window(s - VLLM_LOOK_BACK, s + spt + VLLM_LOOK_AHEAD), center=True)
        if mel.shape[1] % 2:  # vLLM drops the left-most frame of an odd count
            mel = mel[:, 1:]
        self.tap("mel", mel[:, -c.mel_frames_per_token:], axis=1)
        fresh = ConvState.zeros(c.audio.num_mel_bins, c.encoder.dim, self.model.p.dtype)
        n_conv = mel.shape[1] // 2
        self._queue(self._encoder_step(mel, conv_state=fresh, drop_frames=n_conv - c.downsample_factor))
        self._forget_before(spt * (p + 1) - VLLM_LOOK_BACK)

    def _queue(self, a: np.ndarray) -> None:
        self.audio.append(a)
        self.n_audio += a.shape[0]

    def _decode(self) -> list[int]:
        """Feed every position whose audio and token are known; return new tokens."""
        out: list[int] = []
        audio = np.concatenate(self.audio) if len(self.audio) > 1 else (self.audio[0] if self.audio else None)
        self.audio = [] if audio is None else [audio]
        n_prompt = len(self.prompt)
        while audio is not None and len(audio) > 0 and not self.done:
            pos = self.dec.position
            # HF generate stops at max_length = N: the last position's embedding is never consumed.
            if self.n_positions is not None and pos >= self.n_positions - 1:
                self.done = True
                break
            if pos < n_prompt:
                if self.dec.position + len(audio) < n_prompt:
                    break  # the prompt is prefilled in one go once its audio is complete
                take, tokens = n_prompt - pos, self.prompt[pos:]
            else:
                take, tokens = 1, np.array([self.last_token])
            chosen = self._decoder_step(audio[:take], tokens)
            audio = audio[take:]
            self.last_token = self.forced[self.n_emitted] if self.n_emitted < len(self.forced) else chosen
            self.n_emitted += 1
            out.append(self.last_token)
            if self.last_token == self.proto.eos:
                self.done = True
        self.audio = [audio] if audio is not None and len(audio) else []
        return out

    # -- the two computations the schedule drives (oracle.layer_major replays the schedule without them) --

    def _encoder_step(self, mel: np.ndarray, conv_state: ConvState | None = None, drop_frames: int = 0) -> np.ndarray:
        """Encode new mel frames [M, 2k] with the cached context -> audio embeddings [k', D]."""
        a, self.enc = encoder_step(self.model, mel, self.enc, tap=self.tap, conv_state=conv_state,
                                   drop_frames=drop_frames)
        return a

    def _decoder_step(self, audio: np.ndarray, tokens: np.ndarray) -> int:
        """Feed n positions (their audio [n, D] and token ids [n]) -> the greedy token after the last."""
        logits, self.dec = decoder_step(self.model, audio, tokens, self.t_cond, self.dec, tap=self.tap)
        return greedy(logits[-1])

    # -- inspection -----------------------------------------------------------------------------

    def state_nbytes(self) -> dict[str, int]:
        """Bytes held by each part of the run-state (for the boundedness test and reports)."""
        return {
            "samples": self.buf.nbytes,
            "encoder_kv": sum(kv.nbytes for kv in self.enc.kv),
            "decoder_kv": sum(kv.nbytes for kv in self.dec.kv),
            "conv": self.enc.conv.mel_tail.nbytes + self.enc.conv.conv1_tail.nbytes,
            "pending_audio": sum(a.nbytes for a in self.audio),
        }
