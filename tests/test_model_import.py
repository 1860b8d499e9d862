"""`swapd model import` of faceswap models: the swapd checkpoint draws what Keras draws from
faceswap's own graph (tests/faceswap_keras_model.py), within 1e-4, in torch and in the ONNX
export; it trains on; bad files are refused with one line, exit 2, nothing written."""

from __future__ import annotations

import json
import os
import pickle
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from swapd.cli import main
from swapd.trainer.checkpoint import load_checkpoint
from swapd.trainer.models import build_model
from tests.support import in_ci

TOLERANCE = 1e-4


def _keras():  # type: ignore[no-untyped-def]
    try:
        from tests import faceswap_keras_model
    except ImportError as exc:  # keras is in the test extra
        if in_ci():
            pytest.fail(f"keras is needed ({exc})")
        pytest.skip(f"keras is not installed ({exc})")
    return faceswap_keras_model


def _faceswap_folder(tmp_path: Path, name: str, width: float = 1 / 16, dense: int = 64,
                     **kwargs: bool) -> Path:
    """A faceswap model folder as faceswap saves it, its biases random (zeros would hide a
    bias laid out wrong)."""
    fixture = _keras()
    model = fixture.build(name, width, dense, **kwargs)
    rng = np.random.default_rng(3)
    for var in model.weights:
        if var.path.endswith("bias"):
            var.assign(rng.normal(0, 0.1, var.shape).astype("float32"))
    folder = tmp_path / "faceswap" / name
    fixture.save(model, folder, iterations=1234)
    return folder / f"{name}.keras"


def _faces(folder: Path) -> np.ndarray:
    """The face pictures of ``folder`` at 64 px, NHWC BGR in [0, 1]."""
    images = [cv2.resize(cv2.imread(str(p)), (64, 64), interpolation=cv2.INTER_AREA)
              for p in sorted(folder.glob("*.png"))[:6]]
    return np.stack(images).astype(np.float32) / 255


