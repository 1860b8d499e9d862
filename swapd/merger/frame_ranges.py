"""faceswap's frame ranges (``convert -R 10-50 90-100``): swap only the frames inside them.

Ranges are inclusive. A video's frames count from 1 (faceswap's ``clip_000001.png`` is the
first); an image sequence's frame is the last number in its file name before the suffix
(faceswap's ``(\\d+)(?!.*\\d\\.)(?=\\.\\w+$)``, scripts/convert.py at acdcfa87). Unlike faceswap
without ``-k``, frames outside are never dropped: they are written as they were (watermarked
and tagged all the same), so the output keeps the source's length, timing and audio.
"""

from __future__ import annotations

import re

from swapd.config import parse_frame_ranges

__all__ = ["FrameRanges", "frame_number", "in_ranges", "parse_frame_ranges"]

FrameRanges = tuple[tuple[int, int], ...]
_FRAME_NUMBER = re.compile(r"(\d+)(?!.*\d\.)(?=\.\w+$)")


def in_ranges(number: int | None, ranges: FrameRanges) -> bool:
    """Whether frame ``number`` is swapped: always without ranges, and for a frame whose
    number is unknown (faceswap converts those, with a warning)."""
    if not ranges or number is None:
        return True
    return any(first <= number <= last for first, last in ranges)


def frame_number(file_name: str) -> int | None:
    """The frame number faceswap reads from an image's file name, or None."""
    found = _FRAME_NUMBER.findall(file_name)
    return int(found[0]) if found else None
