"""The dashboard's JSON API, `/api/v1/`: the same reads as the pages, for scripts and other
dashboards, and the controls as POST (documented in the README).

Reads answer 503 while the service has not made its database yet, 404 for a job, snapshot or
face that is not there, 400 (with ``{"error": ...}`` naming the parameter) for a bad one.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import IO, Any, TypeVar

import flask

from swapd.dashboard import controls, merge_previews, reads, tracker_reads
from swapd.state import TRACKER_SORTS, StateStore
from swapd.state.csv_files import write_losses_csv, write_sessions_csv
from swapd.workspace import Workspace

API = "/api/v1"
MAX_LOSS_ROWS = 10_000  # per call; ask again with since= the last iteration for more
MAX_PAGE = 500
T = TypeVar("T")


class BadRequest(ValueError):
    """A request parameter that cannot be used: answered 400 with the message."""


class NotThere(LookupError):
    """A job, snapshot or face that does not exist: answered 404."""


def create_api(workspace: Workspace) -> flask.Blueprint:
    api = flask.Blueprint("api_v1", __name__, url_prefix=API)

    def answer(read: Callable[[StateStore], Any]) -> flask.Response:
        try:
            found = reads.with_store(workspace, read)
        except BadRequest as exc:
            return _error(str(exc), 400)
        except NotThere as exc:
            return _error(str(exc), 404)
        if found is None:
            return _error("waiting for the service: no state database yet", 503)
        return flask.jsonify(found)

    def job_row(store: StateStore, job: str) -> Any:
        row = store.job(job)
        if row is None:
            raise NotThere(f"no job {job!r}")
        return row

    @api.get("/jobs")
    def jobs() -> flask.Response:
        return answer(lambda store: {"jobs": reads.jobs(store)})

    @api.get("/jobs/<job>")
    def job(job: str) -> flask.Response:
        def read(store: StateStore) -> Any:
            detail = reads.job_detail(workspace, store, job)
            if detail is None:
                raise NotThere(f"no job {job!r}")
            return detail
        return answer(read)

    @api.get("/jobs/<job>/losses")
    def losses(job: str) -> flask.Response:
        since = _int_arg("since", -1)

        def read(store: StateStore) -> Any:
            job_row(store, job)
            rows = store.loss_rows(job, since=since, limit=MAX_LOSS_ROWS)
            return {"job": job, "since": since, "more": len(rows) == MAX_LOSS_ROWS,
                    "losses": [row._asdict() for row in rows]}
        return answer(read)

    def csv_file(job: str, kind: str, write: Callable[[StateStore, IO[str]], None]
                 ) -> flask.Response:
        def read(store: StateStore) -> str:
            job_row(store, job)
            out = io.StringIO()
            write(store, out)
            return out.getvalue()
        return _csv(workspace, read, f"{job}_{kind}.csv")

    @api.get("/jobs/<job>/losses.csv")
    def losses_csv(job: str) -> flask.Response:
        return csv_file(job, "losses", lambda store, out: write_losses_csv(
            lambda: store.loss_rows(job), out))

    @api.get("/jobs/<job>/sessions.csv")
    def sessions_csv(job: str) -> flask.Response:
        return csv_file(job, "sessions", lambda store, out: write_sessions_csv(
            store.sessions(job), out))

    @api.get("/jobs/<job>/sessions")
    def sessions(job: str) -> flask.Response:
        def read(store: StateStore) -> Any:
            job_row(store, job)
            return {"job": job, "sessions": [reads.session_dict(s) for s in store.sessions(job)]}
        return answer(read)

    @api.get("/jobs/<job>/previews")
    def previews(job: str) -> flask.Response:
        def read(store: StateStore) -> Any:
            job_row(store, job)
            return {"job": job, "previews": reads.preview_history(workspace, store, job)}
        return answer(read)

    @api.get("/jobs/<job>/snapshots")
    def snapshots(job: str) -> flask.Response:
        def read(store: StateStore) -> Any:
            job_row(store, job)
            return {"job": job, "snapshots": tracker_reads.snapshots(store, job)}
        return answer(read)

    @api.get("/jobs/<job>/snapshots/<int:iteration>/faces")
    def snapshot_faces(job: str, iteration: int) -> flask.Response:
        side = _side_arg()
        sort = flask.request.args.get("sort", "-loss")
        if sort not in TRACKER_SORTS:
            return _error(f"sort must be one of {', '.join(TRACKER_SORTS)}", 400)
        offset, limit = _int_arg("offset", 0), _int_arg("limit", tracker_reads.PAGE_SIZE)
        if offset < 0 or not 1 <= limit <= MAX_PAGE:
            return _error(f"offset must be 0 or more and limit 1..{MAX_PAGE}", 400)
        try:
            yaw = tracker_reads.parse_range(flask.request.args.get("yaw"))
            pitch = tracker_reads.parse_range(flask.request.args.get("pitch"))
        except ValueError as exc:
            return _error(f"yaw/pitch: {exc}", 400)
        compare_to = flask.request.args.get("compare_to")

        def read(store: StateStore) -> Any:
            job_row(store, job)
            taken = tracker_reads.snapshots(store, job)
            if iteration not in [s["iteration"] for s in taken]:
                raise NotThere(f"no snapshot with tracker data at iteration {iteration}")
            _, against = tracker_reads.resolve_snapshot(taken, str(iteration), compare_to)
            return tracker_reads.snapshot_faces(
                workspace, store, job, iteration, side, sort, against, yaw, pitch,
                focus_only=flask.request.args.get("focus") == "1", offset=offset, limit=limit)
        if compare_to not in (None, "") and not compare_to.isdigit():
            return _error("compare_to must be a snapshot's iteration", 400)
        return answer(read)

    @api.get("/jobs/<job>/snapshots/<int:iteration>/cells")
    def snapshot_cells(job: str, iteration: int) -> flask.Response:
        side = _side_arg()
        return answer(lambda store: {
            "job": job, "iteration": iteration, "side": side,
            **tracker_reads.snapshot_cells(store, job, iteration, side)})

    @api.get("/jobs/<job>/faces/<side>/<path:name>/timeline")
    def timeline(job: str, side: str, name: str) -> flask.Response:
        if side not in tracker_reads.SIDES:
            return _error("side must be a or b", 400)

        def read(store: StateStore) -> Any:
            job_row(store, job)
            found = tracker_reads.timeline(workspace, store, job, side, name)
            if not found["snapshots"]:
                raise NotThere(f"no snapshot tracked face {name!r} of side {side}")
            return found
        return answer(read)

    @api.get("/jobs/<job>/compare")
    def compare(job: str) -> flask.Response:
        first, second = _int_arg("first", -1), _int_arg("second", -1)
        return answer(lambda store: {"job": job, **tracker_reads.compare(
            workspace, store, job, first, second, top=_int_arg("top", 5))})

    @api.get("/jobs/<job>/focus")
    def focus(job: str) -> flask.Response:
        def read(store: StateStore) -> Any:
            job_row(store, job)
            return {"job": job, "focus": {side: sorted(names) for side, names
                                          in store.focus_faces(job).items()}}
        return answer(read)

    @api.get("/jobs/<job>/controls")
    def control_list(job: str) -> flask.Response:
        def read(store: StateStore) -> Any:
            job_row(store, job)
            return {"job": job, "controls": [reads.control_dict(c)
                                             for c in store.control_requests(job)]}
        return answer(read)

    @api.post("/jobs/<job>/controls")
    def control(job: str) -> flask.Response:
        body = flask.request.get_json(silent=True)
        if not isinstance(body, dict):
            return _error('send a JSON object, e.g. {"action": "pause"}', 400)
        try:
            request_id = controls.request(workspace, job, body)
        except controls.ControlError as exc:
            return _error(str(exc), exc.status)
        return flask.jsonify({"id": request_id, "job": job, "action": body.get("action")}), 202

    @api.get("/jobs/<job>/previews/<int:request_id>")
    def merge_preview(job: str, request_id: int) -> flask.Response:
        """Where a merge preview asked with POST .../controls {"action": "preview", ...}
        stands, and the sheet's URL once it is ready."""
        def read(store: StateStore) -> Any:
            request = store.control_request(request_id)
            if request is None or request.job != job or request.action != "preview":
                raise NotThere(f"{job} has no preview request {request_id}")
            return merge_previews.preview_state(workspace, request)
        return answer(read)

    @api.get("/footage")
    def footage() -> flask.Response:
        """What a merge preview may be asked of: every merging job's footage files."""
        def read(store: StateStore) -> Any:
            return {"footage": [{**f, "frames": merge_previews.frame_count(workspace, f["source"])}
                                for f in merge_previews.footage_files(workspace, store)]}
        return answer(read)

    @api.get("/problems")
    def problems() -> flask.Response:
        return answer(lambda store: {"problems": [
            {"id": p.id, "time": p.time, "source": p.source, "kind": p.kind, "key": p.key,
             "message": p.message, "moved_to": p.moved_to} for p in store.problems()]})

    @api.get("/events")
    def events() -> flask.Response:
        return answer(lambda store: {"events": [
            {"time": t, "job": j, "level": level, "message": m}
            for t, j, level, m in store.events(limit=min(_int_arg("limit", 100), 1000))]})

    @api.get("/faces")
    def face_sets() -> flask.Response:
        return answer(lambda store: {"sets": store.face_sets()})

    @api.get("/outputs")
    def outputs() -> flask.Response:
        return answer(lambda store: {
            "merges": [reads.artifact_dict(workspace, a)
                       for a in store.artifacts(kind="merge", limit=200)],
            "exports": reads.newest_exports(workspace, store),
            "under_way": [m.__dict__ for m in store.merges_under_way()]})

    @api.errorhandler(BadRequest)
    def bad_request(exc: BadRequest) -> flask.Response:
        return _error(str(exc), 400)

    return api


def _csv(workspace: Workspace, read: Callable[[StateStore], str], name: str
         ) -> flask.Response:
    try:
        text = reads.with_store(workspace, read)
    except NotThere as exc:
        return _error(str(exc), 404)
    if text is None:
        return _error("waiting for the service: no state database yet", 503)
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in name)
    return flask.Response(text, mimetype="text/csv",
                          headers={"Content-Disposition": f'attachment; filename="{safe}"'})


def _error(message: str, status: int) -> flask.Response:
    response = flask.jsonify({"error": message})
    response.status_code = status
    return response


def _int_arg(name: str, default: int) -> int:
    text = flask.request.args.get(name)
    if text in (None, ""):
        return default
    try:
        return int(text)
    except ValueError:
        raise BadRequest(f"{name} must be a whole number, not {text!r}") from None


def _side_arg() -> str:
    side = flask.request.args.get("side", "a")
    if side not in tracker_reads.SIDES:
        raise BadRequest("side must be a or b")
    return side
