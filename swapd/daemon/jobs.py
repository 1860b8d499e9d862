"""Job files: read jobs/*.toml, validate them, keep the state store in step.

A bad job file never stops the service: it gets a problem record naming the file, the key and
what was expected, an "error" state, and a status file beside it; the other jobs carry on.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from swapd.config import ConfigError, JobFile, job_name, load_job_file
from swapd.fsutil import atomic_write_bytes, file_stamp
from swapd.state import JobRow, StateStore
from swapd.workspace import Workspace


@dataclass(frozen=True)
class Job:
    name: str
    path: Path
    spec: JobFile


def validate_job(ws: Workspace, spec: JobFile, shown_as: str, name: str | None = None) -> None:
    """Checks beyond the schema: the model and its options, and that the face sets exist
    (and ``start_from``, unless the job ``name`` has its own checkpoint already)."""
    from swapd.trainer.checkpoint import CHECKPOINT_NAME
    from swapd.trainer.models import UnknownModelError, model_options_class
    from swapd.trainer.options import OptionsError, lr_schedule_problem, split_options

    problems: list[tuple[str, str]] = []
    if spec.train is not None:
        try:
            model_options_class(spec.train.model)
            trainer_options, _ = split_options(spec.train.model, spec.train.options)
            lr_problem = lr_schedule_problem(trainer_options, spec.train.iterations)
            if lr_problem:
                problems.append(("train.options", lr_problem))
        except UnknownModelError as exc:
            problems.append(("train.model", str(exc)))
        except OptionsError as exc:
            problems.append(("train.options", str(exc)))
        for key in ("a", "b"):
            folder = ws.resolve(getattr(spec.train, key))
            if not folder.is_dir():
                problems.append((f"train.{key}", f"face set folder {getattr(spec.train, key)!r}"
                                 " does not exist (expected a folder of aligned faces)"))
        start_from = spec.train.start_from
        started = name is not None and (ws.model_dir(name) / CHECKPOINT_NAME).is_file()
        if start_from is not None and not started and not ws.resolve(start_from).is_file():
            problems.append(("train.start_from", f"{start_from!r} does not exist (expected a "
                             "swapd checkpoint, a model.pt, of the same model)"))
    if spec.merge is not None and spec.merge.model and not ws.resolve(spec.merge.model).is_file():
        problems.append(("merge.model", f"{spec.merge.model!r} does not exist "
                         "(expected an .onnx file exported by swapd)"))
    if problems:
        raise ConfigError(shown_as, problems)


class JobRegistry:
    """The valid jobs of a workspace, refreshed by `scan()`."""

    def __init__(self, ws: Workspace, store: StateStore) -> None:
        self.ws, self.store = ws, store
        self.jobs: dict[str, Job] = {}
        self._seen: dict[Path, tuple[int, int]] = {}  # file -> (size, mtime_ns) last read
        self._failed: set[Path] = set()

    def scan(self, recheck_failed: bool = False, running: frozenset[str] = frozenset()
             ) -> tuple[set[str], set[str]]:
        """Read new or changed job files. Returns (changed job names, removed job names).
        A job in ``running`` (its worker trains) whose file no longer validates keeps the
        version it runs (see :meth:`_load`)."""
        changed: set[str] = set()
        present: set[Path] = set()
        for path in sorted(self.ws.jobs.glob("*.toml")):
            present.add(path)
            key = file_stamp(path)
            if key is None:
                continue
            if self._seen.get(path) == key and not (recheck_failed and path in self._failed):
                continue
            if self._load(path, job_name(path) in running):
                changed.add(job_name(path))
            self._seen[path] = key  # (after: a file whose record failed is read again)
        removed = set()
        for path in set(self._seen) - present:
            del self._seen[path]
            self._failed.discard(path)
            name = job_name(path)
            self.store.clear_problems(self.ws.relative(path))
            if self.jobs.pop(name, None) is not None:
                removed.add(name)
            self.store.remove_job(name)
            _remove_status_file(path)
        return changed, removed

    def _load(self, path: Path, running: bool = False) -> bool:
        """Validate one job file; True when it is (now) a valid job, with a new version."""
        name, shown = job_name(path), self.ws.relative(path)
        try:
            spec = load_job_file(path, shown_as=shown)
            validate_job(self.ws, spec, shown, name)
        except ConfigError as exc:
            self._failed.add(path)
            self.store.clear_problems(shown)
            for key, message in exc.problems:
                self.store.report_problem(shown, "job", f"{shown}: {key}: {message}", key=key)
            row = self.store.job(name)
            if running and name in self.jobs and row is not None:
                # A half-saved or mistyped edit must not stop a job that trains: the worker
                # goes on with the version it runs (also kept in the store, which a restart
                # reads), and the job's state says why the edit was not taken.
                first = str(exc).splitlines()[0]
                self.store.set_job_state(name, row.state, f"{first} (the edit is not used: "
                                         "training goes on with the file's last valid version)")
                self.store.log_event(f"{shown} does not validate: {str(exc)}; training goes "
                                     "on with the last valid version", name, level="error")
                return False
            self.jobs.pop(name, None)
            if row is None:
                self.store.upsert_job(name, shown, "train", "error")
            self.store.set_job_state(name, "error", str(exc))
            return False
        self._failed.discard(path)
        self.store.clear_problems(shown)
        config = spec.model_dump(mode="json")
        existing = self.store.job(name)
        if (existing is not None and existing.config == config and name in self.jobs
                and existing.state != "error"):  # (a touch tries a job in error again)
            # touched, or saved again unchanged: nothing to do (and no state to reset: a
            # paused job stays paused, a training one training)
            if existing.error and existing.state != "error" and "the edit is not used" in (
                    existing.error):
                self.store.set_job_state(name, existing.state)  # (the bad edit was undone)
            return False
        target = spec.train.iterations if spec.train else 0
        self.store.upsert_job(
            name, shown, spec.kind or "train", _state_after_edit(existing, config, target),
            model=spec.train.model if spec.train else None, target=target, config=config)
        self.jobs[name] = Job(name, path, spec)
        return True


def _state_after_edit(existing: JobRow | None, config: dict[str, Any], target: int) -> str:
    """The state a job has once a new version of its file is read: a new job, or one in
    error, is queued; a done job stays done unless the edit gives it iterations to train;
    any other keeps the state it has (the worker's, or a pause or stop the user asked for):
    the service applies the edit to a running worker itself (edits.py)."""
    if existing is None or existing.state == "error":
        return "queued"
    if existing.state == "done":
        unchanged = existing.config == config
        more = target == 0 or target > existing.iteration
        return "queued" if more and not unchanged else "done"
    return existing.state


def write_status_files(ws: Workspace, store: StateStore) -> None:
    """jobs/<name>.status.json beside each job file: what the service thinks of it."""
    for row in store.jobs():
        path = ws.jobs / f"{row.name}.toml"
        if not path.exists():
            continue
        status = {"job": row.name, "state": row.state, "iteration": row.iteration,
                  "target": row.target, "egs": row.egs, "error": row.error,
                  "updated": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(row.updated_at))}
        target = path.with_suffix(".status.json")
        text = json.dumps(status, indent=2) + "\n"
        try:
            if target.exists() and target.read_text(encoding="utf-8") == text:
                continue
            atomic_write_bytes(target, text.encode("utf-8"), durable=False)
        except OSError:
            pass  # a read-only jobs folder must not stop the service


def _remove_status_file(job_path: Path) -> None:
    with contextlib.suppress(OSError):
        job_path.with_suffix(".status.json").unlink()
