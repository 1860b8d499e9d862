"""Face-file validation for ingest, quarantine, and the stable-file check."""

from __future__ import annotations

import os
import struct
import threading
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from swapd.demo.face_sets import write_face_set
from swapd.demo.identity import DEMO_A
from swapd.demo.painter import render_face
from swapd.faces.faceswap_png import FaceswapMeta, write_aligned_png
from swapd.faces.validate import (
    BadFaceError,
    file_is_stable,
    inspect_face_file,
    quarantine_file,
    stable_files,
)


@pytest.fixture(scope="module")
def face() -> np.ndarray:
    return render_face(DEMO_A, frame_size=(128, 128), face_height_px=90, background=2).image


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_good_files(tmp_path: Path, face: np.ndarray) -> None:
    [swapd_png] = write_face_set(tmp_path, DEMO_A, count=1, seed=1, size=96)
    info = inspect_face_file(swapd_png)
    assert (info.width, info.height, info.channels, info.format) == (96, 96, 3, "png")
    assert info.meta is not None and info.landmarks is not None
    assert info.landmarks.shape == (68, 2)

    jpg = _write(tmp_path / "plain.jpg", cv2.imencode(".jpg", face)[1].tobytes())
    info = inspect_face_file(jpg)
    assert (info.format, info.channels, info.meta, info.landmarks) == ("jpeg", 3, None, None)

    gray = tmp_path / "gray.png"
    cv2.imwrite(str(gray), cv2.cvtColor(face, cv2.COLOR_BGR2GRAY))
    assert inspect_face_file(gray).channels == 1


