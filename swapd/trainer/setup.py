"""Setting a :class:`~swapd.trainer.loop.Trainer` up: where it runs (device, threads, torchrun's
process group), what a checkpoint must hold to be resumed or started from, the face sets, the
batch loader and the fixed preview faces.
"""

from __future__ import annotations

import logging
import os
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from swapd import threads
from swapd.faces.masks import MASK_CHANNELS
from swapd.trainer.augment import AugmentSettings
from swapd.trainer.augment_device import device_problem
from swapd.trainer.batches import BatchLoader
from swapd.trainer.checkpoint import CHECKPOINT_NAME, CheckpointError, load_checkpoint
from swapd.trainer.data import (
    FaceIndex,
    FaceSet,
    FaceSetError,
    FoundLandmarks,
    LandmarkFinder,
)
from swapd.trainer.distributed import Distributed, from_environment
from swapd.trainer.face_cache import capacity_for
from swapd.trainer.losses import FaceLoss, combine_losses
from swapd.trainer.models import SwapModel
from swapd.trainer.optimizers import ADABELIEF_EPSILON
from swapd.trainer.options import OptionsError, TrainerOptions, validate_model_options

log = logging.getLogger(__name__)


def now() -> str:
    """The local time, as sessions and rollbacks record it."""
    return datetime.now().astimezone().isoformat(timespec="seconds")


def resolve_device(wanted: str) -> torch.device:
    """ "auto" -> CUDA when available else CPU; "cuda" without CUDA falls back to CPU."""
    if wanted in ("auto", "cuda") and torch.cuda.is_available():
        return torch.device("cuda")
    if wanted == "cuda":
        log.warning("device 'cuda' asked for but CUDA is not available; training on the CPU")
    return torch.device("cpu")


def configure_threads() -> int:
    """Set torch's CPU thread count for training (swapd.threads: one a physical core within
    the affinity and a control group's CPU quota, with passive OpenMP waiting, which swapd's
    entry points set before torch loads)."""
    torch.set_num_threads(threads.training_threads())
    log.info("torch on the CPU: %d threads of %d cores, OpenMP wait policy %s",
             torch.get_num_threads(), threads.usable_cores(),
             os.environ.get(threads.WAIT_POLICY, "(unset: spinning)"))
    return torch.get_num_threads()


def place(wanted: str) -> tuple[torch.device, Distributed | None]:
    """The device to train on and, under torchrun, this process's place in the group (one
    process per GPU, or CPU process; see swapd.trainer.distributed)."""
    device = resolve_device(wanted)
    threads.keep_freed_memory()  # batches are built on the CPU whatever the device
    distributed = from_environment(device.type)
    if distributed is not None and device.type == "cuda":
        device = torch.device("cuda", distributed.local_rank)
        torch.cuda.set_device(device)
    if device.type == "cpu":
        configure_threads()
    return device, distributed


GPU_LOADER_WORKERS = 4


def loader_workers(options: TrainerOptions, device: torch.device) -> int:
    """Batch-building threads: the option's, or 1 on the CPU, 4 beside a GPU. A fixed
    count: each worker draws from its own random stream, so the batches a seed gives follow
    the count, which must not follow the host's CPUs (4 threads on a 2-core GPU host only
    take turns)."""
    if options.loader_workers:
        return options.loader_workers
    return 1 if device.type == "cpu" else GPU_LOADER_WORKERS


def face_loss(options: TrainerOptions, channels: int, size: int) -> FaceLoss:
    """The training loss the options ask for; a loss that cannot work at this size (ms_ssim
    below 33 px) fails here, clearly."""
    loss = FaceLoss(combine_losses(options.loss, options.extra_losses),
                    penalized_mask=options.penalized_mask_loss,
                    background_weight=options.background_weight,
                    eye_multiplier=options.eye_multiplier,
                    mouth_multiplier=options.mouth_multiplier)
    try:
        blank = torch.zeros(1, channels, size, size)
        loss.per_image(blank, blank, torch.zeros(1, 3, size, size))
    except ValueError as exc:
        raise OptionsError(f"loss {options.loss!r} with extra losses "
                           f"{options.extra_losses}: {exc}") from None
    return loss


def epsilon(options: TrainerOptions) -> float:
    """The optimizer's epsilon: AdaBelief's own default unless the options set one."""
    if options.optimizer == "adabelief" and "epsilon" not in options.model_fields_set:
        return ADABELIEF_EPSILON
    return options.epsilon


