"""voxtral-oracle: the numpy reference implementation of Voxtral Mini 4B Realtime."""

__version__ = "0.1.0"
