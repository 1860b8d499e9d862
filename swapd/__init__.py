"""swapd: a face-swap training service."""

from swapd import threads as _threads

__version__ = "0.1.0"

# Every way into swapd passes here before torch is imported: OpenMP reads its wait policy only
# when torch loads it (see swapd.threads).
_threads.prepare_environment()
