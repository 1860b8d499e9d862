"""The dashboard app: pages with real URLs, the JSON API beside them, the file routes.

    /                      overview: jobs, merges, exports, face sets, problems, events
    /jobs/<job>            a job: loss graph, sessions, previews, controls, its file
    /jobs/<job>/tracker    the snapshot tracker: faces per snapshot, pose heatmaps, timelines
    /faces                 face sets: thumbnails, pose heatmap, quarantine, duplicates
    /outputs               merged videos and images (played in the page), their marks
    /api/v1/...            the same as JSON (see api.py)

One Dash app routes by the address (a link or a reload lands on the same view); each page is a
module with ``layout(...)`` and ``register(app, workspace)``. Pages read the state store and
workspace files; actions go into the state store's control queue (controls.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote

import flask
from dash import Dash, Input, Output, State, dcc, html
from dash.exceptions import DependencyException

from swapd.dashboard import reads
from swapd.dashboard.api import create_api
from swapd.dashboard.components import count
from swapd.dashboard.files import add_file_routes
from swapd.dashboard.pages import faces, job, outputs, overview, tracker
from swapd.dashboard.source_frames import add_frame_route
from swapd.workspace import Workspace

ASSETS_FOLDER = Path(__file__).parent / "assets"
NAV = (("Overview", "/"), ("Faces", "/faces"), ("Outputs", "/outputs"))


def _shell(refresh_ms: int) -> Any:
    return html.Div([
        dcc.Location(id="url", refresh="callback-nav"),
        dcc.Interval(id="tick", interval=refresh_ms),
        html.Header([
            html.Div([html.H1(dcc.Link("swapd", href="/")),
                      html.Span("face-swap training", className="subtitle")],
                     className="brand"),
            html.Nav(id="nav", className="nav"),
            html.Div(id="service-status"),
        ], className="topbar"),
        html.Main(id="page"),
    ], className="page")


def route(pathname: str | None, search: str | None, workspace: Workspace) -> Any:
    """The layout of the page at ``pathname`` (with its query in ``search``)."""
    parts = [unquote(p) for p in (pathname or "/").strip("/").split("/") if p]
    query = {k: v[-1] for k, v in parse_qs((search or "").lstrip("?")).items()}
    if not parts:
        return overview.layout()
    if parts == ["faces"]:
        return faces.layout(query)
    if parts == ["outputs"]:
        return outputs.layout()
    if parts[0] == "jobs" and len(parts) == 2:
        return job.layout(parts[1])
    if parts[0] == "jobs" and len(parts) == 3 and parts[2] == "tracker":
        return tracker.layout(parts[1], query)
    return html.Section([html.H2("Not found"), html.P([
        f"There is no page at {pathname}. ", dcc.Link("Back to the overview", href="/")])],
        className="card")


def create_app(workspace: Workspace, refresh_ms: int = 5000, trust_anchors: str | None = None
               ) -> Dash:
    """The Dash app for a workspace, on its own Flask server (`app.server`); *trust_anchors*:
    a PEM file of CA certificates the outputs page's C2PA check trusts."""
    outputs.VERIFY.trust(trust_anchors)
    server = flask.Flask(__name__, static_folder=None)
    add_file_routes(server, workspace)
    add_frame_route(server, workspace)
    server.register_blueprint(create_api(workspace))
    app = Dash(__name__, server=server, title="swapd", update_title=None,
               assets_folder=str(ASSETS_FOLDER), serve_locally=True,
               suppress_callback_exceptions=True)
    app.layout = _shell(refresh_ms)
    # A script or file Dash does not serve (a crafted path under /_dash-component-suites/)
    # is not found, quietly: Dash raises for it, which would be a 500 and a logged traceback.
    server.register_error_handler(
        DependencyException, lambda _error: ("Not found\n", 404, {"Content-Type": "text/plain"}))

    @app.callback(Output("page", "children"), Output("nav", "children"),
                  Input("url", "pathname"), State("url", "search"))
    def show_page(pathname: str | None, search: str | None) -> tuple[Any, Any]:
        path = pathname or "/"
        links = [dcc.Link(label, href=href, className="active" if (
            path == href or (href != "/" and path.startswith(href))) else None)
            for label, href in NAV]
        return route(pathname, search, workspace), links

    @app.callback(Output("service-status", "children"), Input("tick", "n_intervals"))
    def service_status(_tick: int | None) -> Any:
        found = reads.with_store(workspace, lambda store: (store.jobs(), store.problems()))
        if found is None:
            return html.Span("Waiting for the service: no state database yet",
                             className="pill warn")
        jobs, problems = found
        training = sum(j.state == "training" for j in jobs)
        parts = [count(len(jobs), "job"), f"{training} training"]
        if problems:
            parts.append(count(len(problems), "problem"))
        return html.Span(" · ".join(parts), className="pill ok")

    for page in (overview, job, tracker, faces, outputs):
        page.register(app, workspace)
    return app
