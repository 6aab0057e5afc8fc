"""Audio file in, tokens and text out: the pieces wired together the way the references do it.

    audio [L] --(offline: int16 quantization, as the reference's WAV round trip, MODEL.md §2.1)-->
    --pad (32 tokens left; alignment + n_delay + 11 tokens right)--> log-mel [M, 8N]
    --audio_embeddings--> A [N, D] --greedy decoder over prompt + fed-back tokens--> ids --Tekken--> text

Streaming (``stream_tokens``) feeds the unquantized samples to a ``StreamingSession`` in chunks, as
the real-time references do (they never quantize).

Files: ``read_audio`` loads a whole file as the reference does (``oracle.audio.load_audio``: any rate,
any channel count, soxr HQ to 16 kHz); ``stream_audio`` yields the same samples in fixed-size chunks,
decoding and resampling as they are consumed, so a stream's memory does not grow with the file.
"""

from __future__ import annotations

import resource
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from .audio import MAX_AUDIO_SECONDS, AudioReader, load_audio, quantize_int16
from .checkpoint import Checkpoint, open_checkpoint
from .errors import OracleError, where
from .mel import log_mel
from .precision import Precision
from .protocol import Protocol, make_protocol
from .streaming import Model, StreamingSession, available_memory, generate_offline
from .tokenizer import IncrementalDecoder, Tekken


@dataclass(frozen=True)
class Setup:
    ckpt: Checkpoint
    tekken: Tekken
    protocol: Protocol


def load_setup(ckpt_dir: str | Path, delay_ms: int | None = None) -> Setup:
    """Open a checkpoint directory and its tekken.json; the protocol's defaults come from tekken's audio section."""
    ckpt = open_checkpoint(ckpt_dir)
    tk_path = Path(ckpt_dir) / "tekken.json"
    if not tk_path.exists():
        raise OracleError(where(tk_path, "file not found (the tokenizer is needed to decode text)"))
    tekken = Tekken.from_file(tk_path)
    if tekken.vocab_size != ckpt.config.decoder.vocab_size:
        raise OracleError(where(tk_path, f"vocab size {tekken.vocab_size} does not match the model's {ckpt.config.decoder.vocab_size}"))
    return Setup(ckpt, tekken, make_protocol(ckpt.config, delay_ms, tekken))


def offline_mel(audio: np.ndarray, proto: Protocol, p: Precision, quantize: bool = True) -> np.ndarray:
    """The offline features: optional int16 quantization, padding, log-mel in the policy's dtype. -> [M, 8N]"""
    x = quantize_int16(audio) if quantize else audio
    return log_mel(proto.pad_offline(x).astype(p.dtype), p.dtype, audio=proto.audio)


# Offline, everything grows with the clip. Per 16 kHz sample, in float64: the waveform and its quantized
# and padded copies (~32 B), the STFT frames [T, 400] and their windowed copy (2 x 20 B, T = L/160), the
# rfft [T, 201] complex (20 B), power and mel (~16 B): about 100 B. Measured on the tiny checkpoint: 74 B
# per sample (10 and 60 minutes, peak RSS). The encoder adds a few [S, De] arrays (S = L/320).
OFFLINE_FRONT_END_BYTES_PER_SAMPLE = 100
OFFLINE_ENCODER_COPIES = 8


def offline_memory_bytes(setup: Setup, n_samples: int, p: Precision) -> int:
    """An upper estimate of what an offline transcription of ``n_samples`` (16 kHz) holds beyond the
    weights (see the constants above)."""
    cfg = setup.ckpt.config
    frames = n_samples // (cfg.audio.hop_length * 2)  # encoder frames: conv2 halves the mel frames
    return n_samples * OFFLINE_FRONT_END_BYTES_PER_SAMPLE + OFFLINE_ENCODER_COPIES * frames * cfg.encoder.dim * p.dtype.itemsize


def memory_headroom() -> int | None:
    """Bytes this process can still take: the smaller of MemAvailable and what its address-space limit
    (RLIMIT_AS, e.g. ``ulimit -v``) leaves above its current size; None if neither is known."""
    room = [available_memory()]
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY:
        try:
            with open("/proc/self/statm") as f:
                size = int(f.read().split()[0]) * resource.getpagesize()
            room.append(soft - size)
        except (OSError, ValueError, IndexError):
            room.append(soft)
    known = [r for r in room if r is not None]
    return min(known) if known else None


