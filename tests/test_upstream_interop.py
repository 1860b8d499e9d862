"""swapd's files through faceswap's and DeepFaceLab's own code, when a checkout of it is given.

Set SWAPD_FACESWAP_SRC (deepfakes/faceswap) and/or SWAPD_DFL_SRC (iperov/DeepFaceLab) to a
source folder; without them these tests are skipped (nothing is ever fetched). They run the
tools' code in a child process (tests/upstream_check.py); docs/interop.md records a run at the
commits it names. The always-on tests re-derive the same checks (tests/test_faceswap_interop.py,
tests/test_fsa.py, tests/test_dfl_interop.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from swapd.extract.extract import extract
from swapd.faces.faceswap_png import read_faceswap_meta
from swapd.faces.validate import inspect_face_file
from tests.support import write_clip_frames

REPO = Path(__file__).resolve().parents[1]
FACESWAP = os.environ.get("SWAPD_FACESWAP_SRC")
DFL = os.environ.get("SWAPD_DFL_SRC")


def _run(source: str, *args: str) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([source, str(REPO)])}
    done = subprocess.run([sys.executable, str(REPO / "tests" / "upstream_check.py"), *args],
                          cwd=source, capture_output=True, text=True, timeout=600, env=env)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert done.returncode == 0 and lines, done.stderr[-3000:]
    return json.loads(lines[-1][len("RESULT "):])


@pytest.mark.skipif(not FACESWAP, reason="SWAPD_FACESWAP_SRC not set")
def test_faceswaps_own_code_takes_swapds_extraction(synthetic_clip: Path,
                                                    tmp_path: Path) -> None:
    faces = tmp_path / "faces"
    extract(synthetic_clip, faces, size=256)
    assert FACESWAP is not None
    found = _run(FACESWAP, "faceswap", str(faces), str(synthetic_clip))
    print(json.dumps(found, indent=1))
    assert found["faces"] == 50 and found["versions"] == [2.4]
    assert found["names"][0] == ["clip_000001_0.png", "clip_000001_0.png", "clip_000001.mp4"]
    assert found["worst_px"] < 1.0 and found["worst_levels"] < 3.0
    assert found["train_samples"] == 50
    assert found["fsa_version"] == 2.4 and found["fsa_frames"] == found["fsa_faces"] == 50
    assert found["fsa_first"] == "clip_000001.mp4" and found["fsa_has_thumbnails"]
    # the rewrite breaks a PNG whose other iTXt chunk precedes the image data (faceswap's
    # update_existing_metadata drops its length and type): hence swapd's after it
    assert found["chunk_before_idat_survives"] is False
    # faceswap rewrote a header with its own code: swapd's extras are still there
    meta = read_faceswap_meta(faces / found["rewritten"])
    assert meta is not None and meta.swapd is not None and meta.swapd["geometry"] == "faceswap"


@pytest.mark.skipif(not DFL, reason="SWAPD_DFL_SRC not set")
@pytest.mark.parametrize("face_type", ["whole_face", "full_face", "head"])
def test_deepfacelabs_own_code_takes_swapds_faces(synthetic_clip: Path, tmp_path: Path,
                                                  face_type: str) -> None:
    frames = tmp_path / "frames"
    write_clip_frames(synthetic_clip, frames, lambda i: f"{i + 1:05d}.png", 3)
    faces = tmp_path / "aligned"
    extract(frames, faces, size=256, face_format="dfl", face_type=face_type)
    assert DFL is not None
    result = _run(DFL, "dfl", str(faces))
    found = result["faces"]
    print(json.dumps(found, indent=1))
    assert len(found) == 3
    for face in found:
        assert face["has_data"] and face["face_type"] == face_type
        assert face["landmarks"] == [68, 2] and face["mat_error"] < 1e-3
        assert face["source_filename"] == face["file"].rsplit("_", 1)[0] + ".png"
    # the masks DeepFaceLab's own code saved (XSeg; drawn polygons) are what swapd trains with
    for name, source in zip(result["masked"], ("xseg", "polys"), strict=True):
        info = inspect_face_file(faces / name)
        assert info.mask_source == source and info.face_mask is not None
        half = info.face_mask.shape[1] // 2
        assert info.face_mask[:, : half - 2].mean() > 250
        assert info.face_mask[:, half + 2:].max() == 0


@pytest.mark.skipif(not FACESWAP, reason="SWAPD_FACESWAP_SRC not set")
@pytest.mark.parametrize(("name", "learn_mask"), [("original", True), ("lightweight", False)])
def test_faceswaps_own_model_imports(tmp_path: Path, name: str, learn_mask: bool) -> None:
    """faceswap's own plugin code builds and saves its model at full size (a child process:
    tests/upstream_model_check.py); swapd imports it and draws what Keras drew."""
    import numpy as np
    import torch

    from swapd.cli import main
    from swapd.trainer.checkpoint import load_checkpoint
    from swapd.trainer.models import build_model

    assert FACESWAP is not None
    folder = tmp_path / "faceswap_model"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([FACESWAP, str(REPO)]),
           "KERAS_BACKEND": "torch"}
    done = subprocess.run([sys.executable, str(REPO / "tests" / "upstream_model_check.py"),
                           name, "1" if learn_mask else "0", str(folder)], cwd=FACESWAP,
                          capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.split("RESULT ", 1)[1])
    print(json.dumps(found))
    out = tmp_path / "imported"
    assert main(["model", "import", str(folder), "--model-dir", str(out)]) == 0
    state = load_checkpoint(out / "model.pt")
    assert state["iteration"] == 42 and state["model_options"]["width"] == 1.0
    centering, coverage = found["crop"]  # what faceswap's own State wrote
    assert state["trainer_options"] == {"centering": centering, "coverage": coverage / 100}
    model = build_model(state["model"], state["model_options"])
    model.load_state_dict(state["model_state"])
    model.eval()
    assert sum(p.numel() for p in model.parameters()) == found["parameters"]
    x = np.load(folder / "input.npy")
    per_side = found["outputs"] // 2
    with torch.no_grad():
        for k, side in enumerate("ab"):
            got = model(torch.from_numpy(x.transpose(0, 3, 1, 2).copy()), side).numpy()
            want = np.concatenate([np.load(folder / f"output_{k * per_side + j}.npy")
                                   for j in range(per_side)], -1)
            assert np.abs(got.transpose(0, 2, 3, 1) - want).max() < 1e-4


@pytest.mark.skipif(not DFL, reason="SWAPD_DFL_SRC not set")
@pytest.mark.parametrize("archi", ["df", "df-ud", "df-t", "liae", "liae-ud", "liae-udt"])
def test_deepfacelabs_own_saehd_imports(tmp_path: Path, archi: str) -> None:
    """DeepFaceLab's own leras and DeepFakeArchi code (TensorFlow's few calls stood in by
    numpy: tests/upstream_dfl_model_check.py) builds, saves and runs SAEHD; swapd imports the
    folder and draws what it drew; the always-on fixture writes the same names and shapes."""
    import pickle

    import numpy as np
    import torch

    from swapd.cli import main
    from swapd.trainer.checkpoint import load_checkpoint
    from swapd.trainer.models import build_model
    from tests import dfl_saehd_reference as ref

    assert DFL is not None
    folder = tmp_path / "dfl_model"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([DFL, str(REPO)])}
    done = subprocess.run([sys.executable, str(REPO / "tests" / "upstream_dfl_model_check.py"),
                           archi, str(folder)], cwd=DFL, capture_output=True, text=True,
                          timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.split("RESULT ", 1)[1])
    assert found["std"] > 0.05  # it drew something, not a flat sigmoid
    for model, names in ref.shapes(archi, 64, 32, 16, 16, 16).items():
        saved = pickle.loads((folder / f"new_SAEHD_{model}.npy").read_bytes())  # its own file
        assert {k: v.shape for k, v in saved.items()} == names, model
    out = tmp_path / "imported"
    assert main(["model", "import", str(folder), "--model-dir", str(out)]) == 0
    state = load_checkpoint(out / "model.pt")
    assert state["iteration"] == 321
    model = build_model(state["model"], state["model_options"])
    model.load_state_dict(state["model_state"])
    model.eval()
    x = torch.from_numpy(np.load(folder / "input.npy").transpose(0, 3, 1, 2).copy())
    with torch.no_grad():
        for side, key in (("b", "src_src"), ("a", "dst_dst"), ("b", "src_dst")):
            got = model(x, side).numpy().transpose(0, 2, 3, 1)
            assert np.abs(got - np.load(folder / f"{key}.npy")).max() < 1e-4, key
