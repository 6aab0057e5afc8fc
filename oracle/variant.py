"""Which function computes each swappable stage: the reference model, or a known porting mistake.

The model's math lives in the layer functions; a ``Variant`` only says which of them the forward pass
calls at the places where known porting mistakes change the *composition* rather than a weight
or a config number (MODEL.md §11): the front end (audio -> mel), the conv stem, the ADA scale, the
decoder layer, and how audio embeddings reach the decoder. ``REFERENCE`` is the model itself and the default everywhere. The fault catalogue
(``oracle.faults``) builds the others; weight and config faults need no variant (they are checkpoint
views, see ``faults``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .decoder import decoder_layer, layer_ada_scale
from .encoder import conv_stem
from .mel import log_mel


def same_audio(audio: np.ndarray) -> np.ndarray:
    """Position p gets A[p] (MODEL.md §6.3): the reference never shifts or drops audio embeddings."""
    return audio


@dataclass(frozen=True)
class Variant:
    name: str = "reference"
    # the front end: padded audio [L] -> mel [M, T] (signature of oracle.mel.log_mel). The trace and the
    # fault catalogue's candidates (oracle.faults.faulty_outputs) read it; the golden e2e case computes
    # the reference mel itself.
    log_mel: Callable = log_mel
    conv_stem: Callable = conv_stem  # (mel, ConvStemWeights, p, state, tap) -> ([S, De], ConvState)
    ada_scale: Callable = layer_ada_scale  # (t_cond [D], DecoderLayerWeights, p) -> (1 + g) [D]
    decoder_layer: Callable = decoder_layer  # same signature as oracle.decoder.decoder_layer
    audio_to_decoder: Callable[[np.ndarray], np.ndarray] = same_audio  # A [N, D] -> A' [N, D], offline only


REFERENCE = Variant()
