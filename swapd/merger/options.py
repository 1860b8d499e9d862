"""How to merge: :class:`MergeOptions`, every knob of a merge in one frozen record (the
detector, the look a job's ``[merge]`` section sets, the writer's), checked when made."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from swapd.config import CODEC_MAX_CRF, MAX_CRF, MergeLook
from swapd.merger.frame_ranges import FrameRanges
from swapd.merger.look import LOOK_KEYS, look_of
from swapd.merger.sequence import IMAGE_EXTENSIONS, ImageFormat
from swapd.merger.video import CODECS, X264_PRESETS


@dataclass(frozen=True)
class MergeOptions:
    """How to merge.  Detector options go to the detector plugin named by ``detector``."""

    detector: str = "mtcnn"
    # Each face is cut by the landmarks of this plugin, as `swapd faces extract` places them by
    # default, so the model sees the crop it trained on ("detector": the detector's own points).
    landmarks: str = "face_mesh"
    min_face_size: int = 40  # pixels
    score_threshold: float | None = None  # None: the detector plugin's default
    faces: Literal["all", "largest"] = "all"
    colour_match: bool = True
    # Share of the crop size the blend mask keeps inside the mean face's outline. 0.08, not
    # 0.04: on a turned head the far temple lies outside the face the model learned (its loss
    # counts the landmarks' hull only), and 0.04 let those untrained pixels show.
    mask_erode: float = 0.08
    mask_blur: float = 0.08
    # A model that learned its mask blends with it (it follows the face the model was trained
    # on, turned heads included), softened by these shares. Less erosion let the edge of the
    # learned mask (the B face's hairline above the brows, a far temple) show as a light
    # seam in the demo's merges (benchmarks/results/demo_merge_masks.png).
    learned_mask: bool = True
    learned_mask_erode: float = 0.05
    learned_mask_blur: float = 0.08
    redetect_every: int = 5  # video: full detection every n frames, tracking between (1 = off)
    batch_frames: int = 4  # frames whose faces go through the model in one batch
    device: str = "auto"  # "auto" | "cpu" | "cuda"
    # --- the look of a merge (issue 16): the job file's [merge] keys, `swapd merge` flags.
    # Names, values and defaults are swapd.config.MergeLook's (validated there); colour_match
    # = False above turns the colour transfer off whatever color_transfer says.
    color_transfer: str = "rct"
    mode: str = "overlay"
    hist_match_threshold: int = 255
    masked_hist_match: bool = True
    balance_colorspace: str = "hsv"
    balance_1: float = 0.0
    balance_2: float = 0.0
    balance_3: float = 0.0
    balance_contrast: float = 0.0
    balance_brightness: float = 0.0
    mask: str = "auto"
    erosion: float = 0.0
    erosion_top: float = 0.0
    erosion_bottom: float = 0.0
    erosion_left: float = 0.0
    erosion_right: float = 0.0
    blur: float = 0.0
    mask_smoothing: float = 0.3
    box_smoothing: float = 0.5
    sharpen: str = "none"
    sharpen_amount: float = 150.0
    sharpen_radius: float = 0.3
    sharpen_threshold: float = 5.0
    output_face_scale: int = 0
    motion_blur_power: int = 0
    image_denoise_power: int = 0
    bicubic_degrade_power: int = 0
    color_degrade_power: int = 0
    max_upscale: float = 16.0
    # --- end of the look

    # --- Output (issue 16, writers): codec, quality, still/sequence format, frame ranges ---
    codec: Literal["h264", "h265", "vp9"] = "h264"  # video, always in MP4
    crf: int = 18  # quality: 0 (lossless) .. 51 (h264, h265) or 63 (vp9); see encode_crf
    preset: str = "veryfast"  # x264/x265 preset; for vp9 mapped onto libvpx's -cpu-used
    image_format: ImageFormat = "png"  # stills and image sequences: "png" or "jpeg"
    frame_ranges: FrameRanges = ()  # faceswap's: swap only in these (inclusive), copy the rest
    pipeline: bool = True  # video: detect, infer and blend in threads (same frames as off)

    # The C2PA signing chain and key (PEM); None: swapd's local CA (made on first use).
    c2pa_certificate: str | None = None
    c2pa_private_key: str | None = None
    c2pa_timestamp_url: str | None = None  # an RFC 3161 time-stamp authority; None: none

    def __post_init__(self) -> None:
        if self.faces not in ("all", "largest"):
            raise ValueError(f"faces must be 'all' or 'largest', got {self.faces!r}")
        for name in ("batch_frames", "redetect_every", "min_face_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.codec not in CODECS:
            raise ValueError(f"codec must be one of {', '.join(CODECS)}, got {self.codec!r}")
        if not 0 <= self.crf <= CODEC_MAX_CRF[self.codec]:
            raise ValueError(f"crf must be in 0..{CODEC_MAX_CRF[self.codec]} for {self.codec}, "
                             f"got {self.crf}")
        if self.preset not in X264_PRESETS:
            raise ValueError(f"preset must be one of {', '.join(X264_PRESETS)}, "
                             f"got {self.preset!r}")
        if self.image_format not in IMAGE_EXTENSIONS:
            raise ValueError(f"image_format must be 'png' or 'jpeg', got {self.image_format!r}")
        for first, last in self.frame_ranges:
            if not 0 <= first <= last:
                raise ValueError(f"frame range {first}-{last} is not FIRST-LAST")

        self.look  # noqa: B018 (validates the look's options, naming the key)

    @property
    def encode_crf(self) -> int:
        """The crf a video is encoded at: ``crf``, or :data:`swapd.config.MAX_CRF` where that
        is lower (past it the encode wears the watermark away)."""
        return min(self.crf, MAX_CRF[self.codec])

    @property
    def look(self) -> MergeLook:
        """The look's options, validated (a ValueError names the key)."""
        return look_of(self)

    @classmethod
    def with_look(cls, look: MergeLook | dict[str, object], **others: object) -> MergeOptions:
        """Options with ``look``'s values (a MergeLook, or a job's [merge] section)."""
        values = dict(look) if isinstance(look, dict) else look.model_dump()
        return cls(**{k: v for k, v in values.items() if k in LOOK_KEYS}, **others)
