"""`/outputs`: merged videos (played in the page: the file is served with range requests) and
images, each with what `swapd verify` finds in it; merges under way with their progress; a
merge preview of a chosen frame of a job's footage (pages/merge_preview.py); the exported
models."""

from __future__ import annotations

from typing import Any

from dash import Dash, Input, Output, State, dcc, html, no_update

from swapd.dashboard import components as ui
from swapd.dashboard import reads
from swapd.dashboard.pages import merge_preview
from swapd.dashboard.pages.overview import exports_table
from swapd.dashboard.verify_cache import VerifyCache, describe, shown_state
from swapd.media import VIDEO_SUFFIXES
from swapd.state import StateStore
from swapd.workspace import Workspace

VERIFY = VerifyCache()


def layout() -> Any:
    return html.Div([
        dcc.Store(id="outputs-key"),
        ui.card("Merges under way", html.Div(id="outputs-under-way")),
        ui.card("Merged outputs", html.Div(id="outputs-list")),
        merge_preview.card(),
        ui.card("Exports", html.Div(id="outputs-exports")),
    ], className="stack")


def under_way(store: StateStore) -> Any:
    rows = []
    for m in store.merges_under_way():
        share = m.done / m.total if m.total else None
        rows.append(html.Tr([
            html.Td(m.source, className="name"), html.Td(m.job),
            html.Td(ui.progress(m.done, m.total or 0)),
            html.Td(f"{share:.0%}" if share is not None else f"{m.done:,} frames"),
            html.Td(ui.when(m.started)),
        ]))
    return ui.table(["Footage", "Job", "Frames", "Done", "Started"], rows,
                    "No merge under way.", "under-way")


def output_card(workspace: Workspace, item: dict[str, Any]) -> Any:
    path = workspace.resolve(item["path"])
    info = item["info"]
    url = item["url"]
    if url is None:
        media: Any = ui.empty("The file is gone.")
    elif path.suffix.lower() in VIDEO_SUFFIXES:
        media = html.Video(src=url, controls=True, preload="metadata", className="output-media")
    else:
        media = html.A(html.Img(src=url, alt=path.name, className="output-media"), href=url,
                       target="_blank")
    verdict = VERIFY.result(path) if url else {"error": "the file is gone"}
    facts = [f"job {item['job']}", f"made {ui.when(item['time'])}", ui.size(item["size"])]
    if info.get("frames"):
        facts.append(f"{info['frames']:,} frames")
    if info.get("faces_swapped") is not None:
        facts.append(f"{info['faces_swapped']:,} faces swapped")
    if info.get("fps"):
        facts.append(f"merged at {info['fps']:.1f} fps")
    return html.Article([
        media,
        html.Div([
            html.A(path.name, href=url, target="_blank", download=path.name) if url
            else html.Span(path.name),
            html.P(" · ".join(facts), className="facts-line"),
            html.P(f"from {workspace.relative(workspace.resolve(info['source']))}"
                   if info.get("source") else "", className="facts-line"),
            html.P(describe(verdict), className=f"verify {shown_state(verdict)}"),
        ], className="output-text"),
    ], className="output")


def register(app: Dash, workspace: Workspace) -> None:
    merge_preview.register(app, workspace)

    @app.callback(
        Output("outputs-under-way", "children"), Output("outputs-list", "children"),
        Output("outputs-exports", "children"), Output("outputs-key", "data"),
        Input("tick", "n_intervals"), State("outputs-key", "data"),
    )
    def refresh(_tick: int | None, shown: list[Any] | None) -> tuple[Any, ...]:
        def read(store: StateStore) -> tuple[Any, ...]:
            merges = [reads.artifact_dict(workspace, a)
                      for a in store.artifacts(kind="merge", limit=60)]
            progress = [(m.source, m.done) for m in store.merges_under_way()]
            exports = reads.newest_exports(workspace, store)
            verdicts = [VERIFY.result(workspace.resolve(m["path"])) for m in merges]
            # re-render only on a change: a video playing in the page is left alone
            key = [merges, progress, [e["time"] for e in exports], verdicts]
            if key == shown:
                return no_update, no_update, no_update, no_update
            cards = [output_card(workspace, m) for m in merges]
            return (under_way(store),
                    html.Div(cards, className="outputs") if cards else ui.empty(
                        "No merged outputs yet: drop footage into a job's footage folder."),
                    exports_table(workspace, store), key)

        waiting = ui.empty("Waiting for the service.")
        return reads.with_store(workspace, read) or (waiting, waiting, waiting, None)
