"""voxtral-oracle: the numpy reference implementation of Voxtral Mini 4B Realtime."""

import os as _os

# OpenBLAS's idle worker threads busy-wait for 2^28 cycles (~0.1 s) after every matmul, on the very
# cores that the oracle's own threads (``parallel``: weight conversion, softmax) want next; at full size
# that made a 2-thread conversion as slow as a 1-thread one. 2^16 cycles (~25 µs) keeps back-to-back
# matmuls spinning and lets the cores go otherwise. Takes effect only when the oracle is imported
# before numpy loads OpenBLAS (the CLI and the benchmark do); a value the user set is kept.
_os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "16")

__version__ = "0.1.0"
