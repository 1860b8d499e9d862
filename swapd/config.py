"""swapd.toml and job files: schemas, loading, and errors that name the file, the key and the fix.

Both are TOML, validated with pydantic. Any problem raises `ConfigError`, whose `problems` list
holds one `(key, message)` per fault, and whose text reads like

    jobs/alice_to_bob.toml: train.batch_sise: unknown key (expected one of: a, b, model, ...)
"""

from __future__ import annotations

import re
import tomllib
from datetime import datetime, timedelta
from datetime import time as dtime
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class ConfigError(ValueError):
    """A configuration or job file is wrong. `problems` holds (key, message) pairs."""

    def __init__(self, source: Path | str, problems: list[tuple[str, str]]) -> None:
        self.source = str(source)
        self.problems = problems
        lines = [f"{self.source}: {key}: {msg}" if key else f"{self.source}: {msg}"
                 for key, msg in problems]
        super().__init__("\n".join(lines))

    @property
    def first_key(self) -> str | None:
        return self.problems[0][0] if self.problems else None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- swapd.toml ------------------------------------------------------------------------------


class ServiceSection(_Strict):
    workspace: str = ""
    max_workers: int = Field(1, ge=1, le=16)
    poll_seconds: float = Field(1.0, gt=0, le=60)
    stop_timeout: float = Field(25.0, gt=0, le=300)
    log_level: Literal["debug", "info", "warning", "error"] = "info"


class DashboardSection(_Strict):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(8050, ge=0, le=65535)
    token: str = ""
    # How often an open page asks for news. 5 s, not 2: each ask costs the training the
    # browser's work too (benchmarks/dashboard_cost.py), and a snapshot or a save is minutes apart.
    refresh_seconds: float = Field(5.0, ge=1.0, le=300.0)


class IngestSection(_Strict):
    min_face_size: int = Field(64, ge=16)
    settle_seconds: float = Field(1.0, ge=0)
    landmark_detector: Literal["mtcnn", "dlib", "none"] = "mtcnn"


class MergeDefaults(_Strict):
    device: Literal["auto", "cpu", "cuda"] = "auto"
    c2pa_certificate: str | None = None  # PEM chain, signer first; None: swapd's local CA
    c2pa_private_key: str | None = None
    # An RFC 3161 time-stamp authority's URL: signatures carry its time-stamps; None: none
    c2pa_timestamp_url: str | None = None
    # PEM CA certificates: a C2PA manifest signed under one shows as valid on the dashboard
    c2pa_trust_anchors: str | None = None


class ServiceConfig(_Strict):
    service: ServiceSection = ServiceSection()
    dashboard: DashboardSection = DashboardSection()
    ingest: IngestSection = IngestSection()
    merge: MergeDefaults = MergeDefaults()


def default_config_text() -> str:
    """The commented default swapd.toml shipped inside the package."""
    return resources.files("swapd").joinpath("swapd.toml").read_text(encoding="utf-8")


def load_service_config(path: Path | None) -> ServiceConfig:
    """Read swapd.toml; None means the defaults."""
    if path is None:
        return ServiceConfig()
    data = _read_toml(path)
    return _validate(ServiceConfig, data, path)


# --- job files -------------------------------------------------------------------------------

_WINDOW = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")


def parse_window(text: str) -> tuple[dtime, dtime]:
    """'22:00-07:00' -> (22:00, 07:00). A window may cross midnight."""
    m = _WINDOW.match(text)
    if not m:
        raise ValueError(f"'{text}' is not a time window like '22:00-07:00'")
    h1, m1, h2, m2 = (int(g) for g in m.groups())
    if h1 > 23 or h2 > 23 or m1 > 59 or m2 > 59:
        raise ValueError(f"'{text}' has an hour above 23 or a minute above 59")
    return dtime(h1, m1), dtime(h2, m2)


