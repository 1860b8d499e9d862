"""Build faceswap's own Original or Lightweight model with faceswap's own code, save it as
faceswap saves it, and record what it draws: the fixture `swapd model import` is checked
against in tests/test_upstream_interop.py.

Run in a child process with a faceswap checkout (SWAPD_FACESWAP_SRC, nothing is fetched)
first on the path and ``KERAS_BACKEND=torch``. faceswap's plugin is built by its own
``encoder``, ``decoder`` and ``build_model`` (``plugins/train/model/original.py``,
``lightweight.py``, with ``lib/model/nn_blocks.py`` and ``lib/model/layers.py``) on an
instance that skips ``ModelBase.__init__`` (which wants command-line arguments and a model
folder), with the attributes that ``__init__`` sets; inputs as ``_base/model.py``
``_get_inputs`` makes them; saved with ``model.save`` as ``_base/io.py`` ``_save_model`` does.
matplotlib (only its learning-rate finder's plots) is stubbed. Full size: faceswap's widths
are fixed in its code. Usage: ``upstream_model_check.py NAME LEARN_MASK OUT_DIR``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from unittest import mock

import numpy as np


def build(name: str, learn_mask: bool, out: Path) -> dict[str, object]:
    for stub in ("matplotlib", "matplotlib.pyplot"):
        sys.modules.setdefault(stub, mock.MagicMock())
    import keras
    from lib.model.nn_blocks import reset_naming
    from plugins.train.model.lightweight import Model as Lightweight
    from plugins.train.model.original import Model as Original

    plugin = {"original": Original, "lightweight": Lightweight}[name]

    class Bare(plugin):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:  # what Original.__init__ sets, without ModelBase's
            self.input_shape = (64, 64, 3)
            self.low_mem = False
            self.learn_mask = learn_mask
            self.encoder_dim = 512 if name == "lightweight" else 1024

        @property
        def model_name(self) -> str:
            return name

    reset_naming()
    inputs = [keras.layers.Input(shape=(64, 64, 3), name=f"face_in_{side}") for side in "ab"]
    model = Bare().build_model(inputs)
    rng = np.random.default_rng(7)
    for var in model.weights:  # faceswap starts biases at zero: make them count
        if var.path.endswith("bias"):
            var.assign(rng.normal(0, 0.05, var.shape).astype("float32"))
    out.mkdir(parents=True, exist_ok=True)
    model.save(out / f"{name}.keras")
    # faceswap's own state file (plugins/train/model/_base/state.py), 42 iterations in.
    from plugins.train.model._base.state import State

    state = State(str(out), name, no_logs=True)
    for _ in range(42):
        state.increment_iterations()
    state.save()
    x = rng.random((4, 64, 64, 3)).astype("float32")
    outputs = model.predict([x, x], verbose=0)
    np.save(out / "input.npy", x)
    for k, array in enumerate(outputs):
        np.save(out / f"output_{k}.npy", array)
    config = json.loads((out / f"{name}_state.json").read_text())["config"]
    return {"outputs": len(outputs), "parameters": int(model.count_params()),
            "crop": [config.get("centering"), config.get("coverage")],
            "layers": [layer.name for layer in model.layers]}


if __name__ == "__main__":
    found = build(sys.argv[1], sys.argv[2] == "1", Path(sys.argv[3]))
    print("RESULT " + json.dumps(found))
