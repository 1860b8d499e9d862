"""swapd train: train a model without the service, like faceswap's train."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from swapd.cli.common import EXIT_USAGE, Subparsers, positive_int


def cmd_train(args: argparse.Namespace) -> int:
    from swapd.exporter.checkpoint_export import export_trainer
    from swapd.trainer.checkpoint import CHECKPOINT_NAME, CheckpointError
    from swapd.trainer.cli_train import run_training
    from swapd.trainer.data import FaceSetError
    from swapd.trainer.divergence import TrainingDivergedError
    from swapd.trainer.lr_finder import LRFinderError
    from swapd.trainer.options import OptionsError, parse_assignments

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    checkpoint = Path(args.model_dir) / CHECKPOINT_NAME
    try:
        reached = run_training(args.model, Path(args.A), Path(args.B), Path(args.model_dir),
                               parse_assignments(args.set), args.iterations, args.batch_size,
                               args.save_every, export_trainer if args.export else None,
                               snapshot_every=args.snapshot_every,
                               snapshot_policy=args.snapshot_policy,
                               snapshot_keep=args.snapshot_keep,
                               tracker=not args.no_tracker, tracker_faces=args.tracker_faces,
                               start_from=args.start_from)
    except (OptionsError, FaceSetError, CheckpointError, LRFinderError) as exc:
        print(f"swapd: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except TrainingDivergedError as exc:  # on_nan = "stop", or no rollback left
        kept = "the last checkpoint is intact" if checkpoint.exists() else "nothing was saved"
        print(f"swapd: training stopped, {exc.reason}: {exc}; {kept}", file=sys.stderr)
        return 1
    if not checkpoint.exists():
        print(f"nothing saved in {args.model_dir}")
        return 0
    print(f"saved {args.model_dir} at iteration {reached}")
    return 0


def add_train(sub: Subparsers) -> None:
    """swapd train"""
    p = sub.add_parser("train", help="train a model from the command line (no service)")
    p.add_argument("--model", required=True, help="lightweight, original, ...")
    p.add_argument("-A", required=True, help="faces of A, the face to replace")
    p.add_argument("-B", required=True, help="faces of B, the face to put in")
    p.add_argument("--model-dir", required=True, help="checkpoint folder (resumed if present)")
    p.add_argument("--iterations", type=int, default=0, help="stop here (0 = until Ctrl-C)")
    p.add_argument("--batch-size", type=positive_int, default=16)
    p.add_argument("--save-every", type=positive_int, default=250)
    p.add_argument("--snapshot-every", type=int, default=0,
                   help="keep a snapshot every N iterations (0 = none)")
    p.add_argument("--snapshot-policy", default="all", choices=["all", "last", "thinned"])
    p.add_argument("--snapshot-keep", type=positive_int, default=10,
                   help="snapshots the last / thinned policies keep (newest)")
    p.add_argument("--tracker-faces", type=int, default=0,
                   help="faces per set in each snapshot's tracker data (0 = every face)")
    p.add_argument("--no-tracker", action="store_true", help="snapshots without tracker data")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a trainer or model option, e.g. --set learning_rate=1e-4")
    p.add_argument("--export", action="store_true", help="export ONNX when done")
    p.add_argument("--start-from", type=Path, metavar="MODEL.pt",
                   help="a new model starts from this checkpoint's weights (same model and "
                   "model options; DeepFaceLab's pretrained model)")
    p.set_defaults(func=cmd_train)
