"""voxtral-oracle: the numpy reference implementation of Voxtral Mini 4B Realtime.

Importing the package has no side effects. The entry points (``voxtral-oracle``, the scripts in
tools/ and benchmarks/) set OpenBLAS's idle-thread timeout first: ``oracle.blas.quiet_idle_threads``.
"""

__version__ = "0.1.0"
