"""The e2e golden case cut after a front-end tap (``voxtral-oracle golden --stop-after STAGE``).

Shape legend: as oracle.forward (mel [M, T], encoder taps [S, De], adapter.out [N, D]).

A port working on its front end needs the taps up to ``enc.out`` or ``adapter.out``, not the decoder,
the greedy tokens and their fixpoint, which are most of the e2e case's cost at full size. The cut case
runs the same functions on the same audio and stops (``oracle.forward.audio_embeddings_up_to``); its
taps, tolerances (the same honest front ends' envelope) and stage-local tolerances equal the whole
case's.
"""

from __future__ import annotations

from dataclasses import replace

from .forward import audio_embeddings_up_to
from .mel import log_mel
from .mel_variants import HONEST as HONEST_MELS
from .precision import FLOAT32
from .taps import check_stop_after


def front_end_only(spec, ctx):
    """The e2e case cut after a front-end tap (``golden --stop-after``): the same functions on the same audio,
    stopped there (oracle.forward.audio_embeddings_up_to). No decoder, no greedy tokens, no ``tokens_in``."""
    proto, cfg = ctx.setup.protocol, ctx.ckpt.config
    check_stop_after(cfg, ctx.stop_after)

    def run(i, p, mel_fn=log_mel):
        mel = mel_fn(proto.pad_offline(i["audio"]).astype(p.dtype), p.dtype, audio=cfg.audio, floor=ctx.mel_floor)
        return audio_embeddings_up_to(ctx.ckpt, mel, p, ctx.stop_after, variant=ctx.variant)

    def envelope(i, p, golden):  # the whole case's honest front ends, stopped at the same tap
        return None if p.name != FLOAT32.name else {name: run(i, p, fn) for name, fn in HONEST_MELS.items()}

    return replace(spec, description=spec.description.split(" -> A[p]")[0] + f"; cut after {ctx.stop_after} (golden "
                   "--stop-after): no decoder, no tokens", oracle_function="oracle.forward.audio_embeddings_up_to", run=run,
                   inputs=lambda: {"audio": ctx.audio}, params={**spec.params, "stop_after": ctx.stop_after},
                   token_outputs=(), margins=None, tolerance_run=None, envelope=envelope)
