"""The state store shared by the service, its workers, the CLI and the dashboard (the bottom
layer: it imports nothing else of swapd's)."""

from swapd.state.history import LossRow
from swapd.state.records import (
    Artifact,
    ControlRequest,
    FaceRecord,
    JobRow,
    Mark,
    MergeProgress,
    Problem,
    Session,
)
from swapd.state.schema import SCHEMA_VERSION
from swapd.state.store import StateStore
from swapd.state.tracker import TRACKER_SORTS

__all__ = [
    "SCHEMA_VERSION", "TRACKER_SORTS", "Artifact", "ControlRequest", "FaceRecord", "JobRow",
    "LossRow", "Mark", "MergeProgress", "Problem", "Session", "StateStore",
]
