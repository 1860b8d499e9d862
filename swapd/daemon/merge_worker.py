"""The merge worker: merges one footage file with an exported model, in its own process.

    python -m swapd.daemon.merge_worker --workspace DIR --job NAME --input FILE --model ONNX
        --output DIR [--faces all|largest] [--device auto|cpu|cuda] [--look JSON]

An alignments record beside the footage (``clip.alignments.jsonl`` from ``swapd faces
extract``) gives the faces of the frames it holds; a broken one is reported and ignored.

Exit status 0 when the merged file was written (recorded as a "merge" artifact), EXIT_BAD_INPUT
when the footage cannot be read (it is moved to .swapd/quarantine/footage/<job>/ with its reason
and recorded as a problem), EXIT_NOT_FINISHED when its output could not be signed (a problem
recorded; the footage stays), anything else is a crash (the service reports it).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from swapd.daemon.workers import EXIT_BAD_INPUT, EXIT_NOT_FINISHED, EXIT_OK
from swapd.state import StateStore
from swapd.workspace import Workspace

if TYPE_CHECKING:
    from swapd.extract.detectors.base import Detection

log = logging.getLogger("swapd.merge_worker")


def run(workspace: Workspace, job: str, source: Path, model: Path, output: Path,
        faces: str, device: str, learned_mask: bool = True,
        look: dict[str, object] | None = None,
        output_options: dict[str, object] | None = None, model_iteration: int | None = None,
        remerge: bool = False, c2pa_certificate: str | None = None,
        c2pa_private_key: str | None = None, c2pa_timestamp_url: str | None = None) -> int:
    from swapd.faces.validate import quarantine_file
    from swapd.media import UnreadableMediaError
    from swapd.merger.content_credentials import ContentCredentialsError
    from swapd.merger.merge import (
        MergeError,
        MergeOptions,
        faceless_text,
        merge_file,
        output_path_for,
    )

    store = StateStore(workspace.state_db)
    shown = workspace.relative(source)
    store.log_event(f"merging {shown}", job)
    last_report = last_progress = 0.0

    def progress(done: int, total: int | None) -> None:
        nonlocal last_report, last_progress
        if time.monotonic() - last_progress > 1 or done == total:  # the dashboard's bar
            last_progress = time.monotonic()
            store.set_merge_progress(job, shown, done, total)
        if time.monotonic() - last_report > 5 or done == total:
            last_report = time.monotonic()
            log.info("%s: %d/%s frames", shown, done, total if total is not None else "?")

    store.set_merge_progress(job, shown, 0, None)
    options = MergeOptions.with_look(look or {}, faces=faces, device=device,
                                     learned_mask=learned_mask, c2pa_certificate=c2pa_certificate,
                                     c2pa_private_key=c2pa_private_key,
                                     c2pa_timestamp_url=c2pa_timestamp_url,
                                     **(output_options or {}))
    name_suffix = ""
    if remerge:  # beside the earlier outputs, never over one a user may have published
        name_suffix = f"_{model_iteration}" if model_iteration is not None else "_remerge"
        base, n = name_suffix, 2
        while output_path_for(source, output, options.image_format, name_suffix).exists():
            name_suffix, n = f"{base}-{n}", n + 1
    try:
        result = merge_file(source, output, model, name_suffix=name_suffix,
                            options=options,
                            progress=progress,
                            alignments=_recorded_faces(workspace, store, job, source))
    except ContentCredentialsError as exc:
        # Its output could not be signed: the footage is not to blame (it stays where it is),
        # but a try again would most likely fail the same way after the whole merge.
        store.end_merge_progress(job, shown)
        log.error("%s", exc)
        store.report_problem(shown, "merge", f"{shown}: its output could not be signed, so it "
                             f"was not kept ({exc.reason}); merged again once it changes or "
                             f"the service restarts")
        store.log_event(f"merge of {shown} not kept: its output could not be signed", job,
                        level="error")
        store.close()
        return EXIT_NOT_FINISHED
    except (UnreadableMediaError, MergeError) as exc:
        store.end_merge_progress(job, shown)
        # The footage itself is bad: set it aside so it is not tried again, and say why.
        reason = exc.reason
        log.error("%s", exc)
        if source.exists():
            moved = quarantine_file(source, workspace.quarantine / "footage", job, reason)
            store.report_problem(shown, "footage", f"{shown}: {reason}",
                                 moved_to=workspace.relative(moved))
        store.log_event(f"set aside {shown}: {reason}", job, level="warning")
        store.close()
        return EXIT_BAD_INPUT
    store.end_merge_progress(job, shown)
    store.add_artifact(job, "merge", str(result.output_path), None, {
        "source": str(source),
        "source_mtime": source.stat().st_mtime,
        "frames": result.frames,
        "faces_swapped": result.faces_swapped,
        "frames_without_face": result.frames_without_face,
        "seconds": round(result.seconds, 2),
        "fps": round(result.fps, 2),
        "model": str(model),
        "model_iteration": model_iteration,
        "remerge": remerge,
    })
    store.log_event(f"merged {shown} -> {workspace.relative(result.output_path)} "
                    f"({result.frames} frames, {result.fps:.1f} fps)", job)
    if result.frames_without_face:
        store.log_event(f"{workspace.relative(result.output_path)}: "
                        f"{faceless_text(result.frames_without_face, result.frames)}", job,
                        level="warning")
    store.close()
    return EXIT_OK


def _recorded_faces(workspace: Workspace, store: StateStore, job: str, source: Path
                    ) -> dict[str, list[Detection]] | None:
    """The faces of the alignments record beside the footage, if there is one and it is sound.
    A broken record is reported and left out: the faces are then detected."""
    from swapd.extract.alignments import AlignmentsError, load_alignments, record_beside

    record = record_beside(source)
    if record is None:
        return None
    shown = workspace.relative(record)
    try:
        frames = load_alignments(record)
    except AlignmentsError as exc:
        store.report_problem(shown, "alignments", f"{shown}: {exc.reason}")
        store.log_event(f"ignored {shown} ({exc.reason}); detecting faces instead", job,
                        level="warning")
        return None
    store.log_event(f"faces of {workspace.relative(source)} from {shown} "
                    f"({len(frames)} frames recorded)", job)
    return frames


def output_options(args: argparse.Namespace) -> dict[str, object]:
    """MergeOptions' output fields from ``add_output_arguments``' flags."""
    from swapd.config import parse_frame_ranges

    return {"codec": args.codec, "crf": args.crf, "preset": args.preset,
            "image_format": args.image_format,
            "frame_ranges": parse_frame_ranges(args.frame_ranges or [])}


def add_output_arguments(p: argparse.ArgumentParser) -> None:
    """The writers' flags (job files: the same names in [merge])."""
    p.add_argument("--codec", default="h264", choices=["h264", "h265", "vp9"],
                   help="video codec (always in MP4)")
    p.add_argument("--crf", type=int, default=18,
                   help="quality: 0 lossless .. 51 (h264, h265) or 63 (vp9), encoded at no more "
                        "than 35 (h264, h265) or 55 (vp9), where the watermark holds; default 18")
    p.add_argument("--preset", default="veryfast",
                   help="x264/x265 preset (ultrafast .. veryslow); vp9: its speed")
    p.add_argument("--image-format", default="png", choices=["png", "jpeg"],
                   help="images and image sequences")
    p.add_argument("--frame-ranges", nargs="+", metavar="FIRST-LAST",
                   help="faceswap's: swap only in these frames (a video's count from 1, a "
                        "sequence's from the number in each name); copy the others")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="swapd-merge-worker")
    parser.add_argument("--workspace", required=True, type=Path)
    parser.add_argument("--job", required=True)
    parser.add_argument("--input", required=True, type=Path)
    parser.add_argument("--model", required=True, type=Path)
    parser.add_argument("--output", required=True, type=Path)
    parser.add_argument("--faces", default="all", choices=["all", "largest"])
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--no-learned-mask", action="store_true")
    parser.add_argument("--look", default="{}", type=json.loads,
                        help="the job's [merge] options (JSON), as swapd.config.MergeLook")
    add_output_arguments(parser)
    parser.add_argument("--model-iteration", type=int, help="recorded with the output")
    parser.add_argument("--remerge", action="store_true",
                        help="merged before: write beside it, the iteration in the name")
    parser.add_argument("--c2pa-certificate")
    parser.add_argument("--c2pa-private-key")
    parser.add_argument("--c2pa-timestamp-url")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return run(Workspace.open(args.workspace, create=False), args.job, args.input, args.model,
               args.output, args.faces, args.device, learned_mask=not args.no_learned_mask,
               look=args.look, output_options=output_options(args),
               model_iteration=args.model_iteration, remerge=args.remerge,
               c2pa_certificate=args.c2pa_certificate, c2pa_private_key=args.c2pa_private_key,
               c2pa_timestamp_url=args.c2pa_timestamp_url)


if __name__ == "__main__":
    sys.exit(main())
