"""Trainer options, and routing a job's flat option table to trainer vs model options."""

from __future__ import annotations

import tomllib
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from swapd.trainer.models import UnknownModelError, model_options_class
from swapd.trainer.true_face import true_face_problem


class OptionsError(ValueError):
    """Options that do not validate; the message names each bad key and what was expected."""


class TrainerOptions(BaseModel):
    """How a model is trained (may change between sessions, unlike model options)."""

    model_config = ConfigDict(extra="forbid")

    loss: Literal["ssim", "ms_ssim", "mae", "mse", "logcosh", "gmsd", "ffl",
                  "pixel_gradient_diff"] = Field("ssim", description="the primary loss")
    extra_losses: dict[str, float] = Field(
        default_factory=lambda: {"mae": 1.0},
        description="up to 3 more losses and their weights, added to the primary "
        "(faceswap's loss_function_2..4), e.g. {mse = 1.0, ffl = 0.5}; {} for none",
    )
    optimizer: Literal["adam", "adamw", "adabelief", "rmsprop", "lion"] = "adam"
    learning_rate: float = Field(5e-5, gt=0, le=1)
    beta1: float = Field(0.5, ge=0, lt=1)
    beta2: float = Field(0.99, ge=0, lt=1)
    epsilon: float = Field(1e-7, gt=0)
    weight_decay: float = Field(0.0, ge=0, lt=1)
    warmup: int = Field(0, ge=0, description="iterations of linear learning-rate warmup")
    lr_schedule: Literal["constant", "cosine"] = Field(
        "constant", description="after the warmup: keep the rate, or lower it along half a "
        "cosine to lr_floor x learning_rate at lr_decay_iterations (nanoGPT's schedule)")
    lr_decay_iterations: int = Field(
        0, ge=0, description="the iteration where the cosine ends (0 = the job's iteration "
        "target); the rate stays at the floor after it. The curve runs from iteration 0: a "
        "target raised later stretches it, and the rate climbs back to that point's")
    lr_floor: float = Field(0.1, ge=0, le=1, description="the cosine's end, a share of "
                            "learning_rate")
    clip_grad_norm: float = Field(0.0, ge=0, description="clip the gradient norm (0 = off)")
    autoclip: bool = Field(False, description="clip to the 10th percentile of past norms")
    accumulate: int = Field(1, ge=1, le=64, description="batches per optimizer step")
    on_nan: Literal["rollback", "stop"] = Field(
        "rollback", description="after a non-finite loss: reload the last checkpoint with a "
        "lower learning rate and go on, or stop"
    )
    nan_lr_factor: float = Field(0.5, gt=0, lt=1, description="learning rate kept per rollback")
    nan_max_rollbacks: int = Field(5, ge=0, description="rollbacks per session before stopping")
    collapse_guard: bool = Field(
        True, description="at each save, refuse a model whose faces went flat (a collapse "
        "the loss does not show as NaN) once it drew faces, and treat it as a non-finite loss "
        "(on_nan); off under torchrun")
    true_face_power: float = Field(
        0.0, ge=0, le=1, description="DeepFaceLab's 'true face': a code discriminator "
        "learns to tell A's codes from B's and the encoder, at this weight, to make B's pass "
        "for A's, so each decoder meets in a swap the kind of code it was trained on (models "
        "drawing both sides from one code: original, lightweight, df). swapd's losses are "
        "about a tenth of DeepFaceLab's, so its typical 0.01 is about 0.001 here")
    coverage: float = Field(0.875, gt=0, le=1, description="centre share of the face side fed")
    centering: Literal["legacy", "face", "head"] = Field(
        "face", description="the crop the model learns (faces stored otherwise are re-cut)"
    )
    penalized_mask_loss: bool = Field(
        True, description="weigh the loss by the face mask drawn from the landmarks"
    )
    mask_type: Literal["extended", "components"] = Field(
        "extended", description="face hull: extended reaches above the brows"
    )
    mask_dilation: float = Field(
        0.0, ge=0, le=0.25, description="grow the face mask by this share of the crop side"
    )
    background_weight: float = Field(
        0.0, ge=0, le=1, description="weight of the area outside the face mask when penalized"
    )
    eye_multiplier: float = Field(3.0, ge=1, le=40, description="extra weight of the eyes")
    mouth_multiplier: float = Field(2.0, ge=1, le=40, description="extra weight of the mouth")
    warp: bool = True
    warp_to_landmarks: bool = Field(
        False, description="warp each input toward the landmarks of one of the 10 closest "
        "faces of the other side instead of a random grid (faceswap's warp_to_landmarks; "
        "faces without 68 landmarks keep the grid warp)")
    flip: bool = True
    rotation: float = Field(10.0, ge=0, le=45, description="random rotation, ± degrees")
    zoom: float = Field(0.05, ge=0, le=0.5, description="random zoom, ± share")
    shift: float = Field(0.05, ge=0, le=0.5, description="random shift, ± share of the side")
    colour_jitter: bool = Field(True, description="L*a*b* jitter of the input only")
    clahe: float = Field(0.5, ge=0, le=1, description="share of inputs given CLAHE (0 = off)")
    clahe_max_grid: int = Field(4, ge=1, le=16, description="CLAHE tiles per side, at most")
    lr_finder: Literal["off", "set", "graph_and_set", "graph_and_exit"] = Field(
        "off", description="search the learning rate before training (faceswap's modes): use "
        "it, also draw the graph (<model dir>/lr_finder/), or only draw the graph")
    lr_finder_strength: Literal["default", "aggressive", "extreme"] = Field(
        "default", description="the rate at the lowest loss divided by 10, 5 or 2.5")
    lr_finder_iterations: int = Field(1000, ge=10, le=100_000)
    save_optimizer: Literal["always", "exit", "never"] = Field(
        "always", description="keep the optimizer's state in the checkpoint at every save, "
        "only at the session's last save (faceswap's default: smaller, faster saves), or never "
        "(a resume then starts the optimizer afresh; the weights are always kept)"
    )
    uniform_yaw: bool = Field(
        False, description="draw faces by yaw band, each band equally often (DeepFaceLab's "
        "uniform_yaw): rare angles are seen as often as frontal ones")
    focus_weight: float = Field(
        3.0, ge=1.0, le=100.0, description="faces marked focus in the dashboard's snapshot "
        "tracker are drawn this many times as often as the others")
    preview_faces: int = Field(4, ge=1, le=64)
    preview_history: int = Field(100, ge=0, le=10_000, description="saves whose preview is "
                                 "kept in previews/history/ for the dashboard (the newest)")
    timelapse: bool = Field(False, description="keep every save's preview in "
                            "previews/timelapse/ (the same fixed faces each time)")
    seed: int = Field(0, ge=0)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    channels_last: bool = Field(True, description="NHWC memory layout: faster convolutions")
    loader_workers: int = Field(
        0, ge=0, le=32, description="threads building batches; 0 = auto: 1 on the CPU "
        "(reproducible order, and torch needs the cores), 4 beside a GPU (a seed's batches "
        "follow the count, so it does not follow the host's CPUs); on the CPU "
        "they run at the lowest priority while they keep up")
    augment_device: Literal["auto", "loader", "device"] = Field(
        "auto", description="where batches are augmented: in the batch loader's threads "
        "(OpenCV, per face), or on the training device (batched torch: the loader only gathers "
        "uint8 faces); auto: the device on a GPU, the loader on the CPU (measured faster "
        "there). warp_to_landmarks runs in the loader only")
    mixed_precision: Literal["auto", "off", "bf16", "fp16"] = Field(
        "auto", description="bf16: autocast on CUDA GPUs with bf16 and on CPUs with native "
        "bf16 (AVX512-BF16 or AMX-BF16; elsewhere float32 with a warning); fp16: autocast "
        "with a gradient scaler (CUDA, GPUs without bf16); off: float32; auto: bf16 where the "
        "device computes it (CUDA GPUs with bf16, CPUs with native bf16), else float32; "
        "true means bf16. Weights, checkpoints and exports stay float32")
    face_cache_mib: int = Field(
        0, ge=0, description="RAM for both sets' faces and masks, in MiB: three quarters "
        "for decoded ones (an LRU keeps the recently drawn), a quarter for the others "
        "PNG-compressed, those past it in a file on disk beside the model; a face outside "
        "the LRU is decoded again when drawn; 0 = auto: a quarter of the memory swapd may use "
        "(the machine's, or its control group's limit)")
    mask_loss_weight: float = Field(
        1.0, ge=0, le=100, description="weight of a learned mask's loss (MSE against the "
        "landmark face mask; models with learn_mask)")


    @field_validator("mixed_precision", mode="before")
    @classmethod
    def _precision_from_bool(cls, value: object) -> object:
        if isinstance(value, bool):  # the option was a switch for bf16 before fp16 came
            return "bf16" if value else "off"
        return value

    @field_validator("extra_losses")
    @classmethod
    def _known_extra_losses(cls, value: dict[str, float]) -> dict[str, float]:
        from swapd.trainer.losses import LOSSES, MAX_EXTRA_LOSSES

        unknown = sorted(set(value) - set(LOSSES))
        if unknown:
            raise ValueError(f"unknown loss {', '.join(unknown)}; known: {', '.join(LOSSES)}")
        if any(not 0 <= weight <= 100 for weight in value.values()):
            raise ValueError("weights must be between 0 and 100")
        if len([w for w in value.values() if w]) > MAX_EXTRA_LOSSES:
            raise ValueError(f"at most {MAX_EXTRA_LOSSES} extra losses")
        return value


