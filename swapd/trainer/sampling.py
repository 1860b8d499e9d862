"""Which faces a batch draws: evenly, by yaw band (DeepFaceLab's ``uniform_yaw``), and with
the faces a user marked as focus on the snapshot tracker drawn ``focus_weight`` times as often."""

from __future__ import annotations

import numpy as np

# DeepFaceLab's uniform_yaw: faces are drawn by yaw band, each band as often as any other.
YAW_BAND_DEGREES = 10.0


def yaw_weights(yaws: list[float | None]) -> np.ndarray:
    """Sampling probabilities that give every occupied yaw band (and the faces of unknown
    yaw, as one band) the same share."""
    bands = [None if yaw is None else int(np.floor(yaw / YAW_BAND_DEGREES)) for yaw in yaws]
    counts: dict[int | None, int] = {}
    for band in bands:
        counts[band] = counts.get(band, 0) + 1
    weights = np.array([1.0 / counts[band] for band in bands])
    return weights / weights.sum()


def face_weights(yaws: list[float | None], focused: np.ndarray, uniform_yaw: bool,
                 focus_weight: float) -> tuple[np.ndarray, bool]:
    """Each face's sampling probability and whether they are uneven: by yaw band with
    ``uniform_yaw``, and the ``focused`` faces ``focus_weight`` times their share."""
    weights = (yaw_weights(yaws) if uniform_yaw
               else np.full(len(yaws), 1.0 / max(1, len(yaws))))
    if not focused.any() or focus_weight == 1.0:
        return weights, uniform_yaw
    weights = np.where(focused, weights * focus_weight, weights)
    return weights / weights.sum(), True


def draw_rows(rng: np.random.Generator, n: int, weights: np.ndarray | None, count: int,
              uniform_yaw: bool) -> np.ndarray:
    """``n`` rows of ``count`` faces: with replacement only when there are fewer than ``n``
    (each face at most once a batch), always by yaw band (``uniform_yaw``, where each band
    is drawn equally often); by ``weights`` where they are uneven (None: evenly)."""
    if uniform_yaw:
        return rng.choice(count, size=n, p=weights)
    if weights is not None:  # focus faces: their share raised, still each once per batch
        return rng.choice(count, size=n, replace=count < n, p=weights)
    return rng.choice(count, size=n, replace=count < n)
