"""The dashboard app: jobs, live loss graphs, previews, outputs, problems and events.

It only reads. Every callback opens its own read-only connection to the state database, so it
never holds a lock the trainer waits on, and a dashboard that starts before the service created
the database shows "waiting for the service" until the database appears.

Workspace files (previews, exports, merged outputs) are served by `/files/<path>`, which serves
only regular files inside the workspace's models/ and output/ folders.
"""

from __future__ import annotations

import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any
from urllib.parse import quote

import flask
from dash import Dash, Input, Output, State, dcc, html, no_update

from swapd.state import Artifact, JobRow, Problem, StateStore
from swapd.workspace import Workspace

ASSETS_FOLDER = Path(__file__).parent / "assets"
FILES_ROUTE = "/files/"
SERVED_FOLDERS = ("models", "output")
LOSS_COLORS = {"A": "#2563eb", "B": "#ea580c"}
STATE_CLASSES = {"training": "ok", "done": "done", "error": "bad", "waiting": "warn"}


class FileRefused(Exception):
    """A request for a file the dashboard must not serve (outside models/ and output/)."""


# --- files ------------------------------------------------------------------------------------


def served_path(workspace: Workspace, relative: str) -> Path:
    """The file a `/files/<relative>` request may serve.

    Raises FileRefused for anything that is not a plain relative path into models/ or output/
    (absolute paths, drive letters, `..`, symlinks that lead out), FileNotFoundError when the
    file is not there.
    """
    posix, windows = PurePosixPath(relative), PureWindowsPath(relative)
    if not relative or posix.is_absolute() or windows.is_absolute() or windows.drive:
        raise FileRefused(f"{relative!r}: not a path relative to the workspace")
    if ".." in posix.parts or ".." in windows.parts:
        raise FileRefused(f"{relative!r}: '..' is not allowed")
    if posix.parts[0] not in SERVED_FOLDERS:
        raise FileRefused(f"{relative!r}: only models/ and output/ are served")
    base = (workspace.root / posix.parts[0]).resolve()
    # resolve() follows symlinks, so a link that points out of the folder is caught here
    target = (workspace.root / posix).resolve()
    if not target.is_relative_to(base):
        raise FileRefused(f"{relative!r}: leads outside {posix.parts[0]}/")
    if not target.is_file():
        raise FileNotFoundError(f"{relative!r}: no such file")
    return target


def file_url(workspace: Workspace, path: str | Path) -> str | None:
    """The dashboard URL of a workspace file, with its mtime for cache-busting; None if the
    file is missing or outside the served folders."""
    absolute = Path(os.path.abspath(workspace.resolve(path)))
    relative = None
    for root in (workspace.root, workspace.root.resolve()):
        try:
            relative = absolute.relative_to(root)
            break
        except ValueError:
            continue
    if relative is None or not relative.parts or relative.parts[0] not in SERVED_FOLDERS:
        return None
    try:
        mtime = absolute.stat().st_mtime_ns
    except OSError:
        return None
    return f"{FILES_ROUTE}{quote(relative.as_posix())}?v={mtime}"


def _add_file_route(server: flask.Flask, workspace: Workspace) -> None:
    @server.route(f"{FILES_ROUTE}<path:relative>")
    def serve_file(relative: str) -> flask.Response:
        try:
            path = served_path(workspace, relative)
        except FileRefused:
            flask.abort(403)
        except FileNotFoundError:
            flask.abort(404)
        # a versioned URL (?v=mtime) never changes content, so the browser may keep it
        max_age = 31_536_000 if flask.request.args.get("v") else None
        return flask.send_file(path, conditional=True, max_age=max_age)

    @server.before_request
    def refuse_unrouted_files() -> None:
        # e.g. /files//etc/passwd matches no rule and would fall through to Dash's catch-all page
        if flask.request.path.startswith(FILES_ROUTE) and flask.request.endpoint != "serve_file":
            flask.abort(403)


# --- reading state ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Overview:
    jobs: list[JobRow]
    merges: list[Artifact]
    exports: list[Artifact]
    problems: list[Problem]
    events: list[tuple[float, str | None, str, str]]
    face_sets: dict[str, dict[str, int]]


@dataclass(frozen=True)
class JobDetail:
    losses: list[tuple[int, float, float]]
    preview: Artifact | None


def _open(workspace: Workspace) -> StateStore | None:
    if not workspace.state_db.is_file():
        return None
    try:
        return StateStore(workspace.state_db, readonly=True)
    except sqlite3.Error:
        return None