def check_offline_memory(setup: Setup, n_samples: int, p: Precision, source) -> None:
    """Refuse, in one line, an offline run that would not fit (before the STFT allocates it): offline
    memory grows with the clip, streaming's does not."""
    need, room = offline_memory_bytes(setup, n_samples, p), memory_headroom()
    if room is not None and need > room:
        minutes = n_samples / setup.ckpt.config.audio.sampling_rate / 60
        raise OracleError(where(source, f"offline transcription of {minutes:.0f} min of audio needs about "
                                        f"{need / 2**30:.1f} GiB beyond the weights, more than the {room / 2**30:.1f} GiB "
                                        "this process has; use --stream (its memory does not grow with the length)"))


def offline_tokens(setup: Setup, audio: np.ndarray, p: Precision, quantize: bool = True, tap=None,
                   resident: bool | None = None, progress=None) -> list[int]:
    """Greedy offline transcription ids. ``resident``: keep converted decoder weights (None: by memory)."""
    kwargs = {} if tap is None else {"tap": tap}
    return generate_offline(Model(setup.ckpt, p, resident=resident), offline_mel(audio, setup.protocol, p, quantize),
                            setup.protocol, progress=progress, **kwargs)


def stream_tokens(setup: Setup, chunks: Iterable[np.ndarray], p: Precision, framing: str = "offline",
                  on_tokens: Callable[[list[int]], None] | None = None, tap=None, resident: bool | None = None) -> list[int]:
    """Feed chunks through a streaming session; ``on_tokens`` sees each batch as soon as it is due."""
    kwargs = {} if tap is None else {"tap": tap}
    session = StreamingSession(Model(setup.ckpt, p, resident=resident), setup.protocol, framing=framing, **kwargs)
    out: list[int] = []
    for chunk in chunks:
        new = session.feed(chunk)
        out += new
        if on_tokens and new:
            on_tokens(new)
    new = session.finish()
    out += new
    if on_tokens and new:
        on_tokens(new)
    return out


def chunked(audio: np.ndarray, size: int) -> Iterable[np.ndarray]:
    for i in range(0, len(audio), size):
        yield audio[i:i + size]


def read_audio(path: str | Path, sampling_rate: int, max_seconds: float = MAX_AUDIO_SECONDS) -> np.ndarray:
    """The whole file as the reference's ``sampling_rate`` mono waveform (``oracle.audio.load_audio``). -> [L]"""
    return load_audio(path, sampling_rate, max_seconds)


def stream_audio(path: str | Path, sampling_rate: int, size: int,
                 max_seconds: float = MAX_AUDIO_SECONDS) -> Iterable[np.ndarray]:
    """The file's waveform in chunks of ``size`` samples (the last one shorter), float64, decoded and
    resampled as it is consumed: the chunks concatenated are ``read_audio(path, ...)`` bit for bit
    (soxr's stream resampler equals its one-shot call), and memory does not grow with the file.

    Before returning, the file is decoded and resampled once in full without keeping anything, so
    every problem with its content (NaN, overflow, too short) is one error line now, before any model
    work or output; the second pass then feeds the session. (Reading a file twice costs ~1 s per
    hour of 16 kHz audio; a live source would be fed to ``StreamingSession`` directly.)"""
    assert size >= 1, size
    with AudioReader(path, sampling_rate, max_seconds) as check:
        info = check.info
        if sum(len(piece) for piece in check.blocks()) == 0:
            raise OracleError(where(Path(path), f"too short to resample: {info.frames} frame(s) at "
                                                f"{info.samplerate} Hz give no sample at {sampling_rate} Hz"))
    reader = AudioReader(path, sampling_rate, max_seconds)

    def chunks() -> Iterable[np.ndarray]:
        with reader:
            pending: list[np.ndarray] = []
            held = 0
            for piece in reader.blocks():  # float32 pieces of any length
                pending.append(piece)
                held += len(piece)
                while held >= size:
                    joined = np.concatenate(pending) if len(pending) > 1 else pending[0]
                    out, rest = joined[:size], joined[size:]
                    pending, held = ([rest] if len(rest) else []), len(rest)
                    yield out.astype(np.float64)
            if held:
                yield np.concatenate(pending).astype(np.float64)

    return chunks()


__all__ = ["Setup", "load_setup", "offline_mel", "offline_tokens", "stream_tokens", "chunked", "read_audio", "stream_audio",
           "IncrementalDecoder"]
