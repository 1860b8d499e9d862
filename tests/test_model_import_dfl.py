"""`swapd model import` of DeepFaceLab SAEHD folders: the swapd checkpoint draws what SAEHD's
own maths draws (tests/dfl_saehd_reference.py, re-derived from leras) within 1e-4; hostile,
truncated and misshapen files are refused with one line, exit 2, nothing run or written."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from swapd.cli import main
from swapd.trainer.checkpoint import load_checkpoint
from swapd.trainer.models import build_model
from tests import dfl_saehd_reference as ref
from tests.support import write_faces

TOLERANCE = 1e-4
SIZES = {"resolution": 64, "ae": 32, "e": 16, "dd": 16, "dm": 16}


def _dfl_folder(root: Path, archi: str, seed: int = 1, **sizes: int) -> tuple[Path, dict]:
    s = {**SIZES, **sizes}
    weights = ref.random_weights(
        ref.shapes(archi, s["resolution"], s["ae"], s["e"], s["dd"], s["dm"]), seed)
    options = ref.saehd_options(archi, s["resolution"], s["ae"], s["e"], s["dd"], s["dm"])
    return ref.save_folder(root / f"dfl_{archi}", weights, options, iteration=5000), weights


def _faces(folder: Path, size: int) -> np.ndarray:
    import cv2

    images = [cv2.resize(cv2.imread(str(p)), (size, size), interpolation=cv2.INTER_AREA)
              for p in sorted(folder.glob("*.png"))[:1]]
    return np.stack(images).astype(np.float32) / 255


@pytest.mark.parametrize("archi", [
    "df", "liae-ud", "liae-udt",
    # The numpy reference is slow: the other combinations of the letters run with -m slow.
    pytest.param("df-ud", marks=pytest.mark.slow), pytest.param("liae", marks=pytest.mark.slow),
    pytest.param("df-t", marks=pytest.mark.slow)])
def test_saehd_draws_what_deepfacelab_draws(tmp_path: Path, faces: tuple[Path, Path],
                                            archi: str,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    folder, weights = _dfl_folder(tmp_path, archi)
    out = tmp_path / "imported"
    assert main(["model", "import", str(folder), "--model-dir", str(out)]) == 0
    assert "imported deepfacelab saehd at iteration 5000" in capsys.readouterr().out
    state = load_checkpoint(out / "model.pt")
    assert state["model_options"]["archi"] == archi
    assert state["model_options"]["face_type"] == "wf"
    model = build_model(state["model"], state["model_options"])
    model.load_state_dict(state["model_state"])
    model.eval()
    x = np.concatenate([_faces(faces[0], 64), _faces(faces[1], 64)])
    want = ref.predict(weights, archi, 64, SIZES["ae"], x)
    xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
    with torch.no_grad():
        drawn = {side: model(xt, side).numpy().transpose(0, 2, 3, 1) for side in "ab"}
    # swapd's A is DFL's dst, B its src; the swap A>B is DFL's dst>src (here from the same
    # faces: the reference's src_dst decodes the same code as src_src for df, and the
    # inter_AB code doubled for liae, which is what side B draws).
    for side, key in (("b", "src_src"), ("a", "dst_dst"), ("b", "src_dst")):
        face, mask = want[key]
        expected = np.concatenate([face, mask], -1)
        assert drawn[side].shape == expected.shape
        assert np.abs(drawn[side] - expected).max() < TOLERANCE, (side, key)
    assert np.abs(drawn["a"] - drawn["b"]).max() > 1e-2  # the sides are not the same


def test_imported_saehd_exports_and_trains_on(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    import onnxruntime as ort

    from swapd.exporter.checkpoint_export import export_checkpoint

    folder, weights = _dfl_folder(tmp_path, "liae-ud")
    out = tmp_path / "imported"
    assert main(["model", "import", str(folder), "--model-dir", str(out), "--from",
                 "dfl"]) == 0
    resume = capsys.readouterr().out.splitlines()[-1]
    x = np.random.default_rng(5).random((1, 64, 64, 3)).astype(np.float32)
    face, mask = ref.predict(weights, "liae-ud", 64, SIZES["ae"], x)["src_dst"]
    report = export_checkpoint(out / "model.pt", tmp_path / "a_to_b.onnx")
    session = ort.InferenceSession(str(report.path), providers=["CPUExecutionProvider"])
    swapped, learned = session.run(None, {"face": x.transpose(0, 3, 1, 2).copy()})
    assert np.abs(swapped.transpose(0, 2, 3, 1) - face).max() < TOLERANCE
    assert np.abs(learned.transpose(0, 2, 3, 1) - mask).max() < TOLERANCE
    a, b = tmp_path / "faces" / "a", tmp_path / "faces" / "b"
    write_faces(a, "a", 6, seed=1)
    write_faces(b, "b", 6, seed=2)
    argv = resume.split(": swapd ", 1)[1].replace("FACES_A", str(a)) \
        .replace("FACES_B", str(b)).split()
    assert main([*argv, "--iterations", "5001", "--batch-size", "2"]) == 0
    assert load_checkpoint(out / "model.pt")["iteration"] == 5001


class _Payload:
    """A pickle that runs os.system when unpickled by pickle.loads."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def _refused(capsys: pytest.CaptureFixture[str], source: Path, out: Path, named: Path,
             problem: str) -> None:
    assert main(["model", "import", str(source), "--model-dir", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert str(named) in err and problem in err, err
    assert not out.exists()


def test_bad_deepfacelab_files_are_refused(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    folder, weights = _dfl_folder(tmp_path, "df")
    out = tmp_path / "out"
    decoder = folder / "new_SAEHD_decoder_src.npy"
    good = decoder.read_bytes()
    # A hostile pickle: refused before os.system is even looked up; nothing runs.
    marker = tmp_path / "ran"
    hostile = dict(weights["decoder_src"], evil=_Payload(marker))
    decoder.write_bytes(pickle.dumps(hostile, 4))
    _refused(capsys, folder, out, decoder, "refused global posix.system")
    assert not marker.exists()
    # Hostile options file too.
    data = folder / "new_SAEHD_data.dat"
    good_data = data.read_bytes()
    data.write_bytes(pickle.dumps({"iter": 1, "options": _Payload(marker)}))
    decoder.write_bytes(good)
    _refused(capsys, folder, out, data, "refused global")
    assert not marker.exists()
    data.write_bytes(good_data)
    # Truncated.
    decoder.write_bytes(good[: len(good) // 2])
    _refused(capsys, folder, out, decoder, "truncated")
    # Another model's weights under this name: the wrong shape.
    other, _ = _dfl_folder(tmp_path / "other", "df", dd=32)
    decoder.write_bytes((other / "new_SAEHD_decoder_src.npy").read_bytes())
    _refused(capsys, folder, out, decoder, "upscale0/conv1/weight:0 has the shape (3, 3, 32, 1024)")
    # Options that say another size than the weights.
    decoder.write_bytes(good)
    options = ref.saehd_options("df", 64, 32, 16, 16, 16)
    data.write_bytes(pickle.dumps({"iter": 1, "options": {**options, "ae_dims": 64}}))
    _refused(capsys, folder, out, data, "ae_dims is 64 but the weights have 32")
    # An archi swapd does not implement.
    data.write_bytes(pickle.dumps({"iter": 1, "options": {**options, "archi": "df-c"}}))
    _refused(capsys, folder, out, data, "not c")
    data.write_bytes(good_data)
    # A foreign dict under a weight file's name, and a file without its options.
    decoder.write_bytes(pickle.dumps({"down1": [1, 2, 3]}, 4))
    _refused(capsys, folder, out, decoder, "not a DeepFaceLab weight file")
    decoder.write_bytes(good)
    data.unlink()
    _refused(capsys, folder, out, data, "give --archi")
    assert main(["model", "import", str(folder), "--model-dir", str(tmp_path / "bare"),
                 "--archi", "df"]) == 0  # the sizes come from the weights
    assert load_checkpoint(tmp_path / "bare" / "model.pt")["model_options"]["d_dims"] == 16
    assert main(["model", "import", str(decoder), "--model-dir", str(tmp_path / "by_file"),
                 "--archi", "df"]) == 0  # one of the model's files names the model
    capsys.readouterr()
    data.write_bytes(good_data)
    # A weight file missing.
    (folder / "new_SAEHD_inter.npy").unlink()
    _refused(capsys, folder, out, folder / "new_SAEHD_inter.npy", "missing")
    # Neither tool's folder.
    empty = tmp_path / "empty"
    empty.mkdir()
    _refused(capsys, empty, out, empty, "neither a faceswap model folder")
    assert not list(tmp_path.glob(".out.import-*"))


@pytest.mark.slow
def test_saehd_at_deepfacelabs_defaults(tmp_path: Path) -> None:
    """liae-ud at 128 px, ae 256, e 64, d 64, mask 22 (82.4 M parameters): still within 1e-4
    (about two minutes: the reference is plain numpy)."""
    folder, weights = _dfl_folder(tmp_path, "liae-ud", resolution=128, ae=256, e=64, dd=64,
                                  dm=22)
    out = tmp_path / "imported"
    assert main(["model", "import", str(folder), "--model-dir", str(out)]) == 0
    state = load_checkpoint(out / "model.pt")
    model = build_model(state["model"], state["model_options"])
    model.load_state_dict(state["model_state"])
    model.eval()
    assert sum(p.numel() for p in model.parameters()) == 82_376_555
    x = np.random.default_rng(2).random((1, 128, 128, 3)).astype(np.float32)
    want = ref.predict(weights, "liae-ud", 128, 256, x)
    with torch.no_grad():
        got = model(torch.from_numpy(x.transpose(0, 3, 1, 2).copy()), "a").numpy()
    assert np.abs(got.transpose(0, 2, 3, 1) - np.concatenate(want["dst_dst"], -1)).max() \
        < TOLERANCE