def read_overview(workspace: Workspace) -> Overview | None:
    """Everything the page shows for all jobs; None while there is no usable database."""
    store = _open(workspace)
    if store is None:
        return None
    try:
        return Overview(store.jobs(), store.artifacts(kind="merge", limit=50),
                        store.artifacts(kind="export", limit=50), store.problems(limit=100),
                        store.events(limit=40), store.face_sets())
    except sqlite3.Error:  # the service is still creating the schema
        return None
    finally:
        store.close()


def read_job(workspace: Workspace, job: str) -> JobDetail | None:
    store = _open(workspace)
    if store is None:
        return None
    try:
        return JobDetail(store.losses(job), store.latest_artifact(job, "preview"))
    except sqlite3.Error:
        return None
    finally:
        store.close()


# --- rendering --------------------------------------------------------------------------------


def _when(t: float | None) -> str:
    if t is None:
        return "—"
    moment = time.localtime(t)
    same_day = time.strftime("%Y-%m-%d", moment) == time.strftime("%Y-%m-%d")
    return time.strftime("%H:%M:%S" if same_day else "%Y-%m-%d %H:%M", moment)


def _size(path: Path) -> str:
    try:
        size = float(path.stat().st_size)
    except OSError:
        return "missing"
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def _table(headers: list[str], rows: list[Any], empty: str, table_id: str) -> Any:
    if not rows:
        return html.P(empty, className="empty", id=table_id)
    return html.Table(
        [html.Thead(html.Tr([html.Th(h) for h in headers])), html.Tbody(rows)],
        className="table", id=table_id,
    )


def _progress(job: JobRow) -> Any:
    if job.target <= 0:
        return html.Span(f"{job.iteration:,}", className="num")
    share = min(1.0, job.iteration / job.target)
    return html.Div([
        html.Span(f"{job.iteration:,} / {job.target:,}", className="num"),
        html.Div(html.Div(className="bar-fill", style={"width": f"{share:.1%}"}), className="bar"),
    ], className="progress")


def _jobs_table(jobs: list[JobRow], selected: str | None) -> Any:
    rows = [
        html.Tr([
            html.Td(job.name, className="name"),
            html.Td(job.kind),
            html.Td(html.Span(job.state, className=f"badge {STATE_CLASSES.get(job.state, '')}")),
            html.Td(_progress(job)),
            html.Td(f"{job.egs:.1f}" if job.egs is not None else "—", className="num"),
            html.Td(job.model or "—"),
            html.Td(job.error or "", className="error-text", title=job.error or ""),
        ], className="selected" if job.name == selected else None)
        for job in jobs
    ]
    return _table(["Job", "Kind", "State", "Iteration", "EG/s", "Model", "Last error"], rows,
                  "No jobs yet: drop a job file (*.toml) into the workspace's jobs/ folder.",
                  "jobs")


def _file_cell(workspace: Workspace, path: str) -> Any:
    name = Path(path).name
    url = file_url(workspace, path)
    return html.A(name, href=url, target="_blank") if url else html.Span(name)


def _artifact_row(workspace: Workspace, artifact: Artifact, with_iteration: bool) -> Any:
    cells = [html.Td(_file_cell(workspace, artifact.path), className="name"),
             html.Td(artifact.job)]
    if with_iteration:
        iteration = artifact.iteration
        cells.append(html.Td(f"{iteration:,}" if iteration is not None else "—", className="num"))
    cells += [html.Td(_when(artifact.time)),
              html.Td(_size(workspace.resolve(artifact.path)), className="num")]
    return html.Tr(cells)


def _merges_table(workspace: Workspace, merges: list[Artifact]) -> Any:
    rows = [_artifact_row(workspace, a, with_iteration=False) for a in merges]
    return _table(["File", "Job", "Made", "Size"], rows, "No merged outputs yet.", "merges")


def _exports_table(workspace: Workspace, exports: list[Artifact]) -> Any:
    # An export is rewritten in place at every save: list each file once, at its newest.
    newest: dict[str, Artifact] = {}
    for artifact in exports:  # newest first
        newest.setdefault(artifact.path, artifact)
    rows = [_artifact_row(workspace, a, with_iteration=True) for a in newest.values()]
    return _table(["File", "Job", "Iteration", "Made", "Size"], rows, "No exports yet.",
                  "exports")


