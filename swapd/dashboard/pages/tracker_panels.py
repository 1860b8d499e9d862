"""The snapshot tracker's panels beside its grid: focus faces (mark the faces the trainer
should draw more often: a heatmap cell, the worst 50, or picked by hand), one face's
timeline across snapshots, and two snapshots compared."""

from __future__ import annotations

from typing import Any

from dash import Dash, Input, Output, State, callback_context, dcc, html, no_update

from swapd.dashboard import components as ui
from swapd.dashboard import controls, reads, tracker_reads
from swapd.state import JobRow, StateStore
from swapd.workspace import Workspace

WORST = 50
FOCUS_BUTTONS = (("focus-cell", "Focus this cell"), ("focus-worst", f"Focus worst {WORST}"),
                 ("focus-picked", "Focus picked"), ("unfocus-picked", "Unfocus picked"),
                 ("focus-clear", "Clear focus"))


def focus_bar() -> Any:
    return html.Div([
        html.Span(id="focus-count", className="focus-count"),
        dcc.Checklist(id="focus-only", value=[], inline=True,
                      options=[{"label": "focus faces only", "value": "on"}]),
        dcc.Checklist(id="pick-mode", value=[], inline=True,
                      options=[{"label": "pick faces by clicking", "value": "on"}]),
        *(html.Button(label, id=button, n_clicks=0, className="control-button")
          for button, label in FOCUS_BUTTONS),
        html.Span(id="focus-message", className="control-message"),
    ], className="focus-bar")


def timeline_card() -> Any:
    return html.Section([
        html.Div([html.H2("Timeline", id="timeline-title"),
                  html.Button("Close", id="timeline-close", n_clicks=0,
                              className="control-button")], className="card-head"),
        html.Div(id="timeline-body", className="timeline"),
    ], className="card", id="timeline-card", style={"display": "none"})


def compare_card() -> Any:
    return ui.card("Compared with the earlier snapshot", html.Div(id="compare-body"),
                   dcc.Store(id="compare-key"), card_id="compare-card")


def no_snapshots(row: JobRow | None) -> Any:
    train = ((row.config if row else None) or {}).get("train") or {}
    every, tracker = train.get("snapshot_every", 0), train.get("tracker", True)
    file = f"jobs/{row.name}.toml" if row else "the job's file"
    if every and tracker:
        text = (f"No snapshot yet: the first comes at iteration {every:,} (snapshot_every = "
                f"{every}). Each snapshot records every face's loss, output and swap.")
    elif every:
        text = (f"Snapshots are kept, but without tracker data: set tracker = true under "
                f"[train] in {file}.")
    else:
        text = (f"This job keeps no snapshots. To track every face, set snapshot_every = 5000 "
                f"(any interval) and tracker = true under [train] in {file}; the service picks "
                "the change up, and each snapshot then records every face's loss, output "
                "and swap.")
    return html.Section(html.P(text, className="empty", id="tracker-how"), className="card")


def _image(url: str | None, kind: str) -> Any:
    return html.Img(src=url, alt=kind, className=f"tile-img {kind}") if url \
        else html.Div("—", className=f"tile-img missing {kind}")


def timeline_view(found: dict[str, Any]) -> Any:
    first = html.Div([
        html.Div("aligned face", className="when"), _image(found["face"], "face"),
        html.Div(found["name"], className="name"),
        html.Div(html.A(f"from {found['source']}", href=found["source_frame"],
                        target="_blank", id="timeline-source")
                 if found["source_frame"] else (f"from {found['source']}" if found["source"]
                                                else ""), className="source"),
        html.Div(f"trains with: {ui.mask_name(found['mask'])}" if found["indexed"] else "",
                 className="source", id="timeline-mask"),
        html.Div("focus" if found["focus"] else "", className="focus-badge"
                 if found["focus"] else ""),
        html.Div("at each snapshot: its output" + (", then its swap (A>B)"
                                                   if found["side"] == "a" else ""),
                 className="source"),
    ], className="timeline-column first")
    columns = [html.Div([
        html.Div(f"{snap['iteration']:,}", className="when"),
        _image(snap["output"], "output"),
        _image(snap["swap"], "swap") if found["side"] == "a" else None,
        html.Div(ui.loss(snap["loss"]), className="loss"),
    ], className="timeline-column", **{"data-iteration": str(snap["iteration"])})
        for snap in found["snapshots"]]
    return html.Div([first, *columns], className="timeline-row", id="timeline-row")


def compare_view(found: dict[str, Any]) -> Any:
    parts = []
    for side, result in found["sides"].items():
        name = tracker_reads.SIDE_NAMES[side]
        if not result["faces"]:
            parts.append(html.P(f"{name}: no face tracked by both snapshots.", className="empty"))
            continue

        def strip(faces: list[dict[str, Any]]) -> Any:
            return html.Div([html.Figure([_image(f["face"], "face"), html.Figcaption(
                f"{f['before']:.4f} → {f['after']:.4f}")], title=f["name"]) for f in faces],
                className="strip")

        parts.append(html.Div([
            html.H3(name),
            html.P(f"{result['faces']:,} faces: mean loss {result['mean_first']:.4f} → "
                   f"{result['mean_second']:.4f}; {result['better']:,} better, "
                   f"{result['worse']:,} worse"),
            html.Div([html.Div([html.H4("most improved"), strip(result["most_improved"])]),
                      html.Div([html.H4("most worsened"), strip(result["most_worsened"])])],
                     className="pair"),
        ], className="compare-side"))
    return html.Div([html.P(f"Snapshot {found['first']:,} → {found['second']:,}",
                            className="path"), *parts])


