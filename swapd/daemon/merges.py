"""The service's merges: one merge worker at a time, for the first footage file (a video, an
image, or a folder of PNG/JPEG frames) of any job that is ready to merge and not merged yet, or
merged with an older export when the job re-merges.

A merge that crashes or is killed is tried again after a back-off (crashes.py), its temp files
removed; footage the merger cannot read is set aside by the worker and not tried again. A merge
is not started without room for its output (disk.py): it waits, said once in the event log,
until there is.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

from swapd.config import MergeDefaults, MergeLook, MergeSection, ServiceConfig
from swapd.daemon.crashes import Backoff, crash_cause
from swapd.daemon.disk import merge_needs, shortage
from swapd.daemon.jobs import Job, JobRegistry
from swapd.daemon.workers import (
    EXIT_BAD_INPUT,
    EXIT_NOT_FINISHED,
    EXIT_OK,
    WorkerProcess,
    start_worker,
)
from swapd.media import IMAGE_SUFFIXES, VIDEO_SUFFIXES
from swapd.merger.sequence import SEQUENCE_SUFFIXES
from swapd.merger.video import remove_temp_files
from swapd.state import StateStore
from swapd.workspace import Workspace

log = logging.getLogger("swapd.service")


def look_json(merge: MergeSection) -> str:
    """The job's merge options that differ from the defaults, for the merge worker."""
    look = MergeLook.model_validate({k: getattr(merge, k) for k in MergeLook.model_fields})
    return json.dumps(look.model_dump(exclude_defaults=True))


def _last_change(source: Path) -> float | None:
    """When footage last changed: a video's or image's mtime; for an image sequence (a
    folder of PNG/JPEG frames) the newest of its frames' and its own. None: not footage."""
    try:
        if source.is_file():
            suffix = source.suffix.lower()
            return source.stat().st_mtime if suffix in VIDEO_SUFFIXES | IMAGE_SUFFIXES else None
        if not source.is_dir() or source.name.startswith("."):
            return None
        frames = [p.stat().st_mtime for p in source.iterdir()
                  if p.suffix.lower() in SEQUENCE_SUFFIXES and p.is_file()]
    except OSError:
        return None
    return max([*frames, source.stat().st_mtime]) if frames else None


def job_model(ws: Workspace, job: str, merge: MergeSection) -> Path:
    """The model a job merges with: its ``[merge] model``, else its newest export."""
    return ws.resolve(merge.model) if merge.model else ws.exports_dir(job) / "a_to_b.onnx"


def look_flags(merge: MergeSection) -> list[str]:
    """The job's look (the options that differ from the defaults) as `swapd merge` flags."""
    return [f"--{key.replace('_', '-')}={str(value).lower() if isinstance(value, bool) else value}"
            for key, value in json.loads(look_json(merge)).items()]


def output_args(merge: MergeSection) -> list[str]:
    """The merge worker's flags for a job's [merge] output keys."""
    ranges = ["--frame-ranges", *merge.frame_ranges] if merge.frame_ranges else []
    return ["--codec", merge.codec, "--crf", str(merge.crf), "--preset", merge.preset,
            "--image-format", merge.image_format, *ranges]


def c2pa_args(merge: MergeDefaults, time_stamped: bool = True) -> list[str]:
    """The merge worker's C2PA options for swapd.toml's [merge] c2pa_* keys (a preview's,
    ``time_stamped=False``: without the time-stamp authority)."""
    return [*(["--c2pa-certificate", merge.c2pa_certificate] if merge.c2pa_certificate else []),
            *(["--c2pa-private-key", merge.c2pa_private_key] if merge.c2pa_private_key else []),
            *(["--c2pa-timestamp-url", merge.c2pa_timestamp_url]
              if merge.c2pa_timestamp_url and time_stamped else [])]


