"""The fast reader of faceswap's literal headers gives exactly what ast.literal_eval gives."""

from __future__ import annotations

import ast
import random
import zlib
from typing import Any

import numpy as np
import pytest

from swapd.faces.literal import _parse_as_json, parse_literal


def _lists(value: Any) -> Any:
    """literal_eval's value with tuples as lists, as parse_literal returns them."""
    if isinstance(value, (list, tuple)):
        return [_lists(v) for v in value]
    if isinstance(value, dict):
        return {k: _lists(v) for k, v in value.items()}
    return value


def _outcome(read: Any, text: str) -> tuple[str, Any]:
    try:
        return "value", _lists(read(text))
    except Exception as exc:  # noqa: BLE001 - the kind of failure is what is compared
        return "error", type(exc).__name__


@pytest.mark.parametrize("text", [
    "{'a': (1, 2)}", "{'a': ()}", "{'a': (5)}", "{'a': (5,)}", "{'a': (1, 2,)}",
    "{'a': ((1, 2), (3, 4))}", "{'a': (1, 'x')}", "{1: 2}", "{'a': {1, 2}}",
    "{'a': 1e-05, 'b': -2.5E+20, 'c': 1e400}", "{'a': 1j}", "{'a': 0x10}", "{'a': 1_000}",
    "{'a': .5}", "{'a': 5.}", "{'a': +5}", "{'a': - 5}", "{'a': [1, 2,]}",
    "{'a': 'it\\'s', \"b\": \"x'y\", 'c': 'tab\\there'}", "{'a': '\\ud800', 'b': 'é'}",
    "{'a': b'\\x00\\xff', b'k': 1}", "{'a': r'\\d', 'b': u'\\u00e9', 'c': rb'\\x'}",
    "{'a': 'x' 'y'}", "{'a': 1 # comment\n}", "{'a': nan}", "{'a': f'x'}",
    "{'a': None, 'b': True, 'c': False, 'True': 'None'}", "[1, 2]", "  {'a': 1}",
    "{'a': '\\x00bytes-0123456789abcdef:0'}", "{'a': 'x\x00'}", "{'a': b'é'}",
    "__import__('os').system('true')", "{'a': (lambda: 1)()}", "{'a': [1] * 3}",
    "'\\ud83d\\ude00'", "{'\\ud83d\\ude00': 1, '😀': 2}",  # surrogates stay apart
    "\n 1", "[1]\n ", "\r 1", "\n\t{'a': 1}", "{'a':\n 1}",  # line breaks: indentation
])
def test_reads_every_text_as_literal_eval_does(text: str) -> None:
    assert _outcome(parse_literal, text) == _outcome(ast.literal_eval, text)


@pytest.mark.timeout(20)
def test_unterminated_strings_cost_linear_time() -> None:
    """A header of one unclosed string full of escaped quotes once took quadratic time (a
    week for an 8 MiB header) while holding the GIL: now the first stray quote ends the fast
    path. 400,000 characters would take minutes if it were quadratic."""
    text = "{'a': '" + "\\'" * 200_000
    with pytest.raises(SyntaxError):
        parse_literal(text)


def test_random_literals_agree() -> None:
    rng = random.Random(0)

    def draw(depth: int = 0) -> Any:
        r = rng.random()
        if depth > 3 or r < 0.3:
            return rng.choice([
                rng.randint(-10**6, 10**6), rng.uniform(-1e6, 1e6), rng.uniform(-1e-8, 1e-8),
                True, False, None,
                "".join(chr(rng.randint(1, 0x2FFF)) for _ in range(rng.randint(0, 8))),
                bytes(rng.randint(0, 255) for _ in range(rng.randint(0, 8)))])
        if r < 0.55:
            return [draw(depth + 1) for _ in range(rng.randint(0, 4))]
        if r < 0.7:
            return tuple(draw(depth + 1) for _ in range(rng.randint(0, 4)))
        return {rng.choice(["a", "b", "q'\"", "x\\y"]): draw(depth + 1)
                for _ in range(rng.randint(0, 4))}

    for _ in range(2000):
        text = repr(draw())
        assert _outcome(parse_literal, text) == _outcome(ast.literal_eval, text), text


def test_headers_as_faceswap_writes_them_take_the_fast_path() -> None:
    # str() of a faceswap header: float32 landmarks, a frame-size tuple, a zlib mask as bytes.
    rng = np.random.default_rng(0)
    header = {
        "alignments": {
            "x": 111, "y": 96, "w": 163, "h": 218,
            "landmarks_xy": rng.uniform(0, 1920, (68, 2)).astype(np.float32).tolist(),
            "mask": {"components": {
                "mask": zlib.compress(rng.integers(0, 2, (128, 128), np.uint8).tobytes()),
                "affine_matrix": [[0.51, -2.7e-17, -47.0], [2.7e-17, 0.51, -12.5]],
                "interpolator": 2, "stored_size": 128, "stored_centering": "face"}},
            "identity": {},
        },
        "source": {"alignments_version": 2.3, "original_filename": "clip_000001_0.png",
                   "face_index": 0, "source_filename": "clip_000001.png",
                   "source_is_video": True, "source_frame_dims": (1080, 1920)},
    }
    text = str(header)
    assert _lists(_parse_as_json(text)) == _lists(header)  # raises if it fell back
