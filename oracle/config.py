"""Model configuration: the numbers in params.json (Mistral layout) or config.json (HF layout).

Three frozen records, llama2.c style, kept apart from weights and run-state:

    EncoderConfig   the causal Whisper-style audio encoder (conv stem + transformer)
    DecoderConfig   the Ministral-style LM with ADA RMSNorm
    AudioConfig     the front end: sample rate, mel bins, hop, window, global log-mel max

Derived rates (MODEL.md §2.3): one decoder token = hop · conv_stride · downsample_factor samples
(160 · 2 · 4 = 1280) = 8 mel frames = 4 encoder frames.

Every key read from a file is validated here; a missing or mistyped key is one ``OracleError`` line
naming the file and the key.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from .errors import OracleError, shown, where
from .jsonio import read_json_object

CONV_STRIDE = 2  # conv2's stride (MODEL.md §3.1); conv1 has stride 1. Fixed by the architecture, not params.
CONV_KERNEL = 3
ADA_DIM_DEFAULT = 32  # HF hard-codes nn.Linear(hidden, 32) (MODEL.md §8.3); params.json carries it too.
# Largest integer any size or window in a config may take. Sizes are bounded again by the tensors the
# file really holds, but windows and counts are not: 2**24 is far above the real model (131072 vocab,
# 8192 window) and far below anything that overflows an int64 index or a float64 mantissa.
MAX_CONFIG_INT = 1 << 24
MAX_DOWNSAMPLE = 64


@dataclass(frozen=True)
class EncoderConfig:
    dim: int  # D_e, 1280
    n_layers: int  # 32
    n_heads: int  # 32
    n_kv_heads: int  # 32 (plain MHA; kept for symmetry, must equal n_heads)
    head_dim: int  # 64
    hidden_dim: int  # SwiGLU width, 5120
    rope_theta: float  # 1e6 (vLLM hard-codes it; HF's encoder default 10000 is a trap, MODEL.md §8.3)
    norm_eps: float  # 1e-5
    sliding_window: int  # W_e keys including self, 750


@dataclass(frozen=True)
class DecoderConfig:
    dim: int  # D, 3072
    n_layers: int  # 26
    n_heads: int  # H, 32
    n_kv_heads: int  # K, 8
    head_dim: int  # 128
    hidden_dim: int  # 9216
    vocab_size: int  # V, 131072
    rope_theta: float  # 1e6
    norm_eps: float  # 1e-5
    sliding_window: int  # W_d, 8192
    ada_dim: int  # 32
    tied_embeddings: bool  # True: LM head = token embedding


@dataclass(frozen=True)
class AudioConfig:
    sampling_rate: int  # 16000
    frame_rate: float  # 12.5 decoder tokens per second
    num_mel_bins: int  # 128
    hop_length: int  # 160
    window_size: int  # 400 (= n_fft)
    global_log_mel_max: float  # 1.5: the fixed log-mel floor is this − 8 (MODEL.md §2.2)


# The one front end this model has (16 kHz, 400-point window, hop 160, 128 mel bins): oracle/mel.py reads
# these numbers from a config, and a config with other front-end numbers is refused at load.
FRONT_END = AudioConfig(sampling_rate=16000, frame_rate=12.5, num_mel_bins=128, hop_length=160, window_size=400,
                        global_log_mel_max=1.5)


@dataclass(frozen=True)
class ModelConfig:
    encoder: EncoderConfig
    decoder: DecoderConfig
    audio: AudioConfig
    downsample_factor: int  # encoder frames concatenated per decoder token, 4

    @property
    def samples_per_token(self) -> int:
        return self.audio.hop_length * CONV_STRIDE * self.downsample_factor

    @property
    def mel_frames_per_token(self) -> int:
        return CONV_STRIDE * self.downsample_factor

    # -- Mistral params.json -------------------------------------------------------------------

    @classmethod
    def from_params(cls, params: dict, source: str | Path = "params.json") -> "ModelConfig":
        """Parse a Mistral-native params.json dict; every missing or mistyped key is one clear error."""
        get = _Getter(params, source)
        mm = get.section(params, "multimodal")
        wm = get.section(mm, "whisper_model_args", "multimodal")
        ea = get.section(wm, "encoder_args", "multimodal.whisper_model_args")
        aa = get.section(ea, "audio_encoding_args", "multimodal.whisper_model_args.encoder_args")
        ds = get.section(wm, "downsample_args", "multimodal.whisper_model_args")
        pre_e = "multimodal.whisper_model_args.encoder_args"
        enc = EncoderConfig(
            dim=get.int(ea, "dim", pre_e),
            n_layers=get.int(ea, "n_layers", pre_e),
            n_heads=get.int(ea, "n_heads", pre_e),
            n_kv_heads=get.int(ea, "n_kv_heads", pre_e),
            head_dim=get.int(ea, "head_dim", pre_e),
            hidden_dim=get.int(ea, "hidden_dim", pre_e),
            rope_theta=get.float(ea, "rope_theta", pre_e),
            norm_eps=get.float(ea, "norm_eps", pre_e),
            sliding_window=get.int(ea, "sliding_window", pre_e),
        )
        pre_a = pre_e + ".audio_encoding_args"
        audio = AudioConfig(
            sampling_rate=get.int(aa, "sampling_rate", pre_a),
            frame_rate=get.float(aa, "frame_rate", pre_a),
            num_mel_bins=get.int(aa, "num_mel_bins", pre_a),
            hop_length=get.int(aa, "hop_length", pre_a),
            window_size=get.int(aa, "window_size", pre_a),
            global_log_mel_max=get.float(aa, "global_log_mel_max", pre_a),
        )
        dec = DecoderConfig(
            dim=get.int(params, "dim"),
            n_layers=get.int(params, "n_layers"),
            n_heads=get.int(params, "n_heads"),
            n_kv_heads=get.int(params, "n_kv_heads"),
            head_dim=get.int(params, "head_dim"),
            hidden_dim=get.int(params, "hidden_dim"),
            vocab_size=get.int(params, "vocab_size"),
            rope_theta=get.float(params, "rope_theta"),
            norm_eps=get.float(params, "norm_eps"),
            sliding_window=get.int(params, "sliding_window"),
            ada_dim=get.int(params, "ada_rms_norm_t_cond_dim", default=ADA_DIM_DEFAULT),
            tied_embeddings=get.bool(params, "tied_embeddings", default=True),
        )
        cfg = cls(enc, dec, audio, get.int(ds, "downsample_factor", "multimodal.whisper_model_args.downsample_args"))
        # Keys the oracle does not read but that describe the architecture: a params.json that says
        # "no RoPE" or "biased decoder" is a different model, not this one with extra keys.
        for section, prefix, fixed in ((params, "", _FIXED_TOP), (ea, pre_e, _FIXED_ENCODER), (aa, pre_a, _FIXED_AUDIO)):
            for key, value in fixed.items():
                if key in section and not (section[key] is value or (
                        type(section[key]) is type(value) and section[key] == value)):
                    raise OracleError(where(source, f"key {_dotted(prefix, key)} must be {value!r} for this model, "
                                                    f"got {shown(section[key])}"))
        if "vocab_size" in ea and get.int(ea, "vocab_size", pre_e) != dec.vocab_size:
            raise OracleError(where(source, f"key {pre_e}.vocab_size ({ea['vocab_size']}) differs from vocab_size "
                                            f"({dec.vocab_size})"))
        cfg.validate(source)
        return cfg

    @classmethod
    def from_params_file(cls, path: str | Path) -> "ModelConfig":
        return cls.from_params(read_json(path), path)

    def to_params(self) -> dict:
        """The params.json dict for this config, in the real file's key set (MODEL.md §1.2)."""
        e, d, a = self.encoder, self.decoder, self.audio
        return {
            "dim": d.dim,
            "n_layers": d.n_layers,
            "head_dim": d.head_dim,
            "hidden_dim": d.hidden_dim,
            "n_heads": d.n_heads,
            "n_kv_heads": d.n_kv_heads,
            "use_biases": False,
            "causal": True,
            "rope_theta": d.rope_theta,
            "norm_eps": d.norm_eps,
            "vocab_size": d.vocab_size,
            "model_parallel": 1,
            "tied_embeddings": d.tied_embeddings,
            "sliding_window": d.sliding_window,
            "model_max_length": 131072,
            "multimodal": {
                "whisper_model_args": {
                    "encoder_args": {
                        "audio_encoding_args": {
                            "sampling_rate": a.sampling_rate,
                            "frame_rate": a.frame_rate,
                            "num_mel_bins": a.num_mel_bins,
                            "hop_length": a.hop_length,
                            "window_size": a.window_size,
                            "chunk_length_s": None,
                            "global_log_mel_max": a.global_log_mel_max,
                            "transcription_format": "streaming",
                        },
                        "dim": e.dim,
                        "n_layers": e.n_layers,
                        "head_dim": e.head_dim,
                        "hidden_dim": e.hidden_dim,
                        "n_heads": e.n_heads,
                        "vocab_size": d.vocab_size,
                        "n_kv_heads": e.n_kv_heads,
                        "use_biases": True,
                        "use_cache": False,
                        "rope_theta": e.rope_theta,
                        "causal": True,
                        "norm_eps": e.norm_eps,
                        "pos_embed": "rope",
                        "max_source_positions": None,
                        "ffn_type": "swiglu",
                        "norm_type": "rms_norm",
                        "sliding_window": e.sliding_window,
                    },
                    "downsample_args": {"downsample_factor": self.downsample_factor},
                }
            },
            "ada_rms_norm_t_cond": True,
            "ada_rms_norm_t_cond_dim": d.ada_dim,
        }

    # -- HF config.json ------------------------------------------------------------------------

    @classmethod
    def from_hf_config(cls, cfg: dict, source: str | Path = "config.json") -> "ModelConfig":
        """Parse an HF-layout config.json (VoxtralRealtimeConfig.to_dict()) into the same record."""
        get = _Getter(cfg, source)
        ac = get.section(cfg, "audio_config")
        tc = get.section(cfg, "text_config")
        # rope_theta lives in rope_parameters (5.x) or, in older dumps, at the top of the sub-config.
        def theta(sub, name):
            rp = sub.get("rope_parameters")
            if rp is not None and not isinstance(rp, dict):
                raise OracleError(where(source, f"key {name}.rope_parameters must be an object, got {rp!r}"))
            if rp and "rope_theta" in rp:
                return get.float(rp, "rope_theta", f"{name}.rope_parameters")
            if "rope_theta" in sub:
                return get.float(sub, "rope_theta", name)
            raise OracleError(where(source, f"missing key {name}.rope_parameters.rope_theta"))
        n_heads_e = get.int(ac, "num_attention_heads", "audio_config")
        enc = EncoderConfig(
            dim=get.int(ac, "hidden_size", "audio_config"),
            n_layers=get.int(ac, "num_hidden_layers", "audio_config"),
            n_heads=n_heads_e,
            n_kv_heads=n_heads_e,
            head_dim=get.int(ac, "head_dim", "audio_config"),
            hidden_dim=get.int(ac, "intermediate_size", "audio_config"),
            # A config.json without an explicit audio theta means HF's default 10000, which is
            # wrong for this model (MODEL.md §8.3); we refuse to guess.
            rope_theta=theta(ac, "audio_config"),
            norm_eps=get.float(ac, "rms_norm_eps", "audio_config"),
            sliding_window=get.int(ac, "sliding_window", "audio_config"),
        )
        dec = DecoderConfig(
            dim=get.int(tc, "hidden_size", "text_config"),
            n_layers=get.int(tc, "num_hidden_layers", "text_config"),
            n_heads=get.int(tc, "num_attention_heads", "text_config"),
            n_kv_heads=get.int(tc, "num_key_value_heads", "text_config"),
            head_dim=get.int(tc, "head_dim", "text_config"),
            hidden_dim=get.int(tc, "intermediate_size", "text_config"),
            vocab_size=get.int(tc, "vocab_size", "text_config"),
            rope_theta=theta(tc, "text_config"),
            norm_eps=get.float(tc, "rms_norm_eps", "text_config"),
            sliding_window=get.int(tc, "sliding_window", "text_config"),
            ada_dim=ADA_DIM_DEFAULT,
            tied_embeddings=get.bool(cfg, "tie_word_embeddings", default=True)
            and get.bool(tc, "tie_word_embeddings", "text_config", default=True),
        )
        # config.json carries only the mel bins; the rest of the front end is the feature extractor's
        # (preprocessor_config.json), whose defaults are the real model's.
        audio = replace(FULL.audio, num_mel_bins=get.int(ac, "num_mel_bins", "audio_config"))
        out = cls(enc, dec, audio, get.int(cfg, "downsample_factor", default=4))
        out.validate(source)
        return out

    def to_hf_config(self) -> dict:
        """Keyword arguments for transformers' VoxtralRealtimeConfig (used by conformance tests)."""
        e, d = self.encoder, self.decoder
        return {
            "audio_config": {
                "hidden_size": e.dim,
                "intermediate_size": e.hidden_dim,
                "num_hidden_layers": e.n_layers,
                "num_attention_heads": e.n_heads,
                "head_dim": e.head_dim,
                "num_mel_bins": self.audio.num_mel_bins,
                "sliding_window": e.sliding_window,
                "rms_norm_eps": e.norm_eps,
                "rope_parameters": {"rope_type": "default", "rope_theta": e.rope_theta},
                "max_position_embeddings": 1 << 20,
            },
            "text_config": {
                "vocab_size": d.vocab_size,
                "hidden_size": d.dim,
                "intermediate_size": d.hidden_dim,
                "num_hidden_layers": d.n_layers,
                "num_attention_heads": d.n_heads,
                "num_key_value_heads": d.n_kv_heads,
                "head_dim": d.head_dim,
                "sliding_window": d.sliding_window,
                "rms_norm_eps": d.norm_eps,
                "rope_parameters": {"rope_type": "default", "rope_theta": d.rope_theta},
                "max_position_embeddings": 1 << 20,
                "tie_word_embeddings": d.tied_embeddings,
            },
            "downsample_factor": self.downsample_factor,
            "tie_word_embeddings": d.tied_embeddings,
        }

    def validate(self, source: str | Path = "params.json") -> None:
        """Structural facts the architecture relies on; each violation is one line."""
        e, d = self.encoder, self.decoder

        def need(ok: bool, msg: str) -> None:
            if not ok:
                raise OracleError(where(source, msg))

        for part, rec in (("encoder", e), ("decoder", d)):
            for name, val in asdict(rec).items():
                if isinstance(val, bool):
                    continue
                if isinstance(val, int):
                    need(0 < val <= MAX_CONFIG_INT, f"{part} {name} must be in [1, {MAX_CONFIG_INT}], got {shown(val)}")
            # RoPE divides by theta**(2i/Dh): a non-positive or non-finite base gives NaN or inf angles.
            need(math.isfinite(rec.rope_theta) and rec.rope_theta > 0,
                 f"{part} rope_theta must be a finite positive number, got {rec.rope_theta}")
            # RMSNorm computes x / sqrt(mean(x^2) + eps): eps <= 0 divides zero rows by zero.
            need(math.isfinite(rec.norm_eps) and 0 < rec.norm_eps < 1,
                 f"{part} norm_eps must be a finite number in (0, 1), got {rec.norm_eps}")
        need(e.n_kv_heads == e.n_heads, f"encoder n_kv_heads ({e.n_kv_heads}) must equal n_heads ({e.n_heads})")
        need(d.n_heads % d.n_kv_heads == 0, f"decoder n_heads ({d.n_heads}) must be a multiple of n_kv_heads ({d.n_kv_heads})")
        need(e.head_dim % 2 == 0, f"encoder head_dim must be even for RoPE, got {e.head_dim}")
        need(d.head_dim % 2 == 0, f"decoder head_dim must be even for RoPE, got {d.head_dim}")
        need(d.dim % 2 == 0, f"decoder dim must be even for the time embedding, got {d.dim}")
        need(d.tied_embeddings, "tied_embeddings must be true: this model has no separate output.weight")
        need(0 < self.downsample_factor <= MAX_DOWNSAMPLE,
             f"downsample_factor must be in [1, {MAX_DOWNSAMPLE}], got {shown(self.downsample_factor)}")
        a = self.audio
        # The front end (oracle/mel.py) implements exactly the reference recipe: 16 kHz, a 400-point
        # window, hop 160, 128 mel bins. Any other value would fail deep inside the forward; refuse it here.
        for name in ("sampling_rate", "hop_length", "window_size", "num_mel_bins"):
            val, fixed = getattr(a, name), getattr(FRONT_END, name)
            need(val == fixed, f"audio {name} must be {fixed} (the only front end this model has), got {shown(val)}")
        need(math.isfinite(a.frame_rate) and a.frame_rate * self.samples_per_token == a.sampling_rate,
             f"audio frame_rate must be sampling_rate / (hop_length * {CONV_STRIDE} * downsample_factor) = "
             f"{a.sampling_rate / self.samples_per_token:g}, got {a.frame_rate}")
        need(math.isfinite(a.global_log_mel_max),
             f"audio global_log_mel_max must be a finite number, got {a.global_log_mel_max}")


