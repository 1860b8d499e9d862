"""swapd as a Windows service (pywin32).

    pip install swapd pywin32
    python windows_service\\swapd_service.py --startup auto install
    python windows_service\\swapd_service.py start
    python windows_service\\swapd_service.py stop | remove

The workspace is %LOCALAPPDATA%\\swapd unless the SWAPD_WORKSPACE environment variable of the
service names another folder; SWAPD_CONFIG may name a swapd.toml. Stopping the service asks the
training worker to save (through the state store's "stop" control) before it exits.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import servicemanager  # type: ignore[import-not-found]
import win32event  # type: ignore[import-not-found]
import win32service  # type: ignore[import-not-found]
import win32serviceutil  # type: ignore[import-not-found]

from swapd.config import load_service_config
from swapd.daemon.service import Service
from swapd.workspace import Workspace


class SwapdWindowsService(win32serviceutil.ServiceFramework):
    _svc_name_ = "swapd"
    _svc_display_name_ = "swapd face-swap training service"
    _svc_description_ = "Trains face-swap models on a schedule and merges new footage."

    def __init__(self, args: list[str]) -> None:
        super().__init__(args)
        self._stop_event = win32event.CreateEvent(None, 0, 0, None)
        self._service: Service | None = None

    def SvcStop(self) -> None:  # noqa: N802 (pywin32's name)
        self.ReportServiceStatus(win32service.SERVICE_STOP_PENDING, waitHint=40_000)
        if self._service is not None:
            self._service.request_stop()
        win32event.SetEvent(self._stop_event)

    def SvcDoRun(self) -> None:  # noqa: N802 (pywin32's name)
        servicemanager.LogInfoMsg("swapd starting")
        config_path = os.environ.get("SWAPD_CONFIG")
        config = load_service_config(Path(config_path) if config_path else None)
        ws = Workspace.open(os.environ.get("SWAPD_WORKSPACE") or config.service.workspace or None)
        logging.basicConfig(filename=ws.logs / "swapd.log", level=logging.INFO,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        self._service = Service(ws, config)
        runner = threading.Thread(target=self._service.run, name="swapd-service")
        runner.start()
        win32event.WaitForSingleObject(self._stop_event, win32event.INFINITE)
        runner.join(timeout=60)
        servicemanager.LogInfoMsg("swapd stopped")


if __name__ == "__main__":
    win32serviceutil.HandleCommandLine(SwapdWindowsService)
