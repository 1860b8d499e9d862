"""Merged outputs: merge a file now, verify a file's provenance mark."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from swapd.cli.common import EXIT_USAGE, Subparsers, progress_bar
from swapd.daemon.merge_worker import add_output_arguments, output_options

if TYPE_CHECKING:
    from swapd.config import MergeDefaults


def _verify_targets(names: list[str]) -> tuple[list[Path], list[tuple[str, str]]]:
    """The files named, with each folder replaced by the media files inside it (sorted), and
    what could not be looked at inside the folders (a subfolder that cannot be listed, an
    entry that cannot be examined, a folder with no media file at all), as (path, why): each
    said, never passed over in silence."""
    from swapd.media import IMAGE_SUFFIXES, VIDEO_SUFFIXES
    from swapd.merger.metadata_tag import not_a_file

    media = IMAGE_SUFFIXES | VIDEO_SUFFIXES
    targets: list[Path] = []
    problems: list[tuple[str, str]] = []

    def unlisted(exc: OSError) -> None:
        problems.append((str(exc.filename), f"cannot be listed ({exc.strerror})"))

    for name in names:
        path = Path(name)
        if not path.is_dir():
            targets.append(path)
            continue
        found = []
        for folder, _dirs, files in os.walk(path, onerror=unlisted):
            for file in files:
                entry = Path(folder, file)
                if entry.suffix.lower() not in media or file.startswith("."):
                    continue
                try:
                    regular = entry.is_file()
                except OSError as exc:  # a folder that can be listed but not entered
                    problems.append((str(entry), f"cannot be examined ({exc.strerror})"))
                    continue
                if regular:
                    found.append(entry)
                else:  # a media name on a dangling link, a FIFO, a device: said, not opened
                    problems.append((str(entry), not_a_file(entry)))
        if not found:  # nothing to check there: said, so exit status 0 never covers it
            problems.append((name, "a folder without image or video files"))
        targets += sorted(found)
    return targets, problems


@contextlib.contextmanager
def _decoder_words(shown: str) -> Iterator[None]:
    """What the C libraries say on the process's stderr while a file is read (libpng's
    "CRC error", libjpeg's "corrupt data"), each line said after it, named by the file,
    instead of in the middle of verify's own lines. The CLI's alone: the dashboard's
    checks run beside other threads, whose words this would catch too."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no real stderr (a service without one)
        yield
        return
    from swapd.merger.verdict import printable

    with tempfile.TemporaryFile() as words:
        os.dup2(words.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            words.seek(0)
            said = words.read().decode("utf-8", "replace").splitlines()
            for line in dict.fromkeys(x.strip() for x in said if x.strip()):  # each once
                print(f"swapd verify: {shown}: the decoder says: {printable(line, 200)}",
                      file=sys.stderr, flush=True)


def cmd_verify(args: argparse.Namespace) -> int:
    """One line per file (a file that cannot be checked: on stderr, and the others are still
    checked). 0: every file marked, 1: some file not marked, 2: some file unreadable (or a
    folder without media files, or inside a folder an entry that cannot be listed or examined,
    a dangling link, a media name on something that is not a regular file); 2 wins over 1."""
    import json

    from swapd.media import UnreadableMediaError
    from swapd.merger.content_credentials import read_trust_anchors
    from swapd.merger.provenance import verify_file
    from swapd.merger.verdict import printable, verdict_line, verdict_record

    pem_file, given_as = args.trust_anchors, "--trust-anchors"
    defaults = _merge_defaults(args.config)  # read (and checked) even when the flag wins
    if pem_file is None and defaults.c2pa_trust_anchors:
        pem_file = defaults.c2pa_trust_anchors
        given_as = f"[merge] c2pa_trust_anchors of {args.config}:"
    try:
        anchors = read_trust_anchors(pem_file) if pem_file else None
    except ValueError as exc:
        print(f"swapd verify: {given_as} {exc}", file=sys.stderr)
        return EXIT_USAGE
    targets, problems = _verify_targets(args.files)
    for where, why in problems:
        if args.json:
            print(json.dumps({"path": where, "error": why}), flush=True)
        print(f"swapd verify: {printable(where, None)}: {why}", file=sys.stderr, flush=True)
    if not targets:  # (each folder without media files was said above)
        if not problems:
            print(f"swapd verify: no image or video files in "
                  f"{printable(', '.join(args.files), None)}", file=sys.stderr)
        return 2
    status = 2 if problems else 0
    for path in targets:
        shown = printable(str(path), None)
        try:
            with _decoder_words(shown):
                result = verify_file(path, anchors)
        except Exception as exc:  # one file's problem never stops the others
            status = 2
            reason = exc.reason if isinstance(exc, UnreadableMediaError) else \
                f"verify failed ({type(exc).__name__}: {exc})"
            if args.json:
                print(json.dumps({"path": str(path), "error": reason}), flush=True)
            print(f"swapd verify: {shown}: {printable(reason, None)}", file=sys.stderr,
                  flush=True)
            continue
        if not result.marked:
            status = max(status, 1)
        if args.json:
            print(json.dumps(verdict_record(result), sort_keys=True), flush=True)
        else:
            print(f"{shown}: {verdict_line(result)}", flush=True)
    return status


def _merge_defaults(config: Path | None) -> MergeDefaults:
    """The [merge] section of the swapd.toml at *config*, or the defaults without one (a
    ConfigError names what is wrong)."""
    from swapd.config import MergeDefaults, load_service_config

    return MergeDefaults() if config is None else load_service_config(config).merge


def _signing_and_device(args: argparse.Namespace
                        ) -> tuple[str | None, str | None, str | None, str] | None:
    """(certificate, private key, time-stamp authority URL, device): the flags over
    --config's [merge] section, the certificate and its key as a pair from one or the other;
    None after saying why not."""
    from swapd.merger.time_stamps import TimeStampUrlError, checked_url

    defaults = _merge_defaults(args.config)
    flags = (args.c2pa_certificate, args.c2pa_private_key)
    pair = (defaults.c2pa_certificate, defaults.c2pa_private_key)
    if (flags[0] is None) != (flags[1] is None):
        print("swapd merge: --c2pa-certificate and --c2pa-private-key come together (--config's"
              " pair is used when neither is given)", file=sys.stderr)
        return None
    if flags[0] is None and (pair[0] is None) != (pair[1] is None):
        print(f"swapd merge: {args.config}: [merge] c2pa_certificate and c2pa_private_key come "
              "together (a chain needs its key)", file=sys.stderr)
        return None
    certificate, private_key = flags if flags[0] is not None else pair
    try:
        timestamp_url = (checked_url(args.c2pa_timestamp_url, "--c2pa-timestamp-url")
                         if args.c2pa_timestamp_url is not None else checked_url(
                             defaults.c2pa_timestamp_url,
                             f"{args.config}: [merge] c2pa_timestamp_url"))
    except TimeStampUrlError as exc:
        print(f"swapd merge: {exc}", file=sys.stderr)
        return None
    return certificate, private_key, timestamp_url, args.device or defaults.device


def cmd_merge(args: argparse.Namespace) -> int:
    from swapd.extract.alignments import AlignmentsError, load_alignments, record_beside
    from swapd.extract.detectors.base import DetectorError
    from swapd.media import UnreadableMediaError
    from swapd.merger.c2pa_credentials import (
        CredentialsError,
        check_time_stamps,
        load_credentials,
    )
    from swapd.merger.content_credentials import ContentCredentialsError
    from swapd.merger.look import LOOK_KEYS
    from swapd.merger.merge import MergeError, MergeOptions, faceless_text, merge_file
    from swapd.merger.session import ModelLoadError

    chosen = _signing_and_device(args)
    if chosen is None:
        return EXIT_USAGE
    certificate, private_key, timestamp_url, device = chosen
    record = None if args.detect else (args.alignments or record_beside(args.input))
    try:
        alignments = None if record is None else load_alignments(record)
    except AlignmentsError as exc:
        print(f"swapd merge: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if alignments is not None:
        print(f"faces from {record} ({len(alignments)} frames recorded)")
    try:
        options = MergeOptions.with_look(
            {key: getattr(args, key) for key in LOOK_KEYS if getattr(args, key) is not None},
            faces=args.faces, device=device, learned_mask=not args.no_learned_mask,
            c2pa_certificate=certificate, c2pa_private_key=private_key,
            c2pa_timestamp_url=timestamp_url,
            **output_options(args))
    except ValueError as exc:
        key, _, problem = str(exc).partition(":")
        shown = (f"--{key.replace('_', '-')}:{problem}" if key in LOOK_KEYS  # a look flag's
                 else str(exc))  # an output option's message names its key itself
        print(f"swapd merge: {shown}", file=sys.stderr)
        return EXIT_USAGE
    if args.preview is not None:  # a look to choose by eye: no time-stamp asked for
        return _preview(args, dataclasses.replace(options, c2pa_timestamp_url=None))
    if timestamp_url is not None:  # the authority asked once now: a warning if it is down
        try:
            check_time_stamps(load_credentials(certificate, private_key,
                                               timestamp_url=timestamp_url))
        except CredentialsError as exc:
            print(f"swapd merge: {exc}", file=sys.stderr)
            return 2
    try:
        with progress_bar(Path(args.input).name) as progress:
            result = merge_file(Path(args.input), Path(args.output), Path(args.model),
                                options=options, progress=progress, alignments=alignments)
    except (UnreadableMediaError, MergeError, DetectorError, CredentialsError,
            ContentCredentialsError, ModelLoadError) as exc:  # DetectorError: a missing
        print(f"swapd merge: {exc}", file=sys.stderr)  # detector or landmark model, the fix
        return 2  # in its message
    print(f"{result.output_path} ({result.frames} frames, {result.faces_swapped} faces swapped,"
          f" {result.fps:.1f} fps)")
    if result.frames_without_face:
        print(f"swapd merge: {faceless_text(result.frames_without_face, result.frames)}",
              file=sys.stderr)
    return 0


def _preview(args: argparse.Namespace, options: object) -> int:
    from swapd.media import UnreadableMediaError
    from swapd.merger.c2pa_credentials import CredentialsError
    from swapd.merger.content_credentials import ContentCredentialsError
    from swapd.merger.merge import MergeError, Merger
    from swapd.merger.preview import preview
    from swapd.merger.session import ModelLoadError

    try:
        merger = Merger(Path(args.model), options)  # type: ignore[arg-type]
        out = preview(merger, Path(args.input), args.preview, args.compare, Path(args.output))
    except (UnreadableMediaError, MergeError, CredentialsError, ContentCredentialsError,
            ModelLoadError) as exc:
        print(f"swapd merge: {exc}", file=sys.stderr)
        return 2
    print(out)
    return 0


def _add_look_flags(p: argparse.ArgumentParser) -> None:
    """One flag per [merge] look key (swapd.config.MergeLook): --color-transfer rct ..."""
    from swapd.config import MergeLook
    from swapd.merger.look import choices

    group = p.add_argument_group("look (the job file's [merge] keys; README: Merge options)")
    for key, field in MergeLook.model_fields.items():
        flag = "--" + key.replace("_", "-")
        kind = field.annotation
        values = choices(key)
        if values:
            group.add_argument(flag, dest=key, choices=values, metavar="|".join(values)
                               if len(values) < 5 else None,
                               help=f"default {field.default}")
        elif kind is bool:
            group.add_argument(flag, dest=key, type=_boolean, metavar="true|false",
                               help=f"default {str(field.default).lower()}")
        else:
            group.add_argument(flag, dest=key, type=kind, help=f"default {field.default}")


def _boolean(text: str) -> bool:
    if text.lower() in ("true", "1", "yes", "on"):
        return True
    if text.lower() in ("false", "0", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def add_verify(sub: Subparsers) -> None:
    """swapd verify"""
    p = sub.add_parser("verify", help="do files carry swapd's provenance marks? (0 yes, 1 no, "
                                      "2 unreadable)")
    p.add_argument("files", nargs="+", metavar="FILE", help="images, videos or folders of them")
    p.add_argument("--json", action="store_true",
                   help="print each file's evidence as one JSON object per line")
    p.add_argument("--trust-anchors", metavar="PEM",
                   help="CA certificates to trust: a C2PA manifest signed under one is "
                        "reported valid (without, every intact manifest is 'untrusted')")
    p.add_argument("--config", type=Path, metavar="TOML",
                   help="swapd.toml: its [merge] c2pa_trust_anchors, unless --trust-anchors "
                        "is given")
    p.set_defaults(func=cmd_verify)


def add_merge(sub: Subparsers) -> None:
    """swapd merge"""
    p = sub.add_parser("merge", help="merge one video, image or image-sequence folder now")
    p.add_argument("input", help="a video, an image, or a folder of PNG/JPEG frames")
    p.add_argument("--model", required=True, help="an .onnx file exported by swapd")
    p.add_argument("--output", default="merged", help="output folder")
    p.add_argument("--faces", default="all", choices=["all", "largest"])
    p.add_argument("--device", choices=["auto", "cpu", "cuda"],
                   help="where onnxruntime runs (default: --config's [merge] device, or auto)")
    p.add_argument("--config", type=Path, metavar="TOML",
                   help="swapd.toml: its [merge] device, c2pa_certificate and "
                        "c2pa_private_key to sign with and c2pa_timestamp_url (the flags "
                        "win)")
    p.add_argument("--alignments", type=Path,
                   help="faces per frame: swapd's .alignments.jsonl or faceswap's .fsa "
                        "(default: INPUT_STEM.alignments.jsonl or INPUT_STEM_alignments.fsa "
                        "beside the input, when present)")
    p.add_argument("--no-learned-mask", action="store_true",
                   help="blend with the mean face's outline even when the model learned a mask")
    p.add_argument("--c2pa-certificate", metavar="PEM",
                   help="C2PA signing chain, signer first (default: swapd's local CA, made on "
                        "first use; validators call it untrusted)")
    p.add_argument("--c2pa-private-key", metavar="PEM", help="the signing certificate's key")
    p.add_argument("--c2pa-timestamp-url", metavar="URL",
                   help="an RFC 3161 time-stamp authority: signatures carry its time-stamps, "
                        "so they stay valid after the certificate expires (one that does not "
                        "answer: signed without, said once); '' for none")
    p.add_argument("--detect", action="store_true",
                   help="detect every face, ignoring any alignments record")
    p.add_argument("--preview", type=int, metavar="N",
                   help="write one image instead: frame N beside its merge (under each value "
                        "of --compare), labelled, to choose a look by eye")
    p.add_argument("--compare", choices=["color_transfer", "mode", "mask", "sharpen"],
                   help="with --preview: the option whose values are shown side by side")
    _add_look_flags(p)
    add_output_arguments(p)
    p.set_defaults(func=cmd_merge)