def with_model_crop(model: SwapModel, model_name: str, options: TrainerOptions
                    ) -> TrainerOptions:
    """The options, with centering and coverage those of a model that fixes its crop (SAEHD's
    face type)."""
    crop = model.crop()
    if crop is None:
        return options
    centering, coverage = crop
    asked = options.model_fields_set & {"centering", "coverage"}
    if asked and (options.centering, options.coverage) != crop:
        log.warning("model %s fixes its crop (centering %s, coverage %.3f); the job's "
                    "%s is not used", model_name, centering, coverage,
                    " and ".join(sorted(asked)))
    return options.model_copy(update={"centering": centering, "coverage": coverage})


def remove_stale_temp_files(model_dir: Path) -> None:
    """Drop temp files a crash mid-save left behind (model.pt itself is always whole)."""
    if model_dir.is_dir():
        # model.pt's own, and those of copies into backup/, replaced/, snapshots/<n>/
        for pattern in (f".{CHECKPOINT_NAME}.*.tmp", f"*/.{CHECKPOINT_NAME}.*.tmp",
                        f"*/*/.{CHECKPOINT_NAME}.*.tmp", "*/.*.json.*.tmp",
                        "*/*/.*.json.*.tmp"):
            for stale in model_dir.glob(pattern):
                stale.unlink(missing_ok=True)


def check_same_model(model_name: str, model_options: Any, state: dict[str, Any],
                     path: Path) -> None:
    """The checkpoint at ``path`` (this model's, or one to start from) holds this model: the
    same architecture and the same model options."""
    if state["model"] != model_name:
        raise OptionsError(f"{path}: holds a {state['model']!r} model, "
                           f"the job asks for {model_name!r}")
    wanted = model_options.model_dump()
    # Through the model's Options: a checkpoint from before an option existed has its
    # default (the architecture it was built with), not a difference.
    try:
        saved = validate_model_options(model_name, state["model_options"]).model_dump()
    except OptionsError as exc:
        raise CheckpointError(path, f"its model options no longer validate ({exc})") from None
    if saved != wanted:
        diff = sorted(k for k in wanted if saved.get(k) != wanted[k])
        raise OptionsError(
            f"{path}: model options {', '.join(diff)} differ from the "
            f"saved model's ({state['model_options']}); they are fixed when a model is created")


