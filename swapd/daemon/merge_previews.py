"""Merge previews the dashboard asks for: the service renders them, one at a time.

The dashboard's outputs page queues a ``preview`` request (a job, one of its footage files, a
frame, the option to compare) in the state store's control queue; the dashboard never runs a
model. The service takes the requests and renders each with ``swapd merge --preview`` in a
child process (the service never loads the model itself), with the job's model and look, into
``output/<job>/previews/<request id>/``: the labelled sheet, watermarked and tagged as every
merged output is. The request's result says what came of it; the page shows the sheet once it
is there.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
from pathlib import Path

from swapd.config import ServiceConfig
from swapd.daemon.jobs import JobRegistry
from swapd.daemon.merges import c2pa_args, job_model, look_flags
from swapd.state import ControlRequest, StateStore
from swapd.workspace import Workspace

log = logging.getLogger("swapd.service")

RENDER_TIMEOUT = 300.0  # seconds for one sheet


class MergePreviews:
    def __init__(self, ws: Workspace, jobs: JobRegistry, config: ServiceConfig) -> None:
        self.ws, self.jobs, self.config = ws, jobs, config
        self._thread: threading.Thread | None = None
        self._child: subprocess.Popen[str] | None = None
        self._stopping = threading.Event()

    def start_next(self, store: StateStore) -> None:
        """Take the pending preview requests and render them in the background (those asked
        while a render runs wait for the next turn of the loop)."""
        if self._thread is not None and self._thread.is_alive():
            return
        requests = store.take_service_requests("preview")
        commands = []
        for request in requests:
            try:
                commands.append((request, self.command(request)))
            except ValueError as exc:
                store.finish_control(request.id, f"not rendered: {exc}")
        if commands:
            self._thread = threading.Thread(target=self._render, args=(commands,),
                                            name="swapd-merge-previews", daemon=True)
            self._thread.start()

    def command(self, request: ControlRequest) -> list[str]:
        """The `swapd merge --preview` command for ``request``; ValueError says why none."""
        job = self.jobs.jobs.get(request.job)
        if job is None:
            raise ValueError(f"{request.job}'s job file is not in effect (it has an error, or "
                             "is gone)")
        merge = job.spec.merge
        if merge is None:
            raise ValueError(f"{request.job} has no [merge] section")
        model = job_model(self.ws, request.job, merge)
        if not model.is_file():
            raise ValueError(f"no model to merge with yet ({self.ws.relative(model)} is missing)")
        footage = self.ws.resolve(merge.footage).resolve()
        source = self.ws.resolve(str(request.args.get("source", ""))).resolve()
        if not source.is_relative_to(footage) or not source.is_file():
            raise ValueError(f"{request.args.get('source')!r} is not a file of "
                             f"{request.job}'s footage ({merge.footage})")
        frame, compare = request.args.get("frame"), request.args.get("compare")
        if isinstance(frame, bool) or not isinstance(frame, int) or frame < 0:
            raise ValueError(f"frame must be a frame's number (0 or more), not {frame!r}")
        merge_config = self.config.merge
        return [sys.executable, "-m", "swapd", "merge", str(source), "--model", str(model),
                "--output", str(self.ws.merge_preview_dir(request.job, request.id)),
                "--preview", str(frame), *(["--compare", str(compare)] if compare else []),
                "--faces", merge.faces, "--device", merge_config.device,
                *c2pa_args(merge_config, time_stamped=False),
                *([] if merge.learned_mask else ["--no-learned-mask"]), *look_flags(merge)]

    def _render(self, commands: list[tuple[ControlRequest, list[str]]]) -> None:
        store = StateStore(self.ws.state_db)
        try:
            for request, command in commands:
                if self._stopping.is_set():
                    store.finish_control(request.id, "not rendered: the service stopped")
                    continue
                store.finish_control(request.id, self._run(command))
        finally:
            store.close()

    def _run(self, command: list[str]) -> str:
        """Run one render; what came of it, in words."""
        try:
            self._child = subprocess.Popen(command, stdout=subprocess.PIPE,
                                           stderr=subprocess.PIPE, text=True)
            out, err = self._child.communicate(timeout=RENDER_TIMEOUT)
        except subprocess.TimeoutExpired:
            self._child.kill()
            self._child.communicate()
            return f"not rendered: it took over {RENDER_TIMEOUT:.0f} s"
        except OSError as exc:
            return f"not rendered: {exc}"
        finally:
            code = self._child.returncode if self._child is not None else None
            self._child = None
        lines = (out or "").strip().splitlines()
        if code == 0 and lines:
            log.info("merge preview written: %s", lines[-1])
            return f"rendered {self.ws.relative(Path(lines[-1]))}"
        problem = (err or out or "").strip().splitlines()
        return "not rendered: " + (problem[-1].removeprefix("swapd merge: ") if problem
                                   else f"exit status {code}")

    def stop(self) -> None:
        """Stop a render under way (the service is stopping)."""
        self._stopping.set()
        child = self._child
        if child is not None and child.poll() is None:
            child.terminate()