def _keras_outputs(keras_file: Path, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(A, B) as faceswap's model draws them from the saved file: face channels, then the
    mask's when it learns one (swapd's layout)."""
    import keras

    outs = keras.saving.load_model(keras_file, compile=False).predict([x, x], verbose=0)
    half = len(outs) // 2
    return np.concatenate(outs[:half], -1), np.concatenate(outs[half:], -1)


def _swapd_outputs(checkpoint: Path, x: np.ndarray, **override: str
                   ) -> tuple[np.ndarray, np.ndarray]:
    state = load_checkpoint(checkpoint)
    model = build_model(state["model"], {**state["model_options"], **override})
    model.load_state_dict(state["model_state"])
    model.eval()
    xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
    with torch.no_grad():
        return tuple(model(xt, side).numpy().transpose(0, 2, 3, 1)  # type: ignore[return-value]
                     for side in ("a", "b"))


@pytest.mark.parametrize(("name", "kwargs"), [
    ("original", {"learn_mask": True}),
    ("original", {"lowmem": True}),
    ("lightweight", {}),
])
def test_faceswap_model_draws_what_keras_draws(tmp_path: Path, faces: tuple[Path, Path],
                                               name: str, kwargs: dict[str, bool],
                                               capsys: pytest.CaptureFixture[str]) -> None:
    keras_file = _faceswap_folder(tmp_path, name, **kwargs)
    state_file = keras_file.with_name(f"{name}_state.json")
    faceswap_state = json.loads(state_file.read_text())
    faceswap_state["config"] = {"centering": "legacy", "coverage": 75.0, "loss": "ssim"}
    state_file.write_text(json.dumps(faceswap_state))
    out = tmp_path / "imported"
    assert main(["model", "import", str(keras_file.parent), "--model-dir", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"imported faceswap {name} at iteration 1234" in printed
    assert "conv_padding=same" in printed
    # faceswap's crop goes with it: the resume line and the export's crop.
    assert "--set centering=legacy --set coverage=0.75" in printed
    assert load_checkpoint(out / "model.pt")["trainer_options"] == {
        "centering": "legacy", "coverage": 0.75}
    # A state from before faceswap had these keys: its legacy defaults, as faceswap reads it.
    faceswap_state["config"] = {}
    state_file.write_text(json.dumps(faceswap_state))
    assert main(["model", "import", str(keras_file), "--model-dir", str(tmp_path / "old")]) == 0
    assert load_checkpoint(tmp_path / "old" / "model.pt")["trainer_options"] == {
        "centering": "legacy", "coverage": 0.625}
    capsys.readouterr()
    x = np.concatenate([_faces(faces[0]), _faces(faces[1])])
    want_a, want_b = _keras_outputs(keras_file, x)
    got_a, got_b = _swapd_outputs(out / "model.pt", x)
    assert want_a.shape == got_a.shape == (12, 64, 64, 4 if kwargs.get("learn_mask") else 3)
    assert np.abs(got_a - want_a).max() < TOLERANCE
    assert np.abs(got_b - want_b).max() < TOLERANCE
    assert np.abs(want_a - want_b).max() > 1e-2  # the two decoders differ: sides not swapped
    # The control: torch's symmetric padding samples another grid, which no weights fix.
    off_a, _ = _swapd_outputs(out / "model.pt", x, conv_padding="symmetric")
    assert np.abs(off_a - want_a).max() > 1e-3


def test_imported_model_exports_and_trains_on(tmp_path: Path, faces: tuple[Path, Path],
                                              capsys: pytest.CaptureFixture[str]) -> None:
    import onnxruntime as ort

    from swapd.exporter.checkpoint_export import export_checkpoint

    keras_file = _faceswap_folder(tmp_path, "lightweight")
    out = tmp_path / "imported"
    assert main(["model", "import", str(keras_file), "--model-dir", str(out),
                 "--from", "faceswap"]) == 0
    resume = capsys.readouterr().out.splitlines()[-1]
    x = _faces(faces[0])
    want_a, want_b = _keras_outputs(keras_file, x)
    report = export_checkpoint(out / "model.pt", tmp_path / "a_to_b.onnx")
    session = ort.InferenceSession(str(report.path), providers=["CPUExecutionProvider"])
    swapped = session.run(None, {"face": x.transpose(0, 3, 1, 2).copy()})[0]
    assert np.abs(swapped.transpose(0, 2, 3, 1) - want_b).max() < TOLERANCE  # A>B
    # Trains on from faceswap's iteration with the options the import printed.
    sets = [a.split("=", 1)[0] for a in resume.split() if "=" in a]
    assert "conv_padding" in sets and "width" in sets
    assert "centering=face" in resume and "coverage=1.0" in resume  # faceswap's crop
    argv = resume.split(": swapd ", 1)[1].split()
    argv = [a if a != "FACES_A" else str(faces[0]) for a in argv]
    argv = [a if a != "FACES_B" else str(faces[1]) for a in argv]
    assert main([*argv, "--iterations", "1236", "--batch-size", "4", "--set", "seed=1"]) == 0
    trained = load_checkpoint(out / "model.pt")
    assert trained["iteration"] == 1236
    assert trained["history"]["sessions"][-1]["start_iteration"] == 1234


class _Payload:
    """A pickle that runs os.system when unpickled by pickle.loads (or torch.load)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def _assert_refused(capsys: pytest.CaptureFixture[str], source: Path, out: Path,
                    problem: str, *extra: str) -> None:
    assert main(["model", "import", str(source), "--model-dir", str(out), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert str(source) in err and problem in err, err
    assert not out.exists()


def test_bad_faceswap_files_are_refused(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    keras_file = _faceswap_folder(tmp_path, "original")
    data = keras_file.read_bytes()
    out = tmp_path / "out" / "model"
    truncated = tmp_path / "truncated" / "original.keras"
    truncated.parent.mkdir()
    truncated.write_bytes(data[: len(data) * 2 // 3])
    _assert_refused(capsys, truncated, out, "truncated")
    # Weights of another bottleneck under this config: a kernel of the wrong shape.
    other = _faceswap_folder(tmp_path / "other", "original", dense=32)
    mixed = tmp_path / "mixed" / "original.keras"
    mixed.parent.mkdir()
    with zipfile.ZipFile(keras_file) as small, zipfile.ZipFile(other) as big, \
            zipfile.ZipFile(mixed, "w") as zf:
        zf.writestr("config.json", small.read("config.json"))
        zf.writestr("metadata.json", small.read("metadata.json"))
        zf.writestr("model.weights.h5", big.read("model.weights.h5"))
    _assert_refused(capsys, mixed, out, "(1024, 32) does not fit")
    # A layer swapd's models lack (faceswap's reflect padding or a normalization setting).
    odd = tmp_path / "odd" / "original.keras"
    odd.parent.mkdir()
    with zipfile.ZipFile(keras_file) as zin, zipfile.ZipFile(odd, "w") as zf:
        for item in zin.infolist():
            body = zin.read(item)
            if item.filename == "config.json":
                body = body.replace(b'"class_name": "LeakyReLU"',
                                    b'"class_name": "PReLU"', 1)
            zf.writestr(item, body)
    _assert_refused(capsys, odd, out, "PReLU")
    # A hostile optimizer.pt (a torch pickle faceswap injects into the zip) is never read.
    marker = tmp_path / "ran"
    armed = tmp_path / "armed" / "original.keras"
    armed.parent.mkdir()
    armed.write_bytes(data)
    with zipfile.ZipFile(armed, "a") as zf:
        zf.writestr("optimizer.pt", pickle.dumps(_Payload(marker)))
    assert main(["model", "import", str(armed), "--model-dir", str(tmp_path / "ok")]) == 0
    assert not marker.exists() and (tmp_path / "ok" / "model.pt").is_file()
    capsys.readouterr()
    # A config that is JSON but not laid out as Keras saves one.
    garbled = tmp_path / "garbled" / "original.keras"
    garbled.parent.mkdir()
    with zipfile.ZipFile(keras_file) as zin, zipfile.ZipFile(garbled, "w") as zf:
        for item in zin.infolist():
            body = zin.read(item)
            if item.filename == "config.json":
                body = body.replace(b'"keras_history": [', b'"keras_history": 5, "x": [', 1)
            zf.writestr(item, body)
    _assert_refused(capsys, garbled, out, "not laid out as faceswap")
    # Not a .keras zip at all.
    junk = tmp_path / "junk" / "original.keras"
    junk.parent.mkdir()
    junk.write_bytes(b"PK\x03\x04" + bytes(100))
    _assert_refused(capsys, junk, out, "not a .keras")
    # An existing model folder is never written into.
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "model.pt").write_bytes(b"mine")
    assert main(["model", "import", str(keras_file), "--model-dir", str(taken)]) == 2
    assert "not an empty folder" in capsys.readouterr().err
    assert (taken / "model.pt").read_bytes() == b"mine"
    assert not list(tmp_path.glob("out/.*"))  # no staging folder left behind
