"""Does the keyframe pooling still earn its hypotheses? For the table's clips (seeds 0-19,
photo and demo), three attacks each (then CRF 28, tags stripped): the score of the decoded
frames alone (two poolings, whose threshold would be 8.3) against `swapd verify`'s (three
poolings with the keyframes, threshold 8.4). Writes
benchmarks/results/watermark_keyframes_flattened.json: {"kind|attack": [[two, three], ...]}.

    .venv/bin/python benchmarks/watermark_keyframes_probe.py
"""

import json
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

import watermark_robustness as wr  # noqa: E402

from swapd.merger import watermark  # noqa: E402
from swapd.merger.provenance import verify_file  # noqa: E402

out: dict = {}
with tempfile.TemporaryDirectory() as tmp:
    for seed in range(20):
        for kind in ("photo", "demo"):
            frames = wr.clip_frames(kind, seed)
            marked = wr._write_clip([watermark.embed(f) for f in frames], Path(tmp) / "m.mp4")
            for name in ("scale33", "crf28", "rotate2"):
                copy = wr._encode(marked, Path(tmp) / "a.mp4", wr.ATTACKS[name])
                cap, fr = cv2.VideoCapture(str(copy)), []
                while (r := cap.read())[0]:
                    fr.append(r[1])
                cap.release()
                two = watermark.detect(fr).score
                three = verify_file(copy).watermark.score
                out.setdefault(f"{kind}|{name}", []).append((round(two, 2), round(three, 2)))
        print(seed, flush=True)
(HERE / "results" / "watermark_keyframes_flattened.json").write_text(json.dumps(out))
for k, v in out.items():
    a = np.array(v)
    print(k, "two poolings: lowest", a[:, 0].min(), "misses at 8.3", int((a[:, 0] < 8.3).sum()),
          "| three: lowest", a[:, 1].min(), "misses at 8.4", int((a[:, 1] < 8.4).sum()))
