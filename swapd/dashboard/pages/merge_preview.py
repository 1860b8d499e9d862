"""The outputs page's "Choose a look" card: a frame of a job's footage beside its merge under
each value of one option (colour transfers, modes, masks, sharpening), labelled, as
``swapd merge --preview N --compare KEY`` writes it.

The page asks; the service renders (a ``preview`` request in the control queue, see
swapd/dashboard/merge_previews.py) and the card says "rendering…" until the sheet is there,
then shows it, or the error. Before a user asks, it shows the newest preview asked, and sets
the controls to what that preview was asked with (once, when the page opens).
"""

from __future__ import annotations

import json
from typing import Any

from dash import Dash, Input, Output, State, callback_context, dcc, html, no_update

from swapd.dashboard import components as ui
from swapd.dashboard import controls, merge_previews, reads
from swapd.merger.look import COMPARABLE
from swapd.state import StateStore
from swapd.workspace import Workspace

_NAMES = {"color_transfer": "colour transfers", "mode": "merge modes", "mask": "mask modes",
          "sharpen": "sharpening"}
COMPARE_OPTIONS = [{"label": "the job's own look", "value": "none"},
                   *({"label": _NAMES.get(key, key), "value": key} for key in COMPARABLE)]


def card() -> Any:
    return ui.card("Choose a look", html.Div([
        html.P("One frame of a job's footage beside its merge under each candidate setting, "
               "rendered by the service with the job's model and [merge] options; set the "
               "chosen one in the job file.", className="facts-line"),
        html.Div([
            html.Div([html.Label("Footage"), dcc.Dropdown(
                id="look-footage", placeholder="a job's footage…", clearable=False,
                options=[])], className="control wide"),
            html.Div([html.Label("Frame"), dcc.Input(
                id="look-frame", type="number", min=0, step=1, value=0, debounce=True)],
                className="control"),
            html.Div([html.Label("Frames"), dcc.Slider(
                id="look-frame-slider", min=0, max=0, step=1, value=0, marks=None,
                tooltip={"placement": "bottom"}, allow_direct_input=False)],
                className="control slider"),
            html.Div([html.Label("Candidates"), dcc.Dropdown(
                id="look-compare", options=COMPARE_OPTIONS, value="color_transfer",
                clearable=False, searchable=False)], className="control session"),
            html.Button("Render", id="look-render", n_clicks=0, className="control-button"),
        ], className="graph-controls"),
        dcc.Store(id="look-request"), dcc.Store(id="look-shown"), dcc.Store(id="look-synced"),
        html.Div(html.Span("Nothing asked yet: choose footage, a frame and the candidates, "
                           "then Render."), id="look-status", className="control-message"),
        html.Div(id="look-sheet"),
    ]), card_id="look-card")


def _choice(value: str | None) -> tuple[str, str] | None:
    """The (job, footage) a dropdown value names."""
    try:
        job, source = json.loads(value or "")
    except (ValueError, TypeError):
        return None
    return str(job), str(source)


def sheet(state: dict[str, Any]) -> Any:
    """The status line and the sheet of a preview request's state."""
    compared = state.get("compare")
    candidates = _NAMES.get(compared, compared) if compared else "the job's own look"
    asked = f"frame {state.get('frame')} of {state.get('source')}, {candidates}"
    if state["state"] == "waiting":
        return html.Span(f"Asked for {asked}: waiting for the service…", className="warn-text"
                         ), None
    if state["state"] == "rendering":
        return html.Span(f"rendering… ({asked})", className="warn-text"), None
    if state["state"] == "failed":
        return html.Span(f"Not rendered: {state['message'].removeprefix('not rendered: ')}",
                         className="error-text block"), None
    return (html.Span([f"{asked}: ", html.A(state["path"], href=state["url"], target="_blank")],
                      className="ok-text"),
            html.A(html.Img(src=state["url"], id="look-sheet-img", alt="merge preview",
                            className="look-sheet"), href=state["url"], target="_blank"))


