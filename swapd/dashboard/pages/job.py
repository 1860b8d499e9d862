"""`/jobs/<job>`: one job's training: the loss graph (faceswap's Graph tab), its sessions
(faceswap's Analysis tab), the preview and its history, the controls, and the job's file."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from dash import Dash, Input, Output, State, dcc, html, no_update

from swapd.dashboard import components as ui
from swapd.dashboard import reads
from swapd.dashboard.figures import GraphOptions, component_label, empty_figure, loss_figure
from swapd.dashboard.pages import job_controls
from swapd.state import StateStore
from swapd.workspace import Workspace

SMOOTHING_MARKS = {0: "0", 0.5: "0.5", 0.9: "0.9"}  # (to 0.999, faceswap's range)


def layout(job: str) -> Any:
    # the graph's settings persist in the browser: a reload shows the graph as it was
    graph_controls = html.Div([
        html.Div([html.Label("Sides"), dcc.Checklist(
            id="graph-sides", persistence=True, value=["a", "b"], inline=True,
            options=[{"label": "A (dst)", "value": "a"}, {"label": "B (src)", "value": "b"}])],
            className="control"),
        html.Div([html.Label("Components"), dcc.Checklist(
            id="graph-components", persistence=True, value=[], inline=True, options=[])],
                 className="control wide"),
        html.Div([html.Label("Smoothing"), dcc.Slider(
            id="graph-smoothing", persistence=True, min=0, max=0.999, step=0.001, value=0.9,
            marks=SMOOTHING_MARKS, tooltip={"placement": "bottom"})],
            className="control slider"),
        html.Div([html.Label("Scale"), dcc.RadioItems(
            id="graph-scale", persistence=True, value="log", inline=True,
            options=[{"label": "log", "value": "log"}, {"label": "linear", "value": "linear"}])],
            className="control"),
        html.Div([html.Label("Last iterations"), dcc.Input(
            id="graph-last", persistence=True, type="number", min=0, step=1, value=None,
            debounce=True,
            placeholder="all")], className="control"),
        html.Div([html.Label("Session"), dcc.Dropdown(
            id="graph-session", value="all", clearable=False, searchable=False,
            options=[{"label": "all", "value": "all"}])], className="control session"),
        html.Div([html.Label("Also"), dcc.Checklist(
            id="graph-axes", persistence=True, value=[], inline=True,
            options=[{"label": "learning rate", "value": "lr"},
                     {"label": "EG/s", "value": "egs"}])], className="control"),
    ], className="graph-controls")
    href = quote(job, safe="")
    return html.Div([
        dcc.Store(id="job-name", data=job),
        dcc.Store(id="graph-key"),
        html.Section([
            html.Div([html.H2(job, id="job-title"), html.Div(id="job-header")],
                     className="job-head"),
            html.Nav([dcc.Link("Training", href=ui.job_href(job), className="active"),
                      dcc.Link("Snapshot tracker", href=ui.job_href(job, "tracker"))],
                     className="tabs"),
        ], className="card"),
        ui.card("Loss", graph_controls,
                dcc.Graph(id="loss-graph", figure=empty_figure("Loading…"),
                          config={"displaylogo": False, "responsive": True},
                          style={"height": "420px"}),
                extra=html.Div([
                    html.A("losses.csv", href=f"/api/v1/jobs/{href}/losses.csv",
                           download=f"{job}_losses.csv", className="button-link"),
                ], className="downloads")),
        html.Div([
            ui.card("Preview", html.Div(id="preview-body"),
                    dcc.Slider(id="preview-slider", min=0, max=0, step=1, value=0, marks={},
                               included=False, allow_direct_input=False),
                    dcc.Store(id="preview-history"), card_id="preview-card"),
            job_controls.card(),
        ], className="pair wide-left"),
        ui.card("Sessions", html.Div(id="sessions-body"),
                extra=html.A("sessions.csv", href=f"/api/v1/jobs/{href}/sessions.csv",
                             download=f"{job}_sessions.csv", className="button-link")),
        html.Div([ui.card("Job file", html.Div(id="job-file")),
                  ui.card("Model", html.Div(id="job-model"))], className="pair"),
    ], className="stack")


def header(detail: dict[str, Any]) -> Any:
    eta = detail["eta_seconds"]
    rate = detail["iterations_per_second"]
    facts = [ui.badge(detail["state"]),
             html.Span(detail["schedule"]["text"], className="fact"),
             html.Span(ui.progress(detail["iteration"], detail["target"]), className="fact"),
             html.Span(f"ETA {ui.duration(eta)}" if eta else "", className="fact"),
             html.Span(f"{detail['egs']:.1f} EG/s" if detail["egs"] else "", className="fact"),
             html.Span(f"{rate:.2f} it/s" if rate else "", className="fact"),
             html.Span(detail["model"] or "", className="fact")]
    if detail["error"]:
        facts.append(html.Div(detail["error"], className="error-text block"))
    return html.Div(facts, className="facts")


def sessions_table(store: StateStore, job: str) -> Any:
    rows = [html.Tr([
        html.Td(str(k + 1)), html.Td(ui.when(s.start)), html.Td(ui.when(s.end)),
        html.Td(ui.duration(s.elapsed)), html.Td(str(s.batch_size), className="num"),
        html.Td(f"{s.start_iteration:,}–{s.end_iteration:,}", className="num"),
        html.Td(f"{s.steps:,}", className="num"),
        html.Td(f"{s.egs:.1f}" if s.egs else "—", className="num"),
    ]) for k, s in enumerate(store.sessions(job))]
    return ui.table(["#", "Start", "End", "Elapsed", "Batch", "Iterations", "Steps", "EG/s"],
                    rows, "No sessions recorded yet: each run of the worker is one.",
                    "sessions")


def job_file(detail: dict[str, Any]) -> Any:
    problems = [html.Li(p["message"] if not p["key"] or p["message"].startswith(p["key"])
                        else f"{p['key']}: {p['message']}") for p in detail["problems"]]
    return html.Div([
        html.P(detail["file"], className="path"),
        html.Ul(problems, className="problems") if problems else html.P(
            "The file is valid.", className="ok-text"),
        html.Pre(detail["file_text"] or "(the file is gone)", className="job-file"),
    ])


def model_facts(detail: dict[str, Any]) -> Any:
    info = detail["info"] or {}
    train = (detail["config"] or {}).get("train") or {}
    options = {**(train.get("options") or {}), **(info.get("model_options") or {})}
    parameters = info.get("parameters")
    rows = [html.Tr([html.Th("model"), html.Td(train.get("model") or detail["model"] or "—")]),
            html.Tr([html.Th("parameters"), html.Td(f"{parameters:,}" if parameters else
                                                    "known once the worker has started")]),
            html.Tr([html.Th("batch size"), html.Td(str(train.get("batch_size", "—")))]),
            html.Tr([html.Th("faces"), html.Td(f"A {train.get('a')} · B {train.get('b')}")])]
    rows += [html.Tr([html.Th(key), html.Td(str(value))]) for key, value in sorted(
        {**options, **(info.get("trainer_options") or {})}.items())]
    return html.Table(html.Tbody(rows), className="table facts-table", id="model-options")


def preview_view(history: list[dict[str, Any]], index: int | None) -> Any:
    if not history:
        return ui.empty("No preview yet: the trainer writes one at every save.")
    item = history[-1 if index is None or index >= len(history) else index]
    iteration = item["iteration"]
    caption = " · ".join(p for p in (f"iteration {iteration:,}" if iteration is not None else "",
                                     f"saved {ui.when(item['time'])}",
                                     f"{len(history)} kept") if p)
    name = f"preview_{iteration or 0:08d}.{item['path'].rsplit('.', 1)[-1]}"
    return html.Figure([
        html.A(html.Img(id="preview-img", src=item["url"], alt="preview grid"),
               href=item["url"], target="_blank"),
        html.Figcaption([caption, " · ", html.A("download", href=item["url"], download=name,
                                               id="preview-download")]),
    ], className="preview")


def register(app: Dash, workspace: Workspace) -> None:
    job_controls.register(app, workspace)

    @app.callback(
        Output("job-header", "children"), Output("job-file", "children"),
        Output("job-model", "children"), Output("sessions-body", "children"),
        Output("graph-session", "options"),
        Input("tick", "n_intervals"), Input("job-name", "data"),
    )
    def refresh(_tick: int | None, job: str) -> tuple[Any, ...]:
        def read(store: StateStore) -> tuple[Any, ...] | None:
            detail = reads.job_detail(workspace, store, job)
            if detail is None:
                return None
            sessions = [{"label": "all", "value": "all"}] + [
                {"label": f"#{k + 1}: {s.start_iteration:,}–{s.end_iteration:,}",
                 "value": f"{s.start_iteration}-{s.end_iteration}"}
                for k, s in enumerate(store.sessions(job))]
            return (header(detail), job_file(detail), model_facts(detail),
                    sessions_table(store, job), sessions)

        found = reads.with_store(workspace, read)
        if found is None:
            missing = ui.empty(f"No job {job!r} (yet): its file goes in jobs/{job}.toml.")
            return missing, "", "", "", no_update
        return found

    @app.callback(
        Output("loss-graph", "figure"), Output("graph-key", "data"),
        Output("graph-components", "options"),
        Input("tick", "n_intervals"), Input("job-name", "data"),
        Input("graph-sides", "value"), Input("graph-components", "value"),
        Input("graph-smoothing", "value"), Input("graph-scale", "value"),
        Input("graph-last", "value"), Input("graph-axes", "value"),
        Input("graph-session", "value"),
        State("graph-key", "data"),
    )
    def graph(_tick: int | None, job: str, sides: list[str], chosen: list[str],
              smoothing: float | None, scale: str, last: int | None, axes: list[str],
              session: str, shown: list[Any] | None) -> tuple[Any, ...]:
        def read(store: StateStore) -> tuple[Any, ...]:
            series = reads.LOSSES.get(store, job)
            row = store.job(job)
            batch = int((((row.config if row else None) or {}).get("train") or {})
                        .get("batch_size", 16))
            options = GraphOptions(
                sides=tuple(sides or ()), components=tuple(chosen or ()),
                smoothing=float(smoothing or 0), scale=scale, last=int(last or 0),
                learning_rate="lr" in (axes or ()), egs="egs" in (axes or ()))
            newest = series.time[-1] if len(series) else None
            marks = store.marks(job)
            # resend the figure only when something it shows changed (thousands of points)
            key = [job, repr(options), session, len(series), newest, len(marks)]
            if key == shown:
                return no_update, no_update, no_update
            figure = loss_figure(job, series, options, batch, marks)
            if session != "all" and figure["data"]:
                low, high = (int(v) for v in session.split("-"))
                figure["layout"]["xaxis"]["range"] = [low, max(high, low + 1)]
            component_options = [{"label": component_label(c), "value": c}
                                 for c in series.components]
            return figure, key, component_options

        found = reads.with_store(workspace, read)
        if found is None:
            return empty_figure("Waiting for the service"), None, []
        return found

    @app.callback(
        Output("preview-history", "data"), Output("preview-slider", "max"),
        Output("preview-slider", "marks"), Output("preview-slider", "value"),
        Input("tick", "n_intervals"), Input("job-name", "data"),
        State("preview-history", "data"), State("preview-slider", "value"),
    )
    def previews(_tick: int | None, job: str, held: list[dict[str, Any]] | None,
                 at: int | None) -> tuple[Any, ...]:
        history = reads.with_store(workspace, lambda store: reads.preview_history(
            workspace, store, job)) or []
        if history == held:
            return no_update, no_update, no_update, no_update
        last = max(0, len(history) - 1)
        marks = {k: f"{item['iteration']:,}" for k, item in enumerate(history)
                 if item["iteration"] is not None and (k in (0, last) or len(history) <= 8)}
        # a user looking at the newest keeps following it; one looking back stays there
        following = held is None or at is None or at >= len(held) - 1
        return history, last, marks, last if following else at

    @app.callback(Output("preview-body", "children"),
                  Input("preview-history", "data"), Input("preview-slider", "value"))
    def preview(history: list[dict[str, Any]] | None, index: int | None) -> Any:
        return preview_view(history or [], index)
