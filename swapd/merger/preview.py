"""Choosing a merge's look by eye: one frame merged under each candidate setting, beside the
source, labelled, in one image (``swapd merge INPUT --preview N --compare KEY``).

The image is a merged output like any other: watermarked and provenance-tagged.
"""

from __future__ import annotations

from itertools import islice
from pathlib import Path

import cv2
import numpy as np

from swapd.extract.detectors.base import Detection
from swapd.media import IMAGE_SUFFIXES, probe_video, read_frames, read_image
from swapd.merger import watermark
from swapd.merger.look import candidates
from swapd.merger.merge import MergeError, Merger, require_markable
from swapd.merger.sequence import write_marked_image

TILE_WIDTH = 480
COLUMNS = 4
_LABEL_HEIGHT = 28


class _Fixed:
    """A detector that finds the same faces every time (the preview's frame's, found once)."""

    name = "fixed"
    landmark_points = 5

    def __init__(self, faces: list[Detection]) -> None:
        self.faces = faces

    def detect(self, frame_bgr: np.ndarray) -> list[Detection]:
        return list(self.faces)


def read_frame(src: Path, index: int) -> np.ndarray:
    """Frame ``index`` of a video (0 for an image)."""
    if src.suffix.lower() in IMAGE_SUFFIXES:
        if index != 0:
            raise MergeError(src, f"an image has one frame (0), not frame {index}")
        return read_image(src)
    frame = next(islice(read_frames(probe_video(src)), index, None), None)
    if frame is None:
        raise MergeError(src, f"has no frame {index}")
    return frame


def preview(merger: Merger, src: Path, index: int, compare: str | None,
            output_dir: Path) -> Path:
    """Write ``<stem>_preview_<index>[_<compare>].png`` to ``output_dir``: the source's frame
    ``index`` beside its merge under each value of ``compare`` (a look key, see
    :data:`swapd.merger.look.COMPARABLE`; None: the options as they are), each tile showing
    the part of the frame around its faces."""
    frame = read_frame(src, index)
    require_markable(src, frame.shape[1], frame.shape[0], "frame")
    faces = merger._faces(frame, merger.detector)
    fixed = _Fixed(faces)
    tiles = [("source", frame)]
    values = candidates(compare) if compare else (None,)
    for value in values:
        look = merger.look if value is None else merger.look.model_copy(
            update={compare: value})
        merged = [frame.copy()]
        merger._swap(merged, fixed, merger.composer(look))  # (each tile watermarked too)
        tiles.append((f"{compare} = {value}" if compare else "merged", merged[0]))
    rows, cols = face_region(frame.shape, faces)
    sheet = watermark.embed(contact_sheet([(label, image[rows, cols]) for label, image in tiles]))
    suffix = f"_{compare}" if compare else ""
    out = Path(output_dir) / f"{src.stem}_preview_{index}{suffix}.png"
    write_marked_image(sheet, out, "png", {**merger.provenance(src), "preview_frame": index,
                                           "compared": compare or "", "faces": len(faces)},
                       merger.credentials, src)
    return out


def face_region(shape: tuple[int, ...], faces: list[Detection], margin: float = 0.8
                ) -> tuple[slice, slice]:
    """The part of the frame the tiles show: the faces with ``margin`` of their size around
    them (the whole frame when there is none), so a face's detail shows in a tile."""
    h, w = shape[:2]
    if not faces:
        return slice(0, h), slice(0, w)
    boxes = np.array([f.box for f in faces], np.float64)
    x0, y0 = boxes[:, :2].min(0)
    x1, y1 = boxes[:, 2:].max(0)
    pad = margin * max(x1 - x0, y1 - y0)
    x0, y0 = max(0, int(x0 - pad)), max(0, int(y0 - pad))
    x1, y1 = min(w, int(x1 + pad)), min(h, int(y1 + pad))
    return slice(y0, max(y1, y0 + watermark.MIN_SIZE)), slice(x0, max(x1, x0 + watermark.MIN_SIZE))


def contact_sheet(tiles: list[tuple[str, np.ndarray]]) -> np.ndarray:
    """Tiles (scaled to one width) in rows of :data:`COLUMNS`, each under its label."""
    h, w = tiles[0][1].shape[:2]
    width = TILE_WIDTH
    height = round(h * width / w)
    cells = []
    for label, image in tiles:
        cell = np.full((height + _LABEL_HEIGHT, width, 3), 32, np.uint8)
        cell[_LABEL_HEIGHT:] = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
        cv2.putText(cell, label, (6, _LABEL_HEIGHT - 9), cv2.FONT_HERSHEY_SIMPLEX, 0.55,
                    (255, 255, 255), 1, cv2.LINE_AA)
        cells.append(cell)
    columns = min(COLUMNS, len(cells))
    while len(cells) % columns:
        cells.append(np.zeros_like(cells[0]))
    rows = [np.hstack(cells[i:i + columns]) for i in range(0, len(cells), columns)]
    return np.vstack(rows)
