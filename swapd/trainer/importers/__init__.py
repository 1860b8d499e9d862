"""`swapd model import`: a faceswap or DeepFaceLab model folder as a swapd checkpoint.

Each reader turns the other tool's files into (swapd model name, model options, state dict,
iteration, a note on where it came from) without running or unpickling anything of theirs
(faceswap: :mod:`.faceswap`, a Keras 3 ``.keras`` zip read as JSON and HDF5; DeepFaceLab:
:mod:`.dfl`, pickled ``.npy`` dicts read by swapd's restricted unpickler). :func:`import_model`
checks the weights fit the swapd model one for one, then writes the checkpoint into a new
folder. Every problem is a :class:`ModelImportError` naming the file; nothing is written
before all of it has been read and checked.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any, Literal

from swapd.trainer.importers.common import Imported, ModelImportError

Source = Literal["faceswap", "dfl"]
__all__ = ["Imported", "ModelImportError", "Source", "detect", "import_model", "read_model"]


def detect(source: Path) -> Source:
    """Which tool's model folder ``source`` is: a ``*.keras`` file is faceswap's, a
    ``*_data.dat`` or ``*_encoder.npy`` DeepFaceLab's."""
    if source.is_file():
        if source.suffix == ".keras":
            return "faceswap"
        if source.suffix in (".npy", ".dat"):
            return "dfl"
        raise ModelImportError(source, "not a faceswap .keras file or a DeepFaceLab model "
                                       "folder (give --from faceswap|dfl)")
    if not source.is_dir():
        raise ModelImportError(source, "no such file or folder")
    if any(source.glob("*.keras")):
        return "faceswap"
    if any(source.glob("*_data.dat")) or any(source.glob("*_encoder.npy")):
        return "dfl"
    raise ModelImportError(source, "neither a faceswap model folder (no *.keras) nor a "
                                   "DeepFaceLab one (no *_data.dat, *_encoder.npy)")


def read_model(source: Path, kind: Source | None = None, **choices: Any) -> Imported:
    """Read ``source`` (``kind``: detected when None) into swapd's model, checked: the
    model builds from its options and takes the state dict exactly."""
    kind = kind or detect(source)
    try:
        if kind == "faceswap":
            from swapd.trainer.importers.faceswap import read_faceswap

            imported = read_faceswap(source)
        else:
            from swapd.trainer.importers.dfl import read_dfl

            imported = read_dfl(source, **choices)
    except ModelImportError:
        raise
    except (KeyError, TypeError, AttributeError, IndexError, ValueError,
            RecursionError) as exc:
        # A file of the right kind whose contents are not laid out as the tool lays them
        # (a hand-edited config, a foreign dict): still one line naming it, never a traceback.
        raise ModelImportError(source, f"not laid out as {kind} saves a model "
                                       f"({type(exc).__name__}: {exc})") from None
    _check_fits(source, imported)
    return imported


def _check_fits(source: Path, imported: Imported) -> None:
    from swapd.trainer.models import build_model

    model = build_model(imported.model, imported.options)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(imported.state))
    extra = sorted(set(imported.state) - set(expected))
    if missing or extra:  # a mapping bug, not the user's file: say which
        raise ModelImportError(source, f"does not map onto swapd's {imported.model} "
                                       f"(missing {missing[:3]}, extra {extra[:3]})")
    for key, tensor in expected.items():
        if imported.state[key].shape != tensor.shape:
            raise ModelImportError(source, f"{key}: shape {tuple(imported.state[key].shape)}"
                                           f", swapd's {imported.model} has {tuple(tensor.shape)}")


def import_model(source: Path, model_dir: Path, kind: Source | None = None,
                 **choices: Any) -> tuple[Path, Imported]:
    """Write ``source`` as a swapd checkpoint ``model_dir/model.pt``; ``model_dir`` must not
    exist or be empty. The folder appears only when the checkpoint is whole (written in a
    temporary folder beside it, then renamed)."""
    from swapd.trainer.checkpoint import CHECKPOINT_NAME, save_checkpoint
    from swapd.trainer.state import TrainState

    if model_dir.exists() and (not model_dir.is_dir() or any(model_dir.iterdir())):
        raise ModelImportError(model_dir, "exists and is not an empty folder: import into a "
                                          "new one")
    imported = read_model(source, kind, **choices)
    state = TrainState(
        iteration=imported.iteration, model_state=imported.state, optimizer_state=None,
        optimizer_name="adam", true_face=None, autoclip_history=[], grad_scaler={}, rng={},
        lr_scale=1.0, rollbacks=[], lr_found=None, started_from=None, drew_faces=False,
        sessions=[], losses_since_save=[])
    header = {"model": imported.model, "model_options": imported.options,
              "imported_from": {"path": str(source.resolve()), **imported.source}}
    if imported.trainer:
        header["trainer_options"] = dict(imported.trainer)
    model_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{model_dir.name}.import-", dir=model_dir.parent))
    try:
        save_checkpoint(staging / CHECKPOINT_NAME, {**header, **state.to_dict()})
        if model_dir.exists():
            model_dir.rmdir()  # empty, checked above
        staging.rename(model_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return model_dir / CHECKPOINT_NAME, imported
