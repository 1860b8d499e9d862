"""`/faces`: each face set as the service indexed it: thumbnails (a page at a time), its pose
heatmap (the tracker's component: click a cell to filter), the quarantine with each file's
reason, and duplicates. Nothing on this page changes or deletes a user's file."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from dash import Dash, Input, Output, State, callback_context, dcc, html, no_update

from swapd.dashboard import components as ui
from swapd.dashboard import reads, tracker_reads
from swapd.dashboard.figures import empty_figure, pose_heatmap
from swapd.dashboard.files import thumb_url
from swapd.state import StateStore
from swapd.workspace import Workspace

PAGE = 100


def layout(query: dict[str, str]) -> Any:
    return html.Div([
        dcc.Store(id="faces-page", data=0),
        dcc.Store(id="faces-cell"),
        dcc.Store(id="faces-pages", data=1),
        dcc.Location(id="faces-url", refresh=False),
        html.Section([
            html.Div([html.H2("Face sets"), dcc.Dropdown(
                id="faces-set", value=query.get("set"), clearable=False, searchable=False,
                placeholder="No face set yet", className="job-select")],
                className="card-head"),
            html.Div(id="faces-summary"),
        ], className="card"),
        html.Div([
            ui.card("Poses", dcc.Graph(id="faces-heatmap", config={"displayModeBar": False},
                                       style={"height": "320px"})),
            ui.card("Quarantine", html.Div(id="faces-quarantine")),
        ], className="pair"),
        html.Section([
            html.Div([html.Div(id="faces-filter", className="filter"),
                      html.Button("Unselect", id="faces-unselect", n_clicks=0,
                                  className="control-button")], className="card-head"),
            html.Div([html.Button("← previous", id="faces-prev", n_clicks=0),
                      html.Span(id="faces-pager"),
                      html.Button("next →", id="faces-next", n_clicks=0)], className="pager"),
            html.Div(id="faces-grid", className="face-grid", style={"--tile": "96px"}),
        ], className="card"),
        ui.card("Duplicates", html.Div(id="faces-duplicates")),
    ], className="stack")


def quarantine_table(workspace: Workspace, store: StateStore, set_name: str) -> Any:
    rows = [html.Tr([html.Td(f.name, className="name"), html.Td(f.reason or "—",
                                                                className="message"),
                     html.Td(workspace.relative(workspace.resolve(f.moved_to))
                             if f.moved_to else "left in place")])
            for f in store.faces(set_name, status="quarantined")]
    return ui.table(["File", "Why it was set aside", "Where it is now"], rows,
                    "Nothing set aside: every file of this set was readable.",
                    "quarantine-table")


def duplicates_table(store: StateStore, set_name: str) -> Any:
    rows = [html.Tr([html.Td(f.name, className="name"), html.Td(f.duplicate_of)])
            for f in store.faces(set_name, status="ok") if f.duplicate_of]
    return ui.table(["File", "Same content as"], rows, "No duplicates.", "duplicates-table")


def face_tile(set_name: str, face: dict[str, Any]) -> Any:
    pose = ("" if face["yaw"] is None else
            f"yaw {face['yaw']:.0f}° pitch {face['pitch']:.0f}°")
    return html.Div([
        html.Img(src=thumb_url(set_name, face["name"], face["mtime_ns"]), alt=face["name"],
                 className="tile-img face"),
        html.Div([html.Span(face["name"], className="name"), html.Span(pose, className="pose"),
                  html.Span("duplicate" if face["duplicate_of"] else "", className="dup")],
                 className="tile-caption"),
    ], className="tile face-tile", title=f"{face['name']} ({face['width']}x{face['height']}, "
                                f"{face['kind']}, landmarks: {face['landmarks_from'] or 'none'})")


def register(app: Dash, workspace: Workspace) -> None:
    @app.callback(Output("faces-set", "options"), Output("faces-set", "value"),
                  Input("tick", "n_intervals"), State("faces-set", "value"))
    def sets(_tick: int | None, chosen: str | None) -> tuple[Any, Any]:
        found = reads.with_store(workspace, lambda store: store.face_sets()) or {}
        options = [{"label": f"faces/{name} ({counts['ok']:,})", "value": name}
                   for name, counts in found.items()]
        value = chosen if chosen in found else next(iter(found), None)
        return options, value if value != chosen else no_update

    @app.callback(
        Output("faces-summary", "children"), Output("faces-heatmap", "figure"),
        Output("faces-quarantine", "children"), Output("faces-duplicates", "children"),
        Input("faces-set", "value"), Input("faces-cell", "data"),
    )
    def summary(set_name: str | None, cell: dict[str, list[float]] | None) -> tuple[Any, ...]:
        if not set_name:
            empty = ui.empty("No faces indexed yet: drop aligned faces into faces/<set>/.")
            return empty, empty_figure("No faces"), "", ""

        def read(store: StateStore) -> tuple[Any, ...]:
            counts = store.face_sets().get(set_name, {"ok": 0, "quarantined": 0,
                                                      "duplicates": 0})
            cells = tracker_reads.pose_cells(store.face_pose_cells(set_name,
                                                                   tracker_reads.CELL_DEGREES))
            unknown = f", {cells['unknown']:,} without a known pose" if cells["unknown"] else ""
            text = (f"faces/{set_name}: {counts['ok']:,} usable faces, "
                    f"{counts['quarantined']:,} set aside, {counts['duplicates']:,} "
                    f"duplicates{unknown}")
            masks = ui.mask_counts(store.mask_source_counts(set_name))
            selected = (cell["yaw"][0], cell["pitch"][0]) if cell else None
            return (html.Div([html.P(text, id="faces-counts"),
                              html.P(f"Training masks: {masks}" if masks else "",
                                     id="faces-masks")]), pose_heatmap(cells, "count", selected),
                    quarantine_table(workspace, store, set_name),
                    duplicates_table(store, set_name))

        return reads.with_store(workspace, read) or ("", empty_figure("Waiting"), "", "")

    @app.callback(
        Output("faces-grid", "children"), Output("faces-pager", "children"),
        Output("faces-filter", "children"), Output("faces-pages", "data"),
        Input("faces-set", "value"), Input("faces-cell", "data"), Input("faces-page", "data"),
    )
    def grid(set_name: str | None, cell: dict[str, list[float]] | None, page: int
             ) -> tuple[Any, ...]:
        if not set_name:
            return [], "", "", 1
        found = reads.with_store(workspace, lambda store: store.face_page(
            set_name, tuple(cell["yaw"]) if cell else None,  # type: ignore[arg-type]
            tuple(cell["pitch"]) if cell else None,  # type: ignore[arg-type]
            offset=(page or 0) * PAGE, limit=PAGE))
        if found is None:
            return [], "", "Waiting for the service", 1
        total, faces = found
        pages = max(1, -(-total // PAGE))
        where = (f"yaw {cell['yaw'][0]:g}° to {cell['yaw'][1]:g}°, pitch {cell['pitch'][0]:g}° "
                 f"to {cell['pitch'][1]:g}°" if cell else "all poses")
        pager = f"{total:,} faces · page {(page or 0) + 1} of {pages}" if total else "no faces"
        return ([face_tile(set_name, f) for f in faces], pager, f"faces/{set_name}: {where}",
                pages)

    @app.callback(
        Output("faces-cell", "data"), Output("faces-page", "data"),
        Input("faces-heatmap", "clickData"), Input("faces-unselect", "n_clicks"),
        Input("faces-prev", "n_clicks"), Input("faces-next", "n_clicks"),
        Input("faces-set", "value"),
        State("faces-page", "data"), State("faces-pages", "data"),
        prevent_initial_call=True,
    )
    def navigate(click: Any, _unselect: int, _prev: int, _next: int, _set: str | None,
                 page: int | None, pages: int | None) -> tuple[Any, Any]:
        trigger = callback_context.triggered_id
        if trigger == "faces-heatmap":
            cell = tracker_reads.clicked_cell(click)
            return (cell, 0) if cell else (no_update, no_update)
        if trigger == "faces-prev":
            return no_update, max(0, (page or 0) - 1)
        if trigger == "faces-next":
            return no_update, min(max(0, (pages or 1) - 1), (page or 0) + 1)
        return None, 0  # unselect, or another set

    @app.callback(Output("faces-url", "search"), Input("faces-set", "value"))
    def address(set_name: str | None) -> str:
        return f"?{urlencode({'set': set_name})}" if set_name else ""
