"""faceswap's alignments file (``<video stem>_alignments.fsa``) for an extraction swapd ran.

Written from the alignments record when an extraction of a video finishes (see
:mod:`swapd.extract.alignments`), so faceswap's convert and its tools (manual, alignments,
sort) work on swapd's extraction: every frame read, with its faces (frame-pixel box, the same
68 landmarks as the faces' PNG headers, faceswap's 96 px thumbnail). Frames a resumed record
names in swapd's former naming get faceswap's name.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from swapd.extract.alignments import faceswap_frame_name
from swapd.extract.writers import read_thumbnail
from swapd.faces.faceswap_align import landmarks_68
from swapd.faces.faceswap_fsa import FsaFace, write_fsa

Thumbs = dict[tuple[str, int], bytes]


def _frame_key(name: str, video: Path) -> str:
    """faceswap's key for a record's frame name (swapd's former ``<stem>_<n from 0>`` too)."""
    legacy = re.fullmatch(re.escape(video.stem) + r"_(\d{6})", name)
    return faceswap_frame_name(video.name, int(legacy.group(1))) if legacy else name


def write_video_fsa(record: Path, fsa: Path, video: Path, faces_folder: Path,
                    thumbs: Thumbs) -> Path:
    """Write faceswap's alignments file ``fsa`` for the video ``video`` from its alignments
    ``record``; ``thumbs``: thumbnails made this run, by (frame, face index) (faces from an
    earlier run are read back from ``faces_folder``)."""
    frames: dict[str, list[FsaFace]] = {}
    for line in record.read_text(encoding="utf-8").splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue  # a torn last line
        if not isinstance(entry, dict) or entry.get("error") or "frame" not in entry:
            continue
        found = []
        for face in entry.get("faces", []):
            x0, y0, x1, y1 = (float(v) for v in face["box"])
            points, _ = landmarks_68(np.asarray(face["landmarks"], np.float32))
            thumb = thumbs.get((entry["frame"], face["index"]))
            if thumb is None and str(face.get("file", "")).endswith(".png"):
                thumb = read_thumbnail(faces_folder / face["file"])
            found.append(FsaFace(int(x0), int(y0), int(x1 - x0), int(y1 - y0), points, thumb))
        frames[_frame_key(entry["frame"], video)] = found
    return write_fsa(fsa, dict(sorted(frames.items())))