class MergeQueue:
    def __init__(self, ws: Workspace, store: StateStore, jobs: JobRegistry,
                 config: ServiceConfig, wake_later: Callable[[float], None]) -> None:
        self.ws, self.store, self.jobs, self.config = ws, store, jobs, config
        self.wake_later = wake_later
        self.worker: WorkerProcess | None = None
        self._backoff: dict[Path, Backoff] = {}
        self._short: dict[Path, str] = {}  # footage waiting for disk space -> what was said
        self._cleaned: set[Path] = set()  # output folders cleared of temp files
        # footage whose output could not be finished -> its last change then: not tried
        # again until it changes (or the service restarts)
        self._not_finished: dict[Path, float | None] = {}

    def clear_temp_files(self) -> None:
        """Remove what merges killed mid-write left in output/ (at start: none runs)."""
        folders = [self.ws.output, *(p for p in self.ws.output.rglob("*") if p.is_dir())]
        removed = sum(remove_temp_files(folder) for folder in folders)
        self._cleaned.update(folders)
        if removed:
            log.info("removed %d temp files of interrupted merges", removed)

    def start_next(self) -> None:
        if self.worker is not None:
            return
        found = self._next()
        if found is None:
            return
        job, source, model, output, iteration, again = found
        assert job.spec.merge is not None
        self.worker = start_worker(
            "merge_worker",
            ["--workspace", str(self.ws.root), "--job", job.name, "--input", str(source),
             "--model", str(model), "--output", str(output), "--faces", job.spec.merge.faces,
             "--device", self.config.merge.device,
             *c2pa_args(self.config.merge),
             *([] if job.spec.merge.learned_mask else ["--no-learned-mask"]),
             "--look", look_json(job.spec.merge),
             *output_args(job.spec.merge),
             *([] if iteration is None else ["--model-iteration", str(iteration)]),
             *(["--remerge"] if again else [])],
            job.name, "merge", self.ws.logs / f"{job.name}.merge.log", source=source,
            output=output)
        log.info("%s %s with %s", "merging again" if again else "merging",
                 self.ws.relative(source), self.ws.relative(model))

    def _export_iteration(self, job: str, model: Path) -> int | None:
        """The training iteration of the export ``model`` holds (the job's own export, as
        the state store recorded it); None for a model from elsewhere."""
        export = self.store.latest_artifact(job, "export")
        if export is None or Path(export.path) != model:
            return None
        return export.iteration

    def _merged_with(self, job: str) -> dict[str, int]:
        """Footage merged so far -> the newest model iteration it was merged with (-1 when
        not known: merged with a model from elsewhere, or before iterations were recorded)."""
        merged: dict[str, int] = {}
        for artifact in self.store.artifacts(job, "merge", limit=100_000):
            info = artifact.info or {}
            iteration = info.get("model_iteration")
            source = str(info.get("source"))
            merged[source] = max(merged.get(source, -1),
                                 iteration if isinstance(iteration, int) else -1)
        return merged

    @staticmethod
    def _remerge_due(merge: MergeSection, state: str, iteration: int | None,
                     merged_with: int) -> bool:
        """Whether footage merged with ``merged_with`` is merged again with the export of
        ``iteration``: ``on_export`` as soon as a newer export appears, ``on_done`` once
        training is done (with its final export)."""
        if merge.remerge == "never" or iteration is None or iteration <= merged_with:
            return False
        return merge.remerge == "on_export" or state == "done"

    def _next(self) -> tuple[Job, Path, Path, Path, int | None, bool] | None:
        """The first footage file of any job that is ready to merge and not merged yet (or
        merged with an older export, when the job re-merges); with the export's iteration
        and whether it is a re-merge."""
        for job in sorted(self.jobs.jobs.values(), key=lambda j: j.name):
            merge = job.spec.merge
            if merge is None:
                continue
            model = job_model(self.ws, job.name, merge)
            row = self.store.job(job.name)
            if not model.is_file() or row is None:
                continue
            if merge.wait_for == "done" and job.spec.train is not None and row.state != "done":
                continue
            footage = self.ws.resolve(merge.footage)
            if not footage.is_dir():
                continue
            output = self.ws.resolve(merge.output or f"output/{job.name}")
            if output not in self._cleaned:  # (an output folder outside output/)
                remove_temp_files(output)
                self._cleaned.add(output)
            merged = self._merged_with(job.name)
            iteration = self._export_iteration(job.name, model)
            for source in sorted(footage.iterdir()):
                again = str(source) in merged
                changed = _last_change(source)
                if (changed is None or self._not_finished.get(source, -1.0) == changed
                        or (again and not self._remerge_due(merge, row.state, iteration,
                                                            merged[str(source)]))
                        or (source in self._backoff and self._backoff[source].waiting())):
                    continue
                if time.time() - changed < self.config.ingest.settle_seconds:
                    self.wake_later(self.config.ingest.settle_seconds)
                    continue
                if self._no_room(job.name, source, output):
                    continue
                return job, source, model, output, iteration, again
        return None

    def _no_room(self, job: str, source: Path, output: Path) -> bool:
        """True (said once) when ``output`` lacks the room to merge ``source``."""
        short = shortage(output, merge_needs(source),
                         f"a merge of {self.ws.relative(source)}", "waiting for space")
        if short is None:
            if self._short.pop(source, None) is not None:
                self.store.log_event(f"space is back: merging {self.ws.relative(source)}", job)
            return False
        if self._short.get(source) is None:
            self._short[source] = str(short)
            log.warning("%s", short)
            self.store.log_event(str(short), job, level="warning")
        return True

    def reap(self) -> bool:
        """Handle the merge worker's exit, if it exited; True when it did."""
        if self.worker is None or (code := self.worker.poll()) is None:
            return False
        worker, self.worker = self.worker, None
        source = worker.source
        assert source is not None
        shown = self.ws.relative(source)
        self.store.end_merge_progress(worker.job, shown)  # (if it was killed)
        if code == EXIT_OK:
            self._backoff.pop(source, None)
            self._not_finished.pop(source, None)
            self.store.clear_problems(shown)  # an earlier try's failure
            log.info("merged %s", shown)
            return True
        if code == EXIT_BAD_INPUT:
            log.warning("set aside %s (unreadable footage)", shown)
            return True  # the worker moved it and recorded why
        if code == EXIT_NOT_FINISHED:  # the worker recorded why; the output is gone
            self._not_finished[source] = _last_change(source)
            if worker.output is not None:
                remove_temp_files(worker.output)
            log.warning("merge of %s not kept (its output could not be signed)", shown)
            return True
        output = worker.output
        if output is not None:
            remove_temp_files(output)
        cause = crash_cause(code, worker.log_tail())
        if output is not None and (short := shortage(output, merge_needs(source), "a merge")):
            cause = str(short)
        delay = self._backoff.setdefault(source, Backoff()).crashed(
            time.monotonic() - worker.started)
        message = f"merge of {shown} failed ({cause}); log: {self.ws.relative(worker.log_path)}"
        log.error("%s\n%s", message, worker.log_tail())
        self.store.report_problem(shown, "footage", message)
        self.store.log_event(f"merge of {shown} failed ({cause}); trying again in "
                             f"{delay:.0f} s", worker.job, level="error")
        self.wake_later(delay)
        return True
