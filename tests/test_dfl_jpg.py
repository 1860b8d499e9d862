"""DeepFaceLab aligned JPGs: metadata round trip, and hostile pickles that must run nothing."""

from __future__ import annotations

import os
import pickle
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

from swapd.faces.dfl_jpg import (
    DFLFormatError,
    DFLMeta,
    encode_dfl_jpg,
    jpeg_segments,
    read_dfl_meta,
)
from swapd.faces.faceswap_png import read_aligned_png


def _dfl_face(synthetic_sets: dict[str, Path]) -> tuple[np.ndarray, DFLMeta]:
    image, meta = read_aligned_png(sorted(synthetic_sets["alice"].glob("*.png"))[0])
    assert meta is not None and meta.swapd is not None
    return image, DFLMeta(
        face_type="whole_face",
        landmarks=np.asarray(meta.swapd["aligned_landmarks"], np.float32),
        source_filename=meta.source_filename,
        source_rect=(float(meta.x), float(meta.y), float(meta.x + meta.w),
                     float(meta.y + meta.h)),
        source_landmarks=meta.landmarks_xy,
        image_to_face_mat=np.array([[1, 0, -10], [0, 1, -20]], np.float32),
        eyebrows_expand_mod=1.0,
    )


def _with_app15(jpeg: bytes, payload: bytes) -> bytes:
    """``jpeg`` with an APP15 segment holding ``payload`` inserted after its SOI marker."""
    return jpeg[:2] + b"\xff\xef" + struct.pack(">H", len(payload) + 2) + payload + jpeg[2:]


def test_dfl_metadata_round_trip(synthetic_sets: dict[str, Path], tmp_path: Path) -> None:
    image, meta = _dfl_face(synthetic_sets)
    path = tmp_path / "00001_0.jpg"
    path.write_bytes(encode_dfl_jpg(image, meta))
    back = read_dfl_meta(path)
    assert back is not None
    assert back.face_type == "whole_face" and back.source_filename == meta.source_filename
    assert np.allclose(back.landmarks, meta.landmarks)
    assert np.allclose(back.source_landmarks, meta.source_landmarks)  # type: ignore[arg-type]
    assert back.image_to_face_mat is not None and back.image_to_face_mat.shape == (2, 3)
    assert back.source_rect == meta.source_rect and back.eyebrows_expand_mod == 1.0
    # The APP15 segment sits after the JFIF APP0 segment, where DeepFaceLab writes it.
    markers = [marker for marker, _, _ in jpeg_segments(path.read_bytes(), str(path))]
    assert markers.index(0xEF) == markers.index(0xE0) + 1
    # A JPEG without metadata is simply not a DFL face.
    plain = encode_dfl_jpg(image, meta)
    segments = jpeg_segments(plain, "x")
    start, end = next((s, e) for m, s, e in segments if m == 0xEF)
    assert read_dfl_meta(plain[: start - 4] + plain[end:]) is None