def _focus_names(store: StateStore, job: str, side: str, snapshot: int | None,
                 cell: dict[str, list[float]] | None, which: str) -> list[str]:
    if snapshot is None:
        return []
    if which == "focus-cell" and cell is None:
        return []
    limit = WORST if which == "focus-worst" else 100_000
    _, rows = store.tracked_page(job, snapshot, side, "-loss",
                                 yaw=tuple(cell["yaw"]) if cell else None,  # type: ignore[arg-type]
                                 pitch=tuple(cell["pitch"]) if cell else None,  # type: ignore[arg-type]
                                 limit=limit)
    return [r["face"] for r in rows]


def register(app: Dash, workspace: Workspace) -> None:
    @app.callback(
        Output("timeline-body", "children"), Output("timeline-card", "style"),
        Output("timeline-title", "children"),
        # The side is a State: changing it clears tracker-face in the browser, which fires this
        # once; as an Input it fired a second call, whose stale answer could reopen the card.
        Input("tracker-face", "data"), Input("job-name", "data"),
        Input("focus-message", "children"), State("tracker-side", "value"),
    )
    def timeline(face: str | None, job: str, _message: Any, side: str) -> tuple[Any, ...]:
        if not face:
            return None, {"display": "none"}, "Timeline"
        found = reads.with_store(workspace, lambda store: tracker_reads.timeline(
            workspace, store, job, side, face))
        if not found or not found["snapshots"]:
            return ui.empty(f"No snapshot tracked {face} on this side."), {}, f"Timeline: {face}"
        return timeline_view(found), {}, f"Timeline: {face}"

    @app.callback(
        Output("compare-body", "children"), Output("compare-key", "data"),
        Input("tracker-grid-key", "data"), State("job-name", "data"),
        State("compare-key", "data"),
    )
    def compare(key: list[Any] | None, job: str, shown: list[Any] | None) -> Any:
        pair = [job, *(key[2:4] if key else [None, None])]
        if pair == shown:  # another sort, page or filter: the same two snapshots
            return no_update, no_update
        return _compared(job, pair[1], pair[2]), pair

    def _compared(job: str, chosen: int | None, against: int | None) -> Any:
        if chosen is None:
            return ui.empty("No snapshot yet.")
        if against is None:
            return ui.empty("This is the first snapshot: nothing earlier to compare with.")
        found = reads.with_store(workspace, lambda store: tracker_reads.compare(
            workspace, store, job, against, chosen))
        return compare_view(found) if found else ui.empty("Waiting for the service")

    @app.callback(
        Output("focus-count", "children"),
        Input("tracker-version", "data"), Input("job-name", "data"),
        Input("tracker-side", "value"),
    )
    def focus_count(_version: list[Any] | None, job: str, side: str) -> str:
        focus = reads.with_store(workspace, lambda store: store.focus_faces(job)) or {}
        n = len(focus.get(side, ()))
        return f"{ui.count(n, 'focus face')} in this set" + (
            " (the trainer draws each more often)" if n else "")

    @app.callback(
        Output("focus-message", "children"),
        *(Input(button, "n_clicks") for button, _ in FOCUS_BUTTONS),
        State("job-name", "data"), State("tracker-side", "value"),
        State("tracker-snapshot", "value"), State("tracker-cell", "data"),
        State("tracker-picked", "data"),
        prevent_initial_call=True,
    )
    def focus(*values: Any) -> Any:
        job, side, snapshot, cell, picked = values[-5:]
        which = callback_context.triggered_id
        if which is None:
            return no_update

        def names(store: StateStore) -> list[str]:
            if which in ("focus-picked", "unfocus-picked"):
                return list(picked or [])
            if which == "focus-clear":
                return sorted(store.focus_faces(job).get(side, set()))
            chosen, _ = tracker_reads.chosen_snapshot(store, job, snapshot)
            return _focus_names(store, job, side, chosen, cell, which)

        chosen_names = reads.with_store(workspace, names) or []
        if not chosen_names:
            hint = {"focus-cell": "click a heatmap cell first",
                    "focus-picked": "tick faces first", "unfocus-picked": "tick faces first",
                    "focus-clear": "there are no focus faces"}.get(which, "no faces")
            return html.Span(f"Nothing to do: {hint}.", className="warn-text")
        marking = which not in ("unfocus-picked", "focus-clear")
        try:
            request_id = controls.request(workspace, job, {
                "action": "focus", "side": side, "faces": chosen_names, "focus": marking})
        except controls.ControlError as exc:
            return html.Span(str(exc), className="error-text")
        return html.Span(f"{'Marked' if marking else 'Unmarked'} {len(chosen_names):,} faces "
                         f"(request {request_id}).", className="ok-text")
