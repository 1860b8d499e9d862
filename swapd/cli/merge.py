"""Merged outputs: merge a file now, verify a file's provenance mark."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from swapd.cli.common import EXIT_USAGE, Subparsers, progress_bar
from swapd.daemon.merge_worker import add_output_arguments, output_options


def cmd_verify(args: argparse.Namespace) -> int:
    """Like grep: 0 marked, 1 not marked, 2 cannot read."""
    from swapd.media import UnreadableMediaError
    from swapd.merger.provenance import verify_file

    try:
        result = verify_file(Path(args.file))
    except UnreadableMediaError as exc:
        print(f"swapd verify: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(result.to_json())
    else:
        verdict = "marked as synthetic media made by swapd" if result.marked else "not marked"
        print(f"{args.file}: {verdict} (metadata tag: {'yes' if result.metadata_tag else 'no'},"
              f" watermark confidence {result.watermark.confidence:.2f})")
    return 0 if result.marked else 1


def cmd_merge(args: argparse.Namespace) -> int:
    from swapd.extract.alignments import AlignmentsError, load_alignments, record_beside
    from swapd.media import UnreadableMediaError
    from swapd.merger.merge import MergeError, MergeOptions, faceless_text, merge_file

    record = None if args.detect else (args.alignments or record_beside(args.input))
    try:
        alignments = None if record is None else load_alignments(record)
    except AlignmentsError as exc:
        print(f"swapd merge: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if alignments is not None:
        print(f"faces from {record} ({len(alignments)} frames recorded)")
    try:
        options = MergeOptions(faces=args.faces, device=args.device,
                               learned_mask=not args.no_learned_mask, **output_options(args))
    except ValueError as exc:
        print(f"swapd merge: {exc}", file=sys.stderr)
        return EXIT_USAGE
    bar, progress = progress_bar(Path(args.input).name)
    try:
        result = merge_file(Path(args.input), Path(args.output), Path(args.model),
                            options=options, progress=progress, alignments=alignments)
    except (UnreadableMediaError, MergeError) as exc:
        bar.close()
        print(f"swapd merge: {exc}", file=sys.stderr)
        return 2
    bar.close()
    print(f"{result.output_path} ({result.frames} frames, {result.faces_swapped} faces swapped,"
          f" {result.fps:.1f} fps)")
    if result.frames_without_face:
        print(f"swapd merge: {faceless_text(result.frames_without_face, result.frames)}",
              file=sys.stderr)
    return 0


def add_verify(sub: Subparsers) -> None:
    """swapd verify"""
    p = sub.add_parser("verify", help="does a file carry swapd's provenance mark? (0 yes, 1 no)")
    p.add_argument("file")
    p.add_argument("--json", action="store_true", help="print the evidence as JSON")
    p.set_defaults(func=cmd_verify)


def add_merge(sub: Subparsers) -> None:
    """swapd merge"""
    p = sub.add_parser("merge", help="merge one video, image or image-sequence folder now")
    p.add_argument("input", help="a video, an image, or a folder of PNG/JPEG frames")
    p.add_argument("--model", required=True, help="an .onnx file exported by swapd")
    p.add_argument("--output", default="merged", help="output folder")
    p.add_argument("--faces", default="all", choices=["all", "largest"])
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--alignments", type=Path,
                   help="faces per frame from `swapd faces extract` (default: "
                        "INPUT_STEM.alignments.jsonl beside the input, when present)")
    p.add_argument("--no-learned-mask", action="store_true",
                   help="blend with the mean face's outline even when the model learned a mask")
    p.add_argument("--detect", action="store_true",
                   help="detect every face, ignoring any alignments record")
    add_output_arguments(p)
    p.set_defaults(func=cmd_merge)
