"""swapd faces: inspect, import, extract and list aligned faces."""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
from pathlib import Path

from swapd.cli.common import (
    EXIT_USAGE,
    Subparsers,
    progress_bar,
    read_state,
    service_config,
    workspace_of,
)


def cmd_faces_inspect(args: argparse.Namespace) -> int:
    from swapd.extract.detectors.base import DetectorError
    from swapd.extract.detectors.registry import create_detector
    from swapd.extract.face_landmarks import add_found_landmarks
    from swapd.faces.validate import BadFaceError, inspect_face_file

    try:
        info = inspect_face_file(args.file, min_size=1)
        if args.detector != "none":
            add_found_landmarks(info, create_detector(args.detector))
    except (BadFaceError, DetectorError) as exc:
        print(f"swapd: {exc}", file=sys.stderr)
        return EXIT_USAGE
    description = info.describe()
    if args.json:
        print(json.dumps(description))
        return 0
    for key, value in description.items():
        if key in ("landmarks", "source_landmarks") and value is not None:
            value = f"{len(value)} points"
        elif key == "pose" and value is not None:
            value = ", ".join(f"{name} {angle:+.1f}°" for name, angle in value.items())
        print(f"{key:>20}: {value}")
    return 0


def cmd_faces_import(args: argparse.Namespace) -> int:
    from swapd.faces.importer import import_faces

    config = service_config(args)
    ws = workspace_of(args, config)
    source = Path(args.dir)
    if not source.is_dir():
        print(f"swapd: {source}: not a folder", file=sys.stderr)
        return EXIT_USAGE
    try:
        destination = ws.face_set(args.set)
    except ValueError as exc:
        print(f"swapd: {exc}", file=sys.stderr)
        return EXIT_USAGE
    report = import_faces(source, destination, min_size=config.ingest.min_face_size)
    for path, reason in report.skipped:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(report.copied.items())) or "none"
    print(f"imported into {ws.relative(destination)}: {kinds}; {report.unchanged} already there, "
          f"{len(report.skipped)} skipped")
    if not report.copied and not report.unchanged:
        return EXIT_USAGE
    return 1 if report.skipped else 0


def cmd_faces_extract(args: argparse.Namespace) -> int:
    from swapd.extract.detectors.base import DetectorError
    from swapd.extract.extract import extract
    from swapd.faces.dfl_align import FACE_TYPE_ALIASES
    from swapd.media import UnreadableMediaError

    config = service_config(args)
    ws = workspace_of(args, config)
    try:
        destination = Path(args.output) if args.output else ws.face_set(args.set)
    except ValueError as exc:
        print(f"swapd: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        with progress_bar(Path(args.input).name) as progress:
            report = extract(Path(args.input), destination, size=args.size,
                             centering=args.centering, detector=args.detector,
                             min_face_size=args.min_face, redetect_every=args.redetect_every,
                             progress=progress, face_format=args.format,
                             face_type=FACE_TYPE_ALIASES[args.face_type],
                             landmarker=args.landmarks)
    except (UnreadableMediaError, DetectorError) as exc:
        print(f"swapd: {exc}", file=sys.stderr)
        return EXIT_USAGE
    resumed = f", {report.frames_skipped} already done" if report.frames_skipped else ""
    print(f"{report.faces} faces from {report.frames} frames into {destination}{resumed} "
          f"({report.frames_without_face} frames without a face, {report.fps:.1f} fps); "
          f"alignments: {', '.join(path.name for path in report.alignments)}")
    if report.landmarks_kept:
        print(f"{report.landmarks_kept} faces kept the detector's points (the landmark plugin "
              "saw no face there; faceswap's header has 68 fitted to them)")
    return 0


def cmd_faces_setup_landmarks(args: argparse.Namespace) -> int:
    from swapd.extract.detectors.base import DetectorError
    from swapd.extract.landmarkers.mesh_model import SOURCE_NAME, find_model, install_model

    if not args.force and args.wheel is None and args.dest is None:
        try:
            found = find_model()
            if (found.parent / SOURCE_NAME).is_file():  # else made by an earlier swapd: redo
                print(f"face mesh model present: {found}")
                return 0
        except DetectorError:
            pass
    try:
        path = install_model(args.wheel, args.dest)
    except (DetectorError, OSError) as exc:
        print(f"swapd: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(f"face mesh model written: {path} (Apache-2.0; its licence beside it)")
    return 0


def cmd_faces_list(args: argparse.Namespace) -> int:
    ws, store = read_state(args.workspace,
                            "swapd: no face index in {root} yet (the service builds it)")
    if store is None:
        return 1
    try:
        records = store.faces(args.set)
        sets = store.face_sets()
    except sqlite3.OperationalError:  # a database from before the face index
        print(f"swapd: no face index in {ws.root} yet (the service builds it)", file=sys.stderr)
        return 1
    finally:
        store.close()
    if args.set is not None and not records:
        print(f"swapd: no indexed faces in set {args.set!r}; indexed sets: "
              f"{', '.join(sets) or 'none'}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"sets": sets, "faces": [
            {k: v for k, v in vars(r).items() if k != "landmarks" or args.landmarks}
            for r in records]}))
        return 0
    for r in records:
        if r.status == "quarantined":
            detail = f"QUARANTINED: {r.reason} (moved to {r.moved_to})"
        else:
            pose = ("pose ?" if r.yaw is None else
                    f"yaw {r.yaw:+5.1f} pitch {r.pitch:+5.1f} roll {r.roll:+5.1f}")
            found = ("unaligned" if r.landmarks_from is None
                     else f"landmarks {r.landmarks_from}")
            detail = f"{r.kind:<11} {r.width}x{r.height}x{r.channels}  {pose}  {found}"
            if r.duplicate_of:
                detail += f"  duplicate of {r.duplicate_of}"
        print(f"{r.set_name}/{r.name}: {detail}")
    for name, counts in sets.items():
        if args.set is None or name == args.set:
            print(f"{name}: {counts['ok']} ok, {counts['quarantined']} quarantined, "
                  f"{counts['duplicates']} duplicates")
    return 0