def in_window(windows: list[str], now: datetime | None = None) -> bool:
    """True when `now` (local time) lies inside one of the windows; no windows = always."""
    if not windows:
        return True
    current = (now or datetime.now()).time()
    return any(_inside(current, *parse_window(w)) for w in windows)


def _inside(current: dtime, start: dtime, end: dtime) -> bool:
    if start == end:
        return True  # '00:00-00:00' = all day
    if start < end:
        return start <= current < end
    return current >= start or current < end  # crosses midnight


def next_window_change(windows: list[str], now: datetime | None = None) -> datetime | None:
    """The next moment after `now` at which `in_window` changes; None when it never does (no
    windows, or a window that covers the whole day)."""
    now = now or datetime.now()
    inside = in_window(windows, now)
    boundaries = sorted({t for w in windows for t in parse_window(w)})
    candidates = [datetime.combine(now.date() + timedelta(days=day), moment)
                  for day in (0, 1) for moment in boundaries]
    for moment in sorted(c for c in candidates if c > now):
        if in_window(windows, moment) != inside:
            return moment
    return None


class TrainSection(_Strict):
    a: str = Field(description="face set to replace (faceswap's A, DFL's dst)")
    b: str = Field(description="face set to put in (faceswap's B, DFL's src)")
    model: str = "lightweight"
    batch_size: int = Field(16, ge=1, le=1024)
    iterations: int = Field(100_000, ge=0)
    save_every: int = Field(250, ge=1)
    snapshot_every: int = Field(0, ge=0)
    snapshot_policy: Literal["all", "last", "thinned"] = "all"
    snapshot_keep: int = Field(10, ge=1)
    tracker: bool = Field(True, description="tracker data at each snapshot")
    tracker_faces: int = Field(0, ge=0, description="faces per set tracked (0 = every face)")
    start_from: str | None = Field(
        None, description="a checkpoint (.pt) of the same model whose weights a new model "
        "starts from (DeepFaceLab's pretrained model); unused once the job has its own")
    options: dict[str, Any] = Field(default_factory=dict)


class ScheduleSection(_Strict):
    windows: list[str] = Field(default_factory=list)
    priority: int = 0

    @field_validator("windows")
    @classmethod
    def _windows_parse(cls, value: list[str]) -> list[str]:
        for window in value:
            parse_window(window)
        return value


class ExportSection(_Strict):
    on: list[Literal["save", "snapshot", "done"]] = Field(
        default_factory=lambda: ["save", "done"])


_FRAME_RANGE = re.compile(r"^\s*(\d+)\s*-\s*(\d+)\s*$")


def parse_frame_ranges(texts: list[str] | tuple[str, ...]) -> tuple[tuple[int, int], ...]:
    """faceswap's frame ranges: ``["10-50", "90-100"]`` -> ``((10, 50), (90, 100))``,
    inclusive; ValueError names a bad one."""
    ranges = []
    for text in texts:
        match = _FRAME_RANGE.match(str(text))
        if match is None:
            raise ValueError(f"frame range {text!r} is not FIRST-LAST (e.g. '10-50')")
        first, last = int(match[1]), int(match[2])
        if last < first:
            raise ValueError(f"frame range {text!r} ends before it starts")
        ranges.append((first, last))
    return tuple(ranges)



# --- merge options: how a merge looks (issue 16) --------------------------------------------
# The `[merge]` keys a user sets per job, also `swapd merge` flags and MergeOptions fields
# (swapd/merger/merge.py), named as DeepFaceLab's merger and faceswap's convert name them.
# Percentages are of the face (faceswap's mask_blend: the radius of the mask's area).

ColorTransfer = Literal["none", "rct", "lct", "lct-m", "mkl", "mkl-m", "idt", "idt-m", "sot",
                        "sot-m", "hist-match", "avg-color", "manual-balance"]
MergeMode = Literal["overlay", "hist-match", "seamless", "seamless-hist-match", "raw-rgb",
                    "raw-predict"]