def _shown(workspace: Workspace, path: str) -> str:
    """A stored path as the user knows it: relative to the workspace when inside it."""
    return workspace.relative(workspace.resolve(path))


def _problems_table(workspace: Workspace, problems: list[Problem]) -> Any:
    rows = [html.Tr([
        html.Td(_shown(workspace, p.source), className="name", title=p.source),
        html.Td(p.kind), html.Td(p.key or "—"), html.Td(p.message, className="message"),
        html.Td(_shown(workspace, p.moved_to) if p.moved_to else "—"),
        html.Td(_when(p.time)),
    ]) for p in problems]
    return _table(["File", "Kind", "Key / part", "Problem", "Set aside to", "When"], rows,
                  "No problems: all input was readable.", "problems")


def _face_sets_table(face_sets: dict[str, dict[str, int]]) -> Any:
    rows = [html.Tr([html.Td(f"faces/{name}"), html.Td(counts["ok"]),
                     html.Td(counts["quarantined"],
                             className="num error-text" if counts["quarantined"] else "num"),
                     html.Td(counts["duplicates"])])
            for name, counts in face_sets.items()]
    return _table(["Set", "Faces", "Quarantined", "Duplicates"], rows,
                  "No faces indexed yet.", "face-sets-table")


def _events_table(events: list[tuple[float, str | None, str, str]]) -> Any:
    rows = [html.Tr([html.Td(_when(t)), html.Td(job or "—"),
                     html.Td(message, className=f"message level-{level}")])
            for t, job, level, message in events]
    return _table(["When", "Job", "Event"], rows, "Nothing has happened yet.", "events")


def _status(overview: Overview | None) -> Any:
    if overview is None:
        return html.Span("Waiting for the service: no state database yet", className="pill warn")
    training = sum(job.state == "training" for job in overview.jobs)
    parts = [_count(len(overview.jobs), "job"), f"{training} training"]
    if overview.problems:
        parts.append(_count(len(overview.problems), "problem"))
    parts.append(f"updated {time.strftime('%H:%M:%S')}")
    return html.Span(" · ".join(parts), className="pill ok")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _empty_figure(message: str) -> dict[str, Any]:
    return {"data": [], "layout": {
        "template": "plotly_white", "margin": {"l": 50, "r": 20, "t": 20, "b": 40},
        "xaxis": {"visible": False}, "yaxis": {"visible": False},
        "annotations": [{"text": message, "showarrow": False, "xref": "paper", "yref": "paper",
                         "x": 0.5, "y": 0.5, "font": {"size": 15, "color": "#64748b"}}],
    }}


def loss_figure(job: str, losses: list[tuple[int, float, float]], scale: str) -> dict[str, Any]:
    """Loss A and loss B against iteration."""
    if not losses:
        return _empty_figure("No loss history yet")
    iterations = [row[0] for row in losses]
    traces = [
        {"type": "scatter", "mode": "lines", "name": f"loss {side}", "x": iterations,
         "y": [row[column] for row in losses], "line": {"color": LOSS_COLORS[side], "width": 1.6},
         "hovertemplate": f"loss {side} %{{y:.5f}}<br>iteration %{{x:,}}<extra></extra>"}
        for side, column in (("A", 1), ("B", 2))
    ]
    return {"data": traces, "layout": {
        "template": "plotly_white", "uirevision": f"{job}:{scale}",
        "margin": {"l": 60, "r": 20, "t": 30, "b": 45},
        "xaxis": {"title": {"text": "iteration"}, "tickformat": ",d"},
        "yaxis": {"title": {"text": "loss"}, "type": scale},
        "legend": {"orientation": "h", "x": 0, "xanchor": "left", "y": 1.02, "yanchor": "bottom"},
        "hovermode": "x unified",
    }}


def _preview(workspace: Workspace, preview: Artifact | None) -> Any:
    url = file_url(workspace, preview.path) if preview else None
    if preview is None or url is None:
        return html.P("No preview yet: the trainer writes one at every save.", className="empty")
    iteration = f"iteration {preview.iteration:,}" if preview.iteration is not None else ""
    caption = " · ".join(p for p in (iteration, f"saved {_when(preview.time)}") if p)
    # The grid image carries its own column headers (A, A>A, A>B, B, B>B, B>A).
    return html.Figure([
        html.A(html.Img(id="preview-img", src=url, alt="latest preview"), href=url,
               target="_blank"),
        html.Figcaption(caption),
    ], className="preview")


