"""The demo workspace: two synthetic identities drawn by swapd, a train job, a short clip.

Everything here is made on the spot (no photos of real people, nothing downloaded). The job is
sized so that on a 2-core CPU the preview shows recognisable swaps within minutes, training then
finishes, exports ONNX, and the clip in footage/demo/ is merged into output/demo/.

As DeepFaceLab users do, the demo's model starts from a pretrained one: weights shipped in the
package (``swapd/pretrained/demo.pt``), trained on a pool of other synthetic people by
:mod:`swapd.demo_pretrain`. ``swapd demo --no-pretrained`` trains from random weights instead.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from swapd.workspace import Workspace

DEMO_JOB = "demo"
DEMO_FACES = 240  # per identity
# The shipped starting weights, and where the demo workspace keeps its copy.
PRETRAINED_IN_PACKAGE = Path(__file__).parent / "pretrained" / "demo.pt"
PRETRAINED_IN_WORKSPACE = "pretrained/demo.pt"

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
{start_from}

[train.options]
input_size = 64
width = 0.125
dense_dim = 128
loss = "ssim"
learning_rate = 0.001
coverage = 0.7              # a tighter crop than faceswap's 0.875: the face, less background
learn_mask = true           # a learned mask: better swaps per iteration, blends turned heads
clahe = 0.0                 # faceswap's 50 % CLAHE off: the demo was measured without it

[export]
on = ["save", "done"]

[merge]
footage = "footage/demo"
output = "output/demo"
wait_for = "done"           # merge once training reached its target
"""


def demo_job_toml(iterations: int, start_from: str | None) -> str:
    """The demo's job file; ``start_from``: the pretrained checkpoint, or None (from scratch)."""
    line = (f'start_from = "{start_from}"   # a pretrained model of other synthetic people'
            if start_from else "# start_from: none, the model starts from random weights")
    return DEMO_JOB_TOML.format(iterations=iterations, start_from=line)


def create_demo_workspace(ws: Workspace, fresh: bool = False, iterations: int = 900,
                          faces_per_set: int = DEMO_FACES, pretrained: bool = True) -> None:
    """Fill `ws` with the demo's faces, job and clip; keeps what exists unless `fresh`.
    ``pretrained``: a new job starts from the shipped pretrained model (if the package has it)."""
    from swapd.faces.clip import write_clip
    from swapd.faces.synthetic import DEMO_A, DEMO_B, write_face_set

    if fresh:
        for folder in (ws.faces, ws.jobs, ws.footage, ws.models, ws.output, ws.internal):
            shutil.rmtree(folder, ignore_errors=True)
        ws.resolve(PRETRAINED_IN_WORKSPACE).unlink(missing_ok=True)  # the user's others stay
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
        start_from = (PRETRAINED_IN_WORKSPACE if pretrained and PRETRAINED_IN_PACKAGE.is_file()
                      else None)
        job.write_text(demo_job_toml(iterations, start_from), encoding="utf-8")
    copy = ws.resolve(PRETRAINED_IN_WORKSPACE)
    names_copy = f'start_from = "{PRETRAINED_IN_WORKSPACE}"' in job.read_text(encoding="utf-8")
    if names_copy and not copy.exists() and PRETRAINED_IN_PACKAGE.is_file():
        # (also when a kept job names a copy that was deleted)
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(PRETRAINED_IN_PACKAGE, copy)