class _RunsCommand:
    """Unpickling this calls os.system: the classic hostile pickle."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (self.command,))


class _CallsEval:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (eval, ("__import__('pathlib').Path('PWNED').touch()",))


class _StartsProcess:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[list[str]]]:
        return (subprocess.Popen, (["touch", str(self.marker)],))


@pytest.mark.parametrize("payload_kind", ["os.system", "builtins.eval", "subprocess.Popen"])
def test_hostile_pickle_runs_nothing(synthetic_sets: dict[str, Path], tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch, payload_kind: str) -> None:
    monkeypatch.chdir(tmp_path)
    marker = tmp_path / "PWNED"
    image, meta = _dfl_face(synthetic_sets)
    hostile = {
        "os.system": _RunsCommand(f"touch {marker}"),
        "builtins.eval": _CallsEval(),
        "subprocess.Popen": _StartsProcess(marker),
    }[payload_kind]
    # The hostile object hides inside an otherwise valid DFL dict.
    payload = pickle.dumps({**meta.to_dict(), "seg_ie_polys": hostile})
    clean = encode_dfl_jpg(image, meta)
    segments = jpeg_segments(clean, "x")
    start, end = next((s, e) for m, s, e in segments if m == 0xEF)
    path = tmp_path / "hostile.jpg"
    path.write_bytes(_with_app15(clean[: start - 4] + clean[end:], payload))
    with pytest.raises(DFLFormatError) as caught:
        read_dfl_meta(path)
    message = str(caught.value)
    print(message)
    assert str(path) in message and "refused global" in message
    assert payload_kind.split(".")[-1] in message or "posix" in message
    assert not marker.exists()


@pytest.mark.parametrize(("payload", "reason"), [
    (pickle.dumps(["not", "a", "dict"]), "not a dict"),
    (pickle.dumps({"face_type": "whole_face"}), "landmarks are missing"),
    (pickle.dumps({"face_type": "elbow", "landmarks": np.zeros((68, 2))}), "unknown face_type"),
    (pickle.dumps({"face_type": "head", "landmarks": np.zeros((5, 2))}), "68x2"),
    (pickle.dumps({"face_type": "head", "landmarks": np.zeros((68, 2))})[:40], "broken"),
])
def test_broken_metadata_names_the_problem(synthetic_sets: dict[str, Path], tmp_path: Path,
                                           payload: bytes, reason: str) -> None:
    image, meta = _dfl_face(synthetic_sets)
    clean = encode_dfl_jpg(image, meta)
    start, end = next((s, e) for m, s, e in jpeg_segments(clean, "x") if m == 0xEF)
    path = tmp_path / "broken.jpg"
    path.write_bytes(_with_app15(clean[: start - 4] + clean[end:], payload))
    with pytest.raises(DFLFormatError, match=reason):
        read_dfl_meta(path)


def test_truncated_jpeg_is_refused(synthetic_sets: dict[str, Path]) -> None:
    image, meta = _dfl_face(synthetic_sets)
    data = encode_dfl_jpg(image, meta)
    with pytest.raises(DFLFormatError, match="truncated"):
        read_dfl_meta(data[:300])
    with pytest.raises(DFLFormatError, match="not a JPEG"):
        read_dfl_meta(b"GIF89a" + data)


class _ForgedDtype:
    """A void dtype whose state claims an object field: numpy would read pointers from data."""

    def __reduce__(self) -> tuple[object, ...]:
        return (np.dtype, ("V8", False, True),
                (3, "|", None, ("a",), {"a": (np.dtype("O"), 0)}, 8, 1, 0))


class _PointerArray:
    def __reduce__(self) -> tuple[object, ...]:
        from numpy._core.multiarray import _reconstruct

        return (_reconstruct, (np.ndarray, (0,), b"b"),
                (1, (68,), _ForgedDtype(), False, struct.pack("<Q", id(self)) * 68))


class _ObjectArrayBomb:
    def __reduce__(self) -> tuple[object, ...]:
        return (np.ndarray, ((10**9,), "O"))


@pytest.mark.parametrize(("landmarks", "reason"), [
    (_PointerArray(), "refused dtype"),
    (_ObjectArrayBomb(), "refused"),
    (np.array([["x"] * 2] * 68, dtype=object), "refused dtype"),
    ([[10**400, 0]] * 68, "not numeric"),
])
def test_numpy_objects_in_the_pickle_are_checked(synthetic_sets: dict[str, Path],
                                                 landmarks: object, reason: str) -> None:
    image, _ = _dfl_face(synthetic_sets)
    data = encode_dfl_jpg(image, {"face_type": "full_face", "landmarks": landmarks,
                                  "seg_ie_polys": np.zeros(3)})
    with pytest.raises(DFLFormatError, match=reason):
        read_dfl_meta(data)


def test_plain_arrays_of_every_protocol_still_load(synthetic_sets: dict[str, Path]) -> None:
    image, meta = _dfl_face(synthetic_sets)
    for protocol in (2, 3, 4, 5):
        payload = pickle.dumps({**meta.to_dict(), "xseg_mask": np.ones((4, 4), np.uint8),
                                "eyebrows_expand_mod": np.float64(1.0)}, protocol=protocol)
        clean = encode_dfl_jpg(image, meta)
        start, end = next((s, e) for m, s, e in jpeg_segments(clean, "x") if m == 0xEF)
        back = read_dfl_meta(_with_app15(clean[: start - 4] + clean[end:], payload))
        assert back is not None and np.allclose(back.landmarks, meta.landmarks)
        assert back.has_xseg_mask and back.eyebrows_expand_mod == 1.0