def parse_assignments(items: list[str]) -> dict[str, Any]:
    """``key=value`` overrides (``--set``), values in TOML syntax (``width=0.5``,
    ``lowmem=true``); a bare word is a string. OptionsError for an item without ``=``."""
    options: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise OptionsError(f"--set: expected key=value, got {item!r}")
        try:
            options[key.strip()] = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            options[key.strip()] = value
    return options


def format_validation_error(error: ValidationError, what: str) -> str:
    """One line per bad key: ``key: problem (got value)``."""
    lines = []
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"]) or "(options)"
        extra = item["type"] == "extra_forbidden"
        problem = f"unknown option for {what}" if extra else item["msg"]
        lines.append(f"{key}: {problem} (got {item.get('input')!r})")
    return "\n".join(lines)


def validate_model_options(model: str, options: dict[str, Any]) -> BaseModel:
    """Validate ``options`` against model ``model``'s Options, raising :class:`OptionsError`."""
    try:
        cls = model_options_class(model)
    except UnknownModelError as exc:
        raise OptionsError(str(exc)) from None
    try:
        return cls.model_validate(options)
    except ValidationError as exc:
        raise OptionsError(format_validation_error(exc, f"model {model!r}")) from None


def lr_schedule_end(options: TrainerOptions, iterations_target: int) -> int:
    """The iteration where a cosine schedule ends: ``lr_decay_iterations``, else the job's
    target (0 = none)."""
    return options.lr_decay_iterations or iterations_target


