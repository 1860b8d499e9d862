"""DeepFaceLab's pretraining, tried for the demo: a start of the demo's model from a pool.

    .venv/bin/python benchmarks/pretrain_pool.py --out /tmp/pool.pt \
        [--identities 96] [--faces-per-identity 40] [--iterations 6000] [--encoder-only]
    .venv/bin/python benchmarks/demo_benchmark.py --start-from /tmp/pool.pt

DeepFaceLab users rarely train from scratch: they start from a model pretrained on a faceset of
many people. This draws a pool of synthetic identities (none of them the demo's two people: no
photos, nothing downloaded), trains the demo job's model with the pool as both A and B, so that
the encoder and both decoders learn faces in general, and writes the weights only (half
precision, iteration 0, the crop, a note of how they were made) for ``start_from``.
``--encoder-only`` keeps the pretrained encoder and gives the decoders fresh (seeded) weights.

The result (docs/benchmarks.md, "Third round"): in the demo's ten minutes either start gives
sharper faces that keep too much of the source identity, so the demo starts from scratch.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Any

import swapd  # noqa: F401  (first: it sets OpenMP's wait policy before torch loads)

# isort: split

import torch

from swapd.demo.face_sets import write_face_set
from swapd.demo.identity import make_identity
from swapd.demo.workspace import DEMO_JOB_TOML
from swapd.trainer.checkpoint import load_checkpoint, save_checkpoint
from swapd.trainer.cli_train import run_training
from swapd.trainer.models import build_model
from swapd.trainer.options import validate_model_options

POOL_FIRST_SEED = 10_000  # far from the demo's people (seeds 101 and 202)


def demo_train_section() -> dict[str, Any]:
    """The demo job's [train] section: the pretrained model must be the very same model."""
    return tomllib.loads(DEMO_JOB_TOML.format(iterations=0))["train"]


def write_pool(folder: Path, identities: int, faces_per_identity: int) -> None:
    """One face set of ``identities`` synthetic people, ``faces_per_identity`` views each."""
    for seed in range(POOL_FIRST_SEED, POOL_FIRST_SEED + identities):
        write_face_set(folder, make_identity(seed), faces_per_identity, seed=seed)


def weights_only(state: dict[str, Any], note: dict[str, Any],
                 encoder_only: bool = False) -> dict[str, Any]:
    """A checkpoint to start from: the model's weights in half precision, iteration 0, and the
    crop they were trained on; ``encoder_only``: the decoders' weights freshly drawn."""
    weights = state["model_state"]
    if encoder_only:
        torch.manual_seed(0)
        fresh = build_model(state["model"], validate_model_options(
            state["model"], state["model_options"])).state_dict()
        weights = {name: tensor if name.startswith("encoder.") else fresh[name]
                   for name, tensor in weights.items()}
    return {
        "model": state["model"],
        "model_options": state["model_options"],
        "trainer_options": {key: state["trainer_options"][key]
                            for key in ("centering", "coverage")},
        "model_state": {name: (tensor.half() if tensor.is_floating_point() else tensor)
                        for name, tensor in weights.items()},
        "iteration": 0,
        "pretrained": note,
    }


def pretrain(out: Path, identities: int, faces_per_identity: int, iterations: int,
             encoder_only: bool = False, preview: Path | None = None) -> Path:
    """Pretrain the demo's model on a fresh pool and write its weights to ``out`` (and the
    last preview to ``preview``, to look at)."""
    job = demo_train_section()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="swapd-pretrain-") as tmp:
        pool, model_dir = Path(tmp) / "pool", Path(tmp) / "model"
        write_pool(pool, identities, faces_per_identity)
        run_training(job["model"], pool, pool, model_dir, job["options"], iterations,
                     job["batch_size"], save_every=max(1, min(500, iterations)), export=None)
        state = load_checkpoint(model_dir / "model.pt")
        note = {
            "what": "pretrained on synthetic faces drawn by swapd (no photos of people)",
            "identities": identities,
            "identity_seeds": [POOL_FIRST_SEED, POOL_FIRST_SEED + identities - 1],
            "faces_per_identity": faces_per_identity,
            "iterations": int(state["iteration"]),
            "encoder_only": encoder_only,
            "options": job["options"],
            "torch": str(torch.__version__),
            "minutes": round((time.monotonic() - started) / 60, 1),
        }
        save_checkpoint(out, weights_only(state, note, encoder_only))
        if preview is not None:
            shutil.copyfile(model_dir / "previews" / "latest.png", preview)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--identities", type=int, default=96)
    parser.add_argument("--faces-per-identity", type=int, default=40)
    parser.add_argument("--iterations", type=int, default=6000)
    parser.add_argument("--encoder-only", action="store_true")
    parser.add_argument("--preview", type=Path, help="keep the last preview here")
    args = parser.parse_args()
    pretrain(args.out, args.identities, args.faces_per_identity, args.iterations,
             args.encoder_only, args.preview)
    print(args.out)


if __name__ == "__main__":
    main()
