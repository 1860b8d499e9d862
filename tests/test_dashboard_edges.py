"""The dashboard's edges: a public bind without a token refuses to start the service (exit 2),
the token can come from a file or the environment (never only from ps), and crafted addresses
(a path Dash does not serve, a NUL byte) answer 404 quietly, without a logged traceback."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from swapd.cli import build_parser, main
from swapd.cli.common import TOKEN_VARIABLE, TokenFileError, service_config
from swapd.dashboard.server import DashboardServer
from swapd.workspace import Workspace
from tests.browser import http_get

TOKEN = "a-token-of-more-than-16-characters"


def test_a_public_bind_without_a_token_does_not_start(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    done = subprocess.run([sys.executable, "-m", "swapd", "run", "--workspace", str(ws),
                           "--host", "0.0.0.0", "--port", "0"],
                          capture_output=True, text=True, timeout=120,
                          env={k: v for k, v in os.environ.items() if k != TOKEN_VARIABLE})
    assert done.returncode == 2, done.stdout + done.stderr
    assert "needs a token" in done.stderr and "--token-file" in done.stderr
    assert not (ws / ".swapd" / "state.db").exists(), "nothing was started"


def _config(argv: list[str]):  # noqa: ANN202 (a ServiceConfig)
    return service_config(build_parser().parse_args(["run", *argv]))


def test_the_token_comes_from_a_file_or_the_environment(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TOKEN_VARIABLE, raising=False)
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    assert _config(["--token-file", str(token_file)]).dashboard.token == TOKEN
    monkeypatch.setenv(TOKEN_VARIABLE, "from-the-environment-1234")
    assert _config([]).dashboard.token == "from-the-environment-1234"
    assert _config(["--token-file", str(token_file)]).dashboard.token == TOKEN
    assert _config(["--token", "on-the-command-line-123"]).dashboard.token == \
        "on-the-command-line-123"
    (tmp_path / "empty").write_text("\n")
    for bad in ("empty", "missing"):
        with pytest.raises(TokenFileError, match="--token-file"):
            _config(["--token-file", str(tmp_path / bad)])
    assert main(["run", "--token-file", str(tmp_path / "missing"), "--workspace",
                 str(tmp_path / "ws")]) == 2


def test_help_names_the_ways_to_give_the_token(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--token-file FILE" in text and f"${TOKEN_VARIABLE}" in text and "in ps" in text


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with DashboardServer(Workspace.open(tmp_path_factory.mktemp("edges") / "ws"),
                         port=0) as server:
        yield server.url


@pytest.mark.parametrize(("path", "status"), [
    ("/_dash-component-suites/dash/..%2f..%2f..%2fetc%2fpasswd", 404),
    ("/_dash-component-suites/dash/deps/not-a-dependency.js", 404),
    ("/_dash-component-suites/os/path.py", 404),
    ("/_dash-component-suites/dash/dcc/%00.js", 404),
    ("/files/%00", 404),
    ("/jobs/%00", 404),
    ("/api/v1/jobs?since=%00", 404),
])
def test_crafted_addresses_answer_quietly(served: str, path: str, status: int,
                                          caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        reply = http_get(served, path)
    assert reply.status == status, reply.body[:500]
    assert b"Traceback" not in reply.body
    logged = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not logged, [r.getMessage() for r in logged]


def test_the_dashboard_scripts_are_still_served(served: str) -> None:
    page = http_get(served, "/").body.decode()
    script = next(part.split('"')[0] for part in page.split('src="')[1:]
                  if "_dash-component-suites" in part)
    assert http_get(served, script).status == 200
