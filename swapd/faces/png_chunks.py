"""PNG chunks: walking them (length-, CRC- and size-checked), proving the image data decodes
without decoding it, and the iTXt text chunks faceswap and swapd keep their metadata in."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

from swapd.errors import FileProblem

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_META_BYTES = 8 * 1024 * 1024  # a face's metadata with a few masks is a few KiB
MAX_FILE_BYTES = 256 * 1024 * 1024  # an aligned face is a few hundred KiB at most
_MAX_CHUNK = 2**31 - 1  # the PNG spec's limit on a chunk length


class FaceFormatError(FileProblem, ValueError):
    """An aligned-face file whose structure or metadata is not what the format allows."""


def png_chunks(data: bytes, where: str = "<bytes>", verify_crc: bool = True
               ) -> list[tuple[bytes, int, int]]:
    """Walk a PNG's chunks: [(type, data start, data end)], up to and including IEND.

    Raises FaceFormatError for a bad signature, a chunk running past the end of the data, a
    CRC mismatch (when `verify_crc`), or a missing IEND (a truncated file).
    """
    if not data.startswith(PNG_SIGNATURE):
        raise FaceFormatError(where, "not a PNG file (bad signature)")
    chunks = []
    pos = len(PNG_SIGNATURE)
    while True:
        if pos + 8 > len(data):
            raise FaceFormatError(where, "truncated PNG: no IEND chunk")
        length, ctype = struct.unpack(">I4s", data[pos:pos + 8])
        if length > _MAX_CHUNK:
            raise FaceFormatError(where, f"PNG chunk {ctype!r} claims {length} bytes")
        start, end = pos + 8, pos + 8 + length
        if end + 4 > len(data):
            raise FaceFormatError(where, f"truncated PNG: chunk {ctype!r} runs past the end")
        if verify_crc:
            (crc,) = struct.unpack(">I", data[end:end + 4])
            if zlib.crc32(data[start:end], zlib.crc32(ctype)) & 0xFFFFFFFF != crc:
                raise FaceFormatError(where, f"corrupt PNG: CRC mismatch in chunk {ctype!r}")
        chunks.append((ctype, start, end))
        pos = end + 4
        if ctype == b"IEND":
            return chunks


# IHDR colour types whose pixel layout is read as stored (grey, RGB, RGBA): samples per pixel.
_SAMPLES = {0: 1, 2: 3, 6: 4}
_CRITICAL_CHUNKS = {b"IHDR", b"PLTE", b"IDAT", b"IEND"}


def png_pixel_check(data: bytes, chunks: list[tuple[bytes, int, int]], where: str
                    ) -> tuple[int, int, int] | None:
    """Prove a PNG's image data decodes, without decoding it: (width, height, channels).

    The chunk CRCs (checked by png_chunks), the zlib stream's own checksum, its exact length
    and a valid filter type on every row are everything a PNG decoder can fail on; checking
    them costs half of a decode. Returns None for the layouts this does not cover (palette,
    grey+alpha, transparency chunks, interlacing, bit depths other than 8/16): decode those.
    Raises FaceFormatError for data that cannot decode.
    """
    types = [ctype for ctype, _, _ in chunks]
    if types[0] != b"IHDR" or types.count(b"IHDR") != 1 or chunks[0][2] - chunks[0][1] != 13:
        raise FaceFormatError(where, "corrupt PNG: the first chunk is not one valid IHDR")
    width, height, depth, colour, compression, filtering, interlace = struct.unpack(
        ">IIBBBBB", data[chunks[0][1]:chunks[0][2]])
    if width == 0 or height == 0:
        raise FaceFormatError(where, f"corrupt PNG: image size {width}x{height}")
    if compression or filtering:
        raise FaceFormatError(where, f"corrupt PNG: unknown compression ({compression}) or "
                                     f"filter method ({filtering})")
    unknown = sorted({t.decode("latin-1") for t in types
                      if t[:1].isupper() and t not in _CRITICAL_CHUNKS})
    if unknown:  # a decoder must refuse a critical chunk it does not know
        raise FaceFormatError(where, f"corrupt PNG: unknown critical chunk {', '.join(unknown)}")
    idat = [i for i, t in enumerate(types) if t == b"IDAT"]
    if not idat or idat[-1] - idat[0] != len(idat) - 1:
        raise FaceFormatError(where, "corrupt PNG: the image data chunks are missing or not "
                                     "consecutive")
    samples = _SAMPLES.get(colour)
    if width != height:  # refused as not square anyway: no need to inflate anything
        return width, height, samples or 3
    if samples is None or depth not in (8, 16) or interlace or b"tRNS" in types:
        return None
    row = 1 + width * samples * depth // 8
    expected = row * height
    if expected > MAX_FILE_BYTES:
        raise FaceFormatError(where, f"PNG claims {width}x{height} pixels, too large for a face")
    stream = b"".join(data[s:e] for ctype, s, e in chunks if ctype == b"IDAT")
    inflater = zlib.decompressobj()
    try:
        raw = inflater.decompress(stream, expected + 1)
    except zlib.error as exc:
        raise FaceFormatError(where, f"corrupt PNG: the image data does not inflate ({exc})"
                              ) from exc
    if len(raw) < expected or not inflater.eof:
        raise FaceFormatError(where, f"truncated PNG: the image data ends after {len(raw)} of "
                                     f"{expected} bytes")
    if len(raw) > expected or inflater.unconsumed_tail:
        raise FaceFormatError(where, "corrupt PNG: more image data than the image size holds")
    if np.frombuffer(raw, np.uint8)[::row].max() > 4:
        raise FaceFormatError(where, "corrupt PNG: a row has an unknown filter type")
    return width, height, samples


def itxt_chunk(keyword: bytes, text: bytes) -> bytes:
    # keyword, NUL, compression flag 0, method 0, empty language tag + NUL, empty
    # translated keyword + NUL, then the text: the layout faceswap writes and reads.
    body = keyword + b"\0" + b"\0\0" + b"\0" + b"\0" + text
    crc = zlib.crc32(body, zlib.crc32(b"iTXt")) & 0xFFFFFFFF
    return struct.pack(">I", len(body)) + b"iTXt" + body + struct.pack(">I", crc)


def parse_itxt(body: bytes, where: str) -> tuple[bytes, bytes]:
    """Keyword and (decompressed) text of an iTXt chunk body."""
    keyword, sep, rest = body.partition(b"\0")
    if not sep or len(rest) < 2:
        raise FaceFormatError(where, "malformed iTXt chunk")
    flag, method, rest = rest[0], rest[1], rest[2:]
    _language, sep1, rest = rest.partition(b"\0")
    _translated, sep2, text = rest.partition(b"\0")
    if not (sep1 and sep2):
        raise FaceFormatError(where, "malformed iTXt chunk")
    if flag == 1:
        if method != 0:
            raise FaceFormatError(where, f"iTXt compression method {method} is not zlib")
        inflater = zlib.decompressobj()
        try:
            text = inflater.decompress(text, MAX_META_BYTES + 1)
        except zlib.error as exc:
            raise FaceFormatError(where, f"corrupt compressed iTXt chunk ({exc})") from exc
        if len(text) > MAX_META_BYTES or inflater.unconsumed_tail:
            raise FaceFormatError(where, f"iTXt text exceeds {MAX_META_BYTES} bytes")
    elif flag != 0:
        raise FaceFormatError(where, f"bad iTXt compression flag {flag}")
    return keyword, text




def read_capped(path: Path) -> bytes:
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise FaceFormatError(path, f"cannot read file ({exc.strerror or exc})") from exc
    if size > MAX_FILE_BYTES:
        raise FaceFormatError(path, f"file is {size} bytes, over the {MAX_FILE_BYTES} limit")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise FaceFormatError(path, f"cannot read file ({exc.strerror or exc})") from exc