def _bad_cases(tmp_path: Path, face: np.ndarray) -> list[tuple[Path, str]]:
    png = cv2.imencode(".png", face)[1].tobytes()
    jpg = cv2.imencode(".jpg", face)[1].tobytes()
    cases = [
        (_write(tmp_path / "empty.png", b""), "empty file"),
        (_write(tmp_path / "notes.png", b"these are my notes, not a picture\n"), "not an image"),
        (_write(tmp_path / "cut.png", png[: len(png) * 2 // 3]), "truncated PNG"),
        (_write(tmp_path / "cut.jpg", jpg[: len(jpg) * 2 // 3]), "truncated JPEG"),
        (_write(tmp_path / "wide.png", cv2.imencode(".png", face[:, :100])[1].tobytes()),
         "not square"),
        (_write(tmp_path / "tiny.png", cv2.imencode(".png", face[:32, :32])[1].tobytes()),
         "too small"),
    ]
    flipped = bytearray(png)
    flipped[len(png) // 2] ^= 0xFF  # damage the compressed image data
    cases.append((_write(tmp_path / "flipped.png", bytes(flipped)), "CRC mismatch"))
    meta = FaceswapMeta(x=0, y=0, w=50, h=50, landmarks_xy=np.full((68, 2), 5000.0),
                        original_filename="far_0.png", face_index=0,
                        source_filename="far.png", source_frame_dims=(360, 640))
    cases.append((write_aligned_png(tmp_path / "far_0.png", face, meta),
                  "landmarks lie outside the source frame"))
    meta2 = FaceswapMeta(x=0, y=0, w=50, h=50, landmarks_xy=np.full((68, 2), 50.0),
                         original_filename="off_0.png", face_index=0, source_filename="off.png",
                         swapd={"aligned_landmarks": (np.full((68, 2), 50.0) + [400, 0])
                                .tolist()})
    cases.append((write_aligned_png(tmp_path / "off_0.png", face, meta2),
                  "landmarks lie outside the image"))
    hostile = png[:33] + _itxt(b"faceswap", b"__import__('os').system('true')") + png[33:]
    cases.append((_write(tmp_path / "hostile.png", hostile), "not a plain Python literal"))
    return cases


def _itxt(keyword: bytes, text: bytes) -> bytes:
    body = keyword + b"\0\0\0\0\0" + text
    crc = zlib.crc32(body, zlib.crc32(b"iTXt")) & 0xFFFFFFFF
    return struct.pack(">I", len(body)) + b"iTXt" + body + struct.pack(">I", crc)


def test_each_bad_file_names_file_and_reason(tmp_path: Path, face: np.ndarray) -> None:
    for path, reason in _bad_cases(tmp_path, face):
        with pytest.raises(BadFaceError) as info:
            inspect_face_file(path)
        assert info.value.path == path
        assert reason in info.value.reason, (path.name, info.value.reason)
        assert str(path) in str(info.value)
    with pytest.raises(BadFaceError, match="cannot read file"):
        inspect_face_file(tmp_path / "missing.png")


def test_quarantine_moves_and_never_overwrites(tmp_path: Path) -> None:
    faces, root = tmp_path / "faces" / "alice", tmp_path / ".swapd" / "quarantine"
    faces.mkdir(parents=True)
    moved = []
    for content in (b"first", b"second"):
        src = _write(faces / "bad.png", content)
        moved.append(quarantine_file(src, root, "alice", f"not an image ({content.decode()})"))
        assert not src.exists()
    assert moved[0] == root / "alice" / "bad.png"
    assert moved[1] != moved[0] and moved[1].parent == root / "alice"
    assert [p.read_bytes() for p in moved] == [b"first", b"second"]  # nothing lost
    for p, word in zip(moved, ("first", "second"), strict=True):
        note = p.with_name(p.name + ".reason.txt").read_text()
        assert f"not an image ({word})" in note and "bad.png" in note
    # A hostile set name cannot climb out of the quarantine root.
    src = _write(faces / "x.png", b"x")
    dest = quarantine_file(src, root, "../../escape", "test")
    assert root in dest.parents


def test_file_is_stable(tmp_path: Path) -> None:
    path = _write(tmp_path / "a.png", b"abc")
    assert file_is_stable(path, settle_seconds=0.2)
    assert not file_is_stable(tmp_path / "missing.png", settle_seconds=0.05)

    growing = tmp_path / "growing.png"
    growing.write_bytes(b"x")

    def append() -> None:
        time.sleep(0.1)
        with open(growing, "ab") as fh:
            fh.write(b"more")
            fh.flush()
            os.fsync(fh.fileno())

    writer = threading.Thread(target=append)
    writer.start()
    assert stable_files([path, growing], settle_seconds=0.4) == [path]
    writer.join()


@pytest.mark.parametrize("layout", ["grey", "bgr", "bgra", "grey16", "bgr16"])
def test_png_sizes_read_without_decoding_match_the_decoder(tmp_path: Path, face: np.ndarray,
                                                           layout: str) -> None:
    image = {"grey": cv2.cvtColor(face, cv2.COLOR_BGR2GRAY), "bgr": face,
             "bgra": cv2.cvtColor(face, cv2.COLOR_BGR2BGRA),
             "grey16": cv2.cvtColor(face, cv2.COLOR_BGR2GRAY).astype(np.uint16) * 257,
             "bgr16": face.astype(np.uint16) * 257}[layout]
    path = _write(tmp_path / f"{layout}.png", cv2.imencode(".png", image)[1].tobytes())
    decoded = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    info = inspect_face_file(path)
    assert (info.height, info.width, info.channels) == (
        *decoded.shape[:2], 1 if decoded.ndim == 2 else decoded.shape[2])


def _with_fixed_crcs(data: bytes) -> bytes:
    """Recompute every chunk's CRC, so only the image data itself is wrong."""
    out, pos = bytearray(data), 8
    while pos < len(out):
        (length,) = struct.unpack(">I", out[pos:pos + 4])
        body = bytes(out[pos + 4:pos + 8 + length])
        struct.pack_into(">I", out, pos + 8 + length, zlib.crc32(body) & 0xFFFFFFFF)
        pos += 12 + length
    return bytes(out)


def test_damaged_image_data_behind_valid_crcs_is_caught(tmp_path: Path,
                                                        face: np.ndarray) -> None:
    """Ingest proves the pixels decode without decoding them; it must never pass a file the
    decoder rejects."""
    png = cv2.imencode(".png", face)[1].tobytes()
    start = png.index(b"IDAT") + 4
    end = start + struct.unpack(">I", png[start - 8:start - 4])[0]
    rng = np.random.default_rng(3)
    rejected = 0
    for k in range(60):
        damaged = bytearray(png)
        for pos in rng.integers(start, end, size=int(rng.integers(1, 4))):
            damaged[pos] = int(rng.integers(0, 256))
        path = _write(tmp_path / f"damaged_{k}.png", _with_fixed_crcs(bytes(damaged)))
        try:
            inspect_face_file(path)
        except BadFaceError as exc:
            rejected += 1
            assert "PNG" in exc.reason
        else:  # accepted: then the decoder must read it too
            assert cv2.imread(str(path), cv2.IMREAD_UNCHANGED) is not None
    assert rejected >= 55  # nearly every random change breaks the zlib checksum or a filter

    # The compressed data cut short inside an intact chunk structure.
    length = (end - start) // 2
    short = (png[:start - 8] + struct.pack(">I", length) + b"IDAT" + png[start:start + length]
             + b"\0\0\0\0" + png[end + 4:])
    path = _write(tmp_path / "short.png", _with_fixed_crcs(short))
    with pytest.raises(BadFaceError, match="image data"):
        inspect_face_file(path)


def _chunk(ctype: bytes, body: bytes) -> bytes:
    return (struct.pack(">I", len(body)) + ctype + body
            + struct.pack(">I", zlib.crc32(body, zlib.crc32(ctype)) & 0xFFFFFFFF))


def _rebuilt(png: bytes, edit: str) -> bytes:
    """``png`` with its chunk list changed the way a broken or hostile writer might."""
    chunks, pos = [], 8
    while pos < len(png):
        (length,) = struct.unpack(">I", png[pos:pos + 4])
        chunks.append((png[pos + 4:pos + 8], png[pos + 8:pos + 8 + length]))
        pos += 12 + length
    ihdr = chunks[0][1]
    if edit == "compression method 1":
        chunks[0] = (b"IHDR", ihdr[:10] + b"\x01" + ihdr[11:])
    elif edit == "filter method 1":
        chunks[0] = (b"IHDR", ihdr[:11] + b"\x01" + ihdr[12:])
    elif edit == "IHDR twice":
        chunks.insert(1, chunks[0])
    elif edit == "IHDR not first":
        chunks.insert(1, chunks.pop(0))
    elif edit == "unknown critical chunk":
        chunks.insert(1, (b"ABCD", b"whatever"))
    elif edit == "image data split by text":
        data = b"".join(body for ctype, body in chunks if ctype == b"IDAT")
        chunks = [c for c in chunks if c[0] != b"IDAT"]
        half = len(data) // 2
        chunks[1:1] = [(b"IDAT", data[:half]), (b"tEXt", b"k\x00v"), (b"IDAT", data[half:])]
    return png[:8] + b"".join(_chunk(ctype, body) for ctype, body in chunks)


@pytest.mark.parametrize("edit", ["compression method 1", "filter method 1", "IHDR twice",
                                  "IHDR not first", "unknown critical chunk",
                                  "image data split by text"])
def test_png_structures_the_decoder_refuses_are_refused(tmp_path: Path, face: np.ndarray,
                                                        edit: str) -> None:
    path = _write(tmp_path / "odd.png", _rebuilt(cv2.imencode(".png", face)[1].tobytes(), edit))
    assert cv2.imread(str(path), cv2.IMREAD_UNCHANGED) is None  # libpng says no...
    with pytest.raises(BadFaceError, match="corrupt PNG"):  # ...and so does the check
        inspect_face_file(path)