def checkpoints(checkpoint: Path, start_from: Path | None, model_name: str, model_options: Any
                ) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The model folder's ``checkpoint`` to resume (None: a new model) and, for a new model,
    the one at ``start_from`` it takes its weights from; each checked to hold this model."""
    if checkpoint.exists():
        saved = load_checkpoint(checkpoint)
        check_same_model(model_name, model_options, saved, checkpoint)
        if start_from is not None:
            log.info("%s exists: resuming it (start_from %s is for a new model only)",
                     checkpoint, start_from)
        return saved, None
    if start_from is None:
        return None, None
    start = load_checkpoint(start_from)
    check_same_model(model_name, model_options, start, Path(start_from))
    return None, start


def start_from(model: SwapModel, state: dict[str, Any], path: Path, options: TrainerOptions
               ) -> dict[str, Any]:
    """A new model takes the weights of ``state`` (loaded from ``path``), nothing else: the
    iteration, optimizer, schedule and history are its own. Returns its ``started_from``."""
    try:
        model.load_state_dict(state["model_state"])
    except (RuntimeError, ValueError, KeyError) as exc:
        raise CheckpointError(path, f"does not fit the model ({exc})") from exc
    note = state.get("pretrained")
    crop = state.get("trainer_options", {})
    mine = {"centering": options.centering, "coverage": options.coverage}
    theirs = {key: crop[key] for key in mine if key in crop}
    if theirs and theirs != {key: mine[key] for key in theirs}:
        log.warning("%s was trained on another crop (%s) than this model's (%s): it "
                    "starts from faces framed otherwise", path, theirs, mine)
    log.info("starting from the weights of %s", path)
    return {"path": str(path.resolve()), "iteration": int(state["iteration"]),
            **({"pretrained": note} if isinstance(note, dict) else {})}


def face_sets(folders: tuple[Path, Path], size: int, options: TrainerOptions, channels: int,
              index: FaceIndex | None, landmarks: LandmarkFinder | None,
              spill_dir: Path | None = None) -> tuple[FaceSet, FaceSet]:
    """Both sides' faces, cut as the model sees them; FaceSetError if a side has none.
    ``landmarks``: finds those a file lacks (default: one detector for both sides);
    ``spill_dir``: where a capped set keeps the compressed faces past its RAM (the model's
    folder: on the workspace's disk, where a temp folder may be RAM)."""
    find_landmarks = landmarks or FoundLandmarks()
    # Past this many faces a set keeps the rest compressed (face_cache_mib, per set half).
    capacity = capacity_for(options.face_cache_mib, size, channels, MASK_CHANNELS)
    sets = tuple(FaceSet(folder, size, options.coverage, mask_type=options.mask_type,
                         centering=options.centering, mask_dilation=options.mask_dilation,
                         find_landmarks=find_landmarks, uniform_yaw=options.uniform_yaw,
                         grayscale=channels == 1, index=index, capacity=capacity,
                         spill_dir=spill_dir)
                 for folder in folders)
    for face_set in sets:
        if len(face_set) == 0:
            raise FaceSetError(face_set.folder, "no usable faces to train on")
    return sets[0], sets[1]


def preview_rows(face_set: FaceSet, options: TrainerOptions) -> np.ndarray:
    """The faces of the preview rows (seeded, spread over the set), as indices."""
    n = min(options.preview_faces, len(face_set))
    rng = np.random.default_rng(options.seed)
    return np.sort(rng.choice(len(face_set), size=n, replace=False))


def pick_preview(face_set: FaceSet, options: TrainerOptions) -> tuple[np.ndarray, np.ndarray]:
    """Fixed, unaugmented faces for the preview rows, and their face masks."""
    faces, masks = face_set.take(preview_rows(face_set, options))
    return faces.copy(), masks[..., 0].copy()


def preview_mask_sources(face_set: FaceSet, options: TrainerOptions) -> list[str | None]:
    """What each preview row's face mask is (see :meth:`FaceSet.mask_sources`)."""
    sources = face_set.mask_sources()
    return [sources[i] for i in preview_rows(face_set, options)]


def augment_settings(options: TrainerOptions) -> AugmentSettings:
    """The augmentation the options ask for."""
    return AugmentSettings(warp=options.warp, warp_to_landmarks=options.warp_to_landmarks,
                           flip=options.flip, rotation_deg=options.rotation, zoom=options.zoom,
                           shift=options.shift, colour=options.colour_jitter,
                           clahe=options.clahe, clahe_max_grid=options.clahe_max_grid)


def augments_on_device(options: TrainerOptions, device: torch.device) -> bool:
    """Whether batches are augmented on the training device (``augment_device``): "auto"
    chooses it on a GPU, where the loader's per-face OpenCV calls are the limit, and the
    loader on the CPU, where the loader's threads run beside the step and the device path
    would run in it (docs/benchmarks.md, issue 19). Warp to landmarks, which only the loader
    has, keeps "auto" on the loader; "device" with it is an OptionsError."""
    problem = device_problem(augment_settings(options))
    if options.augment_device == "device":
        if problem:
            raise OptionsError(f"augment_device = 'device': {problem}; set augment_device "
                               f"= 'loader' or 'auto'")
        return True
    return options.augment_device == "auto" and device.type == "cuda" and problem is None


def batch_loader(sets: tuple[FaceSet, FaceSet], batch_size: int, options: TrainerOptions,
                 iteration: int, workers: int, distributed: Distributed | None,
                 device: torch.device | None = None, background: bool = False
                 ) -> BatchLoader:
    """The background loader of augmented batches, seeded by the seed and the iteration (a
    resumed model draws on from where it was). With ``device`` (augmenting there: see
    :func:`augments_on_device`) the loader gathers uint8 faces and :meth:`BatchLoader.get`
    augments them on it. ``background``: its threads at the lowest priority while they keep
    up, and OpenCV and the OpenBLAS libraries numpy, scipy and OpenCV bundle without pools
    of their own (training on the CPU, where they share the cores with torch's threads)."""
    settings = augment_settings(options)
    if background:  # its threads alone build the batches, beside torch's
        threads.opencv_in_calling_thread()
        threads.openblas_in_calling_thread()
    return BatchLoader(
        *sets, batch_size, settings, seed=[options.seed, iteration], workers=workers,
        shard=(0, 1) if distributed is None else (distributed.rank, distributed.world_size),
        device=device, background=background,
        # a load over one more than the cores: other programs are busy too
        busy_above=threads.logical_cores() + 1.0 if background else None)


def new_session(iteration: int, batch_size: int) -> dict[str, Any]:
    """The record of a training session starting at ``iteration`` (kept in the checkpoint)."""
    return {"start": now(), "end": None, "start_iteration": iteration, "iterations": 0,
            "batch_size": batch_size}