# --- the app ----------------------------------------------------------------------------------


def _card(title: str, body_id: str) -> Any:
    return html.Section([html.H2(title), html.Div(id=body_id)], className="card")


def _layout(refresh_ms: int) -> Any:
    return html.Div([
        dcc.Interval(id="tick", interval=refresh_ms),
        dcc.Store(id="loss-key"),
        html.Header([
            html.Div([html.H1("swapd"), html.Span("training dashboard", className="subtitle")],
                     className="brand"),
            html.Div(id="service-status"),
        ], className="topbar"),
        html.Main([
            _card("Jobs", "jobs-body"),
            html.Section([
                html.Div([
                    html.H2("Training"),
                    dcc.Dropdown(id="job-select", clearable=False, searchable=False,
                                 placeholder="No job yet", className="job-select"),
                    dcc.RadioItems(id="loss-scale", value="log", inline=True,
                                   options=[{"label": "log", "value": "log"},
                                            {"label": "linear", "value": "linear"}],
                                   className="scale"),
                ], className="card-head"),
                html.Div([
                    html.Div(dcc.Graph(id="loss-graph", figure=_empty_figure("Loading…"),
                                       config={"displaylogo": False, "responsive": True},
                                       style={"height": "380px"}), className="graph"),
                    html.Div(id="preview-body", className="preview-box"),
                ], className="split"),
            ], className="card"),
            html.Div([_card("Merged outputs", "merges-body"), _card("Exports", "exports-body")],
                     className="pair"),
            html.Div([_card("Face sets", "face-sets-body"), _card("Problems", "problems-body")],
                     className="pair"),
            _card("Recent events", "events-body"),
        ]),
    ], className="page")


def create_app(workspace: Workspace, refresh_ms: int = 2000) -> Dash:
    """The Dash app for a workspace, on its own Flask server (`app.server`)."""
    server = flask.Flask(__name__, static_folder=None)
    _add_file_route(server, workspace)
    app = Dash(__name__, server=server, title="swapd", update_title=None,
               assets_folder=str(ASSETS_FOLDER), serve_locally=True)
    app.layout = _layout(refresh_ms)

    @app.callback(
        Output("service-status", "children"), Output("jobs-body", "children"),
        Output("job-select", "options"), Output("job-select", "value"),
        Output("merges-body", "children"), Output("exports-body", "children"),
        Output("problems-body", "children"), Output("events-body", "children"),
        Output("face-sets-body", "children"),
        Input("tick", "n_intervals"), State("job-select", "value"),
    )
    def refresh_overview(_tick: int | None, selected: str | None) -> tuple[Any, ...]:
        overview = read_overview(workspace)
        if overview is None:
            overview = Overview([], [], [], [], [], {})
            status = _status(None)
        else:
            status = _status(overview)
        names = [job.name for job in overview.jobs]
        chosen = selected if selected in names else _default_job(overview.jobs)
        return (status, _jobs_table(overview.jobs, chosen),
                [{"label": n, "value": n} for n in names],
                no_update if chosen == selected else chosen,
                _merges_table(workspace, overview.merges),
                _exports_table(workspace, overview.exports),
                _problems_table(workspace, overview.problems), _events_table(overview.events),
                _face_sets_table(overview.face_sets))

    @app.callback(
        Output("loss-graph", "figure"), Output("loss-key", "data"),
        Output("preview-body", "children"),
        Input("tick", "n_intervals"), Input("job-select", "value"), Input("loss-scale", "value"),
        State("loss-key", "data"),
    )
    def refresh_job(_tick: int | None, job: str | None, scale: str,
                    shown: list[Any] | None) -> tuple[Any, ...]:
        detail = read_job(workspace, job) if job else None
        if detail is None:
            return _empty_figure("No job selected" if not job else "Waiting for the service"), \
                None, _preview(workspace, None)
        losses = detail.losses
        # resend the figure only when the history changed (it can be thousands of points)
        key = [job, scale, len(losses), *(losses[-1] if losses else ())]
        figure = no_update if key == shown else loss_figure(job, losses, scale)
        return figure, key, _preview(workspace, detail.preview)

    return app


def _default_job(jobs: list[JobRow]) -> str | None:
    """The job to show first: one that is training, else the most recently updated."""
    if not jobs:
        return None
    training = [job for job in jobs if job.state == "training"]
    return max(training or jobs, key=lambda job: job.updated_at).name