def read_json(path: str | Path) -> dict:
    """Read a JSON object file (oracle.jsonio's hardened reader; kept here for existing callers)."""
    return read_json_object(path)


_MISSING = object()
# Architectural switches params.json carries (MODEL.md §1.2) and the only values this model has.
_FIXED_TOP = {"use_biases": False, "causal": True, "ada_rms_norm_t_cond": True}
_FIXED_ENCODER = {"use_biases": True, "causal": True, "pos_embed": "rope", "ffn_type": "swiglu", "norm_type": "rms_norm"}
_FIXED_AUDIO = {"transcription_format": "streaming", "chunk_length_s": None}


class _Getter:
    """Typed key access with one-line errors naming the file and the dotted key."""

    def __init__(self, root: dict, source):
        self.source = source

    def _raw(self, d: dict, key: str, prefix: str, default):
        if key not in d or d[key] is None:
            if default is not _MISSING:
                return default
            raise OracleError(where(self.source, f"missing key {_dotted(prefix, key)}"))
        return d[key]

    def section(self, d: dict, key: str, prefix: str = "") -> dict:
        val = self._raw(d, key, prefix, _MISSING)
        if not isinstance(val, dict):
            raise OracleError(where(self.source, f"key {_dotted(prefix, key)} must be an object"))
        return val

    def int(self, d: dict, key: str, prefix: str = "", default=_MISSING) -> int:
        val = self._raw(d, key, prefix, default)
        if isinstance(val, bool) or not isinstance(val, int):
            if isinstance(val, float) and val.is_integer() and abs(val) <= MAX_CONFIG_INT:
                return int(val)
            raise OracleError(where(self.source, f"key {_dotted(prefix, key)} must be an integer, got {shown(val)}"))
        return val

    def float(self, d: dict, key: str, prefix: str = "", default=_MISSING) -> float:
        val = self._raw(d, key, prefix, default)
        if isinstance(val, bool) or not isinstance(val, (int, float)):
            raise OracleError(where(self.source, f"key {_dotted(prefix, key)} must be a number, got {shown(val)}"))
        try:
            return float(val)
        except OverflowError:
            raise OracleError(where(self.source, f"key {_dotted(prefix, key)} is too large, got {shown(val)}")) from None

    def bool(self, d: dict, key: str, prefix: str = "", default=_MISSING) -> bool:
        val = self._raw(d, key, prefix, default)
        if not isinstance(val, bool):
            raise OracleError(where(self.source, f"key {_dotted(prefix, key)} must be true or false, got {shown(val)}"))
        return val


