"""Training windows: when a job may train, and when to look again.

The service keeps an APScheduler (3.x) BackgroundScheduler with a cron trigger at every window's
start and end, so jobs start and pause on time without the main loop polling the clock finely.
"""

from __future__ import annotations

import threading
from datetime import time

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger

from swapd.config import in_window, parse_window

__all__ = ["WindowClock", "in_window"]


class WindowClock:
    """Wakes the service (sets `wake`) at every window boundary of the current jobs."""

    def __init__(self, wake: threading.Event) -> None:
        self._wake = wake
        self._scheduler = BackgroundScheduler(daemon=True)
        self._boundaries: set[time] = set()

    def start(self) -> None:
        self._scheduler.start()

    def stop(self) -> None:
        self._scheduler.shutdown(wait=False)

    def set_windows(self, windows: list[str]) -> None:
        """Replace the boundaries with those of these windows (all jobs' windows together)."""
        boundaries = {t for w in windows for t in parse_window(w)}
        if boundaries == self._boundaries:
            return
        self._scheduler.remove_all_jobs()
        for moment in sorted(boundaries):
            self._scheduler.add_job(self._wake.set, CronTrigger(hour=moment.hour,
                                                                minute=moment.minute))
        self._boundaries = boundaries