MaskMode = Literal["auto", "mean-face", "dst", "full", "learned-prd", "learned-dst",
                   "learned-prd*learned-dst", "learned-prd+learned-dst"]
SharpenMethod = Literal["none", "box", "gaussian", "unsharp_mask"]
_PERCENT = {"ge": -100.0, "le": 100.0}


# The crf each codec takes (x264 and x265 to 51, libvpx to 63)...
CODEC_MAX_CRF = {"h264": 51, "h265": 51, "vp9": 63}
# ...and the highest a merge encodes at: past it the encode itself wears the watermark down to
# a few points over its threshold (h264 and h265 at 40: 8.7 and 8.8 on a demo clip; vp9 at 63:
# 5.9, not found), and a copy's re-encode then erases it. Here the merged file alone still
# scores 13 or more (docs/benchmarks.md, "The highest crf"). A higher crf asked for is
# encoded at this one, with a warning.
MAX_CRF = {"h264": 35, "h265": 35, "vp9": 55}


class MergeLook(_Strict):
    """The options of a merge's look; every default keeps a merge looking right untuned."""

    color_transfer: ColorTransfer = "rct"
    mode: MergeMode = "overlay"
    hist_match_threshold: int = Field(255, ge=0, le=255)
    masked_hist_match: bool = True
    balance_colorspace: Literal["hsv", "lab", "ycrcb", "rgb"] = "hsv"
    balance_1: float = Field(0.0, **_PERCENT)
    balance_2: float = Field(0.0, **_PERCENT)
    balance_3: float = Field(0.0, **_PERCENT)
    balance_contrast: float = Field(0.0, **_PERCENT)
    balance_brightness: float = Field(0.0, **_PERCENT)
    mask: MaskMode = "auto"
    erosion: float = Field(0.0, **_PERCENT)
    erosion_top: float = Field(0.0, **_PERCENT)
    erosion_bottom: float = Field(0.0, **_PERCENT)
    erosion_left: float = Field(0.0, **_PERCENT)
    erosion_right: float = Field(0.0, **_PERCENT)
    blur: float = Field(0.0, ge=0.0, le=100.0)
    mask_smoothing: float = Field(0.3, ge=0.0, lt=1.0)
    box_smoothing: float = Field(0.5, ge=0.0, lt=1.0)
    sharpen: SharpenMethod = "none"
    sharpen_amount: float = Field(150.0, ge=0.0, le=500.0)
    sharpen_radius: float = Field(0.3, ge=0.1, le=5.0)
    sharpen_threshold: float = Field(5.0, ge=1.0, le=10.0)
    output_face_scale: int = Field(0, ge=-50, le=50)
    motion_blur_power: int = Field(0, ge=0, le=100)
    image_denoise_power: int = Field(0, ge=0, le=500)
    bicubic_degrade_power: int = Field(0, ge=0, le=100)
    color_degrade_power: int = Field(0, ge=0, le=100)
    max_upscale: float = Field(16.0, ge=0.0)


# --- end of the merge options ------------------------------------------------------------------


class MergeSection(MergeLook):
    footage: str
    output: str | None = None
    model: str | None = Field(None, description="an .onnx file; default: this job's newest export")
    wait_for: Literal["export", "done"] = "export"
    faces: Literal["all", "largest"] = "all"
    learned_mask: bool = Field(True, description="blend with the model's learned mask when it "
                               "has one (else the mean face's outline)")
    # --- Output (issue 16, writers) ---
    codec: Literal["h264", "h265", "vp9"] = Field("h264", description="video codec, in MP4")
    crf: int = Field(18, ge=0, le=max(CODEC_MAX_CRF.values()),
                     description="quality: 0 lossless .. 51 (h264, h265), 63 (vp9); encoded "
                     "at no more than 35 (h264, h265), 55 (vp9), where the watermark holds")
    preset: Literal["ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow",
                    "slower", "veryslow"] = "veryfast"
    image_format: Literal["png", "jpeg"] = Field("png", description="images and image "
                                                 "sequences")
    frame_ranges: list[str] = Field(default_factory=list, description="faceswap's: swap only "
                                    "in these, e.g. ['10-50', '90-100']; copy the other frames")
    remerge: Literal["never", "on_export", "on_done"] = Field(
        "never", description="merge footage again when a newer export appears (on_export) or "
        "when training is done (on_done), beside the old output")

    @field_validator("frame_ranges")
    @classmethod
    def _ranges_parse(cls, value: list[str]) -> list[str]:
        parse_frame_ranges(value)
        return value

    @model_validator(mode="after")
    def _crf_fits_codec(self) -> MergeSection:
        if self.crf > CODEC_MAX_CRF[self.codec]:
            raise ValueError(f"crf {self.crf} is above {CODEC_MAX_CRF[self.codec]}, the most "
                             f"{self.codec} takes")
        return self


