"""The `swapd` command.

    swapd run     [--workspace DIR] [--config swapd.toml]   the service, in the foreground
    swapd demo    [--workspace DIR]                         a synthetic demo workspace, then run
    swapd status  [--workspace DIR] [--json]                jobs, problems, recent events
    swapd verify  FILE|DIR... [--json]                      is each file marked as made by swapd?
    swapd merge   INPUT --model FILE.onnx [--output DIR]    one merge, now, with a progress bar
    swapd pause | resume | save | stop JOB                  control a training job
    swapd faces inspect FILE [--json]                       metadata of a faceswap / DFL face
    swapd faces import DIR --set NAME [--workspace DIR]     copy a face set into a workspace
    swapd faces list [SET] [--workspace DIR] [--json]       the face index: status, pose, why
    swapd faces extract INPUT --set NAME [--size 512]       faces of new footage, aligned
    swapd train --model NAME -A DIR -B DIR --model-dir DIR  train without the service
    swapd model summary NAME [--set key=value] [--json]     layers and parameter count
    swapd model restore (DIR | --job NAME) [--snapshot N]   go back to the best backup / a snapshot
    swapd model snapshots (DIR | --job NAME) [--json]       a model's snapshots and backup
    swapd model export (DIR | --job NAME) [--snapshot N]    a checkpoint or snapshot to ONNX
    swapd model sessions (DIR | --job NAME) [--output F]    training sessions as CSV
    swapd model compare (DIR | --job NAME) N M [--image F]  how each face moved between snapshots
    swapd losses JOB [--output FILE]                        a job's loss history as CSV
    swapd config                                            print the default swapd.toml
"""

from __future__ import annotations

import argparse
import sys

from swapd import __version__
from swapd.cli import faces, jobs, merge, model, service, train
from swapd.cli.common import EXIT_USAGE
from swapd.config import ConfigError


def build_parser() -> argparse.ArgumentParser:
    """Every command, in the order ``swapd --help`` lists them; each group adds its own."""
    parser = argparse.ArgumentParser(prog="swapd", description="face-swap training service")
    parser.add_argument("--version", action="version", version=f"swapd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    service.add_run(sub)
    service.add_demo(sub)
    jobs.add_status(sub)
    merge.add_verify(sub)
    merge.add_merge(sub)
    jobs.add_controls(sub)
    faces.add_faces(sub)
    train.add_train(sub)
    jobs.add_losses(sub)
    model.add_model(sub)
    service.add_config(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    # A file name the terminal cannot show (not UTF-8 on Linux, or beyond the console's code
    # page) is shown escaped, and stops nothing: stdout would raise on it by default.
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print(f"swapd: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
