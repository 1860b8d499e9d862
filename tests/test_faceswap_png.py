"""faceswap aligned-PNG metadata: round trip, faceswap's own layout, hostile input."""

from __future__ import annotations

import ast
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from swapd.demo.identity import DEMO_B
from swapd.demo.painter import render_face
from swapd.faces.faceswap_png import (
    FaceFormatError,
    FaceswapMeta,
    encode_aligned_png,
    read_aligned_png,
    read_faceswap_header,
    read_faceswap_meta,
    write_aligned_png,
)


def _meta() -> FaceswapMeta:
    rng = np.random.default_rng(0)
    return FaceswapMeta(
        x=10, y=20, w=100, h=120, landmarks_xy=rng.uniform(0, 200, (68, 2)).astype(np.float32),
        original_filename="clip_000007_0.png", face_index=0,
        source_filename="clip_000007.png", source_is_video=True, source_frame_dims=(360, 640),
        mask={"components": {"mask": zlib.compress(b"\xff" * 64), "affine_matrix":
                             [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], "interpolator": 3,
                             "stored_size": 128, "stored_centering": "face"}},
        identity={"vggface2": np.arange(4, dtype=np.float32)},
    )


def _image() -> np.ndarray:
    return render_face(DEMO_B, frame_size=(128, 128), face_height_px=80, background=1).image


def _chunk(ctype: bytes, body: bytes) -> bytes:
    crc = zlib.crc32(body, zlib.crc32(ctype)) & 0xFFFFFFFF
    return struct.pack(">I", len(body)) + ctype + body + struct.pack(">I", crc)


def _png_with_payload(payload: bytes, keyword: bytes = b"faceswap") -> bytes:
    """A valid PNG whose faceswap chunk carries `payload`, built by hand like a hostile file."""
    png = cv2.imencode(".png", _image())[1].tobytes()
    idat = png.index(b"IDAT") - 4
    return png[:idat] + _chunk(b"iTXt", keyword + b"\0\0\0\0\0" + payload) + png[idat:]


def test_round_trip(tmp_path: Path) -> None:
    image, meta = _image(), _meta()
    path = write_aligned_png(tmp_path / "clip_000007_0.png", image, meta)
    assert not list(tmp_path.glob(".*.tmp"))  # the atomic write left no temp file
    decoded, back = read_aligned_png(path)
    assert np.array_equal(decoded, image)  # PNG is lossless
    assert back is not None
    assert (back.x, back.y, back.w, back.h) == (10, 20, 100, 120)
    assert np.allclose(back.landmarks_xy, meta.landmarks_xy)
    assert back.source_frame_dims == (360, 640) and back.source_is_video is True
    assert back.mask["components"]["mask"] == zlib.compress(b"\xff" * 64)
    assert back.identity["vggface2"] == [0.0, 1.0, 2.0, 3.0]
    assert back.to_dict() == FaceswapMeta.from_dict(back.to_dict()).to_dict()


def test_layout_matches_faceswap(tmp_path: Path) -> None:
    """One iTXt chunk, keyword 'faceswap', uncompressed, before IDAT, payload str(dict)."""
    data = encode_aligned_png(_image(), _meta())
    first_itxt, first_idat = data.index(b"iTXt"), data.index(b"IDAT")
    assert first_itxt < first_idat and data.count(b"iTXt") == 1
    length = struct.unpack(">I", data[first_itxt - 4:first_itxt])[0]
    body = data[first_itxt + 4:first_itxt + 4 + length]
    keyword, rest = body.split(b"\0", 1)
    assert keyword == b"faceswap" and rest[:4] == b"\0\0\0\0"
    header = ast.literal_eval(rest[4:].decode())  # how faceswap parses it
    assert set(header) == {"alignments", "source"}
    assert set(header["alignments"]) == {"x", "y", "w", "h", "landmarks_xy", "mask", "identity"}
    assert set(header["source"]) == {"alignments_version", "original_filename", "face_index",
                                     "source_filename", "source_is_video", "source_frame_dims"}
    assert isinstance(header["alignments"]["landmarks_xy"], list)
    # A faceswap-written file (payload built by hand, as faceswap does) reads in swapd.
    header["alignments"]["landmarks_xy"] = [[1.5, 2.5]] * 68
    meta = read_faceswap_meta(_png_with_payload(str(header).encode()))
    assert meta is not None and meta.landmarks_xy.shape == (68, 2)
    assert read_faceswap_meta(cv2.imencode(".png", _image())[1].tobytes()) is None


def test_hostile_payload_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    payloads = [
        f"__import__('os').system('touch {marker}')",
        f"{{'alignments': __import__('os').system('touch {marker}'), 'source': {{}}}}",
        "(lambda: 1)()",
        "[" * 100_000 + "]" * 100_000,
    ]
    for payload in payloads:
        data = _png_with_payload(payload.encode())
        with pytest.raises(FaceFormatError, match="not a plain Python literal"):
            read_faceswap_meta(data)
    assert not marker.exists()


@pytest.mark.parametrize("payload, reason", [
    (b"[1, 2, 3]", "not a dict"),
    (b"{'alignments': {}, 'source': {}}", "alignments.x"),
    (b"{'alignments': 5, 'source': {}}", "'alignments' must be a dict"),
    (b"{'alignments': {'x': 1, 'y': 2, 'w': 3, 'h': 4, 'landmarks_xy': [[1, 2]] * 68}}",
     "not a plain Python literal"),  # a multiplication is not a literal
    (b"{'alignments': {'x': 1, 'y': 2, 'w': 3, 'h': 4, 'landmarks_xy': [[1, 'a']]}, "
     b"'source': {}}", "not numeric"),
    (b"\xff\xfe{}", "not UTF-8"),
])
def test_bad_shapes_are_rejected(payload: bytes, reason: str) -> None:
    with pytest.raises(FaceFormatError, match=reason):
        read_faceswap_meta(_png_with_payload(payload))


def test_broken_png_structure(tmp_path: Path) -> None:
    good = encode_aligned_png(_image(), _meta())
    # Bad CRC in the metadata chunk.
    pos = good.index(b"iTXt")
    broken = bytearray(good)
    broken[pos + 10] ^= 0xFF
    with pytest.raises(FaceFormatError, match="CRC mismatch"):
        read_faceswap_meta(bytes(broken))
    # Truncated file.
    path = tmp_path / "cut.png"
    path.write_bytes(good[: len(good) // 2])
    with pytest.raises(FaceFormatError, match="truncated") as info:
        read_faceswap_meta(path)
    assert str(path) in str(info.value)
    # A chunk claiming an absurd length.
    huge = good[:33] + struct.pack(">I", 0x7FFFFFF0) + b"iTXt" + good[33:]
    with pytest.raises(FaceFormatError):
        read_faceswap_meta(huge)
    # Not a PNG at all.
    with pytest.raises(FaceFormatError, match="not a PNG"):
        read_faceswap_header(b"GIF89a....")
    # A compressed chunk that inflates past the limit (a zip bomb) is refused.
    bomb = zlib.compress(b"{" + b" " * (9 * 1024 * 1024) + b"}")
    png = cv2.imencode(".png", _image())[1].tobytes()
    idat = png.index(b"IDAT") - 4
    data = png[:idat] + _chunk(b"iTXt", b"faceswap\0\x01\x00\0\0" + bomb) + png[idat:]
    with pytest.raises(FaceFormatError, match="exceeds"):
        read_faceswap_meta(data)
