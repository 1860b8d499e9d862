"""Small pieces every page uses: cards, tables, badges, numbers and times as people read them."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote

from dash import dcc, html

STATE_CLASSES = {"training": "ok", "done": "done", "error": "bad", "waiting": "warn",
                 "paused": "warn", "queued": "", "stopped": "", "interrupted": "warn"}


def when(t: float | None) -> str:
    """A time as a clock reading today, else a date and time."""
    if t is None:
        return "—"
    moment = time.localtime(t)
    same_day = time.strftime("%Y-%m-%d", moment) == time.strftime("%Y-%m-%d")
    return time.strftime("%H:%M:%S" if same_day else "%Y-%m-%d %H:%M", moment)


def duration(seconds: float | None) -> str:
    """3725 -> '1 h 02 min'; 59 -> '59 s'."""
    if seconds is None:
        return "—"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes:02d} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"


def size(n: int | None) -> str:
    if n is None:
        return "missing"
    value = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def count(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def loss(value: float | None) -> str:
    return "—" if value is None else f"{value:.4f}"


# What a face trains with as its mask (the face index's mask_source), in the user's words.
MASK_NAMES = {"xseg": "XSeg mask (DeepFaceLab)", "polys": "drawn XSeg polygons (DeepFaceLab)",
              "landmarks": "landmark hull", None: "whole face (no landmarks)"}


def mask_name(source: str | None) -> str:
    return MASK_NAMES.get(source, source or MASK_NAMES[None])


def mask_counts(counts: dict[str | None, int]) -> str:
    """'120 XSeg mask (DeepFaceLab), 800 landmark hull', best mask first."""
    order = [*MASK_NAMES, *(s for s in counts if s not in MASK_NAMES)]
    return ", ".join(f"{counts[s]:,} {mask_name(s)}" for s in order if counts.get(s))


def card(title: Any, *children: Any, card_id: str | None = None, extra: Any = None) -> Any:
    head = html.Div([html.H2(title), extra], className="card-head") if extra else html.H2(title)
    return html.Section([head, *children], className="card",
                        **({"id": card_id} if card_id else {}))


def table(headers: list[str], rows: list[Any], empty: str, table_id: str) -> Any:
    if not rows:
        return html.P(empty, className="empty", id=table_id)
    return html.Table(
        [html.Thead(html.Tr([html.Th(h) for h in headers])), html.Tbody(rows)],
        className="table", id=table_id,
    )


def badge(state: str) -> Any:
    return html.Span(state, className=f"badge {STATE_CLASSES.get(state, '')}")


def progress(iteration: int, target: int) -> Any:
    if target <= 0:
        return html.Span(f"{iteration:,}", className="num")
    share = min(1.0, iteration / target)
    return html.Div([
        html.Span(f"{iteration:,} / {target:,}", className="num"),
        html.Div(html.Div(className="bar-fill", style={"width": f"{share:.1%}"}), className="bar"),
    ], className="progress")


def job_href(job: str, page: str = "") -> str:
    return f"/jobs/{quote(job, safe='')}" + (f"/{page}" if page else "")


def link(text: str, href: str, **kwargs: Any) -> Any:
    return dcc.Link(text, href=href, **kwargs)


def empty(text: str, element_id: str | None = None) -> Any:
    return html.P(text, className="empty", **({"id": element_id} if element_id else {}))