class JobFile(_Strict):
    kind: Literal["train", "merge"] | None = None
    train: TrainSection | None = None
    schedule: ScheduleSection = ScheduleSection()
    export: ExportSection = ExportSection()
    merge: MergeSection | None = None

    @model_validator(mode="after")
    def _kind_matches(self) -> JobFile:
        kind = self.kind or ("train" if self.train else "merge" if self.merge else None)
        if kind is None:
            raise ValueError("a job needs a [train] or a [merge] section")
        if kind == "train" and self.train is None:
            raise ValueError("kind = 'train' needs a [train] section")
        if kind == "merge" and self.merge is None:
            raise ValueError("kind = 'merge' needs a [merge] section")
        if kind == "merge" and self.train is None and self.merge and not self.merge.model:
            raise ValueError("a merge-only job needs merge.model (an .onnx file)")
        object.__setattr__(self, "kind", kind)
        return self


def job_name(path: Path) -> str:
    """A job's name is its file's stem: jobs/alice_to_bob.toml -> alice_to_bob."""
    return path.stem


def load_job_file(path: Path, shown_as: str | None = None) -> JobFile:
    """Read and validate a job file. Model options are checked by `validate_job_options`."""
    data = _read_toml(path, shown_as)
    return _validate(JobFile, data, shown_as or path)


def _read_toml(path: Path, shown_as: str | None = None) -> dict[str, Any]:
    source = shown_as or str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(source, [("", f"cannot be read: {exc.strerror or exc}")]) from exc
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(source, [("", "is not UTF-8 text")]) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, [("", f"is not valid TOML: {exc}")]) from exc


def _validate(schema: type[BaseModel], data: dict[str, Any], source: Path | str) -> Any:
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(source, _explain(schema, exc)) from exc


def _explain(schema: type[BaseModel], exc: ValidationError) -> list[tuple[str, str]]:
    """Turn pydantic's errors into (dotted key, plain message) pairs a user can act on."""
    problems: list[tuple[str, str]] = []
    for err in exc.errors():
        loc = [str(p) for p in err["loc"] if not str(p).startswith("function-")]
        key = ".".join(loc)
        if err["type"] == "extra_forbidden":
            known = _known_keys(schema, loc[:-1])
            hint = f" (expected one of: {', '.join(known)})" if known else ""
            problems.append((key, f"unknown key{hint}"))
        elif err["type"] == "missing":
            problems.append((key, "is required but missing"))
        else:
            got = err.get("input")
            shown = f" (got {got!r})" if not isinstance(got, dict | list) else ""
            msg = err["msg"].removeprefix("Value error, ")
            problems.append((key, f"{msg}{shown}"))
    return problems


def _known_keys(schema: type[BaseModel], loc: list[str]) -> list[str]:
    model: Any = schema
    for part in loc:
        field = model.model_fields.get(part)
        if field is None:
            return []
        annotation = field.annotation
        candidates = getattr(annotation, "__args__", (annotation,))
        model = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)),
                     None)
        if model is None:
            return []
    return sorted(model.model_fields)
