"""What a training worker records about its run beside the losses: the job's model (its size
and options, for the dashboard's job page) and its sessions (faceswap's Analysis tab: each run
of the worker, its start and end, iterations, batch size and speed)."""

from __future__ import annotations

import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

from swapd.state import Session, StateStore

if TYPE_CHECKING:
    from swapd.trainer.loop import StepStats, Trainer


def describe_job(store: StateStore, job: str, trainer: Trainer) -> None:
    """The model's parameter count and options, and where it trains, as the job's info."""
    parameters = sum(p.numel() for p in trainer.model.parameters())
    store.set_job_info(job, {
        "parameters": int(parameters),
        "model_options": trainer.model_options.model_dump(),
        "device": str(trainer.device),
    })


def _timestamp(text: Any) -> float | None:
    """A session's recorded time (ISO 8601, as the checkpoint keeps it) in Unix seconds."""
    try:
        return datetime.fromisoformat(str(text)).timestamp()
    except ValueError:
        return None


class SessionRecord:
    """This run's session, kept up to date in the state store; the checkpoint's earlier ones
    written once, for jobs trained before the store recorded them."""

    def __init__(self, job: str, trainer: Trainer) -> None:
        self.job, self.trainer = job, trainer
        self.start = _timestamp(trainer.session["start"]) or time.time()
        self.examples = self.steps = 0
        self.train_seconds = 0.0

    def stepped(self, stats: StepStats) -> None:
        self.examples += stats.examples
        self.train_seconds += stats.seconds
        self.steps += 1

    def record(self, store: StateStore) -> None:
        session = self.trainer.session
        store.record_session(Session(
            self.job, self.start, time.time(), session["start_iteration"],
            self.trainer.iteration, self.trainer.batch_size, self.examples, self.train_seconds,
            self.steps))

    def record_earlier(self, store: StateStore) -> None:
        known = {round(s.start) for s in store.sessions(self.job)}
        for earlier in self.trainer.sessions[:-1]:
            start = _timestamp(earlier.get("start"))
            if start is None or round(start) in known:
                continue
            first, count = int(earlier.get("start_iteration", 0)), int(earlier.get("iterations", 0))
            batch = int(earlier.get("batch_size") or self.trainer.batch_size)
            end = _timestamp(earlier.get("end")) or start
            # the checkpoint keeps no step times: EG/s stays unknown for these
            store.record_session(Session(self.job, start, end, first, first + count, batch,
                                         2 * batch * count, 0.0, count))
