"""A synthetic test clip: one identity talking and turning, H.264 video with an AAC tone.

Frames are rendered by `swapd.demo.painter` and piped raw to ffmpeg, so every frame's true
landmarks and pose are known; `ClipTruth` keeps them (and saves them as JSON beside the clip).
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from swapd.demo.identity import Expression, Identity, Lighting
from swapd.demo.painter import make_background, render_face
from swapd.errors import FileProblem
from swapd.media import ffmpeg_exe

TONE_HZ = 440.0


class ClipWriteError(FileProblem, RuntimeError):
    """ffmpeg failed while encoding a synthetic clip."""


@dataclass
class ClipTruth:
    """Per-frame ground truth of a synthetic clip."""

    identity: str
    fps: float
    size: tuple[int, int]  # (width, height)
    seconds: float
    tone_hz: float
    landmarks: np.ndarray  # frames x 68 x 2, frame pixels
    poses: np.ndarray  # frames x 3: yaw, pitch, roll in degrees
    mouth_open: np.ndarray  # frames

    @property
    def frame_count(self) -> int:
        return int(self.landmarks.shape[0])

    def to_dict(self) -> dict:
        return {
            "identity": self.identity, "fps": self.fps, "size": list(self.size),
            "seconds": self.seconds, "tone_hz": self.tone_hz,
            "landmarks": np.round(self.landmarks, 3).tolist(),
            "poses": np.round(self.poses, 4).tolist(),
            "mouth_open": np.round(self.mouth_open, 4).tolist(),
        }

    def save(self, path: str | os.PathLike[str]) -> Path:
        target = Path(path)
        target.write_text(json.dumps(self.to_dict()), encoding="utf-8")
        return target

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ClipTruth:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        return cls(
            identity=data["identity"], fps=float(data["fps"]),
            size=(int(data["size"][0]), int(data["size"][1])), seconds=float(data["seconds"]),
            tone_hz=float(data["tone_hz"]),
            landmarks=np.asarray(data["landmarks"], dtype=np.float64).reshape(-1, 68, 2),
            poses=np.asarray(data["poses"], dtype=np.float64).reshape(-1, 3),
            mouth_open=np.asarray(data["mouth_open"], dtype=np.float64),
        )


def truth_path(clip_path: str | os.PathLike[str]) -> Path:
    """Where `write_clip` saves a clip's ground truth: `<clip>.truth.json`."""
    p = Path(clip_path)
    return p.with_name(p.name + ".truth.json")


def _motion(i: int, n: int, fps: float, size: tuple[int, int], rng: np.random.Generator,
            phases: np.ndarray) -> dict:
    """Smooth head motion at frame i: a turn of +-25 degrees, a nod, roll, talking, drift."""
    w, h = size
    t = i / fps
    span = max(1.0, n / fps)
    s = 2 * np.pi * t / span  # one full cycle over the clip
    yaw = 25.0 * np.sin(s + phases[0])
    pitch = 10.0 * np.sin(1.7 * s + phases[1])
    roll = 7.0 * np.sin(1.3 * s + phases[2])
    mouth = float(np.clip(np.sin(2 * np.pi * t * 1.6 + phases[3]), 0.0, None) ** 1.5 * 0.8)
    blink = 1.0 if (i % int(fps * 2.2)) in (0, 1) and i > 0 else 0.0
    centre = (w / 2 + 0.08 * w * np.sin(0.9 * s + phases[4]),
              0.56 * h + 0.04 * h * np.sin(1.4 * s + phases[5]))
    height = 0.55 * h * (1.0 + 0.12 * np.sin(0.8 * s + phases[6]))
    return {
        "pose": (float(yaw), float(pitch), float(roll)),
        "expression": Expression(mouth_open=mouth, smile=0.3 + 0.2 * np.sin(s), blink=blink),
        "centre": (float(centre[0]), float(centre[1])),
        "face_height_px": float(height),
    }


def write_clip(path: str | os.PathLike[str], identity: Identity, seconds: float = 5.0,
               size: tuple[int, int] = (640, 360), fps: float = 25, seed: int = 0,
               save_truth: bool = True) -> ClipTruth:
    """Render `identity` moving and encode an H.264 (yuv420p) mp4 with a 440 Hz AAC track.

    The file appears atomically at `path`; the ground truth is returned and, with
    `save_truth`, written to `truth_path(path)`.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    w, h = size
    if w % 2 or h % 2:
        raise ValueError(f"yuv420p needs an even frame size, got {w}x{h}")
    n = max(1, int(round(seconds * fps)))
    rng = np.random.default_rng(seed)
    phases = rng.uniform(0, 2 * np.pi, 7)
    background = make_background(size, seed)
    lighting = Lighting(direction=(float(rng.uniform(-0.6, 0.6)), -0.5, 0.7))

    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=target.suffix or ".mp4",
                                    dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    cmd = [
        ffmpeg_exe(), "-y", "-hide_banner", "-loglevel", "error",
        "-f", "rawvideo", "-pix_fmt", "bgr24", "-s", f"{w}x{h}", "-r", str(fps), "-i", "-",
        "-f", "lavfi", "-i", f"sine=frequency={TONE_HZ}:sample_rate=48000",
        "-map", "0:v:0", "-map", "1:a:0", "-t", f"{n / fps:.6f}",
        "-c:v", "libx264", "-preset", "veryfast", "-crf", "18", "-pix_fmt", "yuv420p",
        "-c:a", "aac", "-b:a", "96k", "-movflags", "+faststart", str(tmp),
    ]
    landmarks = np.zeros((n, 68, 2))
    poses = np.zeros((n, 3))
    mouth = np.zeros(n)
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=errors)
        assert proc.stdin is not None
        try:
            for i in range(n):
                view = _motion(i, n, fps, size, rng, phases)
                rendered = render_face(identity, frame_size=size, background=background,
                                       lighting=lighting, **view)
                landmarks[i] = rendered.landmarks
                poses[i] = rendered.pose
                mouth[i] = view["expression"].mouth_open
                proc.stdin.write(rendered.image.tobytes())
            proc.stdin.close()
            rc = proc.wait()
        except BrokenPipeError:
            rc = proc.wait()
        except BaseException:
            proc.kill()
            proc.wait()
            tmp.unlink(missing_ok=True)
            raise
        if rc != 0:
            errors.seek(0)
            detail = errors.read().decode("utf-8", "replace").strip().splitlines()
            tmp.unlink(missing_ok=True)
            raise ClipWriteError(target, f"ffmpeg exited with status {rc}: "
                                         f"{detail[-1] if detail else 'no message'}")
    os.replace(tmp, target)
    truth = ClipTruth(identity=identity.name, fps=float(fps), size=(w, h), seconds=n / fps,
                      tone_hz=TONE_HZ, landmarks=landmarks, poses=poses, mouth_open=mouth)
    if save_truth:
        truth.save(truth_path(target))
    return truth
