"""The training loop: one :class:`Trainer` per model folder, driven step by step by a worker.

Each step takes a batch per side from the background loader, runs both sides through the
shared encoder and their own decoder, sums the two losses and takes one Adam step.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from swapd.fsutil import FolderLock
from swapd.trainer.augment import AugmentSettings
from swapd.trainer.backup import backup_info, keep_backup
from swapd.trainer.checkpoint import (
    CHECKPOINT_NAME,
    LOCK_NAME,
    CheckpointError,
    ModelBusyError,
    load_checkpoint,
    save_checkpoint,
)
from swapd.trainer.data import (
    BatchLoader,
    FaceSet,
    FaceSetError,
    FoundLandmarks,
    LandmarkSource,
    to_tensor_layout,
)
from swapd.trainer.distributed import BothSides, from_environment
from swapd.trainer.losses import FaceLoss, combine_losses
from swapd.trainer.models import SwapModel, build_model
from swapd.trainer.optimizers import (
    ADABELIEF_EPSILON,
    GradientClipper,
    build_optimizer,
    schedule_factor,
    use_session_options,
)
from swapd.trainer.options import (
    OptionsError,
    TrainerOptions,
    lr_schedule_end,
    lr_schedule_problem,
    validate_model_options,
)
from swapd.trainer.precision import MixedPrecision
from swapd.trainer.preview import (
    composite,
    make_grid,
    overlay_mask,
    to_uint8_nhwc,
    write_png,
)
from swapd.trainer.snapshots import Policy, Snapshot, prune_snapshots, take_snapshot
from swapd.trainer.tracker import TrackedFace, track
from swapd.trainer.true_face import TrueFace, true_face_problem

log = logging.getLogger(__name__)

# Trainer options that change what a loss value means (a backup's loss compares only if equal).
LOSS_SETTINGS = ("loss", "extra_losses", "penalized_mask_loss", "background_weight",
                 "eye_multiplier", "mouth_multiplier", "mask_type", "mask_dilation",
                 "coverage", "centering", "mask_loss_weight", "true_face_power")


class TrainingDivergedError(FloatingPointError):
    """Training went wrong at ``iteration`` in a way the last checkpoint undoes: see
    :meth:`Trainer.try_roll_back` (options on_nan, nan_lr_factor, nan_max_rollbacks)."""

    reason = "training diverged"  # each kind's, for messages and the rollback record

    def __init__(self, iteration: int, message: str) -> None:
        super().__init__(message)
        self.iteration = iteration

    def details(self) -> dict[str, float]:
        """What the rollback record keeps of the failure."""
        return {}


class NonFiniteLossError(TrainingDivergedError):
    """A step produced a NaN/inf loss or gradient; the weights were not updated."""

    reason = "non-finite loss"

    def __init__(self, iteration: int, loss_a: float, loss_b: float) -> None:
        super().__init__(iteration, f"non-finite loss at iteration {iteration} (loss_a={loss_a}, "
                         f"loss_b={loss_b}); weights left unchanged")
        self.loss_a = loss_a
        self.loss_b = loss_b

    def details(self) -> dict[str, float]:
        return {"loss_a": self.loss_a, "loss_b": self.loss_b}


# The collapse guard (option collapse_guard): the faces a model draws vary, inside the face
# mask, by this share of the faces' own spread or less: flat colour, a collapse whose loss stays
# finite (a saturated output stops learning). It counts only once the model drew faces (this
# share or more at a save), since an untrained model draws flat faces too.
FLAT_OUTPUT = 0.05
DRAWN_FACES = 0.3


class OutputCollapsedError(TrainingDivergedError):
    """At a save, the model's faces went flat after it drew faces: the save was refused, so
    the last checkpoint stays the one to roll back to, as after a non-finite loss."""

    reason = "flat output"

    def __init__(self, iteration: int, spread: float) -> None:
        super().__init__(iteration, f"the faces the model draws went flat at iteration "
                         f"{iteration} (their spread is {spread:.3f} of the faces'); not saved")
        self.spread = spread

    def details(self) -> dict[str, float]:
        return {"output_spread": self.spread}


@dataclass(frozen=True)
class SnapshotTaken:
    snapshot: Snapshot
    removed: list[int]  # iterations of older snapshots the policy pruned
    tracked: list[TrackedFace]  # the snapshot's tracker data


@dataclass(frozen=True)
class StepStats:
    """What one training step did."""

    iteration: int  # iterations completed, this step included
    loss_a: float
    loss_b: float
    seconds: float
    examples: int  # faces seen, both sides
    # The loss split into parts that add up to it (each loss function on the face, the eye
    # and mouth terms): see FaceLoss.breakdown.
    components_a: dict[str, float] = field(default_factory=dict)
    components_b: dict[str, float] = field(default_factory=dict)
    skipped: bool = False  # fp16: the gradients overflowed, the weights were left unchanged
    # true_face_power: its code discriminator's loss, not part of either side's (about log 2,
    # 0.69: it cannot tell A's codes from B's); None without the true face or on a skipped step.
    discriminator_loss: float | None = None

    @property
    def examples_per_second(self) -> float:
        return self.examples / self.seconds if self.seconds > 0 else 0.0


def _with_defaults(saved: object, current: dict[str, Any]) -> dict[str, Any] | None:
    """A backup's loss settings for the keys of ``current``, a key it predates at its default
    (so an older backup still compares); None if it has none."""
    if not isinstance(saved, dict):
        return None
    defaults = TrainerOptions().model_dump()
    return {key: saved.get(key, defaults.get(key)) for key in current}


def resolve_device(wanted: str) -> torch.device:
    """ "auto" -> CUDA when available else CPU; "cuda" without CUDA falls back to CPU."""
    if wanted in ("auto", "cuda") and torch.cuda.is_available():
        return torch.device("cuda")
    if wanted == "cuda":
        log.warning("device 'cuda' asked for but CUDA is not available; training on the CPU")
    return torch.device("cpu")


def configure_threads() -> int:
    """Set torch's CPU thread count for training.

    With ``OMP_WAIT_POLICY=PASSIVE`` in the environment before torch was imported, all cores;
    otherwise all cores but one, left to the batch loader and the daemon: OpenMP's default
    spin-waiting makes oversubscribed threads stall each other. Measured on 2 cores shared
    with other work (s/step, demo model): 1 thread 6.9, 2 spinning 10.3, 2 passive 3.0.
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    passive = os.environ.get("OMP_WAIT_POLICY", "").upper() == "PASSIVE"
    torch.set_num_threads(cores if passive else max(1, cores - 1))
    return torch.get_num_threads()


