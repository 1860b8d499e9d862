"""The rows the state store hands out: plain, typed, read-only."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class JobRow:
    name: str
    path: str
    kind: str
    state: str
    model: str | None
    iteration: int
    target: int
    egs: float | None
    error: str | None
    config: dict[str, Any] | None
    created_at: float
    updated_at: float
    info: dict[str, Any] | None = None  # from the worker: parameters, options in use


@dataclass(frozen=True)
class Problem:
    id: int
    time: float
    source: str
    kind: str
    key: str | None
    message: str
    moved_to: str | None


@dataclass(frozen=True)
class FaceRecord:
    """One row of the face index (see the faces table)."""

    set_name: str
    name: str
    status: str
    size: int
    mtime_ns: int
    reason: str | None = None
    moved_to: str | None = None
    hash: str | None = None
    kind: str | None = None
    width: int | None = None
    height: int | None = None
    channels: int | None = None
    landmarks: list[list[float]] | None = None
    landmarks_from: str | None = None  # "file", "mapped:mtcnn", "detected:mtcnn"; None: unaligned
    centering: str | None = None  # the crop it is stored at; None: unknown (indexed before 7)
    # The face mask it trains with: "xseg" / "polys" (a DeepFaceLab user's), "landmarks"; None:
    # all of the face (no landmarks), or indexed before the column was added.
    mask_source: str | None = None
    yaw: float | None = None
    pitch: float | None = None
    roll: float | None = None
    source: str | None = None
    duplicate_of: str | None = None
    first_seen: float = 0.0
    checked_at: float = 0.0


FACE_COLUMNS = tuple(FaceRecord.__dataclass_fields__)


@dataclass(frozen=True)
class Artifact:
    id: int
    job: str
    kind: str
    path: str
    iteration: int | None
    time: float
    info: dict[str, Any] | None


@dataclass(frozen=True)
class Session:
    """One training run of a job (faceswap's Analysis tab)."""

    job: str
    start: float
    end: float
    start_iteration: int
    end_iteration: int
    batch_size: int
    examples: int
    train_seconds: float
    steps: int = 0  # steps taken (a restore or a rollback can take the iteration back)

    @property
    def elapsed(self) -> float:
        return max(0.0, self.end - self.start)

    @property
    def egs(self) -> float | None:
        """Examples per second over the session, as faceswap's Analysis tab counts them (its
        whole time: saves, previews and snapshots included); None when not recorded."""
        return self.examples / self.elapsed if self.elapsed > 0 and self.train_seconds > 0 \
            else None


@dataclass(frozen=True)
class Mark:
    """A moment the loss graph marks: a rollback or a restore, back to ``iteration``."""

    id: int
    job: str
    time: float
    iteration: int
    kind: str
    info: dict[str, Any]


@dataclass(frozen=True)
class ControlRequest:
    """An action asked of a job's worker (or the service) through the control queue."""

    id: int
    job: str
    action: str
    args: dict[str, Any]
    created_at: float
    taken_at: float | None
    done_at: float | None
    result: str | None


@dataclass(frozen=True)
class MergeProgress:
    job: str
    source: str
    done: int
    total: int | None
    started: float
    updated: float


def loads(text: str | None) -> Any:
    """A JSON column's value (None stays None)."""
    return json.loads(text) if text else None


def job_row(r: sqlite3.Row) -> JobRow:
    keys = r.keys()
    return JobRow(
        name=r["name"], path=r["path"], kind=r["kind"], state=r["state"], model=r["model"],
        iteration=r["iteration"], target=r["target"], egs=r["egs"], error=r["error"],
        config=loads(r["config"]), created_at=r["created_at"], updated_at=r["updated_at"],
        info=loads(r["info"]) if "info" in keys else None,
    )


def artifact(r: sqlite3.Row) -> Artifact:
    return Artifact(r["id"], r["job"], r["kind"], r["path"], r["iteration"], r["time"],
                    loads(r["info"]))


def control_request(r: sqlite3.Row) -> ControlRequest:
    keys = r.keys()
    return ControlRequest(
        r["id"], r["job"], r["action"], (loads(r["args"]) if "args" in keys else None) or {},
        r["created_at"], r["taken_at"], r["done_at"] if "done_at" in keys else None,
        r["result"] if "result" in keys else None)