def lr_schedule_problem(options: TrainerOptions, iterations_target: int) -> str | None:
    """Why the learning-rate schedule cannot run for a job of ``iterations_target``
    iterations (0 = no target), or None when it can."""
    if options.lr_schedule != "cosine":
        return None
    end = lr_schedule_end(options, iterations_target)
    if end == 0:
        return ("lr_schedule = 'cosine' needs an end: set lr_decay_iterations or the job's "
                "iterations")
    if end <= options.warmup:
        return (f"the cosine schedule ends at iteration {end}, within the warmup "
                f"({options.warmup}): expected an end past the warmup")
    return None


def retuned_options(options: TrainerOptions, changes: dict[str, Any], iterations_target: int
                    ) -> tuple[TrainerOptions, int]:
    """``options`` with ``changes`` (a key set to None goes back to its default), validated,
    and where the learning-rate schedule now ends for a job of ``iterations_target``; raises
    :class:`OptionsError` naming the bad key."""
    merged = options.model_dump()
    for key, value in changes.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    try:
        new = TrainerOptions.model_validate(merged)
    except ValidationError as exc:
        raise OptionsError(format_validation_error(exc, "the trainer")) from None
    problem = lr_schedule_problem(new, iterations_target)
    if problem:
        raise OptionsError(problem)
    return new, lr_schedule_end(new, iterations_target)


def split_options(model: str, options: dict[str, Any]) -> tuple[TrainerOptions, BaseModel]:
    """Split one flat options table into (trainer options, model options), both validated.

    Keys :class:`TrainerOptions` knows go there, every other key to the model's Options.
    An unknown key is reported with the keys the trainer and the model accept.
    """
    try:
        model_cls = model_options_class(model)
    except UnknownModelError as exc:
        raise OptionsError(str(exc)) from None
    trainer_keys = set(TrainerOptions.model_fields)
    trainer_raw = {k: v for k, v in options.items() if k in trainer_keys}
    model_raw = {k: v for k, v in options.items() if k not in trainer_keys}
    problems = []
    try:
        trainer = TrainerOptions.model_validate(trainer_raw)
    except ValidationError as exc:
        problems.append(format_validation_error(exc, "the trainer"))
    try:
        model_opts = model_cls.model_validate(model_raw)
    except ValidationError as exc:
        problems.append(format_validation_error(exc, f"model {model!r}"))
    if problems:
        unknown = any("unknown option" in p for p in problems)
        if unknown:
            problems.append(
                f"known options: trainer: {', '.join(sorted(trainer_keys))}; "
                f"model {model!r}: {', '.join(model_cls.model_fields)}"
            )
        raise OptionsError("\n".join(problems))
    problem = true_face_problem(model, trainer.true_face_power, model_opts)
    if problem:
        raise OptionsError(problem)
    return trainer, model_opts