def _now() -> str:
    return datetime.now().astimezone().isoformat(timespec="seconds")


class Trainer:
    """Trains model ``model`` on faces_a/faces_b, keeping its checkpoint in ``model_dir``.

    If ``model_dir/model.pt`` exists the model resumes from it (same iteration, optimizer
    state); its model options must match ``model_options`` since they fix the architecture.
    Trainer options may change from session to session.
    """

    def __init__(
        self,
        model: str,
        model_options: dict[str, Any],
        trainer_options: TrainerOptions,
        faces_a: Path,
        faces_b: Path,
        model_dir: Path,
        batch_size: int = 16,
        landmarks: LandmarkSource | None = None,
        iterations_target: int = 0,
        start_from: Path | None = None,
    ) -> None:
        """``landmarks``: where faces whose files lack landmarks get them (default: the
        detector, see :class:`FoundLandmarks`). ``iterations_target``: the job's (0 = none),
        where a cosine learning-rate schedule ends unless ``lr_decay_iterations`` says.
        ``start_from``: a checkpoint of the same model whose weights a new model starts from
        (DeepFaceLab's pretrained model): iteration 0, a fresh optimizer. Unused once
        ``model_dir`` has its own checkpoint."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model_options = validate_model_options(model, model_options)
        problem = (lr_schedule_problem(trainer_options, iterations_target)
                   or true_face_problem(model, trainer_options.true_face_power,
                                        self.model_options))
        if problem:
            raise OptionsError(problem)
        self.lr_schedule_end = lr_schedule_end(trainer_options, iterations_target)
        self.model_name = model
        self.options = trainer_options
        self.model_dir = Path(model_dir)
        self.checkpoint_path = self.model_dir / CHECKPOINT_NAME
        self.batch_size = batch_size
        self.device = resolve_device(trainer_options.device)
        # Under torchrun: one process per GPU (or CPU process), see swapd.trainer.distributed.
        self.distributed = from_environment(self.device.type)
        if self.distributed is not None and self.device.type == "cuda":
            self.device = torch.device("cuda", self.distributed.local_rank)
            torch.cuda.set_device(self.device)
        self.is_main = self.distributed is None or self.distributed.is_main
        if self.device.type == "cpu":
            configure_threads()
        self.precision = MixedPrecision(trainer_options.mixed_precision, self.device)
        self._loss_fn = FaceLoss(
            combine_losses(trainer_options.loss, trainer_options.extra_losses),
            penalized_mask=trainer_options.penalized_mask_loss,
            background_weight=trainer_options.background_weight,
            eye_multiplier=trainer_options.eye_multiplier,
            mouth_multiplier=trainer_options.mouth_multiplier,
        )
        self._memory_format = (torch.channels_last if trainer_options.channels_last
                               else torch.contiguous_format)

        if self.is_main:  # another process's temp file may be a save in progress
            self._remove_stale_temp_files()
        state = load_checkpoint(self.checkpoint_path) if self.checkpoint_path.exists() else None
        if state is not None:
            self._check_same_model(state, self.checkpoint_path)
        start = None
        if state is None and start_from is not None:
            start = load_checkpoint(start_from)
            self._check_same_model(start, Path(start_from))
        elif start_from is not None:
            log.info("%s exists: resuming it (start_from %s is for a new model only)",
                     self.checkpoint_path, start_from)
        torch.manual_seed(trainer_options.seed)
        self.model: SwapModel = build_model(model, self.model_options).to(
            self.device, memory_format=self._memory_format
        )
        self._use_model_crop()
        self.optimizer = build_optimizer(
            trainer_options.optimizer, self.model.parameters(), trainer_options.learning_rate,
            (trainer_options.beta1, trainer_options.beta2), self._epsilon(),
            trainer_options.weight_decay, self.device)
        self.clipper = GradientClipper(trainer_options.clip_grad_norm, trainer_options.autoclip)
        self.true_face = (TrueFace(self.model, trainer_options.true_face_power,
                                   trainer_options.optimizer, trainer_options.learning_rate,
                                   (trainer_options.beta1, trainer_options.beta2),
                                   self._epsilon(), self.device)
                          if trainer_options.true_face_power else None)
        self.iteration = 0
        self.history: list[dict[str, Any]] = []
        self.lr_scale = 1.0  # lowered by each rollback after a non-finite loss
        self._loss_since_save: list[float] = []  # for the backup: the average between saves
        self.backup: dict[str, Any] | None = None  # the backup's iteration and average loss
        self.last_average_loss: float | None = None  # between the last two saves
        self.lr_override: float | None = None  # the learning-rate finder's, while it runs
        # The finder's rate and what it was found for, kept in the checkpoint.
        self.lr_found: dict[str, Any] | None = None
        self._saved_at = -1  # the iteration model.pt holds, when this session wrote it
        self.rollbacks: list[dict[str, Any]] = []
        self.drew_faces = False  # for the collapse guard: a save once found real faces drawn
        # The checkpoint this model's weights started from, if any (kept in every save).
        self.started_from: dict[str, Any] | None = None
        if state is not None:
            self._restore(state)
        elif start is not None:
            self._start_from(start, Path(start_from))  # type: ignore[arg-type]
        self._session = {
            "start": _now(),
            "end": None,
            "start_iteration": self.iteration,
            "iterations": 0,
            "batch_size": batch_size,
        }
        self.history.append(self._session)

        size = self.model_options.input_size  # type: ignore[attr-defined]
        self.input_size: int = size
        try:  # a loss that cannot work at this size (ms_ssim below 33 px) fails here, clearly
            blank = torch.zeros(1, self.model.image_channels, size, size)
            self._loss_fn.per_image(blank, blank, torch.zeros(1, 3, size, size))
        except ValueError as exc:
            raise OptionsError(f"loss {trainer_options.loss!r} with extra losses "
                               f"{trainer_options.extra_losses}: {exc}") from None
        self.set_a, self.set_b = (
            FaceSet(folder, size, self.options.coverage, mask_type=trainer_options.mask_type,
                    centering=self.options.centering,
                    mask_dilation=trainer_options.mask_dilation,
                    find_landmarks=landmarks or FoundLandmarks(),
                    uniform_yaw=trainer_options.uniform_yaw,
                    grayscale=self.model.image_channels == 1)
            for folder in (faces_a, faces_b)
        )
        for face_set in (self.set_a, self.set_b):
            if len(face_set) == 0:
                raise FaceSetError(face_set.folder, "no usable faces to train on")
        self._preview_a, self._preview_mask_a = self._pick_preview(self.set_a)
        self._preview_b, self._preview_mask_b = self._pick_preview(self.set_b)
        if start is not None and trainer_options.collapse_guard:
            # Weights that draw faces arm the collapse guard before this model's first save.
            self.drew_faces = self.output_spread() >= DRAWN_FACES
        self.loader = BatchLoader(
            self.set_a,
            self.set_b,
            batch_size,
            AugmentSettings(warp=trainer_options.warp,
                            warp_to_landmarks=trainer_options.warp_to_landmarks,
                            flip=trainer_options.flip,
                            rotation_deg=trainer_options.rotation, zoom=trainer_options.zoom,
                            shift=trainer_options.shift, colour=trainer_options.colour_jitter,
                            clahe=trainer_options.clahe,
                            clahe_max_grid=trainer_options.clahe_max_grid),
            seed=[trainer_options.seed, self.iteration],
            workers=self.loader_workers,
            shard=((0, 1) if self.distributed is None
                   else (self.distributed.rank, self.distributed.world_size)),
        )
        both = BothSides(self.model)
        self._both: nn.Module = (both if self.distributed is None else DistributedDataParallel(
            both, device_ids=[self.device.index] if self.device.type == "cuda" else None))
        # Last: held while this trainer lives, so no restore or second trainer changes the
        # model folder under it (by the first process of a distributed run).
        self._folder_lock = FolderLock(self.model_dir / LOCK_NAME)
        if self.is_main and not self._folder_lock.acquire():
            self.loader.close()
            raise ModelBusyError(self.model_dir, "another trainer is using this model folder")

    # -- construction helpers -------------------------------------------------------------

    def _remove_stale_temp_files(self) -> None:
        """Drop temp files a crash mid-save left behind (model.pt itself is always whole)."""
        if self.model_dir.is_dir():
            # model.pt's own, and those of copies into backup/, replaced/, snapshots/<n>/
            for pattern in (f".{CHECKPOINT_NAME}.*.tmp", f"*/.{CHECKPOINT_NAME}.*.tmp",
                            f"*/*/.{CHECKPOINT_NAME}.*.tmp", "*/.*.json.*.tmp",
                            "*/*/.*.json.*.tmp"):
                for stale in self.model_dir.glob(pattern):
                    stale.unlink(missing_ok=True)

    def _epsilon(self) -> float:
        options = self.options
        if options.optimizer == "adabelief" and "epsilon" not in options.model_fields_set:
            return ADABELIEF_EPSILON
        return options.epsilon

    def _use_model_crop(self) -> None:
        """A model that fixes its crop (SAEHD's face type) sets centering and coverage."""
        crop = self.model.crop()
        if crop is None:
            return
        centering, coverage = crop
        asked = self.options.model_fields_set & {"centering", "coverage"}
        if asked and (self.options.centering, self.options.coverage) != crop:
            log.warning("model %s fixes its crop (centering %s, coverage %.3f); the job's "
                        "%s is not used", self.model_name, centering, coverage,
                        " and ".join(sorted(asked)))
        self.options = self.options.model_copy(
            update={"centering": centering, "coverage": coverage})

    def _check_same_model(self, state: dict[str, Any], path: Path) -> None:
        """The checkpoint at ``path`` (this model's, or one to start from) holds this model:
        the same architecture and the same model options."""
        if state["model"] != self.model_name:
            raise OptionsError(
                f"{path}: holds a {state['model']!r} model, "
                f"the job asks for {self.model_name!r}"
            )
        wanted = self.model_options.model_dump()
        # Through the model's Options: a checkpoint from before an option existed has its
        # default (the architecture it was built with), not a difference.
        try:
            saved = validate_model_options(self.model_name, state["model_options"]).model_dump()
        except OptionsError as exc:
            raise CheckpointError(path, f"its model options no longer "
                                  f"validate ({exc})") from None
        if saved != wanted:
            diff = sorted(k for k in wanted if saved.get(k) != wanted[k])
            raise OptionsError(
                f"{path}: model options {', '.join(diff)} differ from the "
                f"saved model's ({state['model_options']}); they are fixed when a model is created"
            )

    def _load_weights(self, state: dict[str, Any]) -> None:
        """Model weights and (when the optimizer is the same kind) its state from a checkpoint;
        the iteration is set too."""
        saved_optimizer = state.get("trainer_options", {}).get("optimizer", "adam")
        try:
            self.model.load_state_dict(state["model_state"])
            if "optimizer_state" in state and saved_optimizer == self.options.optimizer:
                self.optimizer.load_state_dict(state["optimizer_state"])
            else:
                # Not saved (save_optimizer), or another optimizer: start its state afresh,
                # also when rolling back (the moments of the diverged run must not stay).
                self.optimizer.state.clear()
                if "optimizer_state" in state:
                    log.info("optimizer changed from %s to %s: starting its state afresh",
                             saved_optimizer, self.options.optimizer)
        except (RuntimeError, ValueError, KeyError) as exc:
            raise CheckpointError(self.checkpoint_path, f"does not fit the model ({exc})") from exc
        if self.true_face is not None:
            if isinstance(state.get("true_face"), dict):
                try:
                    self.true_face.load_state_dict(state["true_face"])
                except (RuntimeError, ValueError, KeyError) as exc:
                    raise CheckpointError(self.checkpoint_path, f"its true face discriminator "
                                          f"does not fit ({exc})") from exc
            else:  # saved before the true face was on: start it afresh (also on a rollback)
                self.true_face.reset()
        use_session_options(self.optimizer, self.options.learning_rate,
                            (self.options.beta1, self.options.beta2), self._epsilon(),
                            self.options.weight_decay)
        self.iteration = int(state["iteration"])

    def _start_from(self, state: dict[str, Any], path: Path) -> None:
        """A new model takes the weights of ``state`` (loaded from ``path``); nothing else:
        the iteration, optimizer, schedule and history are this model's own."""
        try:
            self.model.load_state_dict(state["model_state"])
        except (RuntimeError, ValueError, KeyError) as exc:
            raise CheckpointError(path, f"does not fit the model ({exc})") from exc
        note = state.get("pretrained")
        self.started_from = {
            "path": str(path.resolve()),
            "iteration": int(state["iteration"]),
            **({"pretrained": note} if isinstance(note, dict) else {}),
        }
        crop = state.get("trainer_options", {})
        mine = {"centering": self.options.centering, "coverage": self.options.coverage}
        theirs = {key: crop[key] for key in mine if key in crop}
        if theirs and theirs != {key: mine[key] for key in theirs}:
            log.warning("%s was trained on another crop (%s) than this model's (%s): it "
                        "starts from faces framed otherwise", path, theirs, mine)
        log.info("starting from the weights of %s", path)

    def _restore(self, state: dict[str, Any]) -> None:
        self._load_weights(state)
        started = state.get("started_from")
        self.started_from = started if isinstance(started, dict) else None
        self.drew_faces = bool(state.get("drew_faces", False))
        self.clipper.history.extend(state.get("autoclip_history", []))
        self.precision.load_state_dict(state.get("grad_scaler") or {})
        self.lr_scale = float(state.get("lr_scale", 1.0))
        self.rollbacks = list(state.get("rollbacks", []))
        found = state.get("lr_found")
        self.lr_found = found if isinstance(found, dict) else None
        # backup.json, written once the copy is in place, is the truth about the backup.
        self.backup = backup_info(self.model_dir)
        self.history = list(state.get("history", {}).get("sessions", []))
        rng = state.get("rng", {})
        if isinstance(rng.get("torch"), torch.Tensor):
            torch.set_rng_state(rng["torch"])

    @property
    def loader_workers(self) -> int:
        """Batch-building threads: the option's, or 1 on the CPU, up to 4 beside a GPU."""
        if self.options.loader_workers:
            return self.options.loader_workers
        if self.device.type == "cpu":
            return 1
        return max(1, min(4, (os.cpu_count() or 2) - 1))

    def _pick_preview(self, face_set: FaceSet) -> tuple[np.ndarray, np.ndarray]:
        """Fixed, unaugmented faces for the preview rows (seeded, spread over the set), and
        their face masks."""
        n = min(self.options.preview_faces, len(face_set))
        rng = np.random.default_rng(self.options.seed)
        idx = np.sort(rng.choice(len(face_set), size=n, replace=False))
        return face_set.faces[idx].copy(), face_set.masks[idx, ..., 0].copy()

    # -- training --------------------------------------------------------------------------

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        tensor = torch.from_numpy(array)
        if self.device.type == "cuda":
            tensor = tensor.pin_memory().to(self.device, non_blocking=True)
        return tensor.contiguous(memory_format=self._memory_format)

    def step(self) -> StepStats:
        """One optimisation step on a batch of each side."""
        start = time.perf_counter()
        for face_set in (self.set_a, self.set_b):
            if len(face_set) == 0:
                raise FaceSetError(face_set.folder, "no usable faces left to train on")
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        accumulate = self.options.accumulate
        la = lb = 0.0
        components_a: dict[str, float] = {}
        components_b: dict[str, float] = {}
        codes: list[tuple[torch.Tensor, torch.Tensor]] = []  # for the true face's step
        discriminator_loss = None
        for _ in range(accumulate):  # gradients add up over `accumulate` batches
            batch = self.loader.get()
            with self.precision.autocast():
                outputs = self._both(self._tensor(batch.input_a), self._tensor(batch.input_b),
                                     codes=self.true_face is not None)
            out_a, out_b, *codes_ab = outputs  # the codes: with the true face only
            per_a, parts_a = self._side_loss(out_a, batch.target_a, batch.mask_a,
                                             batch.mask_known_a)
            per_b, parts_b = self._side_loss(out_b, batch.target_b, batch.mask_b,
                                             batch.mask_known_b)
            if self.true_face is not None:  # DeepFaceLab adds it to src's (B's) loss
                code_a, code_b = codes_ab
                codes.append((code_a.detach(), code_b.detach()))
                term = self.true_face.generator_loss(code_b)
                per_b = per_b + term
                parts_b = {**parts_b, "true_face": term.detach()}
            loss_a, loss_b = per_a.mean(), per_b.mean()
            part_a, part_b = float(loss_a.detach()), float(loss_b.detach())
            for total, parts in ((components_a, parts_a), (components_b, parts_b)):
                # One device-to-host copy for all parts (each float() would sync a GPU).
                values = torch.stack(list(parts.values())).float().tolist()
                for name, value in zip(parts, values, strict=True):
                    total[name] = total.get(name, 0.0) + value / accumulate
            bad = not (math.isfinite(part_a) and math.isfinite(part_b))
            if self.distributed is not None:  # every process must stop together
                bad = self.distributed.any(bad, self.device)
            if bad:
                self.optimizer.zero_grad(set_to_none=True)
                raise NonFiniteLossError(self.iteration + 1, part_a, part_b)
            la, lb = la + part_a / accumulate, lb + part_b / accumulate
            self.precision.backward((loss_a + loss_b) / accumulate)
        self.precision.unscale(self.optimizer)
        params = [p for p in self.model.parameters() if p.grad is not None]
        norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params]))
        skipped = not torch.isfinite(norm)
        if skipped:
            # fp16: an overflow skips the step and lowers the scale, until no scale helps
            if not (self.precision.scaling and self.precision.skip_overflow(self.optimizer)):
                self.optimizer.zero_grad(set_to_none=True)
                raise NonFiniteLossError(self.iteration + 1, la, lb)
        else:
            if self.clipper.active:
                self.clipper(params, norm)
            lr = self.lr_override or self.scheduled_learning_rate()
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            self.precision.step(self.optimizer)
            if self.true_face is not None:  # after the model's step, as DeepFaceLab
                average = (None if self.distributed is None
                           else self.distributed.average_gradients)
                discriminator_loss = self.true_face.train_step(
                    torch.cat([a for a, _ in codes]), torch.cat([b for _, b in codes]), lr,
                    average)
        self.iteration += 1
        if self.distributed is not None:  # report the global batch's losses, as one process
            names_a, names_b = list(components_a), list(components_b)
            means = self.distributed.all_mean(
                [la, lb, *components_a.values(), *components_b.values()], self.device)
            la, lb = means[0], means[1]
            components_a = dict(zip(names_a, means[2:2 + len(names_a)], strict=True))
            components_b = dict(zip(names_b, means[2 + len(names_a):], strict=True))
            if discriminator_loss is not None:
                discriminator_loss = self.distributed.all_mean([discriminator_loss],
                                                               self.device)[0]
        self._loss_since_save.append((la + lb) / 2)
        self._session["iterations"] = self.iteration - self._session["start_iteration"]
        return StepStats(self.iteration, la, lb, time.perf_counter() - start,
                         2 * self.batch_size * accumulate, components_a, components_b, skipped,
                         discriminator_loss)

    def _side_loss(self, output: torch.Tensor, target: np.ndarray, masks: np.ndarray,
                   mask_known: np.ndarray) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One side's loss per face and its components: the face loss on the drawn face and,
        for a model that learns its mask, the mask's own loss against the landmark face mask
        (MSE, times ``mask_loss_weight``; component "mask") on faces whose mask was drawn from
        landmarks (a face without them has an all-face mask, which would teach a square)."""
        masks_t = self._tensor(masks)
        face, learned = self.model.split(output)
        per_image, parts = self._loss_fn.breakdown(face, self._tensor(target), masks_t)
        if learned is not None:
            mask_loss = (learned.float() - masks_t[:, 0:1]).square().mean(dim=(1, 2, 3))
            known = torch.from_numpy(mask_known).to(mask_loss.device)
            mask_loss = mask_loss * known * self.options.mask_loss_weight
            per_image = per_image + mask_loss
            parts = {**parts, "mask": mask_loss.mean().detach()}
        return per_image, parts

    def try_roll_back(self, error: TrainingDivergedError) -> dict[str, Any] | None:
        """After a non-finite loss (or a flat output, :class:`OutputCollapsedError`): reload
        the last checkpoint's weights and optimizer state, lower the learning rate by
        ``nan_lr_factor`` and return what was done (also kept in the checkpoint's
        ``rollbacks``, with the reason). None when the options say stop, this session has
        rolled back ``nan_max_rollbacks`` times, or there is no checkpoint yet."""
        session_rollbacks = [r for r in self.rollbacks
                             if r.get("session_start") == self._session["start"]]
        if (self.options.on_nan != "rollback" or not self.checkpoint_path.exists()
                or len(session_rollbacks) >= self.options.nan_max_rollbacks):
            return None
        self._load_weights(load_checkpoint(self.checkpoint_path))
        self._loss_since_save = []  # those iterations are undone
        self._session["iterations"] = self.iteration - self._session["start_iteration"]
        self.lr_scale *= self.options.nan_lr_factor
        record = {"time": _now(), "session_start": self._session["start"],
                  "failed_at": error.iteration, "back_to": self.iteration,
                  "learning_rate": self.scheduled_learning_rate(), "reason": error.reason,
                  **error.details()}
        self.rollbacks.append(record)
        log.warning("%s at iteration %d: rolled back to %d, learning rate now %.3g",
                    error.reason, error.iteration, self.iteration, record["learning_rate"])
        return record

    # -- saving, preview, export ---------------------------------------------------------

    def state(self, with_optimizer: bool = True) -> dict[str, Any]:
        """Everything :meth:`save` writes."""
        self._session["end"] = _now()
        rng: dict[str, Any] = {
            "torch": torch.get_rng_state(),
            "loader_seed": [self.options.seed, self.iteration],
        }
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        state = {
            "model": self.model_name,
            "model_options": self.model_options.model_dump(),
            "trainer_options": self.options.model_dump(),
            "model_state": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "iteration": self.iteration,
            "batch_size": self.batch_size,
            "rng": rng,
            "autoclip_history": list(self.clipper.history),
            "grad_scaler": self.precision.state_dict(),
            "lr_scale": self.lr_scale,
            "rollbacks": list(self.rollbacks),
            "lr_found": self.lr_found,
            "started_from": self.started_from,
            "drew_faces": self.drew_faces,
            "true_face": (self.true_face.state_dict(with_optimizer)
                          if self.true_face is not None else None),
            "history": {"sessions": [dict(s) for s in self.history]},
        }
        if with_optimizer:
            state["optimizer_state"] = self.optimizer.state_dict()
        return state

    def save(self, final: bool = False) -> Path:
        """Write the checkpoint atomically to ``model_dir/model.pt``. ``final``: the session's
        last save (stop, target reached), which keeps the optimizer's state under
        ``save_optimizer = "exit"``."""
        if not self.is_main:  # the first process writes for all
            self._loss_since_save = []
            return self.checkpoint_path
        if self.options.collapse_guard and self.distributed is None:
            self._check_not_collapsed()
        policy = self.options.save_optimizer
        with_optimizer = policy == "always" or (policy == "exit" and final)
        average = (sum(self._loss_since_save) / len(self._loss_since_save)
                   if self._loss_since_save else None)
        path = save_checkpoint(self.checkpoint_path, self.state(with_optimizer))
        self._loss_since_save = []
        self.last_average_loss, self._saved_at = average, self.iteration
        settings = self._loss_settings()
        comparable = (self.backup is not None
                      and _with_defaults(self.backup.get("loss_settings"), settings) == settings)
        if average is not None and (not comparable or average < self.backup["average_loss"]):
            info = {"iteration": self.iteration, "average_loss": average, "time": _now(),
                    "loss_settings": settings}
            keep_backup(path, info, supersede=self.backup is not None and not comparable)
            self.backup = info  # only once the copy and backup.json exist
        return path

    def output_spread(self) -> float:
        """How much the faces the model draws vary against the faces themselves: per preview
        face, the spread (standard deviation) of its reconstruction inside the face mask over
        the face's own there; the median per side, the lower side's. 0 is flat colour."""
        sides = []
        for faces, masks, side in ((self._preview_a, self._preview_mask_a, "a"),
                                   (self._preview_b, self._preview_mask_b, "b")):
            drawn = self.predict(faces, side)
            ratios = []
            for face, out, mask in zip(faces, drawn, masks, strict=True):
                inside = mask > 127 if (mask > 127).any() else np.ones(mask.shape, bool)
                own = float(face[inside].astype(np.float32).std())
                ratios.append(float(out[inside].astype(np.float32).std()) / max(own, 1.0))
            sides.append(float(np.median(ratios)))
        return min(sides)

    def _check_not_collapsed(self) -> None:
        """The collapse guard, before a save: :class:`OutputCollapsedError` if the model drew
        faces before and now draws flat colour."""
        spread = self.output_spread()
        if self.drew_faces and spread <= FLAT_OUTPUT:
            raise OutputCollapsedError(self.iteration, spread)
        self.drew_faces = self.drew_faces or spread >= DRAWN_FACES

    def scheduled_learning_rate(self) -> float:
        """The rate of the coming step: the options' rate after rollbacks, times the
        schedule's factor (warmup, cosine) at this iteration."""
        options = self.options
        return options.learning_rate * self.lr_scale * schedule_factor(
            self.iteration, options.warmup, options.lr_schedule, self.lr_schedule_end,
            options.lr_floor)

    def use_learning_rate(self, rate: float, record: dict[str, Any]) -> None:
        """Train at ``rate`` from now on (the learning-rate finder's); ``record`` (the rate and
        what it was found for) is kept in the checkpoint."""
        self.options.learning_rate = rate
        self.lr_found = record

    def _loss_settings(self) -> dict[str, Any]:
        """The options a loss value depends on: losses compare only when these agree (the
        mask's weight only for a model that learns one)."""
        return {key: getattr(self.options, key) for key in LOSS_SETTINGS
                if key != "mask_loss_weight" or self.model.learns_mask}

    def snapshot(self, policy: Policy = "all", keep: int = 10, tracker: bool = True,
                 tracker_faces: int = 0) -> SnapshotTaken:
        """Keep this iteration's checkpoint as a snapshot (saving first unless it is saved),
        with its tracker data (``tracker_faces`` per set, 0 = all; see
        :mod:`swapd.trainer.tracker`), then prune older snapshots by ``policy`` (see
        :mod:`swapd.trainer.snapshots`)."""
        path = self.checkpoint_path if self._saved_at == self.iteration else self.save()
        tracked: list[TrackedFace] = []

        def fill(folder: Path) -> None:  # before snapshot.json: a snapshot is whole or absent
            tracked.extend(track(self, (self.set_a, self.set_b), folder, tracker_faces))

        taken = take_snapshot(path, self.iteration,
                              {"time": _now(), "average_loss": self.last_average_loss},
                              fill if tracker else None)
        removed = prune_snapshots(self.model_dir, policy, keep, just_taken=self.iteration)
        return SnapshotTaken(taken, removed, tracked)

    def predict(self, faces: np.ndarray, side: str) -> np.ndarray:
        """Run uint8 NHWC model crops through the encoder and decoder ``side`` ("a" or "b"),
        in eval mode, without gradients; returns uint8 NHWC (the model's channels)."""
        return self._eval(faces, side)[0]

    def predict_with_mask(self, faces: np.ndarray, side: str
                          ) -> tuple[np.ndarray, np.ndarray | None]:
        """:meth:`predict`, and the learned mask (uint8 NHW, 255 = face) when the model
        learns one."""
        out, _, mask = self._eval(faces, side)
        return out, mask

    def evaluate(self, faces: np.ndarray, masks: np.ndarray, side: str
                 ) -> tuple[np.ndarray, np.ndarray]:
        """Reconstruct unaugmented faces through decoder ``side``: the uint8 outputs and each
        face's training loss against itself (masks: face, eyes, mouth, uint8 NHWC)."""
        out, loss, _ = self._eval(faces, side, masks)
        assert loss is not None
        return out, loss

    def _eval(self, faces: np.ndarray, side: str, masks: np.ndarray | None = None
              ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """(faces drawn, per-face face loss when ``masks`` are given, learned masks)."""
        was_training = self.model.training
        self.model.eval()
        loss = None
        try:
            with torch.no_grad():
                inputs = self._tensor(to_tensor_layout(faces))
                with self.precision.autocast():
                    out, learned = self.model.split(self.model(inputs, side))
                if masks is not None:  # in float32, as the training step computes it
                    loss = self._loss_fn.per_image(out.float(), inputs,
                                                   self._tensor(to_tensor_layout(masks)))
        finally:
            self.model.train(was_training)
        return (to_uint8_nhwc(out.float().cpu().numpy()),
                None if loss is None else loss.float().cpu().numpy(),
                None if learned is None else to_uint8_nhwc(learned.float().cpu().numpy())[..., 0])

    def preview(self) -> np.ndarray:
        """BGR uint8 grid: rows = preview faces; columns A, A>A, A>B, B, B>B, B>A."""
        return make_grid(self.preview_columns())

    def preview_columns(self) -> list[np.ndarray]:
        """The preview's six columns (A, A>A, A>B, B, B>B, B>A), each NHWC uint8 (BGR, or one
        channel for a grayscale model), on the fixed, unaugmented preview faces. The A and B
        columns tint what the penalized loss leaves out; a model that learns its mask has the
        faces it draws blended onto their sources by that mask, as the merger would."""
        rows = min(len(self._preview_a), len(self._preview_b))
        a, b = self._preview_a[:rows], self._preview_b[:rows]
        shown_a, shown_b = a, b
        if self.options.penalized_mask_loss:  # show what the loss counts: the mask's outside
            shown_a = overlay_mask(a, self._preview_mask_a[:rows])
            shown_b = overlay_mask(b, self._preview_mask_b[:rows])
        drawn = []
        for faces, side in ((a, "a"), (a, "b"), (b, "b"), (b, "a")):
            out, learned = self.predict_with_mask(faces, side)
            drawn.append(out if learned is None else composite(out, faces, learned))
        return [shown_a, drawn[0], drawn[1], shown_b, drawn[2], drawn[3]]

    def write_preview(self, path: Path) -> Path:
        """Write :meth:`preview` as a PNG, atomically; with ``timelapse`` also a copy in
        ``timelapse/<iteration>.png`` beside it (the same fixed faces at every save)."""
        grid = self.preview()
        if self.options.timelapse:
            write_png(path.parent / "timelapse" / f"{self.iteration:08d}.png", grid)
        return write_png(path, grid)

    # -- faces, lifetime -------------------------------------------------------------------

    def refresh_faces(self) -> tuple[int, int]:
        """Rescan both face folders; returns (added, removed) over both sets."""
        added_a, removed_a = self.set_a.refresh()
        added_b, removed_b = self.set_b.refresh()
        return added_a + added_b, removed_a + removed_b

    def close(self) -> None:
        """Stop the batch loader and free the model folder. The caller saves first if it
        wants to keep progress."""
        self.loader.close()
        self._folder_lock.release()

    def __enter__(self) -> Trainer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
