"""How the demo's starting weights are made: DeepFaceLab's pretraining, on swapd's own faces.

DeepFaceLab users rarely train from scratch: they start from a model pretrained on a faceset
of many people, which already knows what a face is, and train it on their two people. The
demo does the same so that a 2-core CPU shows clear swaps within minutes. Its starting model
(``swapd/pretrained/demo.pt``, shipped in the package) is made by this module:

    .venv/bin/python -m swapd.demo_pretrain --out swapd/pretrained/demo.pt

It draws a pool of synthetic identities (none of them the demo's two people; no photos, nothing
downloaded), trains the demo job's model with the pool as both A and B, so that the encoder
and both decoders learn faces in general, and keeps the weights only (half precision, no
optimizer state, iteration 0 for whoever starts from it) with a note of how they were made.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Any

import torch

POOL_FIRST_SEED = 10_000  # far from the demo's people (seeds 101 and 202)


def demo_train_section() -> dict[str, Any]:
    """The demo job's [train] section: the pretrained model must be the very same model."""
    from swapd.demo import demo_job_toml

    return tomllib.loads(demo_job_toml(iterations=0, start_from=None))["train"]


def write_pool(folder: Path, identities: int, faces_per_identity: int,
               first_seed: int = POOL_FIRST_SEED) -> None:
    """One face set of ``identities`` synthetic people, ``faces_per_identity`` views each."""
    from swapd.faces.synthetic import make_identity, write_face_set

    for seed in range(first_seed, first_seed + identities):
        write_face_set(folder, make_identity(seed), faces_per_identity, seed=seed)


def weights_only(state: dict[str, Any], note: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint to start from: the model's weights in half precision, iteration 0, and the
    crop they were trained on (a model starting from them warns if its crop differs)."""
    crop = {key: state["trainer_options"][key] for key in ("centering", "coverage")}
    return {
        "model": state["model"],
        "model_options": state["model_options"],
        "trainer_options": crop,
        "model_state": {name: (tensor.half() if tensor.is_floating_point() else tensor)
                        for name, tensor in state["model_state"].items()},
        "iteration": 0,
        "pretrained": note,
    }


def pretrain(out: Path, identities: int, faces_per_identity: int, iterations: int,
             show_progress: bool = True, preview: Path | None = None) -> Path:
    """Pretrain the demo's model on a fresh pool and write its weights to ``out`` (and the
    last preview to ``preview``, to look at)."""
    from swapd.trainer.checkpoint import load_checkpoint, save_checkpoint
    from swapd.trainer.cli_train import run_training

    job = demo_train_section()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="swapd-pretrain-") as tmp:
        pool, model_dir = Path(tmp) / "pool", Path(tmp) / "model"
        write_pool(pool, identities, faces_per_identity)
        run_training(job["model"], pool, pool, model_dir, job["options"], iterations,
                     job["batch_size"], save_every=max(1, min(500, iterations)), export=False,
                     show_progress=show_progress)
        state = load_checkpoint(model_dir / "model.pt")
        note = {
            "what": "pretrained on synthetic faces drawn by swapd (no photos of people)",
            "identities": identities,
            "identity_seeds": [POOL_FIRST_SEED, POOL_FIRST_SEED + identities - 1],
            "faces_per_identity": faces_per_identity,
            "iterations": int(state["iteration"]),
            "batch_size": job["batch_size"],
            "options": job["options"],
            "torch": str(torch.__version__),
            "minutes": round((time.monotonic() - started) / 60, 1),
            "made_by": "python -m swapd.demo_pretrain",
        }
        out.parent.mkdir(parents=True, exist_ok=True)
        save_checkpoint(out, weights_only(state, note))
        if preview is not None:
            preview.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(model_dir / "previews" / "latest.png", preview)
        shutil.rmtree(pool, ignore_errors=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--identities", type=int, default=96)
    parser.add_argument("--faces-per-identity", type=int, default=40)
    parser.add_argument("--iterations", type=int, default=6000)
    parser.add_argument("--preview", type=Path, help="keep the last preview here")
    args = parser.parse_args(argv)
    pretrain(args.out, args.identities, args.faces_per_identity, args.iterations,
             preview=args.preview)
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
