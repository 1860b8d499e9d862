"""`/`: what there is now: jobs (progress, ETA, schedule), merges, exports, face sets,
problems and events, each job linking to its page."""

from __future__ import annotations

from typing import Any

from dash import Dash, Input, Output, html

from swapd.dashboard import components as ui
from swapd.dashboard import reads
from swapd.state import Problem, StateStore
from swapd.workspace import Workspace


def layout() -> Any:
    return html.Div([
        ui.card("Jobs", html.Div(id="overview-jobs")),
        html.Div([ui.card("Merged outputs", html.Div(id="overview-merges"),
                          extra=ui.link("all outputs →", "/outputs", className="more")),
                  ui.card("Exports", html.Div(id="overview-exports"))], className="pair"),
        html.Div([ui.card("Face sets", html.Div(id="overview-faces"),
                          extra=ui.link("faces →", "/faces", className="more")),
                  ui.card("Problems", html.Div(id="overview-problems"))], className="pair"),
        ui.card("Recent events", html.Div(id="overview-events")),
    ], className="stack")


def jobs_table(jobs: list[dict[str, Any]]) -> Any:
    rows = []
    for job in jobs:
        eta = job["eta_seconds"]
        progress = ui.progress(job["iteration"], job["target"])
        rows.append(html.Tr([
            html.Td(ui.link(job["name"], ui.job_href(job["name"])), className="name"),
            html.Td(job["kind"]),
            html.Td(ui.badge(job["state"])),
            html.Td([progress, html.Div(f"ETA {ui.duration(eta)}" if eta else "",
                                        className="eta")]),
            html.Td(f"{job['egs']:.1f}" if job["egs"] is not None else "—", className="num"),
            html.Td(job["schedule"]["text"], className=f"schedule {job['schedule']['state']}"),
            html.Td(job["model"] or "—"),
            html.Td(job["error"] or "", className="error-text", title=job["error"] or ""),
        ]))
    return ui.table(["Job", "Kind", "State", "Iteration", "EG/s", "Schedule", "Model",
                     "Last error"], rows,
                    "No jobs yet: drop a job file (*.toml) into the workspace's jobs/ folder.",
                    "jobs")


def _file_cell(item: dict[str, Any]) -> Any:
    name = item["path"].rsplit("/", 1)[-1]
    return html.A(name, href=item["url"], target="_blank") if item["url"] else html.Span(name)


def merges_table(workspace: Workspace, store: StateStore) -> Any:
    under_way = [html.Tr([html.Td(m.source, className="name"), html.Td(m.job),
                          html.Td(f"merging: {m.done:,}" + (f" / {m.total:,} frames"
                                                           if m.total else " frames")),
                          html.Td("")]) for m in store.merges_under_way()]
    rows = [html.Tr([html.Td(_file_cell(item), className="name"), html.Td(item["job"]),
                     html.Td(ui.when(item["time"])), html.Td(ui.size(item["size"]),
                                                             className="num")])
            for item in (reads.artifact_dict(workspace, a)
                         for a in store.artifacts(kind="merge", limit=10))]
    return ui.table(["File", "Job", "Made", "Size"], under_way + rows,
                    "No merged outputs yet.", "merges")


def exports_table(workspace: Workspace, store: StateStore) -> Any:
    rows = [html.Tr([
        html.Td(_file_cell(item), className="name"), html.Td(item["job"]),
        html.Td(f"{item['iteration']:,}" if item["iteration"] is not None else "—",
                className="num"),
        html.Td(ui.when(item["time"])), html.Td(ui.size(item["size"]), className="num"),
    ]) for item in reads.newest_exports(workspace, store)]
    return ui.table(["File", "Job", "Iteration", "Made", "Size"], rows, "No exports yet.",
                    "exports")


def problems_table(workspace: Workspace, problems: list[Problem]) -> Any:
    def shown(path: str) -> str:
        return workspace.relative(workspace.resolve(path))

    rows = [html.Tr([
        html.Td(shown(p.source), className="name", title=p.source),
        html.Td(p.kind), html.Td(p.key or "—"), html.Td(p.message, className="message"),
        html.Td(shown(p.moved_to) if p.moved_to else "—"),
        html.Td(ui.when(p.time)),
    ]) for p in problems]
    return ui.table(["File", "Kind", "Key / part", "Problem", "Set aside to", "When"], rows,
                    "No problems: all input was readable.", "problems")


def face_sets_table(face_sets: dict[str, dict[str, int]]) -> Any:
    rows = [html.Tr([html.Td(ui.link(f"faces/{name}", f"/faces?set={name}")),
                     html.Td(counts["ok"]),
                     html.Td(counts["quarantined"],
                             className="num error-text" if counts["quarantined"] else "num"),
                     html.Td(counts["duplicates"])])
            for name, counts in face_sets.items()]
    return ui.table(["Set", "Faces", "Quarantined", "Duplicates"], rows,
                    "No faces indexed yet.", "face-sets-table")


def events_table(events: list[tuple[float, str | None, str, str]]) -> Any:
    rows = [html.Tr([html.Td(ui.when(t)),
                     html.Td(ui.link(job, ui.job_href(job)) if job else "—"),
                     html.Td(message, className=f"message level-{level}")])
            for t, job, level, message in events]
    return ui.table(["When", "Job", "Event"], rows, "Nothing has happened yet.", "events")


def register(app: Dash, workspace: Workspace) -> None:
    @app.callback(
        Output("overview-jobs", "children"), Output("overview-merges", "children"),
        Output("overview-exports", "children"), Output("overview-faces", "children"),
        Output("overview-problems", "children"), Output("overview-events", "children"),
        Input("tick", "n_intervals"),
    )
    def refresh(_tick: int | None) -> tuple[Any, ...]:
        def read(store: StateStore) -> tuple[Any, ...]:
            return (jobs_table(reads.jobs(store)), merges_table(workspace, store),
                    exports_table(workspace, store), face_sets_table(store.face_sets()),
                    problems_table(workspace, store.problems(limit=100)),
                    events_table(store.events(limit=40)))

        found = reads.with_store(workspace, read)
        if found is None:
            waiting = ui.empty("Waiting for the service: it has not made its database yet.")
            return (jobs_table([]), waiting, waiting, waiting, waiting, waiting)
        return found