def _dotted(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


# The real model's numbers (MODEL.md §1.2); `synth --size full` writes exactly this.
FULL = ModelConfig(
    encoder=EncoderConfig(dim=1280, n_layers=32, n_heads=32, n_kv_heads=32, head_dim=64, hidden_dim=5120,
                          rope_theta=1e6, norm_eps=1e-5, sliding_window=750),
    decoder=DecoderConfig(dim=3072, n_layers=26, n_heads=32, n_kv_heads=8, head_dim=128, hidden_dim=9216,
                          vocab_size=131072, rope_theta=1e6, norm_eps=1e-5, sliding_window=8192, ada_dim=32,
                          tied_embeddings=True),
    audio=FRONT_END,
    downsample_factor=4,
)

# The built-in tiny model: small enough to commit, windows shorter than a few seconds of audio
# (encoder 16 frames = 0.32 s, decoder 8 tokens = 0.64 s) so the window logic is always exercised.
TINY = ModelConfig(
    encoder=EncoderConfig(dim=64, n_layers=2, n_heads=4, n_kv_heads=4, head_dim=16, hidden_dim=128,
                          rope_theta=1e6, norm_eps=1e-5, sliding_window=16),
    decoder=DecoderConfig(dim=96, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=24, hidden_dim=192,
                          vocab_size=1536, rope_theta=1e6, norm_eps=1e-5, sliding_window=8, ada_dim=32,
                          tied_embeddings=True),
    audio=FULL.audio,
    downsample_factor=4,
)
