"""The dashboard's settings, checked before the service starts: a public address without a
token (or a token too short) refuses to start the service, rather than run it without its
dashboard. (A busy port is not this: training goes on without the dashboard, said in the log.)
"""

from __future__ import annotations

from swapd.config import ServiceConfig


def dashboard_problem(config: ServiceConfig) -> str | None:
    """Why the dashboard cannot be served as configured, or None."""
    if not config.dashboard.enabled:
        return None
    from swapd.dashboard.server import DashboardConfigError, check_settings

    cfg = config.dashboard
    try:
        check_settings(cfg.host, cfg.port, cfg.token or None)
    except DashboardConfigError as exc:
        return str(exc)
    return None