def register(app: Dash, workspace: Workspace) -> None:
    @app.callback(
        Output("look-footage", "options"), Output("look-footage", "value"),
        Input("tick", "n_intervals"), State("look-footage", "options"),
        State("look-footage", "value"),
    )
    def footage(_tick: int | None, shown: list[Any] | None, chosen: str | None
                ) -> tuple[Any, Any]:
        found = reads.with_store(workspace, lambda store: merge_previews.footage_files(
            workspace, store)) or []
        options = [{"label": f["label"], "value": json.dumps([f["job"], f["source"]])}
                   for f in found]
        if options == shown:
            return no_update, no_update
        values = [o["value"] for o in options]
        return options, chosen if chosen in values else (values[0] if values else None)

    @app.callback(
        Output("look-frame", "value"), Output("look-frame-slider", "value"),
        Output("look-frame-slider", "max"), Output("look-frame", "max"),
        Input("look-frame", "value"), Input("look-frame-slider", "value"),
        Input("look-footage", "value"),
    )
    def frame(typed: int | None, slid: int | None, chosen: str | None) -> tuple[Any, ...]:
        picked = _choice(chosen)
        frames = merge_previews.frame_count(workspace, picked[1]) if picked else None
        last = max(0, (frames or 1) - 1)
        trigger = callback_context.triggered_id
        if trigger == "look-frame" and typed is None:  # the box emptied to type a number:
            return no_update, no_update, last, last    # leave it empty (a 0 there gives "030")
        value = slid if trigger == "look-frame-slider" else typed
        value = min(max(0, int(value or 0)), last)
        return value, value, last, last

    @app.callback(
        Output("look-request", "data"), Output("look-status", "children", allow_duplicate=True),
        Input("look-render", "n_clicks"),
        State("look-footage", "value"), State("look-frame", "value"),
        State("look-compare", "value"), prevent_initial_call=True,
    )
    def render(_clicks: int, chosen: str | None, frame: int | None, compare: str | None
               ) -> tuple[Any, Any]:
        picked = _choice(chosen)
        if picked is None:
            return no_update, html.Span("Choose footage first.", className="error-text")
        body = {"action": "preview", "source": picked[1], "frame": int(frame or 0),
                "compare": None if compare in (None, "none") else compare}
        try:
            request_id = controls.request(workspace, picked[0], body)
        except controls.ControlError as exc:
            return no_update, html.Span(str(exc), className="error-text")
        return {"job": picked[0], "id": request_id}, html.Span(
            f"Asked for frame {body['frame']} (request {request_id}): waiting for the "
            "service…", className="warn-text")

    @app.callback(
        Output("look-status", "children"), Output("look-sheet", "children"),
        Output("look-shown", "data"),
        Input("tick", "n_intervals"), Input("look-request", "data"),
        State("look-shown", "data"),
    )
    def status(_tick: int | None, asked: dict[str, Any] | None, shown: Any) -> tuple[Any, ...]:
        def read(store: StateStore) -> dict[str, Any] | None:
            # before a user asks: the newest preview asked (from this page or another)
            request = (store.control_request(int(asked["id"])) if asked
                       else merge_previews.newest_request(store))
            return merge_previews.preview_state(workspace, request) if request else None

        state = reads.with_store(workspace, read)
        if state is None or state == shown:  # unchanged: the image is left alone
            return no_update, no_update, no_update
        return (*sheet(state), state)

    @app.callback(
        Output("look-footage", "value", allow_duplicate=True),
        Output("look-frame", "value", allow_duplicate=True),
        Output("look-compare", "value"), Output("look-synced", "data"),
        Input("look-shown", "data"), Input("look-footage", "options"),
        State("look-request", "data"), State("look-synced", "data"),
        prevent_initial_call=True,
    )
    def follow_shown(shown: dict[str, Any] | None, offered: list[dict[str, Any]] | None,
                     asked: Any, synced: Any) -> tuple[Any, ...]:
        """Set the controls to the preview shown on opening, so Render asks again for what
        the sheet shows; once, and never over a request of this page."""
        if synced or asked or not shown:
            return no_update, no_update, no_update, no_update
        value = json.dumps([shown.get("job"), shown.get("source")])
        if value not in [o["value"] for o in offered or []]:
            return no_update, no_update, no_update, no_update  # footage not offered (yet)
        compare = shown.get("compare") or "none"
        if compare not in [o["value"] for o in COMPARE_OPTIONS]:
            compare = no_update
        return value, int(shown.get("frame") or 0), compare, True
