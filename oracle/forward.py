"""The offline forward pass: mel [M, 8N] + token ids [N] -> logits [N, V], one layer at a time.

Shape legend:  M mel bins   T = 8N mel frames   S = 4N encoder frames   N tokens   D width   V vocab

Each layer's weights are read from the checkpoint, converted to the compute dtype, used and dropped
before the next layer is read, so peak memory is one layer's weights plus activations (the full
model runs in float64 on a 24 GB machine). Every intermediate is offered to ``tap``.
"""

from __future__ import annotations

import numpy as np

from .adapter import adapter
from .checkpoint import Arena, Checkpoint
from .decoder import decoder_input, final_norm, lm_head, time_condition
from .encoder import encoder_layer, encoder_norm
from .precision import Precision
from .taps import StopForward, TapsUpTo, front_end_taps, no_tap
from .variant import REFERENCE, Variant


def audio_embeddings(ckpt: Checkpoint, mel: np.ndarray, p: Precision, tap=no_tap,
                     variant: Variant = REFERENCE, progress=None) -> np.ndarray:
    """A = adapter(encoder(conv_stem(mel))).  [M, 8N] -> [N, D]."""
    cfg = ckpt.config
    assert mel.ndim == 2 and mel.shape[0] == cfg.audio.num_mel_bins, mel.shape
    assert mel.shape[1] % cfg.mel_frames_per_token == 0, (
        f"mel frames ({mel.shape[1]}) must be a multiple of {cfg.mel_frames_per_token} (pad the audio first)")
    mel = p.array(mel)
    tap("mel", mel)
    x, _ = variant.conv_stem(mel, ckpt.conv(p), p, tap=tap)
    positions = np.arange(x.shape[0], dtype=np.int64)
    arena = Arena()  # layer i+1 is converted into layer i's buffers (see Arena: page faults cost more than converting)
    for i in range(cfg.encoder.n_layers):
        if i + 1 < cfg.encoder.n_layers:
            ckpt.prefetch("enc_layer", i + 1)
        x, _ = encoder_layer(x, positions, ckpt.encoder_layer(i, p, arena), cfg.encoder, p, tap=tap,
                             name=f"enc.L{i:02d}")
        if progress:
            progress(i + 1, cfg.encoder.n_layers, f"encoder layer {i}")
    x = encoder_norm(x, ckpt.encoder_norm(p), cfg.encoder, p, tap=tap)
    return adapter(x, ckpt.adapter(p), cfg.downsample_factor, p, tap=tap)


def audio_embeddings_up_to(ckpt: Checkpoint, mel: np.ndarray, p: Precision, stop: str,
                           variant: Variant = REFERENCE) -> dict[str, np.ndarray]:
    """The e2e taps mel .. ``stop`` (a front-end tap, ``taps.front_end_taps``) of ``audio_embeddings``,
    which stops right after ``stop``: nothing past it is computed. -> {tap name: array} in pipeline order."""
    names = front_end_taps(ckpt.config)
    names = names[: names.index(stop) + 1]
    taps = TapsUpTo(names, stop)
    try:
        audio_embeddings(ckpt, mel, p, tap=taps, variant=variant)
    except StopForward:
        pass
    return {k: taps[k] for k in names}


def decode_positions(ckpt: Checkpoint, audio: np.ndarray, tokens: np.ndarray, delay_tokens: float, p: Precision,
                     tap=no_tap, variant: Variant = REFERENCE, progress=None, resident=None) -> np.ndarray:
    """The decoder over N positions given their audio embeddings and token ids. -> logits [N, V].

    ``resident``: a resident ``oracle.streaming.Model`` in ``p``'s dtype whose converted decoder weights
    are used instead of reading each layer again (the same arrays, so the same bits)."""
    cfg = ckpt.config.decoder
    tokens = np.asarray(tokens, dtype=np.int64)
    assert tokens.ndim == 1 and audio.shape == (len(tokens), cfg.dim), (audio.shape, tokens.shape)
    assert tokens.min() >= 0 and tokens.max() < cfg.vocab_size, "token id out of range"
    x = decoder_input(variant.audio_to_decoder(audio), ckpt.embedding_rows(tokens, p), p, tap=tap)
    t_cond = time_condition(delay_tokens, cfg, p, tap=tap)
    positions = np.arange(len(tokens), dtype=np.int64)
    arena = Arena()
    for i in range(cfg.n_layers):
        if resident is None and i + 1 < cfg.n_layers:
            ckpt.prefetch("dec_layer", i + 1)
        elif resident is None:
            ckpt.prefetch("embedding", None)  # the LM head reads it next
        w = ckpt.decoder_layer(i, p, arena) if resident is None else resident.decoder_layer(i)
        x, _ = variant.decoder_layer(x, positions, w, variant.ada_scale(t_cond, w, p), cfg, p, tap=tap,
                                     name=f"dec.L{i:02d}")
        if progress:
            progress(i + 1, cfg.n_layers, f"decoder layer {i}")
    x = final_norm(x, ckpt.decoder_norm(p), cfg, p, tap=tap)
    rows = (lambda r: ckpt.embedding_rows(r, p, arena)) if resident is None else resident.embedding_rows
    return lm_head(x, rows, cfg.vocab_size, p, tap=tap)


def forward(ckpt: Checkpoint, mel: np.ndarray, tokens: np.ndarray, delay_tokens: float, p: Precision,
            tap=no_tap, variant: Variant = REFERENCE, progress=None) -> np.ndarray:
    """Offline forward: mel [M, 8N] and token ids [N] -> logits [N, V] (HF ``model(input_ids,
    input_features, num_delay_tokens)``)."""
    audio = audio_embeddings(ckpt, mel, p, tap=tap, variant=variant, progress=progress)
    return decode_positions(ckpt, audio, tokens, delay_tokens, p, tap=tap, variant=variant, progress=progress)
