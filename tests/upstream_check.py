"""Run faceswap's or DeepFaceLab's own code on files swapd wrote; print what it found as JSON.

Run by tests/test_upstream_interop.py in a child process, with the tool's source folder (a
checkout the developer provides: nothing is fetched) first on the path. Modules the code
imports but these checks never reach (video decoding, numexpr, GUI and TensorFlow pieces) are
stubbed. Usage: ``upstream_check.py faceswap FACES_DIR CLIP`` or ``upstream_check.py dfl
FACES_DIR``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from unittest import mock

import numpy as np


def _stub(*names: str) -> None:
    for name in names:
        sys.modules.setdefault(name, mock.MagicMock())


def faceswap(faces: Path, clip: Path) -> dict[str, object]:
    _stub("av", "av.error", "av.filter", "av.logging", "av.container", "ffmpeg", "numexpr")
    import cv2
    from lib.align import AlignedFace
    from lib.align.alignments import Alignments
    from lib.image import read_image, update_existing_metadata
    from lib.training.data.data_set import TrainSet

    frames = {}
    capture = cv2.VideoCapture(str(clip))
    while True:
        ok, image = capture.read()
        if not ok:
            break
        frames[f"{clip.stem}_{len(frames) + 1:06d}{clip.suffix}"] = image
    record = {}
    for line in (faces / f"{clip.stem}.alignments.jsonl").read_text().splitlines():
        entry = json.loads(line)
        record[entry["frame"]] = entry["faces"]
    worst_px, worst_levels, names, versions = 0.0, 0.0, [], set()
    for png in sorted(faces.glob("*.png")):
        image, meta = read_image(str(png), raise_error=True, with_metadata=True)
        source = meta.source
        versions.add(source.alignments_version)
        names.append([png.name, source.original_filename, source.source_filename])
        face = AlignedFace(meta.alignments.landmarks_xy, image=frames[source.source_filename],
                           centering="head", size=image.shape[0])
        ours = np.asarray(record[source.source_filename][source.face_index]["matrix"])
        points = np.vstack([meta.alignments.landmarks_xy, [[0, 0], [640, 360]]])
        moved = points @ (face.adjusted_matrix - ours)[:, :2].T + \
            (face.adjusted_matrix - ours)[:, 2]
        worst_px = max(worst_px, float(np.abs(moved).max()))
        worst_levels = max(worst_levels, float(np.abs(face.face.astype(float) - image).mean()))
    train = TrainSet("a", str(faces), 64)
    samples = [train[i][0].shape for i in range(len(train))]
    alignments = Alignments(str(faces), filename=f"{clip.stem}_alignments.fsa")
    first = next(iter(sorted(faces.glob("*.png"))))
    _, meta = read_image(str(first), raise_error=True, with_metadata=True)
    update_existing_metadata(str(first), meta)  # as faceswap's tools rewrite a header
    # Why swapd's chunk follows the image data: one before it does not survive that rewrite.
    data = first.read_bytes()
    start = data.index(b"swapd\0") - 8
    chunk = data[start:start + 12 + int.from_bytes(data[start:start + 4], "big")]
    idat = data.index(b"IDAT") - 4
    before = faces / "swapd_chunk_before_idat.png"
    before.write_bytes(data[:idat] + chunk + data[idat:start] + data[start + len(chunk):])
    decodes = cv2.imdecode(np.frombuffer(before.read_bytes(), np.uint8), cv2.IMREAD_COLOR)
    assert decodes is not None and read_image(str(before), with_metadata=True)[1] is not None
    update_existing_metadata(str(before), meta)
    survived = cv2.imdecode(np.frombuffer(before.read_bytes(), np.uint8), cv2.IMREAD_COLOR)
    before.unlink()
    return {"faces": len(names), "names": names[:2], "versions": sorted(versions),
            "worst_px": worst_px, "worst_levels": worst_levels,
            "train_samples": len(samples), "sample_shape": list(samples[0]),
            "mask_types": list(train._mask_types),  # pylint: disable=protected-access
            "fsa_version": alignments.version, "fsa_frames": alignments.frames_count,
            "fsa_faces": alignments.faces_count,
            "fsa_first": sorted(alignments.data)[0],
            "fsa_has_thumbnails": alignments.thumbnails.has_thumbnails,
            "rewritten": first.name, "chunk_before_idat_survives": survived is not None}


def dfl(faces: Path) -> dict[str, object]:
    _stub("core.leras", "core.leras.nn", "facelib.FANExtractor", "facelib.S3FDExtractor",
          "facelib.XSegNet", "facelib.FaceEnhancer", "core.interact", "core.interact.interact",
          "PIL", "PIL.Image", "PIL.ImageDraw", "PIL.ImageFont", "numexpr", "colorama")
    try:
        import scipy.spatial  # noqa: F401  (imagelib's morph; not used by these checks)
    except ImportError:
        _stub("scipy", "scipy.spatial")
    import cv2
    from DFLIMG.DFLJPG import DFLJPG
    from facelib import FaceType, LandmarksProcessor

    # DeepFaceLab's get_transform_mat hands getAffineTransform float64 corners (its modifier
    # is a float64 scalar), which OpenCV 5 refuses; it ran on OpenCV 4.1 / numpy 1.19. Cast,
    # as those versions did, so its maths runs here unchanged.
    affine = cv2.getAffineTransform
    cv2.getAffineTransform = lambda src, dst: affine(np.float32(src), np.float32(dst))

    found = []
    for jpg in sorted(faces.glob("*.jpg")):
        loaded = DFLJPG.load(str(jpg))
        face_type = FaceType.fromString(loaded.get_face_type())
        expected = LandmarksProcessor.get_transform_mat(loaded.get_source_landmarks(),
                                                        loaded.get_shape()[0], face_type)
        found.append({"file": jpg.name, "has_data": loaded.has_data(),
                      "face_type": loaded.get_face_type(),
                      "landmarks": list(loaded.get_landmarks().shape),
                      "source_filename": loaded.get_source_filename(),
                      "mat_error": float(np.abs(loaded.get_image_to_face_mat() - expected).max()),
                      "xseg": loaded.has_xseg_mask()})
    # A DeepFaceLab user's mask work, saved by DeepFaceLab's own code, for swapd to train with.
    from core.imagelib import SegIEPolys, SegIEPolyType

    first = sorted(faces.glob("*.jpg"))[0]
    side = DFLJPG.load(str(first)).get_shape()[0]
    loaded = DFLJPG.load(str(first))
    mask = np.zeros((side, side, 1), np.float32)
    mask[:, : side // 2] = 1.0  # the left half
    loaded.set_xseg_mask(mask)
    loaded.filename = str(faces / "xseg_masked.jpg")
    loaded.save()
    loaded = DFLJPG.load(str(first))
    polys = SegIEPolys()
    poly = polys.add_poly(SegIEPolyType.INCLUDE)
    for x, y in ((0, 0), (side // 2, 0), (side // 2, side), (0, side)):
        poly.add_pt(x, y)
    loaded.set_seg_ie_polys(polys)
    loaded.filename = str(faces / "polys_drawn.jpg")
    loaded.save()
    return {"faces": found, "masked": ["xseg_masked.jpg", "polys_drawn.jpg"]}


if __name__ == "__main__":
    tool, folder = sys.argv[1], Path(sys.argv[2])
    result = faceswap(folder, Path(sys.argv[3])) if tool == "faceswap" else dfl(folder)
    print("RESULT " + json.dumps(result))
