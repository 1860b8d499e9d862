"""What swapd unpickles is pinned: DeepFaceLab's metadata admits exactly its allow-list (a
harmless global that is not on it is refused as surely as os.system), and checkpoints load with
torch's weights_only, so a hostile one runs nothing."""

from __future__ import annotations

import collections
import datetime
import decimal
import fractions
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from swapd.faces import safe_pickle
from swapd.faces.dfl_jpg import safe_unpickle
from swapd.trainer.checkpoint import CheckpointError, load_checkpoint

# The unpickler's whole allow-list: each entry maps to a checked stand-in. Adding one is a
# decision this test makes visible.
ALLOWED = {
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"),
}


def test_the_allow_list_is_exactly_what_it_was() -> None:
    assert set(safe_pickle._SAFE_GLOBALS) == ALLOWED


@pytest.mark.parametrize("harmless", [
    collections.OrderedDict(a=1), datetime.datetime(2024, 5, 1, 12, 0), datetime.date(2024, 5, 1),
    decimal.Decimal("1.5"), fractions.Fraction(1, 3), collections.Counter("abc"), complex(1, 2),
], ids=lambda value: type(value).__name__)
@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_a_harmless_global_off_the_list_is_refused(harmless: object, protocol: int) -> None:
    """Plain data DeepFaceLab never writes, named by a global: refused like os.system (the
    unpickler trusts its list, not a judgement of what a global does)."""
    payload = pickle.dumps({"face_type": "whole_face",
                            "landmarks": np.zeros((68, 2), np.float32), "extra": harmless},
                           protocol=protocol)
    with pytest.raises(pickle.UnpicklingError, match="refused"):
        safe_unpickle(payload)


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_what_deepfacelab_writes_still_loads(protocol: int) -> None:
    data = {"face_type": "whole_face", "landmarks": np.arange(136, dtype=np.float32).reshape(68, 2),
            "source_rect": (1, 2, 3, 4), "eyebrows_expand_mod": 1.0, "name": "x", "raw": b"\x00",
            "nested": [{"a": (1.5, None, True)}]}
    loaded = safe_unpickle(pickle.dumps(data, protocol=protocol))
    assert np.array_equal(loaded["landmarks"], data["landmarks"])
    assert {k: v for k, v in loaded.items() if k != "landmarks"} == {
        k: v for k, v in data.items() if k != "landmarks"}


class _Touches:
    """Unpickling this runs a command: what a hostile checkpoint carries."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("where", ["top", "inside"])
def test_a_hostile_checkpoint_runs_nothing(tmp_path: Path, where: str) -> None:
    marker = tmp_path / "PWNED"
    hostile = _Touches(marker)
    state = {"format": "swapd-checkpoint", "version": 1, "model": "lightweight",
             "model_options": {}, "model_state": {"w": torch.zeros(2)}, "iteration": 1}
    path = tmp_path / "model.pt"
    torch.save(hostile if where == "top" else {**state, "history": hostile}, path)
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(path)
    assert not marker.exists()
