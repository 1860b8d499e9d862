"""Merged outputs: merge a file now, verify a file's provenance mark."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from swapd.cli.common import EXIT_USAGE, Subparsers, progress_bar


def _verify_targets(names: list[str]) -> list[Path]:
    """The files named, with each folder replaced by the media files inside it (sorted)."""
    from swapd.media import IMAGE_SUFFIXES, VIDEO_SUFFIXES

    media = IMAGE_SUFFIXES | VIDEO_SUFFIXES
    targets: list[Path] = []
    for name in names:
        path = Path(name)
        if path.is_dir():
            targets += sorted(p for p in path.rglob("*") if p.is_file()
                              and p.suffix.lower() in media and not p.name.startswith("."))
        else:
            targets.append(path)
    return targets


def cmd_verify(args: argparse.Namespace) -> int:
    """One line per file. 0: every file marked, 1: some file not marked, 2: some file
    unreadable (or a folder without media files)."""
    import json

    from swapd.media import UnreadableMediaError
    from swapd.merger.provenance import verify_file
    from swapd.merger.verdict import verdict_line

    targets = _verify_targets(args.files)
    if not targets:
        print(f"swapd verify: no image or video files in {', '.join(args.files)}",
              file=sys.stderr)
        return 2
    status = 0
    for path in targets:
        try:
            result = verify_file(path)
        except UnreadableMediaError as exc:
            status = 2
            if args.json:
                print(json.dumps({"path": str(path), "error": str(exc)}), flush=True)
            print(f"swapd verify: {exc}", file=sys.stderr, flush=True)
            continue
        if not result.marked:
            status = max(status, 1)
        if args.json:
            print(json.dumps({**result.to_dict(), "verdict": verdict_line(result)},
                             sort_keys=True), flush=True)
        else:
            print(f"{path}: {verdict_line(result)}", flush=True)
    return status


def cmd_merge(args: argparse.Namespace) -> int:
    from swapd.extract.alignments import AlignmentsError, load_alignments, record_beside
    from swapd.media import UnreadableMediaError
    from swapd.merger.c2pa_credentials import CredentialsError
    from swapd.merger.content_credentials import ContentCredentialsError
    from swapd.merger.merge import MergeError, MergeOptions, faceless_text, merge_file

    record = None if args.detect else (args.alignments or record_beside(args.input))
    try:
        alignments = None if record is None else load_alignments(record)
    except AlignmentsError as exc:
        print(f"swapd merge: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if alignments is not None:
        print(f"faces from {record} ({len(alignments)} frames recorded)")
    bar, progress = progress_bar(Path(args.input).name)
    try:
        result = merge_file(Path(args.input), Path(args.output), Path(args.model),
                            options=MergeOptions(faces=args.faces, device=args.device,
                                                 learned_mask=not args.no_learned_mask,
                                                 c2pa_certificate=args.c2pa_certificate,
                                                 c2pa_private_key=args.c2pa_private_key),
                            progress=progress, alignments=alignments)
    except (UnreadableMediaError, MergeError, CredentialsError, ContentCredentialsError) as exc:
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
    p = sub.add_parser("verify", help="do files carry swapd's provenance marks? (0 yes, 1 no, "
                                      "2 unreadable)")
    p.add_argument("files", nargs="+", metavar="FILE", help="images, videos or folders of them")
    p.add_argument("--json", action="store_true",
                   help="print each file's evidence as one JSON object per line")
    p.set_defaults(func=cmd_verify)


def add_merge(sub: Subparsers) -> None:
    """swapd merge"""
    p = sub.add_parser("merge", help="merge one video or image now")
    p.add_argument("input")
    p.add_argument("--model", required=True, help="an .onnx file exported by swapd")
    p.add_argument("--output", default="merged", help="output folder")
    p.add_argument("--faces", default="all", choices=["all", "largest"])
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--alignments", type=Path,
                   help="faces per frame from `swapd faces extract` (default: "
                        "INPUT_STEM.alignments.jsonl beside the input, when present)")
    p.add_argument("--no-learned-mask", action="store_true",
                   help="blend with the mean face's outline even when the model learned a mask")
    p.add_argument("--c2pa-certificate", metavar="PEM",
                   help="C2PA signing chain, signer first (default: swapd's local CA, made on "
                        "first use; validators call it untrusted)")
    p.add_argument("--c2pa-private-key", metavar="PEM", help="the signing certificate's key")
    p.add_argument("--detect", action="store_true",
                   help="detect every face, ignoring any alignments record")
    p.set_defaults(func=cmd_merge)
