"""swapd: a face-swap training service."""

__version__ = "0.1.0"
