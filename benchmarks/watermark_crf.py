"""How far a merge's own encode wears the watermark down, codec by codec and crf by crf: the
reason for ``swapd.config.MAX_CRF``.

    python benchmarks/watermark_crf.py --seeds 0 1 --out benchmarks/results/watermark_crf.json

Each clip (1 s of 1280x720, the robustness table's painted demo and scikit-image photo
content) is marked, encoded with the merger's own encoder options (``encoder_args``, preset
veryfast: the default) at each crf, and searched as ``swapd verify`` searches it. No attack
follows: this is what the merged file itself carries.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.watermark_robustness import clip_frames, cpu_model  # noqa: E402
from swapd.config import MAX_CRF  # noqa: E402
from swapd.media import ffmpeg_exe  # noqa: E402
from swapd.merger import watermark  # noqa: E402
from swapd.merger.provenance import verify_file  # noqa: E402
from swapd.merger.video import encoder_args  # noqa: E402

CRFS = {"h264": (28, 32, 35, 36, 40, 45, 51), "h265": (28, 32, 35, 36, 40, 51),
        "vp9": (50, 55, 58, 63)}


def scores(kinds: list[str], seeds: list[int]) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind in kinds:
            for seed in seeds:
                frames = [watermark.embed(f) for f in clip_frames(kind, seed)]
                raw = b"".join(f.tobytes() for f in frames)
                h, w = frames[0].shape[:2]
                for codec, crfs in CRFS.items():
                    for crf in crfs:
                        out = Path(tmp, f"{kind}{seed}_{codec}_{crf}.mp4")
                        subprocess.run([ffmpeg_exe(), "-y", "-v", "error", "-f", "rawvideo",
                                        "-pix_fmt", "bgr24", "-s", f"{w}x{h}", "-r", "25",
                                        "-i", "-", *encoder_args(codec, crf, "veryfast"),
                                        "-pix_fmt", "yuv420p", str(out)], input=raw, check=True)
                        found = verify_file(out).watermark
                        rows.append({"kind": kind, "seed": seed, "codec": codec, "crf": crf,
                                     "score": round(found.score, 2), "found": found.marked,
                                     "allowed": crf <= MAX_CRF[codec]})
                        print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kinds", nargs="+", default=["demo", "photo"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" /
                                             "watermark_crf.json"))
    args = parser.parse_args()
    rows = scores(args.kinds, args.seeds)
    lowest = {codec: min(r["score"] for r in rows if r["codec"] == codec and r["allowed"])
              for codec in CRFS}
    result = {"cpu": cpu_model(), "max_crf": MAX_CRF, "lowest_allowed_score": lowest,
              "threshold": watermark.Z_THRESHOLD, "rows": rows}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}, indent=2))


if __name__ == "__main__":
    main()
