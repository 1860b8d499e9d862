"""A restricted unpickler: plain data and plain numeric numpy arrays, nothing else.

Unpickling runs whatever callables the data names, so a shared file (a DeepFaceLab face's
metadata, a faceswap ``.fsa`` alignments file) could carry code. :class:`SafeUnpickler` admits
only plain containers, numbers, strings and bytes, plus the few numpy functions that rebuild
arrays, each through a checked stand-in; anything else (``os.system``, ``builtins.eval``,
``subprocess.Popen``, ...) is refused before it is looked up, so nothing of it runs.
"""

from __future__ import annotations

import io
import math
import pickle
from contextvars import ContextVar
from typing import Any

import numpy as np

MAX_ARRAY_BYTES = 16 * 1024 * 1024  # far above any face's metadata (a JPEG segment is 64 KiB)
# The limit of the unpickling under way: a DeepFaceLab weight file's arrays are larger (see
# safe_unpickle's max_array_bytes).
_ARRAY_LIMIT: ContextVar[int] = ContextVar("array_limit", default=MAX_ARRAY_BYTES)
# Plain numeric dtypes only: object, void and structured dtypes could smuggle pointers.
_SAFE_DTYPE_KINDS = "biufc"


class _Refused(pickle.UnpicklingError):
    """A pickle that asks for something the safe unpickler does not build."""


class _Dtype:
    """Stands in for ``numpy.dtype`` while unpickling: a plain numeric dtype, checked."""

    def __init__(self, code: object, align: object = False, copy: object = True) -> None:
        if not isinstance(code, str) or len(code) > 4:
            raise _Refused(f"refused dtype {code!r}")
        try:
            dtype = np.dtype(code)
        except TypeError as exc:
            raise _Refused(f"refused dtype {code!r}") from exc
        if dtype.kind not in _SAFE_DTYPE_KINDS or dtype.fields is not None or dtype.subdtype:
            raise _Refused(f"refused dtype {code!r} (only plain numbers are accepted)")
        self.dtype = dtype

    def __setstate__(self, state: object) -> None:
        # numpy's dtype state: (version, byte order, subarray, names, fields, itemsize,
        # alignment, flags). Anything but a plain number's is refused.
        if (not isinstance(state, tuple) or len(state) not in (8, 9)
                or state[1] not in ("<", ">", "|", "=") or state[2:5] != (None, None, None)
                or state[5:7] != (-1, -1) or state[7] != 0):
            raise _Refused("refused dtype state")
        if state[1] in "<>":
            self.dtype = self.dtype.newbyteorder(state[1])


def _checked_array(data: object, dtype: object, shape: object, fortran: bool = False
                   ) -> np.ndarray:
    if not isinstance(dtype, _Dtype):
        raise _Refused("array without a plain dtype")
    if not isinstance(data, (bytes, bytearray)):
        raise _Refused("array data is not bytes")
    if (not isinstance(shape, tuple) or len(shape) > 8
            or not all(isinstance(n, int) and n >= 0 for n in shape)):
        raise _Refused(f"refused array shape {shape!r}")
    size = math.prod(shape) * dtype.dtype.itemsize
    if size != len(data) or size > _ARRAY_LIMIT.get():
        raise _Refused(f"array of shape {shape} does not match its {len(data)} bytes")
    return np.frombuffer(bytes(data), dtype.dtype).reshape(shape, order="F" if fortran else "C")


class _PendingArray:
    """What ``_reconstruct`` returns; BUILD fills it from (version, shape, dtype, fortran,
    data), checked, and :func:`safe_unpickle` swaps in the array afterwards."""

    array: np.ndarray | None = None

    def __setstate__(self, state: object) -> None:
        if not isinstance(state, tuple) or len(state) != 5:
            raise _Refused("refused array state")
        _, shape, dtype, fortran, data = state
        self.array = _checked_array(data, dtype, shape, bool(fortran)).copy()


class _NdarrayName:
    """Stands in for ``numpy.ndarray``: only ever the first argument of ``_reconstruct``;
    calling it (an array of any shape, unfilled) is refused."""

    def __call__(self, *args: object, **kwargs: object) -> None:
        raise _Refused("refused numpy.ndarray(...)")


_NDARRAY = _NdarrayName()


def _reconstruct(cls: object, shape: object, typecode: object) -> _PendingArray:
    if cls is not _NDARRAY:
        raise _Refused("refused _reconstruct of anything but an array")
    return _PendingArray()


def _frombuffer(data: object, dtype: object, shape: object, order: object) -> np.ndarray:
    return _checked_array(data, dtype, shape, order == "F").copy()


def _scalar(dtype: object, data: object = None) -> object:
    return _checked_array(data, dtype, ())[()].copy()


def _latin1(text: object, encoding: object = "latin1") -> bytes:
    """``_codecs.encode``, as protocol-2 pickles store bytes: latin-1 text only."""
    if not isinstance(text, str) or encoding != "latin1":
        raise _Refused("refused _codecs.encode")
    return text.encode("latin1")


# The globals an array, scalar or bytes pickle names (numpy 1.x and 2.x module paths), each
# mapped to a checked stand-in: numpy's own callables are never handed to the pickle.
_SAFE_GLOBALS: dict[tuple[str, str], object] = {
    ("numpy", "ndarray"): _NDARRAY, ("numpy", "dtype"): _Dtype,
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy.core.multiarray", "scalar"): _scalar,
    ("numpy._core.multiarray", "scalar"): _scalar,
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,
    ("_codecs", "encode"): _latin1,
}


class SafeUnpickler(pickle.Unpickler):
    """An unpickler that builds plain containers, numbers, strings, bytes and plain numeric
    numpy arrays, and nothing else."""

    named_globals = False  # whether the pickle named any (admitted) global

    def find_class(self, module: str, name: str) -> Any:
        try:
            found = _SAFE_GLOBALS[(module, name)]
        except KeyError:
            raise _Refused(f"refused global {module}.{name}") from None
        self.named_globals = True
        return found

    def persistent_load(self, pid: Any) -> Any:
        raise _Refused("refused persistent id")


def _finish(value: object, depth: int = 0) -> object:
    """Swap filled-in arrays for their numpy arrays; refuse stand-ins left half built."""
    if depth > 64:
        raise _Refused("metadata nested too deeply")
    if isinstance(value, _PendingArray):
        if value.array is None:
            raise _Refused("array without data")
        return value.array
    if isinstance(value, (_Dtype, _PendingArray)) or value is _NDARRAY:
        raise _Refused("numpy object outside an array")
    if isinstance(value, dict):
        return {_finish(k, depth + 1): _finish(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [_finish(v, depth + 1) for v in value]
    if isinstance(value, tuple):
        return tuple(_finish(v, depth + 1) for v in value)
    return value


def safe_unpickle(data: bytes, max_array_bytes: int = MAX_ARRAY_BYTES) -> Any:
    """``pickle.loads`` limited to plain data and plain numeric numpy arrays (each at most
    ``max_array_bytes``). Raises ``pickle.UnpicklingError`` saying what was refused; other
    exceptions for a malformed stream (a truncated one raises EOFError)."""
    unpickler = SafeUnpickler(io.BytesIO(data))
    token = _ARRAY_LIMIT.set(max_array_bytes)
    try:
        value = unpickler.load()
    finally:
        _ARRAY_LIMIT.reset(token)
    # Only a named global can leave a stand-in to swap: plain data (a large .fsa of lists)
    # is returned as built, without walking it.
    return _finish(value) if unpickler.named_globals else value