def add_faces(sub: Subparsers) -> None:
    """swapd faces inspect | import | extract | setup-landmarks | list"""
    faces = sub.add_parser("faces", help="inspect and import aligned faces").add_subparsers(
        dest="faces_command", required=True)
    p = faces.add_parser("inspect", help="print a face file's metadata (exit 2 if unusable)")
    p.add_argument("file")
    p.add_argument("--json", action="store_true", help="one JSON object")
    p.add_argument("--detector", default="mtcnn",
                   help="find landmarks the file lacks with this plugin (mtcnn, dlib; none: "
                        "do not look)")
    p.set_defaults(func=cmd_faces_inspect)
    p = faces.add_parser("import", help="copy a faceswap / DeepFaceLab face set in")
    p.add_argument("dir", help="folder of aligned faces")
    p.add_argument("--set", required=True, help="face set name (faces/<NAME>/)")
    p.add_argument("--workspace", type=Path)
    p.add_argument("--config", type=Path)
    p.set_defaults(func=cmd_faces_import)
    p = faces.add_parser("extract", help="find, align and save the faces of new footage")
    p.add_argument("input", help="a video, an image, or a folder of images")
    p.add_argument("--set", required=True, help="face set to write (faces/<NAME>/)")
    p.add_argument("--output", help="write here instead of the workspace's face set")
    p.add_argument("--workspace", type=Path)
    p.add_argument("--config", type=Path)
    p.add_argument("--size", type=int, default=512, help="aligned face side in pixels")
    p.add_argument("--centering", default="head", choices=["legacy", "face", "head"],
                   help="faceswap's crop to write (faceswap trains from head, the default)")
    p.add_argument("--format", default="faceswap", choices=["faceswap", "dfl"],
                   help="faceswap's aligned PNGs (and a video's _alignments.fsa), or "
                        "DeepFaceLab's aligned JPGs")
    p.add_argument("--face-type", default="wf", choices=["wf", "f", "head"],
                   help="DeepFaceLab face type with --format dfl: whole_face, full_face, head")
    p.add_argument("--detector", default="mtcnn", help="detector plugin (default mtcnn)")
    p.add_argument("--min-face", type=int, default=40, help="smallest face, in frame pixels")
    p.add_argument("--redetect-every", type=int, default=5,
                   help="video: full search every N frames, faces followed in between")
    p.add_argument("--landmarks", choices=["face_mesh", "dlib", "detector"],
                   help="68-point landmark plugin (default face_mesh; detector: the detector's "
                        "own points, 68 fitted to MTCNN's 5; the default with --detector dlib)")
    p.set_defaults(func=cmd_faces_extract)
    p = faces.add_parser("setup-landmarks",
                         help="make the 68-point landmark model once (pip downloads the "
                              "mediapipe wheel it comes from; nothing is fetched at run time)")
    p.add_argument("--wheel", type=Path, help="use this mediapipe-0.10.21 wheel, no download")
    p.add_argument("--dest", type=Path, help="models folder (default: the first one swapd "
                                             "searches: $SWAPD_MODELS_DIR, the venv, the cache)")
    p.add_argument("--force", action="store_true", help="make it again even if present")
    p.set_defaults(func=cmd_faces_setup_landmarks)
    p = faces.add_parser("list", help="the face index: each face's status, pose, duplicates")
    p.add_argument("set", nargs="?", help="one face set (default: all)")
    p.add_argument("--workspace", type=Path)
    p.add_argument("--json", action="store_true")
    p.add_argument("--landmarks", action="store_true", help="include landmarks in --json")
    p.set_defaults(func=cmd_faces_list)
