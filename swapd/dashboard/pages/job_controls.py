"""The job page's controls: pause, resume, save now, snapshot now, export now, stop, and
restore (the backup or a snapshot, after a confirmation that says what is replaced and where
the old one is kept). Each is a request in the control queue; the log beside the buttons
shows when the worker took it and what came of it."""

from __future__ import annotations

from typing import Any

from dash import Dash, Input, Output, State, callback_context, dcc, html, no_update

from swapd.dashboard import components as ui
from swapd.dashboard import controls, reads
from swapd.state import StateStore
from swapd.workspace import Workspace

BUTTONS = (("pause", "Pause"), ("resume", "Resume"), ("save", "Save now"),
           ("snapshot", "Snapshot now"), ("export", "Export now"), ("stop", "Stop"))


def card() -> Any:
    return ui.card("Controls", html.Div([
        html.Div([html.Button(label, id=f"control-{action}", n_clicks=0,
                              className=f"control-button {action}")
                  for action, label in BUTTONS], className="buttons"),
        html.Div([
            dcc.Dropdown(id="restore-target", placeholder="Restore…", clearable=False,
                         searchable=False, options=[], className="restore-target"),
            html.Button("Restore", id="control-restore", n_clicks=0,
                        className="control-button restore"),
        ], className="restore"),
        dcc.ConfirmDialog(id="restore-confirm"),
        html.Div(id="control-message", className="control-message"),
        html.Div(id="control-log"),
    ]), card_id="controls-card")


def restore_options(targets: dict[str, Any]) -> list[dict[str, Any]]:
    options = []
    backup = targets["backup"]
    if backup is not None:
        loss = backup.get("average_loss")
        options.append({"label": f"the backup (iteration {backup['iteration']:,}"
                                 + (f", loss {loss:.4f})" if isinstance(loss, float) else ")"),
                        "value": "backup"})
    options += [{"label": f"snapshot at {s['iteration']:,}", "value": str(s["iteration"])}
                for s in reversed(targets["snapshots"])]
    return options


def control_log(requests: list[dict[str, Any]]) -> Any:
    def target(request: dict[str, Any]) -> str:
        args = request["args"]
        if request["action"] == "restore":
            return (f"snapshot {args['snapshot']:,}" if "snapshot" in args else "backup")
        if request["action"] == "focus":
            return f"{args.get('faces', 0)} {'' if args.get('focus', True) else 'un'}marked"
        if request["action"] == "preview":  # a merge preview (the outputs page's)
            return f"frame {args.get('frame')}"
        return ""

    rows = [html.Tr([
        html.Td(f"{r['action']} {target(r)}".strip()), html.Td(ui.when(r["requested_at"])),
        html.Td(ui.when(r["taken_at"]) if r["taken_at"] else "waiting…",
                className="" if r["taken_at"] else "warn-text"),
        html.Td(r["result"] or ("" if r["taken_at"] is None else "—"), className="message"),
    ]) for r in requests]
    return ui.table(["Request", "Asked", "Taken", "Result"], rows,
                    "Nothing asked yet. The worker takes a request between iterations.",
                    "control-log-table")


def register(app: Dash, workspace: Workspace) -> None:
    @app.callback(
        Output("control-log", "children"), Output("restore-target", "options"),
        Output("restore-target", "value"),
        Input("tick", "n_intervals"), Input("job-name", "data"),
        Input("control-message", "children"), State("restore-target", "value"),
    )
    def refresh(_tick: int | None, job: str, _message: Any, chosen: str | None
                ) -> tuple[Any, Any, Any]:
        def read(store: StateStore) -> tuple[Any, Any, Any]:
            log = [reads.control_dict(c) for c in store.control_requests(job, limit=8)]
            options = restore_options(reads.restore_targets(workspace, job))
            values = [o["value"] for o in options]
            # keep the user's choice while it exists; else offer the first (the backup)
            value = chosen if chosen in values else (values[0] if values else None)
            return control_log(log), options, value

        return reads.with_store(workspace, read) or (control_log([]), [], None)

    @app.callback(
        Output("control-message", "children"),
        *(Input(f"control-{action}", "n_clicks") for action, _ in BUTTONS),
        Input("restore-confirm", "submit_n_clicks"),
        State("job-name", "data"), State("restore-target", "value"),
        prevent_initial_call=True,
    )
    def act(*values: Any) -> Any:
        job, target = values[-2], values[-1]
        trigger = callback_context.triggered_id
        if trigger == "restore-confirm":
            body: dict[str, Any] = {"action": "restore"}
            if target not in (None, "backup"):
                body["snapshot"] = int(target)
        elif isinstance(trigger, str) and trigger.startswith("control-"):
            body = {"action": trigger.removeprefix("control-")}
        else:
            return no_update
        try:
            request_id = controls.request(workspace, job, body)
        except controls.ControlError as exc:
            return html.Span(str(exc), className="error-text")
        return html.Span(f"Asked: {body['action']} (request {request_id}); the worker takes it "
                         "between iterations.", className="ok-text")

    @app.callback(
        Output("restore-confirm", "message"), Output("restore-confirm", "displayed"),
        Input("control-restore", "n_clicks"),
        State("job-name", "data"), State("restore-target", "value"),
        prevent_initial_call=True,
    )
    def confirm(_clicks: int, job: str, target: str | None) -> tuple[Any, bool]:
        if target is None:
            return no_update, False
        row = reads.with_store(workspace, lambda store: store.job(job))
        iteration = row.iteration if row is not None else 0
        snapshot = None if target == "backup" else int(target)
        return controls.describe_restore(workspace, job, iteration, snapshot), True
