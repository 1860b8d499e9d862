"""Serving the dashboard with waitress in a background thread.

It binds to 127.0.0.1 by default. Any other address needs a token, and then every request must
carry it (see access.py: the login page's cookie, a `?token=` link that sets it, or an
`Authorization: Bearer ...` header).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from waitress import wasyncore
from waitress.server import create_server

from swapd.dashboard.access import AccessGate, is_loopback
from swapd.dashboard.app import create_app
from swapd.workspace import Workspace

log = logging.getLogger(__name__)

MIN_TOKEN_LENGTH = 16
_POLL_SECONDS = 0.2  # how often the serving loop looks at the stop flag


class DashboardConfigError(ValueError):
    """The dashboard cannot be served as configured (e.g. a public bind without a token)."""


def check_settings(host: str, port: int, token: str | None) -> None:
    """Raise :class:`DashboardConfigError` for settings the dashboard must not be served
    with: a token too short, a public address without a token, a port out of range."""
    if token is not None and (len(token) < MIN_TOKEN_LENGTH or token != token.strip()):
        raise DashboardConfigError(
            f"dashboard token must be at least {MIN_TOKEN_LENGTH} characters without "
            "surrounding spaces; make one with: "
            "python -c 'import secrets; print(secrets.token_urlsafe())'")
    if token is None and not is_loopback(host):
        raise DashboardConfigError(
            f"binding the dashboard to {host} needs a token: anyone who can reach that "
            "address could read your jobs and files. Give one (--token-file FILE, "
            "$SWAPD_DASHBOARD_TOKEN, or [dashboard] token in swapd.toml), or bind to "
            "127.0.0.1.")
    if not 0 <= port <= 65535:
        raise DashboardConfigError(f"dashboard port {port} is not in 0..65535")


class DashboardServer:
    """The dashboard, served by waitress from a background thread until `stop()`."""

    def __init__(self, workspace: Workspace, host: str = "127.0.0.1", port: int = 8050,
                 token: str | None = None, refresh_ms: int = 5000, threads: int = 8,
                 trust_anchors: str | None = None) -> None:
        check_settings(host, port, token)
        self.workspace = workspace
        self.trust_anchors = trust_anchors  # a PEM file: the outputs page's C2PA trust
        self.host = host
        self.port = port
        self.token = token
        self.refresh_ms = refresh_ms
        self.threads = threads
        self._map: dict[int, Any] = {}
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    @property
    def url(self) -> str:
        """Where to open the dashboard on this machine (without the token)."""
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(self.host, self.host)
        if ":" in host:
            host = f"[{host.strip('[]')}]"
        return f"http://{host}:{self.port}/"

    def start(self) -> None:
        """Bind and serve in a daemon thread. With port=0, `port` becomes the one picked."""
        if self._thread is not None:
            raise RuntimeError("the dashboard server is already started")
        app = AccessGate(create_app(self.workspace, self.refresh_ms, self.trust_anchors).server,
                         self.token)
        try:
            self._server = create_server(app, map=self._map, host=self.host.strip("[]"),
                                         port=self.port, threads=self.threads, ident="swapd")
        except OSError as err:
            raise DashboardConfigError(
                f"cannot serve the dashboard on {self.host}:{self.port}: {err}") from err
        listening = getattr(self._server, "effective_listen", None) or [
            (self._server.effective_host, self._server.effective_port)]
        self.port = int(listening[0][1])
        self._stopping.clear()
        self._thread = threading.Thread(target=self._serve, name="swapd-dashboard", daemon=True)
        self._thread.start()
        log.info("dashboard at %s", self.url)

    def _serve(self) -> None:
        try:
            while self._map and not self._stopping.is_set():
                wasyncore.loop(timeout=_POLL_SECONDS, map=self._map, count=1)
        finally:
            self._server.task_dispatcher.shutdown()
            wasyncore.close_all(self._map, ignore_all=True)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving and close every connection; safe to call twice."""
        if self._thread is None:
            return
        self._stopping.set()
        self._thread.join(timeout)
        self._thread = None

    def __enter__(self) -> DashboardServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
