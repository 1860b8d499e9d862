"""Reading the Python-literal headers of faceswap PNGs quickly, and exactly as literal_eval would.

faceswap writes each aligned face's metadata as the ``str()`` of a dict: a few KiB, mostly
float landmarks, sometimes zlib-compressed masks as ``b'...'`` literals. ``ast.literal_eval``
is safe but slow on it (about 2.4 ms a face, 85 % of it in ``compile``), which made it the
largest cost of indexing a set. Such a ``str()`` is JSON in all but its spelling: quotes,
``True``/``False``/``None``, tuples in parentheses and bytes. ``parse_literal`` respells exactly
those and hands the text to the C JSON parser; anything it is not sure about (comments, sets,
one-element tuples, non-string keys, ``(x)`` groups, unusual numbers...) goes to
``ast.literal_eval`` instead, so the result is always what literal_eval gives (tuples read
back as lists). Neither path can run code.
"""

from __future__ import annotations

import ast
import json
import re
import secrets
from typing import Any

# Strings (with any prefix), names, and parentheses: everything a Python literal spells
# differently from JSON. Numbers, commas, colons and brackets pass through untouched.
_TOKEN = re.compile(
    # The lookahead lets the scan skip digits and punctuation fast (7x faster on a header).
    r"""(?=[A-Za-z_'"()])(?:"""
    r"""([A-Za-z]{0,2})('[^'\\\n\r]*(?:\\.[^'\\\n\r]*)*'|"[^"\\\n\r]*(?:\\.[^"\\\n\r]*)*")"""
    r"""|(?<![\w.])([A-Za-z_]\w*)"""  # a name, but not the "e" of 1e-05 or the "j" of 1j
    r"""|(\()|(\))"""
    # A quote that opens no complete string: give up at once (retrying the string pattern
    # from every later quote would take time quadratic in the line's length).
    r"""|(['"]))""")
_KEYWORDS = {"True": "true", "False": "false", "None": "null"}
_SURROGATE = re.compile("[\ud800-\udfff]")
# What may sit inside parentheses for them to surely be a tuple: two or more numbers, or nothing.
_NUMBER = r"\s*[-0-9.eE]+\s*"
_FLAT_TUPLE = re.compile(rf"(?:{_NUMBER},)+{_NUMBER}|\s*")


class _NotJson(Exception):
    """The fast path does not apply; use ast.literal_eval."""


# Longer texts go straight to literal_eval (a faceswap header is a few KiB).
FAST_PATH_MAX_CHARS = 1 << 20


def parse_literal(text: str) -> Any:
    """The value of a Python literal, as ``ast.literal_eval(text)`` gives it (tuples as lists).

    Raises what literal_eval raises (ValueError, SyntaxError, RecursionError...) for text that
    is not a plain literal.
    """
    # Python source cannot hold NUL, and line breaks bring its indentation rules: str() of a
    # dict has neither, so such texts are left to literal_eval to judge.
    if len(text) <= FAST_PATH_MAX_CHARS and not any(c in text for c in "\x00\n\r"):
        try:
            return _parse_as_json(text)
        except (_NotJson, ValueError, SyntaxError, RecursionError):
            pass
    return ast.literal_eval(text)


def _parse_as_json(text: str) -> Any:
    blobs: list[bytes] = []
    # A per-call marker, so no string in a (hostile) header can pose as a bytes placeholder.
    marker = f"\x00bytes-{secrets.token_hex(8)}:"

    def respell(match: re.Match[str]) -> str:
        prefix, quoted, name, opening, closing, stray_quote = match.groups()
        if stray_quote is not None:
            raise _NotJson
        if quoted is not None:
            if not prefix and "\\" not in quoted:
                return json.dumps(quoted[1:-1])
            if prefix.lower() not in ("", "b", "r", "u", "br", "rb"):
                raise _NotJson  # f-strings and the like: let literal_eval refuse them
            value = ast.literal_eval(prefix + quoted)
            if isinstance(value, str) and _SURROGATE.search(value):
                raise _NotJson  # JSON would pair "\ud83d\ude00" into one character
            if isinstance(value, bytes):
                blobs.append(value)
                return json.dumps(f"{marker}{len(blobs) - 1}")
            return json.dumps(value)
        if name is not None:
            if name not in _KEYWORDS:
                raise _NotJson
            return _KEYWORDS[name]
        if opening is not None:
            # Only a flat tuple of numbers (or an empty one) is sure to be a tuple: "(5)" is 5
            # and "(5,)" a one-element tuple, which JSON cannot say.
            end = text.find(")", match.end())
            if end < 0 or not _FLAT_TUPLE.fullmatch(text, match.end(), end):
                raise _NotJson
            return "["
        assert closing is not None
        return "]"

    value = json.loads(_TOKEN.sub(respell, text))
    return _restore_bytes(value, marker, blobs) if blobs else value


def _restore_bytes(value: Any, marker: str, blobs: list[bytes]) -> Any:
    if isinstance(value, str):
        return blobs[int(value[len(marker):])] if value.startswith(marker) else value
    if isinstance(value, list):
        return [_restore_bytes(v, marker, blobs) for v in value]
    if isinstance(value, dict):
        return {_restore_bytes(k, marker, blobs): _restore_bytes(v, marker, blobs)
                for k, v in value.items()}
    return value
