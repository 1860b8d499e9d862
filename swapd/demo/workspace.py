"""The demo workspace: two synthetic identities drawn by swapd, a train job, a short clip.

Everything here is made on the spot (no photos of real people, nothing downloaded). The job is
sized so that on a 2-core CPU the preview shows recognisable swaps within minutes, training then
finishes, exports ONNX, and the clip in footage/demo/ is merged into output/demo/.
"""

from __future__ import annotations

import shutil

from swapd.workspace import Workspace

DEMO_JOB = "demo"
DEMO_FACES = 240  # per identity

DEMO_JOB_TOML = """\
# The demo job: swap the synthetic identity demo_a for demo_b.
# A tiny lightweight model (1/8 of faceswap's channels, 64 px) so a CPU shows swaps in minutes.

[train]
a = "faces/demo_a"          # the face to replace (faceswap's A, DFL's dst)
b = "faces/demo_b"          # the face to put in (faceswap's B, DFL's src)
model = "lightweight"
batch_size = 16
iterations = {iterations}
save_every = 100
snapshot_every = 150        # the snapshot tracker: every demo face's loss, output and swap

[train.options]
input_size = 64
width = 0.125
dense_dim = 128
loss = "ssim"
learning_rate = 0.001
coverage = 0.7              # a tighter crop than faceswap's 0.875: the face, less background
learn_mask = true           # a learned mask: better swaps per iteration, blends turned heads
true_face_power = 0.1       # DeepFaceLab's true face: B's codes made to pass for A's; swaps
                            # nearer the true ones in both directions (docs/benchmarks.md)
clahe = 0.0                 # faceswap's 50 % CLAHE off: the demo was measured without it

[export]
on = ["save", "done"]

[merge]
footage = "footage/demo"
output = "output/demo"
wait_for = "done"           # merge once training reached its target
"""


def create_demo_workspace(ws: Workspace, fresh: bool = False, iterations: int = 900,
                          faces_per_set: int = DEMO_FACES) -> None:
    """Fill `ws` with the demo's faces, job and clip; keeps what exists unless `fresh`."""
    from swapd.demo.clip import write_clip
    from swapd.demo.face_sets import write_face_set
    from swapd.demo.identity import DEMO_A, DEMO_B

    if fresh:
        for folder in (ws.faces, ws.jobs, ws.footage, ws.models, ws.output, ws.internal):
            shutil.rmtree(folder, ignore_errors=True)
        ws.create()
    for name, identity, seed in (("demo_a", DEMO_A, 1), ("demo_b", DEMO_B, 2)):
        folder = ws.face_set(name)
        if folder.is_dir() and any(folder.iterdir()):
            continue
        # Written aside, then moved in whole, so the service never sees half a set.
        staging = ws.cache / f"staging_{name}"
        shutil.rmtree(staging, ignore_errors=True)
        write_face_set(staging, identity, faces_per_set, seed=seed)
        folder.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(folder, ignore_errors=True)
        staging.rename(folder)
    footage = ws.footage / DEMO_JOB
    footage.mkdir(parents=True, exist_ok=True)
    clip = footage / "demo_clip.mp4"
    if not clip.exists():
        staging_clip = ws.cache / "demo_clip.mp4"
        write_clip(staging_clip, DEMO_A, seconds=5.0, size=(640, 360), fps=25, seed=3,
                   save_truth=False)
        staging_clip.replace(clip)
    job = ws.jobs / f"{DEMO_JOB}.toml"
    if not job.exists():
        job.write_text(DEMO_JOB_TOML.format(iterations=iterations), encoding="utf-8")
