"""Under CI (CI=true, which .ci/run exports) a test that needs a missing tool fails instead of
skipping: a machine without ffmpeg, ffprobe or chromium would otherwise pass while testing less
than it claims (tests/browser.py's chrome() keeps the same rule for chromium)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import require_tools

REPO = Path(__file__).resolve().parents[1]


def test_a_missing_tool_skips_here_and_fails_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="needs ffprobe"):
        require_tools("ffprobe")
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="needs ffprobe"):
        require_tools("ffprobe")


def test_ci_runs_with_ci_true() -> None:
    assert "export CI=true" in (REPO / ".ci" / "run").read_text()
