"""`/jobs/<job>/tracker`: the snapshot tracker (MVE's DFL Train Data Tracker, point for point).

Choose the set (A / dst, B / src) and the snapshot (or follow the newest); the faces show in a
grid, each as the aligned face and, as chosen, the model's output, the swap (A side), both or
neither, sorted by loss, by its change since an earlier snapshot, by yaw, pitch or name. Two
yaw x pitch heatmaps (face counts, average loss) filter the grid to a cell when clicked; the
filter survives a change of snapshot. Clicking a face opens its timeline (tracker_panels.py).
Every choice lives in the address, so a link or a reload shows the same view.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from dash import ALL, Dash, Input, Output, State, callback_context, dcc, html, no_update

from swapd.dashboard import components as ui
from swapd.dashboard import reads, tracker_reads
from swapd.dashboard.figures import empty_figure, pose_heatmap
from swapd.dashboard.pages import tracker_panels
from swapd.state import StateStore
from swapd.workspace import Workspace

SORTS = (("-loss", "worst first"), ("loss", "best first"), ("-delta", "most worsened"),
         ("delta", "most improved"), ("yaw", "yaw"), ("pitch", "pitch"), ("name", "name"))
SHOWS = (("output", "output"), ("swap", "swap (A)"), ("both", "both"), ("none", "face only"))
LATEST = tracker_reads.LATEST
DEFAULTS = {"side": "a", "snapshot": LATEST, "compare": "previous", "sort": "-loss",
            "show": "both", "size": "96", "page": "0"}


def _query(query: dict[str, str], key: str) -> str:
    return query.get(key) or DEFAULTS[key]


def _first_options(query: dict[str, str], key: str, label: str, value: str
                   ) -> list[dict[str, str]]:
    """A dropdown's options before the snapshots are read: its default, and the address's
    choice (a dropdown drops a value it has no option for)."""
    options = [{"label": label, "value": value}]
    chosen = query.get(key)
    if chosen and chosen.isdigit():
        options.append({"label": f"{int(chosen):,}", "value": chosen})
    return options


def _cell_from_query(query: dict[str, str]) -> dict[str, list[float]] | None:
    try:
        yaw = tracker_reads.parse_range(query.get("yaw"))
        pitch = tracker_reads.parse_range(query.get("pitch"))
    except ValueError:
        return None
    return {"yaw": list(yaw), "pitch": list(pitch)} if yaw and pitch else None


def layout(job: str, query: dict[str, str]) -> Any:
    size = int(_query(query, "size")) if _query(query, "size").isdigit() else 96
    controls = html.Div([
        html.Div([html.Label("Set"), dcc.RadioItems(
            id="tracker-side", value=_query(query, "side"), inline=True,
            options=[{"label": tracker_reads.SIDE_NAMES[s], "value": s}
                     for s in tracker_reads.SIDES])], className="control"),
        html.Div([html.Label("Snapshot"), dcc.Dropdown(
            id="tracker-snapshot", value=_query(query, "snapshot"), clearable=False,
            searchable=False, options=_first_options(query, "snapshot", "newest", LATEST))],
            className="control snapshot"),
        html.Div([html.Label("Compared with"), dcc.Dropdown(
            id="tracker-compare", value=_query(query, "compare"), clearable=False,
            searchable=False,
            options=_first_options(query, "compare", "the one before", "previous"))],
            className="control snapshot"),
        html.Div([html.Label("Sort"), dcc.Dropdown(
            id="tracker-sort", value=_query(query, "sort"), clearable=False, searchable=False,
            options=[{"label": label, "value": value} for value, label in SORTS])],
            className="control sort"),
        html.Div([html.Label("Show"), dcc.RadioItems(
            id="tracker-show", value=_query(query, "show"), inline=True,
            options=[{"label": label, "value": value} for value, label in SHOWS])],
            className="control"),
        html.Div([html.Label("Face size"), dcc.Slider(
            id="tracker-size", min=48, max=256, step=16, value=size, allow_direct_input=False,
            marks={48: "48", 128: "128", 256: "256"})], className="control slider"),
    ], className="graph-controls")
    return html.Div([
        dcc.Store(id="job-name", data=job),
        dcc.Store(id="tracker-cell", data=_cell_from_query(query)),
        dcc.Store(id="tracker-page", data=int(_query(query, "page")) if _query(
            query, "page").isdigit() else 0),
        dcc.Store(id="tracker-face", data=query.get("face")),
        dcc.Store(id="tracker-grid-key"),
        dcc.Store(id="tracker-version"),
        dcc.Store(id="tracker-pages", data=1),
        dcc.Store(id="tracker-cells-key"),
        dcc.Store(id="tracker-picked", data=[]),
        dcc.Location(id="tracker-url", refresh=False),
        html.Section([
            html.Div([html.H2(job), html.Div(id="tracker-summary")], className="job-head"),
            html.Nav([dcc.Link("Training", href=ui.job_href(job)),
                      dcc.Link("Snapshot tracker", href=ui.job_href(job, "tracker"),
                               className="active")], className="tabs"),
        ], className="card"),
        html.Section([controls, html.Div(id="tracker-empty")], className="card"),
        html.Div([
            ui.card("Faces per pose", dcc.Graph(id="heatmap-count", config={
                "displayModeBar": False}, style={"height": "300px"})),
            ui.card("Average loss per pose", dcc.Graph(id="heatmap-loss", config={
                "displayModeBar": False}, style={"height": "300px"})),
        ], className="pair"),
        html.Section([
            html.Div([html.Div(id="tracker-filter", className="filter"),
                      html.Button("Unselect", id="tracker-unselect", n_clicks=0,
                                  className="control-button"),
                      html.Span(id="tracker-legend", className="grid-legend")],
                     className="card-head"),
            tracker_panels.focus_bar(),
            html.Div([html.Button("← previous", id="tracker-prev", n_clicks=0),
                      html.Span(id="tracker-pager"),
                      html.Button("next →", id="tracker-next", n_clicks=0)], className="pager"),
            html.Div(id="tracker-grid", className="face-grid",
                     style={"--tile": f"{size}px"}),
        ], className="card"),
        tracker_panels.timeline_card(),
        tracker_panels.compare_card(),
    ], className="stack")


# Where each image sits in a face's tile strip (crop | output | swap; B: crop | output), as
# object-position: one file fetched a face, each part shown by cropping it.
_STRIP_POSITION = {"a": {"face": "0%", "output": "50%", "swap": "100%"},
                   "b": {"face": "0%", "output": "100%"}}


def tile(face: dict[str, Any], show: str, side: str, picked: bool) -> Any:
    kinds = ["face"]
    if show in ("output", "both"):
        kinds.append("output")
    if show in ("swap", "both") and side == "a":
        kinds.append("swap")
    if face["tile"]:
        parts = [html.Img(src=face["tile"], alt=f"{kind} of {face['name']}",
                          className=f"tile-img {kind}",
                          style={"objectPosition": f"{_STRIP_POSITION[side][kind]} 50%"})
                 for kind in kinds]
    else:  # a snapshot taken before the tracker kept tiles: an image each
        parts = [html.Img(src=face[kind], alt=f"{kind} of {face['name']}",
                          className=f"tile-img {kind}") if face[kind] else
                 html.Div("no image", className=f"tile-img missing {kind}") for kind in kinds]
    delta = face["delta"]
    change = "" if delta is None else f" {'+' if delta >= 0 else '−'}{abs(delta):.4f}"
    return html.Div([
        html.Button(parts, id={"type": "tracker-tile", "name": face["name"]}, n_clicks=0,
                    className="tile-images" + (" picked" if picked else ""),
                    title=f"{face['name']}: open its timeline (or pick it, in pick mode)"),
        html.Div([
            html.Span(ui.loss(face["loss"]), className="loss"),
            html.Span(change, className="delta " + ("worse" if (delta or 0) > 0 else "better")),
            html.Span("focus", className="focus-badge") if face["focus"] else None,
        ], className="tile-caption"),
    ], className="tile" + (" focused" if face["focus"] else ""), **{"data-name": face["name"]})


# A click on a tile opens its timeline, or in pick mode picks it (or unpicks it): in the
# browser, with no round trip (a re-rendered grid fires every tile with no click: ignored).
_CLICKED_JS = """
function(clicks, closed, side, message, picking, picked) {
    const nu = window.dash_clientside.no_update;
    const fired = window.dash_clientside.callback_context.triggered || [];
    if (!fired.length) { return [nu, nu]; }
    // Several inputs can fire in one batch (a click on the set while a new grid's tiles
    // arrive): look at all of them, not the first only.
    const has = p => fired.some(t => t.prop_id.startsWith(p));
    const newSide = has('tracker-side.');
    if (newSide || has('timeline-close.') || has('focus-message.')) {
        return [newSide || has('timeline-close.') ? null : nu,
                newSide || has('focus-message.') ? [] : nu];
    }
    const hit = fired.find(t => t.value && t.prop_id.startsWith('{'));
    if (!hit) { return [nu, nu]; }
    const name = JSON.parse(hit.prop_id.slice(0, hit.prop_id.lastIndexOf('.'))).name;
    if (picking && picking.length) {
        const list = (picked || []).slice();
        const at = list.indexOf(name);
        if (at >= 0) { list.splice(at, 1); } else { list.push(name); }
        return [nu, list];
    }
    return [name, nu];
}
"""
_PICKED_JS = """
function(picked, ids) {
    return ids.map(id => 'tile-images' + ((picked || []).includes(id.name) ? ' picked' : ''));
}
"""


def register(app: Dash, workspace: Workspace) -> None:
    tracker_panels.register(app, workspace)

    @app.callback(Output("tracker-version", "data"),
                  Input("tick", "n_intervals"), Input("job-name", "data"),
                  State("tracker-version", "data"))
    def watch(_tick: int | None, job: str, held: list[Any] | None) -> Any:
        """At each refresh, one small read: what the page shows changed only when the job's
        snapshots or its focus faces did (the rest of the page waits on this)."""
        def read(store: StateStore) -> list[Any]:
            focus = store.focus_faces(job)
            return [store.job(job) is not None,
                    [[s["iteration"], s["time"]] for s in tracker_reads.snapshots(store, job)],
                    {side: sorted(names) for side, names in focus.items()}]

        version = reads.with_store(workspace, read)
        return no_update if version == held else version

    @app.callback(
        Output("tracker-snapshot", "options"), Output("tracker-compare", "options"),
        Output("tracker-summary", "children"), Output("tracker-empty", "children"),
        Input("tracker-version", "data"), Input("job-name", "data"),
    )
    def snapshots(_version: list[Any] | None, job: str) -> tuple[Any, ...]:
        def read(store: StateStore) -> tuple[Any, ...]:
            return tracker_reads.snapshots(store, job), store.job(job)

        found = reads.with_store(workspace, read)
        taken, row = found if found else ([], None)
        newest = taken[-1]["iteration"] if taken else None
        options = [{"label": f"newest ({newest:,})" if newest is not None else "newest",
                    "value": LATEST}] + [
            {"label": f"{s['iteration']:,}", "value": str(s["iteration"])}
            for s in reversed(taken)]
        compare = [{"label": "the one before", "value": "previous"}] + options[1:]
        summary = html.Span(f"{len(taken)} snapshots with tracker data" if taken else "",
                            className="fact")
        return options, compare, summary, tracker_panels.no_snapshots(row) if not taken else None

    @app.callback(
        Output("tracker-grid", "children"), Output("tracker-pager", "children"),
        Output("tracker-filter", "children"), Output("tracker-grid-key", "data"),
        Output("tracker-pages", "data"),
        Input("tracker-version", "data"), Input("job-name", "data"),
        Input("tracker-side", "value"),
        Input("tracker-snapshot", "value"), Input("tracker-compare", "value"),
        Input("tracker-sort", "value"), Input("tracker-show", "value"),
        Input("tracker-cell", "data"), Input("tracker-page", "data"),
        Input("focus-only", "value"), Input("focus-message", "children"),
        State("tracker-grid-key", "data"), State("tracker-picked", "data"),
    )
    def grid(_version: Any, job: str, side: str, snapshot: str, compare: str, sort: str,
             show: str, cell: dict[str, list[float]] | None, page: int,
             focus_only: list[str] | None, _focus_message: Any, shown: list[Any] | None,
             picked: list[str] | None) -> tuple[Any, ...]:
        def read(store: StateStore) -> tuple[Any, ...]:
            chosen, against = tracker_reads.chosen_snapshot(store, job, snapshot, compare)
            focus = sorted(store.focus_faces(job).get(side, set()))
            key = [job, side, chosen, against, sort, show, cell, page, focus_only, focus]
            if key == shown:
                return no_update, no_update, no_update, no_update, no_update
            if chosen is None:
                return [], "", "No snapshot with tracker data yet.", key, 1
            found = tracker_reads.snapshot_faces(
                workspace, store, job, chosen, side, sort, against,
                yaw=tuple(cell["yaw"]) if cell else None,
                pitch=tuple(cell["pitch"]) if cell else None,
                focus_only=bool(focus_only), offset=page * tracker_reads.PAGE_SIZE)
            total, size = found["total"], tracker_reads.PAGE_SIZE
            pages = max(1, -(-total // size))
            pager = (f"faces {page * size + 1:,}–{min(total, (page + 1) * size):,} of "
                     f"{total:,} · page {page + 1} of {pages}") if total else "no faces"
            tiles = [tile(face, show, side, face["name"] in (picked or ()))
                     for face in found["faces"]]
            where = (f"yaw {cell['yaw'][0]:g}° to {cell['yaw'][1]:g}°, pitch "
                     f"{cell['pitch'][0]:g}° to {cell['pitch'][1]:g}°" if cell else "all poses")
            versus = f", change since {against:,}" if against is not None else ""
            text = (f"Snapshot {chosen:,}, {tracker_reads.SIDE_NAMES[side]}: {where}"
                    f"{' (focus faces only)' if focus_only else ''}{versus}")
            return tiles, pager, text, key, pages

        found = reads.with_store(workspace, read)
        return found if found else ([], "", "Waiting for the service", None, 1)

    @app.callback(
        Output("heatmap-count", "figure"), Output("heatmap-loss", "figure"),
        Output("tracker-cells-key", "data"),
        Input("tracker-version", "data"), Input("job-name", "data"),
        Input("tracker-side", "value"),
        Input("tracker-snapshot", "value"), Input("tracker-cell", "data"),
        State("tracker-cells-key", "data"),
    )
    def heatmaps(_version: Any, job: str, side: str, snapshot: str,
                 cell: dict[str, list[float]] | None, shown: list[Any] | None) -> tuple[Any, ...]:
        def read(store: StateStore) -> tuple[Any, ...]:
            chosen, _ = tracker_reads.chosen_snapshot(store, job, snapshot)
            key = [job, side, chosen, cell]
            if key == shown:
                return no_update, no_update, no_update
            if chosen is None:
                empty = empty_figure("No snapshot yet")
                return empty, empty, key
            cells = tracker_reads.snapshot_cells(store, job, chosen, side)
            selected = (cell["yaw"][0], cell["pitch"][0]) if cell else None
            return (pose_heatmap(cells, "count", selected),
                    pose_heatmap(cells, "mean_loss", selected), key)

        found = reads.with_store(workspace, read)
        empty = empty_figure("Waiting for the service")
        return found if found else (empty, empty, None)

    @app.callback(
        Output("tracker-cell", "data"), Output("tracker-page", "data"),
        Input("heatmap-count", "clickData"), Input("heatmap-loss", "clickData"),
        Input("tracker-unselect", "n_clicks"), Input("tracker-prev", "n_clicks"),
        Input("tracker-next", "n_clicks"), Input("tracker-side", "value"),
        Input("tracker-sort", "value"), Input("focus-only", "value"),
        State("tracker-page", "data"), State("tracker-pages", "data"),
        prevent_initial_call=True,
    )
    def navigate(count_click: Any, loss_click: Any, *rest: Any) -> tuple[Any, Any]:
        page, pages = rest[-2], rest[-1]
        trigger = callback_context.triggered_id
        if trigger in ("heatmap-count", "heatmap-loss"):
            click = count_click if trigger == "heatmap-count" else loss_click
            cell = tracker_reads.clicked_cell(click)
            return (cell, 0) if cell else (no_update, no_update)
        if trigger == "tracker-unselect":
            return None, 0
        if trigger == "tracker-prev":
            return no_update, max(0, (page or 0) - 1)
        if trigger == "tracker-next":
            return no_update, min(max(0, (pages or 1) - 1), (page or 0) + 1)
        return no_update, 0  # a new side, sort or focus filter starts at the first page

    @app.callback(Output("tracker-grid", "style"), Input("tracker-size", "value"))
    def tile_size(size: int | None) -> dict[str, str]:
        return {"--tile": f"{int(size or 96)}px"}

    @app.callback(Output("tracker-legend", "children"), Input("tracker-show", "value"),
                  Input("tracker-side", "value"))
    def legend(show: str, side: str) -> str:
        parts = ["aligned face"]
        if show in ("output", "both"):
            parts.append("output (A>A)" if side == "a" else "output (B>B)")
        if show in ("swap", "both") and side == "a":
            parts.append("swap (A>B)")
        return "each face: " + " · ".join(parts) + " · loss and its change"

    @app.callback(
        Output("tracker-url", "search"),
        Input("tracker-side", "value"), Input("tracker-snapshot", "value"),
        Input("tracker-compare", "value"), Input("tracker-sort", "value"),
        Input("tracker-show", "value"), Input("tracker-size", "value"),
        Input("tracker-cell", "data"), Input("tracker-page", "data"),
        Input("tracker-face", "data"),
    )
    def address(side: str, snapshot: str, compare: str, sort: str, show: str,
                size: int | None, cell: dict[str, list[float]] | None, page: int | None,
                face: str | None) -> str:
        values = {"side": side, "snapshot": snapshot, "compare": compare, "sort": sort,
                  "show": show, "size": str(int(size or 96)), "page": str(page or 0)}
        query = {k: v for k, v in values.items() if v is not None and v != DEFAULTS[k]}
        if cell:
            query["yaw"] = ",".join(f"{v:g}" for v in cell["yaw"])
            query["pitch"] = ",".join(f"{v:g}" for v in cell["pitch"])
        if face:
            query["face"] = face
        return f"?{urlencode(query)}" if query else ""

    app.clientside_callback(
        _CLICKED_JS,
        Output("tracker-face", "data"), Output("tracker-picked", "data"),
        Input({"type": "tracker-tile", "name": ALL}, "n_clicks"),
        Input("timeline-close", "n_clicks"), Input("tracker-side", "value"),
        Input("focus-message", "children"),
        State("pick-mode", "value"), State("tracker-picked", "data"),
        prevent_initial_call=True,
    )
    app.clientside_callback(
        _PICKED_JS,
        Output({"type": "tracker-tile", "name": ALL}, "className"),
        Input("tracker-picked", "data"), State({"type": "tracker-tile", "name": ALL}, "id"),
        prevent_initial_call=True,
    )
